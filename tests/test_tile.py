"""Tiles: matrices larger than one tile are split, every tile read through its own periphery."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim import IOParameters, analog_matmul, analog_mvm
from analogsim.tile import read_tiles, split_sizes, tile_grid

# these tests take gradients through bare analog reads on purpose (the backward periphery)
pytestmark = pytest.mark.filterwarnings("ignore::analogsim.tile.AnalogGradientWarning")

PERFECT = IOParameters(is_perfect=True)
# no quantisation, no noise, bounds so large that nothing clips: only the split can change the product
CLEAN = IOParameters(inp_res=0.0, out_res=0.0, out_noise=0.0, out_bound=1e6, bound_management="none")
QUIET = IOParameters(out_noise=0.0)


def tiles(io: IOParameters, size: int) -> IOParameters:
    return dataclasses.replace(io, max_input_size=size, max_output_size=size)


def rel_err(a, b):
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


@functools.partial(jax.jit, static_argnames=("io", "seed"))
def read_and_grad(w, x, cot, io, seed):
    """(y, reads, dx) of one analog_matmul with the cotangent ``cot`` on y."""
    (y, reads), vjp = jax.vjp(lambda x: analog_matmul(w, x, jax.random.key(seed), io, io), x)
    (dx,) = vjp((cot, np.zeros(reads.shape, jax.dtypes.float0)))
    return y, reads, dx


@functools.partial(jax.jit, static_argnames=("io", "seed"))
def read(w, x, io, seed):
    """(y, reads) of one forward analog_matmul."""
    return analog_matmul(w, x, jax.random.key(seed), io, io)


def test_split_sizes_match_aihwkit():
    # ceil(n / max) parts of near-equal size, the larger first
    assert split_sizes(784, 512) == (392, 392)
    assert split_sizes(1100, 512) == (367, 367, 366)
    assert split_sizes(700, 512) == (350, 350)
    assert split_sizes(513, 512) == (257, 256)
    assert split_sizes(512, 512) == (512,)
    assert split_sizes(7, 3) == (3, 2, 2)
    assert split_sizes(5, 3) == (3, 2)
    assert split_sizes(5000, 0) == (5000,)  # 0: no limit
    assert tile_grid(256, 784, IOParameters()) == ((256,), (392, 392))
    with pytest.raises(ValueError, match="max_size"):
        split_sizes(10, -1)


@pytest.mark.parametrize(("shape", "size"), [((700, 1100), 512), ((7, 5), 3)])
@pytest.mark.parametrize("io", [PERFECT, CLEAN], ids=["perfect", "clean"])
def test_split_product_equals_unsplit(shape, size, io):
    n_out, n_in = shape
    w = jax.random.normal(jax.random.key(0), shape) / np.sqrt(n_in)
    x = jax.random.normal(jax.random.key(1), (16, n_in))
    cot = jax.random.normal(jax.random.key(2), (16, n_out))
    y1, r1, dx1 = read_and_grad(w, x, cot, tiles(io, 0), 3)
    y2, r2, dx2 = read_and_grad(w, x, cot, tiles(io, size), 3)
    assert rel_err(y1, x @ w.T) < 1e-5
    assert rel_err(y2, y1) < 1e-5
    assert rel_err(dx2, dx1) < 1e-5
    assert rel_err(dx1, cot @ w) < 1e-5
    np.testing.assert_array_equal(r1, 1)
    np.testing.assert_array_equal(r2, 1)
    # the tile reader itself (a perfect analog_matmul takes the whole-matrix short cut)
    rows, cols = tile_grid(n_out, n_in, tiles(io, size))
    assert len(rows) * len(cols) > 1
    fwd = read_tiles(w, x, io, key=None, rows=rows, cols=cols)
    bwd = read_tiles(w, cot, io, key=None, rows=rows, cols=cols, transposed=True)
    assert rel_err(fwd.y, x @ w.T) < 1e-5
    assert rel_err(bwd.y, cot @ w) < 1e-5


def test_one_tile_reads_exactly_as_before():
    w = jax.random.uniform(jax.random.key(4), (10, 20), minval=-0.5, maxval=0.5)
    x = jax.random.uniform(jax.random.key(5), (8, 20)) * 4  # outputs up to ~10: some re-reads
    cot = jax.random.normal(jax.random.key(6), (8, 10))
    ref = read_and_grad(w, x, cot, tiles(IOParameters(), 0), 7)
    assert float(jnp.std(ref[0] - x @ w.T)) > 0.01  # noisy: the comparison below means something
    for io in (IOParameters(), dataclasses.replace(IOParameters(), max_input_size=20, max_output_size=10)):
        for a, b in zip(read_and_grad(w, x, cot, io, 7), ref, strict=True):
            np.testing.assert_array_equal(a, b)


def test_each_tile_has_its_own_noise_management():
    io = dataclasses.replace(QUIET, out_res=0.0, bound_management="none")
    # forward: tile 1 reads (4, 4) / 4 -> 2 * 4 = 8; tile 2 reads (0.01, 0.01) / 0.01 -> 2 * 0.01.
    # One tile scales everything by 4: 0.01 / 4 = 0.0025 is 0.16 DAC steps and reads as 0.
    w = jnp.ones((1, 4))
    x = jnp.array([[4.0, 4.0, 0.01, 0.01]])
    y_split, _ = analog_matmul(w, x, jax.random.key(8), tiles(io, 2), tiles(io, 2))
    y_one, _ = analog_matmul(w, x, jax.random.key(8), io, io)
    np.testing.assert_allclose(y_split, [[8.02]], rtol=1e-6)
    np.testing.assert_allclose(y_one, [[8.0]], rtol=1e-6)
    # backward: the same four cells as one column, the error split over two tiles of 2 rows
    cot = jnp.array([[4.0, 4.0, 0.01, 0.01]])
    _, _, dx_split = read_and_grad(w.T, jnp.ones((1, 1)), cot, tiles(io, 2), 9)
    _, _, dx_one = read_and_grad(w.T, jnp.ones((1, 1)), cot, io, 9)
    np.testing.assert_allclose(dx_split, [[8.02]], rtol=1e-6)
    np.testing.assert_allclose(dx_one, [[8.0]], rtol=1e-6)


def test_each_tile_has_its_own_adc_and_bound_management():
    w = jnp.ones((1, 18))
    x = jnp.ones((1, 18))
    # two tiles of 9: each output 9 fits the bound of 12 (one read), 9 = 191.25 ADC steps of
    # 24/510 -> 191, and the two are added digitally
    y, reads = analog_matmul(w, x, jax.random.key(10), tiles(QUIET, 9), tiles(QUIET, 9))
    np.testing.assert_allclose(y, [[2 * 191 * 24 / 510]], rtol=1e-6)
    np.testing.assert_array_equal(reads, [1])
    _, reads_one = analog_matmul(w, x, jax.random.key(11), QUIET, QUIET)
    np.testing.assert_array_equal(reads_one, [2])  # 18 clips in one tile: read again at 1/2


def test_reads_are_the_worst_tiles():
    w = jnp.ones((1, 26))
    e1 = jnp.zeros(13).at[0].set(1.0)
    x = jnp.stack(
        [
            jnp.ones(26),  # both tiles: 13 clips, 6.5 fits -> 2 reads each
            jnp.concatenate([jnp.ones(13), e1]),  # tile 1: 2 reads, tile 2: 1 read
            jnp.concatenate([e1, jnp.zeros(13)]),  # tile 1: 1 read, tile 2: zero input, not read
            jnp.zeros(26),  # not read at all
        ]
    )
    y, reads = analog_matmul(w, x, jax.random.key(12), tiles(QUIET, 13), tiles(QUIET, 13))
    np.testing.assert_array_equal(reads, [2, 2, 1, 0])
    assert reads.dtype == jnp.int32
    np.testing.assert_allclose(y[2:], [[21 * 24 / 510], [0.0]], rtol=1e-6)  # 1 = 21.25 ADC steps


def test_padding_rows_do_not_trigger_bound_management():
    w = jnp.array([[20.0], [1.0]])  # row 0 would clip
    x = jnp.array([[1.0]])
    io = IOParameters(out_noise=0.0, inp_res=0.0, out_res=0.0)
    masked = analog_mvm(w, x, io, key=None, valid_outputs=jnp.array([False, True]))
    np.testing.assert_array_equal(masked.reads, [1])
    np.testing.assert_array_equal(masked.y[:, 1], [1.0])
    np.testing.assert_array_equal(analog_mvm(w, x, io, key=None).reads, [2])


def test_noisy_split_has_the_noise_of_its_tiles():
    n_out, n_in, batch = 300, 1100, 64
    w = jax.random.uniform(jax.random.key(13), (n_out, n_in), minval=-1, maxval=1) / np.sqrt(n_in)
    x = jax.random.uniform(jax.random.key(14), (batch, n_in)) * jnp.linspace(0.2, 2.0, batch)[:, None]
    exact = x @ w.T
    cols = split_sizes(n_in, 512)  # (367, 367, 366)
    edges = np.cumsum((0, *cols))
    alpha = jnp.stack([jnp.max(jnp.abs(x[:, a:b]), axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], 1)
    w2 = jnp.stack([jnp.sum(w[:, a:b] ** 2, axis=1) for a, b in zip(edges[:-1], edges[1:], strict=True)], 1)

    # output noise only: each tile adds alpha_j * 0.06 * N(0, 1), independently
    io = IOParameters(inp_res=0.0, out_res=0.0)
    y, reads = read(w, x, tiles(io, 512), 15)
    np.testing.assert_array_equal(reads, 1)
    z = (y - exact) / (0.06 * jnp.sqrt(jnp.sum(alpha**2, axis=1)))[:, None]
    assert float(jnp.std(z)) == pytest.approx(1.0, abs=0.03)
    assert abs(float(jnp.mean(z))) < 3 / np.sqrt(z.size)
    y1, _ = read(w, x, tiles(io, 0), 16)
    z1 = (y1 - exact) / (0.06 * jnp.max(alpha, axis=1))[:, None]
    assert float(jnp.std(z1)) == pytest.approx(1.0, abs=0.03)

    # default periphery: per tile, output noise plus uniform ADC (step 24/510) and DAC (step
    # 1/63, through the squared weights) rounding errors, all scaled by the tile's alpha
    y, _ = read(w, x, tiles(IOParameters(), 512), 17)
    var = alpha[:, None, :] ** 2 * (0.06**2 + (24 / 510) ** 2 / 12 + w2[None, :, :] * (1 / 63) ** 2 / 12)
    z = (y - exact) / jnp.sqrt(jnp.sum(var, axis=2))
    assert float(jnp.std(z)) == pytest.approx(1.0, abs=0.05)
    assert abs(float(jnp.mean(z))) < 3 / np.sqrt(z.size)


def test_forward_and_backward_must_agree_on_the_tile_size():
    w, x = jnp.ones((2, 3)), jnp.ones((1, 3))
    with pytest.raises(ValueError, match=r"forward_io\.max_input_size = 256 but backward_io\.max_input_size = 512"):
        analog_matmul(w, x, jax.random.key(18), IOParameters(max_input_size=256), IOParameters())


def test_split_layer_jits_without_recompiling():
    io = IOParameters()
    fio, bio = tiles(io, 4), tiles(dataclasses.replace(io, bound_management="none"), 4)

    @jax.jit
    def step(w, x, key):
        return jax.grad(lambda x: jnp.sum(analog_matmul(w, x, key, fio, bio)[0]))(x)

    w = jax.random.normal(jax.random.key(19), (6, 10)) * 0.3
    x = jax.random.normal(jax.random.key(20), (5, 10))
    g1 = step(w, x, jax.random.key(21))
    g2 = step(w * 0.5, x, jax.random.key(22))
    assert step._cache_size() == 1
    assert g1.shape == g2.shape == x.shape
    assert bool(jnp.all(jnp.isfinite(g1)))


@pytest.mark.parametrize("transposed", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize(
    ("shape", "noisy"),
    [((6, 8), True), ((5, 7), False)],
    ids=["equal-tiles-noisy", "unequal-tiles-noise-free"],
)
def test_unrolled_and_vectorised_tile_reads_agree(transposed, shape, noisy):
    """Tile after tile (each its own slice of w) and the one vectorised pass over padded blocks
    read the same thing: same keys, so the same noise where the tiles are of equal size (padded
    tiles draw their noise at the padded shape, another draw of the same law), and the same
    quantisation and bound management."""
    io = dataclasses.replace(IOParameters(), out_bound=1.5)  # clips: some re-reads
    rows, cols = split_sizes(shape[0], 3), split_sizes(shape[1], 4)  # (3, 3) x (4, 4) or (3, 2) x (4, 3)
    w = jax.random.uniform(jax.random.key(20), shape, minval=0.2, maxval=1.0)
    x = jnp.abs(jax.random.normal(jax.random.key(21), (6, shape[0] if transposed else shape[1])))

    @jax.jit
    def both(w, x):  # one compilation for the two readers
        return {
            unrolled: read_tiles(
                w,
                x,
                io,
                key=jax.random.key(22) if noisy else None,  # the same key, made twice (a key is used once)
                rows=rows,
                cols=cols,
                transposed=transposed,
                unrolled=unrolled,
            )
            for unrolled in (True, False)
        }

    got = both(w, x)
    assert int(jnp.max(got[True].reads)) > 1  # bound management took part
    np.testing.assert_array_equal(got[True].reads, got[False].reads)
    np.testing.assert_allclose(got[True].y, got[False].y, rtol=1e-5, atol=1e-5)
    if noisy:
        clean = read_tiles(w, x, io, key=None, rows=rows, cols=cols, transposed=transposed)
        assert float(jnp.max(jnp.abs(got[True].y - clean.y))) > 1e-2  # the noise is in both
