"""Linear-step device: the step changes linearly with the state (aihwkit ``LinearStepDevice``).

.. math::
    \\Delta w_+ = s_+ \\max\\!\\left(1 - \\gamma_+ \\frac{w}{w_{max}}, 0\\right), \\qquad
    \\Delta w_- = s_- \\max\\!\\left(1 - \\gamma_- \\frac{w}{w_{min}}, 0\\right)

with the cross-point's step scales :math:`s_\\pm` and the *nominal* bounds
:math:`w_{max}, w_{min}` of the card (aihwkit ``mean_bound_reference=True``, its default: the
slope does not depend on the cross-point's own bound). :math:`\\gamma = 0` is the constant
step; :math:`\\gamma = 1` with :math:`w_{max} = b_{max}` is soft bounds. The noise of each pulse
multiplies the step (aihwkit ``mult_noise=True``, its default).

Each cross-point draws its own slopes, :math:`|\\gamma_\\pm + \\sigma_{\\gamma_\\pm}\\xi|`
(``gamma_up_dtod``/``gamma_down_dtod``, aihwkit default 0.05; the magnitude unless
``allow_increasing``), and ``mean_bound_reference = false`` takes the cross-point's own bound
as :math:`w_{max}, w_{min}`. The factor is kept >= 0, so for :math:`\\gamma > 1` the step stops at
zero instead of reversing (aihwkit lets it reverse; the hard bounds then hold it): the one
difference from aihwkit, by design.

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

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, in_use, register_model

__all__ = ["LinearStep"]


def _flag(rule_text: str) -> ParameterRule:
    return ParameterRule(lambda v: v in (0.0, 1.0), rule_text, optional=True, flag=True)


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
        "gamma_up_dtod": ParameterRule(lambda v: v >= 0, ">= 0", optional=True),
        "gamma_down_dtod": ParameterRule(lambda v: v >= 0, ">= 0", optional=True),
        "allow_increasing": _flag("true or false"),
        "mean_bound_reference": _flag("true or false"),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    gamma_up: jax.Array | float = 0.0  # slope of the up step (fraction of the step at w = 0)
    gamma_down: jax.Array | float = 0.0  # slope of the down step (fraction of the step at w = 0)
    gamma_up_dtod: jax.Array | float = 0.05  # device-to-device spread of gamma_up (absolute)
    gamma_down_dtod: jax.Array | float = 0.05  # device-to-device spread of gamma_down (absolute)
    allow_increasing: jax.Array | float = 0.0  # flag: a drawn slope may be negative (step grows)
    mean_bound_reference: jax.Array | float = 1.0  # flag: slopes relative to the nominal bounds

    def extra_draws(self) -> tuple[str, ...]:
        return tuple(
            n for n, dtod in (("shape_up", self.gamma_up_dtod), ("shape_down", self.gamma_down_dtod)) if in_use(dtod)
        )

    def own_crosspoints(self, draws, common: dict) -> dict:
        def slope(gamma, dtod, name):
            g = gamma + dtod * draws.extra[name] if name in draws.extra else jnp.asarray(gamma)
            return jnp.where(jnp.asarray(self.allow_increasing) > 0.5, g, jnp.abs(g))

        return {
            "shape_up": slope(self.gamma_up, self.gamma_up_dtod, "shape_up"),
            "shape_down": slope(self.gamma_down, self.gamma_down_dtod, "shape_down"),
        }

    def _reference(self, nominal, own):
        return jnp.where(jnp.asarray(self.mean_bound_reference) > 0.5, nominal, own)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        gamma = self.gamma_up if cp.shape_up is None else cp.shape_up
        ref = self._reference(self.pulsed.w_max, cp.b_max)
        return (cp.scale_up * _linear_factor(gamma, w, ref)).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        gamma = self.gamma_down if cp.shape_down is None else cp.shape_down
        ref = self._reference(self.pulsed.w_min, cp.b_min)
        return (cp.scale_down * _linear_factor(gamma, w, ref)).astype(w.dtype)
