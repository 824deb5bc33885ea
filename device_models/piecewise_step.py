"""Piecewise-step device: the step is read off a table of relative step sizes over the range
(aihwkit ``PiecewiseStepDevice``; how a measured step-versus-state curve enters).

With a table :math:`v_0, \\dots, v_{n-1}` at equally spaced nodes over the cross-point's own
range :math:`[b_{min}, b_{max}]` (first node at :math:`b_{min}`, last at :math:`b_{max}`):

.. math::
    p = \\mathrm{clip}\\!\\left(\\frac{w - b_{min}}{b_{max} - b_{min}}(n - 1), 0, n - 1\\right),
    \\quad k = \\min(\\lfloor p \\rfloor, n - 2), \\quad t = p - k,

    \\Delta w_\\pm = s_\\pm \\left((1 - t)\\, v^\\pm_k + t\\, v^\\pm_{k+1}\\right)

with separate tables :math:`v^+` (``piecewise_up``) and :math:`v^-` (``piecewise_down``) and
the cross-point's step scales :math:`s_\\pm`. A one-entry table, or a cross-point whose bounds
coincide, uses :math:`v_0` (as aihwkit). The table values are relative to :math:`s_\\pm`:
``(1.5, 1, 1.5)`` gives :math:`s_\\pm` at mid-range and :math:`1.5 s_\\pm` at the bounds.

The tables are pytree leaves (differentiable, so a measured curve can be fitted): a card
stores them as tuples of Python floats, which keeps a model hashable; a ``jax.Array`` of shape
``(n,)`` works too. The two tables may differ in length (aihwkit requires equal lengths).
The interpolation runs in at least float32. The noise of each pulse multiplies the step.

References:
    IBM aihwkit, ``PiecewiseStepDevice`` (``src/rpucuda/rpu_piecewisestep_device.cpp``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, register_model

__all__ = ["PiecewiseStep"]


def _interpolate(table, w: jax.Array, lo: jax.Array, hi: jax.Array) -> jax.Array:
    """Relative step at ``w``, linearly interpolated from ``table`` at nodes over ``[lo, hi]``."""
    dtype = jnp.promote_types(w.dtype, jnp.float32)
    v = jnp.asarray(table, dtype)
    n = v.shape[-1]
    if n == 1:
        return jnp.broadcast_to(v[0], w.shape)
    w, lo, hi = (jnp.asarray(x, dtype) for x in (w, lo, hi))
    span = hi - lo
    ok = span > 0
    safe = jnp.where(ok, span, 1.0)
    pos = jnp.clip((w - lo) / safe * (n - 1), 0.0, n - 1)
    k = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, n - 2)
    t = pos - k
    value = v[k] * (1.0 - t) + v[k + 1] * t
    return jnp.where(ok, value, v[0])


@register_model
@dataclasses.dataclass(frozen=True)
class PiecewiseStep(AbstractPulsedModel):
    """Piecewise-linear step-versus-state table with hard bounds.

    Args:
      pulsed: the common pulsed-device parameters.
      piecewise_up: relative up-step sizes at equally spaced nodes over ``[b_min, b_max]``
        (non-empty, each >= 0, unit 1).
      piecewise_down: the same for down steps.

    Defaults are aihwkit's ``PiecewiseStepDevice`` class defaults (``[1]``: a constant step).

    Example:
      >>> model = PiecewiseStep(PulsedParams(dw_min=0.001), piecewise_up=(1.5, 1.0, 0.5), piecewise_down=(0.5, 1.0, 1.5))
    """

    name: ClassVar[str] = "piecewise-step"
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "piecewise_up": ParameterRule(lambda v: v >= 0, ">= 0", table=True),
        "piecewise_down": ParameterRule(lambda v: v >= 0, ">= 0", table=True),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    piecewise_up: tuple[float, ...] | jax.Array = (1.0,)  # relative up steps at the nodes (unit 1)
    piecewise_down: tuple[float, ...] | jax.Array = (1.0,)  # relative down steps at the nodes (unit 1)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        rel = jnp.maximum(_interpolate(self.piecewise_up, w, cp.b_min, cp.b_max), 0.0)
        return (cp.scale_up * rel).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        rel = jnp.maximum(_interpolate(self.piecewise_down, w, cp.b_min, cp.b_max), 0.0)
        return (cp.scale_down * rel).astype(w.dtype)
