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

__all__ = ["add", "to_int", "zeros"]


def zeros(shape: tuple[int, ...] = ()) -> jax.Array:
    """A zero counter (or an array of counters of ``shape``)."""
    return jnp.zeros((*shape, 2), jnp.uint32)


def add(counter: jax.Array, increment: jax.Array) -> jax.Array:
    """Add a non-negative increment (< 2**32) exactly; returns the new counter."""
    inc = jnp.asarray(increment).astype(jnp.uint32)
    high, low = counter[..., 0], counter[..., 1]
    new_low = low + inc  # wraps modulo 2**32
    carry = (new_low < low).astype(jnp.uint32)
    return jnp.stack([high + carry, new_low], axis=-1)


def to_int(counter) -> int | np.ndarray:
    """The exact value(s) of a counter as Python int(s)."""
    arr = np.asarray(counter, dtype=np.uint64)
    if arr.shape == (2,):
        return int(arr[0]) * 2**32 + int(arr[1])
    flat = arr.reshape(-1, 2)
    return np.array([int(h) * 2**32 + int(lo) for h, lo in flat], dtype=object).reshape(arr.shape[:-1])
