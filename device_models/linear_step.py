"""Linear-step device: the step changes linearly with the state (aihwkit ``LinearStepDevice``).

.. math::
    \\Delta w_+ = s_+ \\max\\!\\left(1 - \\gamma_+ \\frac{w}{w_{max}}, 0\\right), \\qquad
    \\Delta w_- = s_- \\max\\!\\left(1 - \\gamma_- \\frac{w}{w_{min}}, 0\\right)

with the cross-point's step scales :math:`s_\\pm` and the *nominal* bounds
:math:`w_{max}, w_{min}` of the card (aihwkit ``mean_bound_reference=True``, its default: the
slope does not depend on the cross-point's own bound). :math:`\\gamma = 0` is the constant
step; :math:`\\gamma = 1` with :math:`w_{max} = b_{max}` is soft bounds. The noise of each pulse
multiplies the step (aihwkit ``mult_noise=True``, its default).

Differences from aihwkit, by design: no device-to-device spread of :math:`\\gamma`
(aihwkit ``gamma_up_dtod``/``gamma_down_dtod``, default 0.05), no additive-noise option
(``mult_noise=False``), and the factor is kept >= 0, so for :math:`\\gamma > 1` the step stops
at zero instead of reversing (aihwkit lets it reverse; the hard bounds then hold it).

References:
    IBM aihwkit, ``LinearStepDevice`` (``src/rpucuda/rpu_linearstep_device.cpp``);
    Rasch et al., "A flexible and fast PyTorch toolkit for simulating training and inference
    on analog crossbar arrays", AICAS 2021.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, register_model

__all__ = ["LinearStep"]


def _linear_factor(gamma: jax.Array, w: jax.Array, w_ref: jax.Array) -> jax.Array:
    """``max(1 - gamma * w / w_ref, 0)``; 1 where ``w_ref == 0`` (aihwkit: zero slope), finite gradients."""
    ok = w_ref != 0
    safe = jnp.where(ok, w_ref, 1.0)
    return jnp.maximum(1.0 - jnp.where(ok, gamma * w / safe, 0.0), 0.0)


@register_model
@dataclasses.dataclass(frozen=True)
class LinearStep(AbstractPulsedModel):
    """Linear step with hard bounds.

    Args:
      pulsed: the common pulsed-device parameters.
      gamma_up: relative decrease of the up step from ``w = 0`` to ``w = w_max`` (>= 0, unit 1).
      gamma_down: relative decrease of the down step from ``w = 0`` to ``w = w_min`` (>= 0, unit 1).

    Defaults are aihwkit's ``LinearStepDevice`` class defaults (``gamma_up = gamma_down = 0``).

    Example:
      >>> model = LinearStep(PulsedParams(dw_min=0.002, w_max=1.1724, w_min=-0.8276), gamma_up=0.1153, gamma_down=0.5085)
    """

    name: ClassVar[str] = "linear-step"
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "gamma_up": ParameterRule(lambda v: v >= 0, ">= 0"),
        "gamma_down": ParameterRule(lambda v: v >= 0, ">= 0"),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    gamma_up: jax.Array | float = 0.0  # slope of the up step (fraction of the step at w = 0)
    gamma_down: jax.Array | float = 0.0  # slope of the down step (fraction of the step at w = 0)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return (cp.scale_up * _linear_factor(self.gamma_up, w, self.pulsed.w_max)).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return (cp.scale_down * _linear_factor(self.gamma_down, w, self.pulsed.w_min)).astype(w.dtype)
