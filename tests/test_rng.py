"""The generator of a training step's large draws (analogsim/rng.py): Philox 4x32-10 against
Random123's known answers, the layout of its words, their laws, and the fusion guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from analogsim import rng


@pytest.fixture(autouse=True)
def _every_draw_four_words(monkeypatch):
    """Every draw through the four-word path, whatever its size (rng.FOUR_WORDS_MIN)."""
    monkeypatch.setattr(rng, "FOUR_WORDS_MIN", 0)


# Random123 (D. E. Shaw Research), examples/kat_vectors, the three "philox4x32 10" lines:
# counter (4 words), key (2 words) -> output (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_block_matches_random123(counter, key, expected):
    out = jax.jit(rng.philox4x32)(tuple(np.uint32(c) for c in counter), tuple(np.uint32(k) for k in key))
    assert [int(w) for w in out] == list(expected)


@pytest.mark.parametrize("shape", [(8, 3), (6, 5), (3, 7), (2, 3, 4), (5,), (1,), (4, 2, 9)])
def test_bits_are_the_four_words_of_each_block(shape):
    """Word ``j`` of block ``b`` (counter ``(b, 0, 0, domain)``) fills row ``j * quarter + r`` of the
    array as ``(rows, cols)``, with ``b = r * cols + c`` (the layout rng.bits documents); jit or not."""
    got = np.asarray(jax.jit(rng.bits, static_argnums=1)(jax.random.key(3), shape))
    np.testing.assert_array_equal(got, np.asarray(rng.bits(jax.random.key(3), shape)))
    n = int(np.prod(shape))
    rows = int(np.prod(shape[:-1])) if len(shape) >= 2 else 1
    rows, cols = (rows, shape[-1]) if rows >= 4 else (4, -(-n // 4))
    quarter = -(-rows // 4)
    k = np.asarray(jax.random.bits(jax.random.key(3), (2,), jnp.uint32))
    blocks = np.arange(quarter * cols, dtype=np.uint32)
    zero = np.zeros_like(blocks)
    words = rng.philox4x32((blocks, zero, zero, np.full_like(blocks, 0x616E6173)), (k[0], k[1]))
    expected = np.concatenate([np.asarray(w).reshape(quarter, cols) for w in words])
    expected = expected[:rows] if rows * cols == n else expected.reshape(-1)[:n]
    np.testing.assert_array_equal(got, expected.reshape(shape))


def test_bits_same_key_same_words_other_key_other_words_and_vmap():
    a = rng.bits(jax.random.key(0), (64, 256))
    np.testing.assert_array_equal(a, rng.bits(jax.random.key(0), (64, 256)))
    assert np.mean(np.asarray(a) == np.asarray(rng.bits(jax.random.key(1), (64, 256)))) < 1e-3
    keys = jax.random.split(jax.random.key(2), 3)
    batched = jax.vmap(lambda k: rng.bits(k, (8, 5)))(jax.random.clone(keys))
    for i in range(3):
        np.testing.assert_array_equal(batched[i], rng.bits(keys[i], (8, 5)))


def test_bits_are_uniform_bit_by_bit():
    """Each of the 32 bit positions is set in half the words (10^6 words: 5 sigma = 0.0025), and
    neighbouring words (in a row and across the quarters of a block) are uncorrelated."""
    w = np.asarray(rng.bits(jax.random.key(11), (1000, 1000)))
    freq = ((w[..., None] >> np.arange(32, dtype=np.uint32)) & 1).mean(axis=(0, 1))
    np.testing.assert_allclose(freq, 0.5, atol=0.0025)
    u = w.astype(np.float64) / 2**32
    for a, b in ((u[:, :-1], u[:, 1:]), (u[:250], u[250:500]), (u[:250], u[750:])):
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.005  # 5 sigma for 250k pairs


def test_uniform_and_normal_have_their_laws():
    """Kolmogorov-Smirnov against U[2, 5) and N(0, 1) (10^6 draws each; fixed keys, so the test
    is deterministic), the normal's first four moments, and the uniform's range."""
    u = np.asarray(rng.uniform(jax.random.key(4), (1000, 1000), minval=2.0, maxval=5.0))
    assert u.dtype == np.float32 and u.min() >= 2.0 and u.max() < 5.0
    assert stats.kstest(u.ravel(), stats.uniform(2.0, 3.0).cdf).pvalue > 1e-3
    z = np.asarray(rng.normal(jax.random.key(5), (1000, 1000)))
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert stats.kstest(z.ravel(), "norm").pvalue > 1e-3
    assert abs(z.mean()) < 0.005 and abs(z.var() - 1) < 0.007  # 5 sigma: 1/sqrt(n), sqrt(2/n)
    assert abs(stats.skew(z.ravel())) < 0.0125 and abs(stats.kurtosis(z.ravel())) < 0.025


def test_other_dtypes_are_drawn_by_jax_random():
    key = jax.random.key(6)
    np.testing.assert_array_equal(
        rng.normal(key, (3, 4), jnp.bfloat16), jax.random.normal(jax.random.key(6), (3, 4), jnp.bfloat16)
    )


def test_draws_below_the_limit_are_jax_random_bits(monkeypatch):
    monkeypatch.setattr(rng, "FOUR_WORDS_MIN", 1000)
    np.testing.assert_array_equal(
        rng.bits(jax.random.key(9), (10, 99)), jax.random.bits(jax.random.key(9), (10, 99), jnp.uint32)
    )
    big = rng.bits(jax.random.key(9), (10, 100))  # 1,000 words: the four-word path
    assert np.mean(np.asarray(big) == np.asarray(jax.random.bits(jax.random.key(9), (10, 100), jnp.uint32))) < 0.01


def test_bits_refuse_more_than_2_34_words():
    with pytest.raises(ValueError, match=r"rng.bits: shape .* is not allowed"):
        jax.eval_shape(lambda k: rng.bits(k, (2**33, 4, 2)), jax.random.key(0))


def test_computed_once_returns_its_input():
    """The fusion guard of a noisy read (and of the Poisson sampler's uniforms) changes no value
    (only -0.0 becomes 0.0; subnormals flush to zero, as in any arithmetic XLA does on CPU)."""
    y = jnp.array([[1.5, -2.25, 0.0, -0.0, 1e-30, 3e38], [-7.0, 0.1, -1e-37, 12.0, -12.0, 5.0]], jnp.float32)
    out = jax.jit(rng.computed_once)(y)
    assert out.shape == y.shape and out.dtype == y.dtype
    np.testing.assert_array_equal(out, y)
