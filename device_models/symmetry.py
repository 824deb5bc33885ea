"""Each cross-point's symmetry point: where an up and a down step are equal
(``symmetry_point``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints

__all__ = ["symmetry_point"]


def symmetry_point(model: AbstractPulsedModel, cp: CrossPoints, iterations: int = 40) -> jax.Array:
    """Each cross-point's *symmetry point*: the state where an up and a down step are equal, so
    that random up/down pulses leave it in place on average (and pull every other state toward
    it).

    Found by bisection of :math:`\\Delta w_+(w) - \\Delta w_-(w)` on ``[b_min, b_max]`` (it
    falls with ``w`` for every model with saturating steps). Where the difference does not
    change sign (a constant step, with or without asymmetry) there is no single symmetry point
    and 0 is returned.

    Args:
      model: the device model.
      cp: the array's cross-point parameters.
      iterations: bisection steps (40 halve the bound range below 1e-12).

    Returns:
      The symmetry points, shaped like ``cp.b_max``.
    """
    lo = jnp.asarray(cp.b_min)
    hi = jnp.asarray(cp.b_max)
    lo, hi = jnp.broadcast_arrays(lo, hi)

    def diff(w):
        return model.step_up(cp, w) - model.step_down(cp, w)

    f_lo, f_hi = diff(lo), diff(hi)
    crosses = (f_lo > 0) & (f_hi < 0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = diff(mid) > 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return jnp.where(crosses, 0.5 * (lo + hi), 0.0)
