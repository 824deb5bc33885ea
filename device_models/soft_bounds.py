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

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, in_use, register_model

__all__ = ["SoftBounds", "SoftBoundsReference"]


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


def _flag_rule() -> ParameterRule:
    return ParameterRule(lambda v: v in (0.0, 1.0), "true or false", optional=True, flag=True)


def _spread_rule() -> ParameterRule:
    return ParameterRule(lambda v: v >= 0, ">= 0", optional=True)


@register_model
@dataclasses.dataclass(frozen=True)
class SoftBoundsReference(AbstractPulsedModel):
    """Soft bounds read against a reference device (aihwkit ``SoftBoundsReferenceDevice``).

    The steps are those of ``SoftBounds``; in addition each cross-point's slopes
    :math:`s_\\pm / b_\\pm` get their own spread (``slope_up_dtod``/``slope_down_dtod``, which
    move the bounds), and each cross-point is read against a reference
    :math:`r = r_{mean} + r_{std}\\xi` (a second device programmed once), plus the cross-point's
    own symmetry point :math:`(s_+ - s_-)/(s_+/b_{max} - s_-/b_{min})` when
    ``subtract_symmetry_point`` is on: the weight is the state minus :math:`r`
    (``device_reference``, used as the layer's ``Reference``). aihwkit's
    default noise for this class is additive (``mult_noise = false``).

    Reference: IBM aihwkit, ``rpu_softbounds_reference_device.cpp`` (``populate``).
    """

    name: ClassVar[str] = "soft-bounds-reference"
    pulsed_defaults: ClassVar[dict[str, float]] = {"mult_noise": 0.0}
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "slope_up_dtod": _spread_rule(),
        "slope_down_dtod": _spread_rule(),
        "reference_mean": ParameterRule(lambda v: True, "any finite number", optional=True),
        "reference_std": _spread_rule(),
        "subtract_symmetry_point": _flag_rule(),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=lambda: PulsedParams(mult_noise=0.0))
    slope_up_dtod: jax.Array | float = 0.0  # device-to-device spread of the up slope (fraction)
    slope_down_dtod: jax.Array | float = 0.0  # device-to-device spread of the down slope (fraction)
    reference_mean: jax.Array | float = 0.0  # mean of the reference (weight units)
    reference_std: jax.Array | float = 0.0  # device-to-device spread of the reference (weight units)
    subtract_symmetry_point: jax.Array | float = 0.0  # flag: the reference sits at the symmetry point

    def extra_draws(self) -> tuple[str, ...]:
        spreads = (
            ("slope_up", self.slope_up_dtod),
            ("slope_down", self.slope_down_dtod),
            ("reference", self.reference_std),
        )
        return tuple(n for n, v in spreads if in_use(v))

    def own_crosspoints(self, draws, common: dict) -> dict:
        # only devices with b_min < 0 < b_max get the slope spread (aihwkit); the bounds move
        # so that the step scale stays: b = s / (slope * |1 + dtod xi|)
        ex = draws.extra
        b_max, b_min = common["b_max"], common["b_min"]
        if "slope_up" not in ex and "slope_down" not in ex:
            return {}
        ok = (b_max > 0) & (b_min < 0)
        up = jnp.abs(1.0 + self.slope_up_dtod * ex["slope_up"]) if "slope_up" in ex else 1.0
        down = jnp.abs(1.0 + self.slope_down_dtod * ex["slope_down"]) if "slope_down" in ex else 1.0
        return {"b_max": jnp.where(ok, b_max / up, b_max), "b_min": jnp.where(ok, b_min / down, b_min)}

    def device_reference(self, cp: CrossPoints, draws) -> jax.Array:
        """Each cross-point's reference (weight = state - reference)."""
        ref = self.reference_mean + (
            self.reference_std * draws.extra["reference"] if "reference" in draws.extra else jnp.zeros_like(cp.b_max)
        )
        ok = (cp.b_max > 0) & (cp.b_min < 0)
        denom = cp.scale_up / jnp.where(ok, cp.b_max, 1.0) - cp.scale_down / jnp.where(ok, cp.b_min, -1.0)
        safe = jnp.where(ok & (denom != 0), denom, 1.0)
        sp = jnp.where(ok & (denom != 0), (cp.scale_up - cp.scale_down) / safe, 0.0)
        return ref + jnp.where(jnp.asarray(self.subtract_symmetry_point) > 0.5, sp, 0.0)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return (cp.scale_up * _fraction_left(w, cp.b_max)).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return (cp.scale_down * _fraction_left(w, cp.b_min)).astype(w.dtype)
