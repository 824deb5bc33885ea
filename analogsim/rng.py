"""Random-number helpers shared by the periphery and the pulsed update.

Every draw in analogsim is a pure function of a key passed in; these helpers only choose how the
bits are made.

Two generators:

- ``fast_key`` turns a key into a Philox 4x32 key for ``jax.random`` draws (on CPU a single
  kernel, where JAX's default Threefry is a rolled loop of small ones).
- ``bits``, ``uniform`` and ``normal`` draw the large arrays of a training step (update
  and read noise) from Philox 4x32-10 blocks, using all four 32-bit words of each block (draws
  of at least ``FOUR_WORDS_MIN`` words; smaller ones come from ``jax.random.bits``, since the
  four-word path costs compile time: see the constant).
  ``jax.random.bits`` computes one block per output word (it folds the four words into one with
  XOR); on CPU the block is most of a draw's cost, so using every word makes the bits cheaper
  (``experiments/benchmarks/update_profile.py``'s random draws, 256 x 784 standardised popcounts
  on this project's 2-core machine, dispatch included: 0.407 ms from ``jax.random.bits``, 0.263 ms
  from ``bits``). XLA fuses an elementwise producer into each of
  its consumers, so four words taken apart would each recompute the block; a variadic reduction
  (``_four_words``) makes one loop that computes each block once and writes its four words.

The block function is ``philox4x32`` (Salmon, Moraes, Dror & Shaw, "Parallel random numbers:
as easy as 1, 2, 3", SC 2011; the Random123 reference implementation, whose known-answer vectors
``tests/test_rng.py`` checks). Counter of block ``b``: ``(b, 0, 0, _DOMAIN)``; its key: two words
drawn from the given key with ``jax.random.bits`` (so JAX's key-reuse checker sees the key used).
The values differ from ``jax.random``'s for the same key; the laws are the same.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

FAST_IMPL = "philox4x32"  # counter-based (Salmon et al., 2011), no rolled loop on CPU

# Philox 4x32 constants (Random123, philox.h)
_M0, _M1 = np.uint32(0xD2511F53), np.uint32(0xCD9E8D57)  # multipliers
_W0, _W1 = np.uint32(0x9E3779B9), np.uint32(0xBB67AE85)  # Weyl key increments
# Draws of fewer words come from jax.random.bits. The four-word path costs compile time: the
# default RT-MNIST step compiled in 4.0-4.9 s with none, 4.5-6.0 s with this limit (its 256 x 784
# update noise only) and 5.7-6.8 s with every draw (limit 0; JAX_LOG_COMPILES, separate
# processes, one CPU thread), and `analogsim train` on the digits set (no draw this large) took
# 13.3 s with none and 15.8-17.0 s with every draw. The step times of the three are in
# update_profile.py's A/B. Set it to 0 for the fastest steps of long runs and sweeps.
FOUR_WORDS_MIN = 65536
_DOMAIN = np.uint32(0x616E6173)  # fourth counter word ("anas"): apart from other uses of a key's words


@functools.cache
def fast_impl_available() -> bool:
    try:
        jax.random.wrap_key_data(jnp.zeros((2,), jnp.uint32), impl=FAST_IMPL)
    except (ValueError, KeyError, TypeError):  # an older JAX without Philox
        return False
    return True


def fast_key(key: jax.Array) -> jax.Array:
    """A Philox key drawn from ``key``, for the many small draws of a training step.

    On CPU, JAX lowers Threefry with a rolled loop: each draw of a few thousand numbers costs
    a loop of small kernels. Philox 4x32 (64-bit key) is a single kernel and draws 1.5-2x
    faster. The result is still a pure function of ``key``; a Philox key, or any key with a
    JAX that lacks Philox, is used as it is.
    """
    if not fast_impl_available() or str(jax.random.key_impl(key)) == FAST_IMPL:
        return key
    return jax.random.wrap_key_data(jax.random.bits(key, (2,), jnp.uint32), impl=FAST_IMPL)


def philox4x32(counter, key, rounds: int = 10):
    """The Philox 4x32 block function: four uint32 counter words and two key words (arrays that
    broadcast together) to four uint32 words."""
    x0, x1, x2, x3 = (jnp.asarray(c, jnp.uint32) for c in counter)
    k0, k1 = (jnp.asarray(k, jnp.uint32) for k in key)
    for r in range(rounds):
        if r:
            k0, k1 = k0 + _W0, k1 + _W1
        hi0, lo0 = lax.mulhi(x0, jnp.full_like(x0, _M0)), x0 * _M0
        hi1, lo1 = lax.mulhi(x2, jnp.full_like(x2, _M1)), x2 * _M1
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    return x0, x1, x2, x3


def _four_words(words):
    """The four words of each block, each computed once: a reduction over ``[w, 0]`` with all
    four words as its operands is one loop, where XLA computes the shared block once per index
    (an elementwise consumer of the words would compute it once per word)."""
    zero = jnp.zeros_like(words[0])
    stacked = tuple(jnp.stack([w, zero]) for w in words)
    return lax.reduce(stacked, (np.uint32(0),) * 4, lambda a, b: tuple(x | y for x, y in zip(a, b, strict=True)), (0,))


def bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Uniform random uint32 words of ``shape``, four from each Philox 4x32-10 block (draws of
    fewer than ``FOUR_WORDS_MIN`` words: ``jax.random.bits``).

    Layout: the array as ``(rows, cols)`` (``cols`` its last axis; ``(4, n / 4)`` for fewer than
    four rows); block ``b`` of the ``(rows / 4, cols)`` blocks gives one word to each quarter of
    the rows. The quarters are joined along the leading axis: XLA vectorises such a join inside
    the consumer's loop (joined as a flat array it did not: the noisy update of a 256 x 784 array
    took longer than with one block per word).
    """
    n = math.prod(shape)
    if n == 0 or n < FOUR_WORDS_MIN:
        return jax.random.bits(key, shape, jnp.uint32)
    rows = math.prod(shape[:-1]) if len(shape) >= 2 else 1
    if rows >= 4:
        cols = shape[-1]
    else:
        rows, cols = 4, -(-n // 4)
    quarter = -(-rows // 4)
    if quarter * cols >= 2**32:
        raise ValueError(f"rng.bits: shape {shape} is not allowed; at most 2**34 words per draw")
    k = jax.random.bits(key, (2,), jnp.uint32)
    b = lax.iota(jnp.uint32, quarter * cols).reshape(quarter, cols)
    zero = jnp.zeros_like(b)
    words = _four_words(philox4x32((b, zero, zero, jnp.full_like(b, _DOMAIN)), (k[0], k[1])))
    out = jnp.concatenate(words, axis=0)  # (4 * quarter, cols)
    if out.size != n:  # padding: the last quarter short of rows, or n not a multiple of 4
        out = out.reshape(-1)[:n]
    return out.reshape(shape)


def uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32, minval=0.0, maxval=1.0) -> jax.Array:
    """Uniform on ``[minval, maxval)`` from ``bits``, by ``jax.random.uniform``'s mapping (the
    top 23 bits of each word as the mantissa of a float in ``[1, 2)``, minus one, scaled). Other
    dtypes than float32 are drawn by ``jax.random.uniform``."""
    if jnp.dtype(dtype) != jnp.float32:
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    one_two = lax.bitcast_convert_type((bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32)
    minval, maxval = jnp.float32(minval), jnp.float32(maxval)
    return jnp.maximum(minval, (one_two - 1.0) * (maxval - minval) + minval)


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Standard normal by ``jax.random.normal``'s method, :math:`\\sqrt{2}\\,\\mathrm{erf}^{-1}(u)`
    with ``u`` uniform on ``(-1, 1)`` from ``uniform``. Other dtypes than float32 are drawn by
    ``jax.random.normal``."""
    if jnp.dtype(dtype) != jnp.float32:
        return jax.random.normal(key, shape, dtype)
    u = uniform(key, shape, jnp.float32, minval=np.nextafter(np.float32(-1.0), np.float32(0.0)), maxval=1.0)
    return np.float32(np.sqrt(2.0)) * lax.erf_inv(u)


def computed_once(y: jax.Array) -> jax.Array:
    """``y``, materialised once (``-0.0`` becomes ``0.0``, subnormals flush to zero as in any
    arithmetic on CPU; every other value is unchanged).

    XLA (CPU) fuses an elementwise producer into each of its consumers: a noisy read's noise
    draw (Philox bits and an inverse error function) was evaluated twice, once for the ADC's
    clip and once for bound management's overflow test (0.11 ms against 0.06 ms for a 64 x 256
    read, one CPU thread); the ``expected`` rung's Poisson sampler reads its uniforms thirteen
    times. An optimisation barrier does not stop it; a running sum over
    ``[y, 0]`` (a reduce-window, which XLA does not fuse into its consumers) does.
    """
    return jax.lax.cumsum(jnp.stack([y, jnp.zeros_like(y)], axis=-1), axis=y.ndim)[..., 1]
