"""Numerics shared by the device models and the update rungs: functions that stay finite in
value *and* gradient at the edges (zero variance, a zero base, a bound), so device parameters
can be fitted and differentiated through (STYLE.md 9: the double ``where``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["safe_pow", "safe_sqrt", "up_down_bias"]


def safe_sqrt(x: jax.Array) -> jax.Array:
    """:math:`\\sqrt{\\max(x, 0)}` with gradient 0 (not inf, which times 0 gives NaN) at ``x <= 0``.

    Example:
      >>> float(jax.grad(lambda v: safe_sqrt(v))(0.0))
      0.0
    """
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0)


def safe_pow(base: jax.Array, gamma: jax.Array) -> jax.Array:
    """``base ** gamma`` for ``base`` in [0, 1] and ``gamma >= 0``, with ``0 ** 0 = 1``.

    The power is only evaluated at a positive base, so neither the value nor the gradient
    (``gamma * base**(gamma - 1)``, ``log(base) * base**gamma``) is inf or NaN.
    """
    positive = base > 0
    safe = jnp.where(positive, base, 1.0)
    return jnp.where(positive, safe**gamma, jnp.where(gamma == 0, 1.0, 0.0))


def up_down_bias(up_down: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The factors :math:`(u_+, u_-)` of the up and down steps for an asymmetry ``up_down``:
    :math:`(1, 1 - \\text{up\\_down})` if ``up_down > 0``, else :math:`(1 + \\text{up\\_down}, 1)`
    (aihwkit's ``PulsedDevice``)."""
    return jnp.where(up_down > 0, 1.0, 1.0 + up_down), jnp.where(up_down > 0, 1.0 - up_down, 1.0)
