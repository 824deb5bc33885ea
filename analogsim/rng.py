"""Random-number helpers shared by the periphery and the pulsed update.

Every draw in analogsim is a pure function of a key passed in; these helpers only choose how the
bits are made.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

FAST_IMPL = "philox4x32"  # counter-based (Salmon et al., 2011), no rolled loop on CPU


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
