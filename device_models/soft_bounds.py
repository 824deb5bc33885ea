"""Soft-bounds device: the step shrinks linearly to zero at the bound it moves toward
(aihwkit ``SoftBoundsDevice``).

.. math::
    \\Delta w_+ = s_+ \\left(1 - \\frac{w}{b_{max}}\\right), \\qquad
    \\Delta w_- = s_- \\left(1 - \\frac{w}{b_{min}}\\right)

The noise of each pulse multiplies the step (aihwkit ``mult_noise=True``). The division uses
the double-``where`` trick, so a cross-point whose drawn bound is exactly 0 gives a zero step
and finite gradients.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, PulsedParams, register_model

__all__ = ["SoftBounds"]


def _fraction_left(w: jax.Array, bound: jax.Array) -> jax.Array:
    """``max(1 - w / bound, 0)``, finite (value and gradient) where ``bound == 0``."""
    ok = bound != 0
    safe = jnp.where(ok, bound, 1.0)
    return jnp.where(ok, jnp.maximum(1.0 - w / safe, 0.0), 0.0)


@register_model
@dataclasses.dataclass(frozen=True)
class SoftBounds(AbstractPulsedModel):
    """Soft bounds: steps vanish linearly at the cross-point's bounds.

    Example:
      >>> model = SoftBounds(PulsedParams(dw_min=0.001))
    """

    name: ClassVar[str] = "soft-bounds"
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return (cp.scale_up * _fraction_left(w, cp.b_max)).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return (cp.scale_down * _fraction_left(w, cp.b_min)).astype(w.dtype)
