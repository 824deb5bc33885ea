"""Exact event counters inside jitted code, without 64-bit JAX.

A counter is a ``uint32`` array of shape ``(..., 2)`` holding ``(high, low)`` words; its value
is ``high * 2**32 + low``, exact up to 2**64. Increments are ``uint32`` (< 2**32 each), which
covers any single training step; the carry goes into the high word. On the host,
``to_int`` gives a Python int (arbitrary precision), so sums of billions of events stay
exact (STYLE.md 10).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["add", "mul", "to_int", "zeros"]


def zeros(shape: tuple[int, ...] = ()) -> jax.Array:
    """A zero counter (or an array of counters of ``shape``)."""
    return jnp.zeros((*shape, 2), jnp.uint32)


def add(counter: jax.Array, increment: jax.Array) -> jax.Array:
    """Add a non-negative increment exactly; returns the new counter. The increment is a
    ``uint32`` value (< 2**32) or itself a counter (``(..., 2)`` high and low words, as ``mul``
    returns)."""
    inc = jnp.asarray(increment)
    inc_high = jnp.zeros((), jnp.uint32)
    if inc.ndim == counter.ndim and inc.shape[-1:] == (2,) and counter.ndim > 0:
        inc_high, inc = inc[..., 0].astype(jnp.uint32), inc[..., 1]
    inc = inc.astype(jnp.uint32)
    high, low = counter[..., 0], counter[..., 1]
    new_low = low + inc  # wraps modulo 2**32
    carry = (new_low < low).astype(jnp.uint32)
    return jnp.stack([high + inc_high + carry, new_low], axis=-1)


def mul(a, b) -> jax.Array:
    """The exact product of two non-negative values below 2**32 (uint32 arrays or Python ints)
    as a counter: ``(high, low)`` words, from 16-bit halves (a product of events per read and
    reads per step exceeds 2**32 for a large convolution: VGG-8's 147,456 cross-points read by
    131,072 patches of a batch of 128 is 1.9e10)."""
    a, b = (jnp.asarray(np.uint32(v) if isinstance(v, int) else v).astype(jnp.uint32) for v in (a, b))
    mask = jnp.uint32(0xFFFF)
    a_hi, a_lo = a >> 16, a & mask
    b_hi, b_lo = b >> 16, b & mask
    lo_lo = a_lo * b_lo
    mid1, mid2 = a_hi * b_lo, a_lo * b_hi  # each < 2**32
    high = a_hi * b_hi + (mid1 >> 16) + (mid2 >> 16)
    low = lo_lo
    for mid in (mid1, mid2):
        part = (mid & mask) << 16
        new_low = low + part
        high = high + (new_low < low).astype(jnp.uint32)
        low = new_low
    return jnp.stack(jnp.broadcast_arrays(high, low), axis=-1)


def to_int(counter) -> int | np.ndarray:
    """The exact value(s) of a counter as Python int(s)."""
    arr = np.asarray(counter, dtype=np.uint64)
    if arr.shape == (2,):
        return int(arr[0]) * 2**32 + int(arr[1])
    flat = arr.reshape(-1, 2)
    return np.array([int(h) * 2**32 + int(lo) for h, lo in flat], dtype=object).reshape(arr.shape[:-1])
