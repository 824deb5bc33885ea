"""Constant-step device: every pulse moves the state by the same amount (aihwkit
``ConstantStepDevice``).

.. math::
    \\Delta w_+ = s_+, \\qquad \\Delta w_- = s_-

with the cross-point's own step scales :math:`s_\\pm` (see
``device_models.pulsed.draw_crosspoints``), then cycle-to-cycle noise and hard bounds.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax

from .pulsed import AbstractPulsedModel, CrossPoints, PulsedParams, register_model

__all__ = ["ConstantStep"]


@register_model
@dataclasses.dataclass(frozen=True)
class ConstantStep(AbstractPulsedModel):
    """Constant step with hard bounds.

    Example:
      >>> model = ConstantStep(PulsedParams(dw_min=0.01))
    """

    name: ClassVar[str] = "constant-step"
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return cp.scale_up.astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return cp.scale_down.astype(w.dtype)
