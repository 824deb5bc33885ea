"""Power-step device: the step is a power of the distance to the bound it moves toward
(aihwkit ``PowStepDevice``, a shifted form of the Fusi & Abbott synapse).

.. math::
    \\omega = \\frac{b_{max} - w}{b_{max} - b_{min}}, \\qquad
    \\Delta w_+ = s_+\\, \\omega^{\\gamma_+}, \\qquad
    \\Delta w_- = s_-\\, (1 - \\omega)^{\\gamma_-}

with the cross-point's step scales :math:`s_\\pm` and its own bounds. Unlike most models the step
at ``w = 0`` is not :math:`s_\\pm` (for symmetric bounds it is :math:`s_\\pm 2^{-\\gamma}`), as in
aihwkit. :math:`\\gamma = 1` is soft bounds. A cross-point whose bounds coincide does not move
(aihwkit skips the update). :math:`\\omega^{\\gamma}` uses the double-``where`` trick, so at
:math:`\\omega = 0` the value is 0 (1 if :math:`\\gamma = 0`) and the gradients are finite.

aihwkit parametrises the exponents as ``pow_gamma`` and ``pow_up_down``
(:math:`\\gamma_+ = \\gamma(1 + \\min(\\beta, 0))`, :math:`\\gamma_- = \\gamma(1 - \\max(\\beta, 0))`
in its C++ ``populate``); here they are given directly. Each cross-point draws its own
exponents as aihwkit does: :math:`\\gamma_\\pm + \\bar\\gamma(\\sigma_g\\xi_1 \\pm \\sigma_{ud}\\xi_2)` with
:math:`\\bar\\gamma = \\max(\\gamma_+, \\gamma_-)` (aihwkit's ``pow_gamma``), ``pow_gamma_dtod``
(default 0.1) and ``pow_up_down_dtod`` (default 0), taken in magnitude (``enforce_consistency``).

References:
    Fusi & Abbott, "Limits on the memory storage capacity of bounded synapses", Nat. Neurosci.
    10, 485 (2007); Frascaroli et al., "Evidence of soft bound behaviour in analogue memristive
    devices for neuromorphic computing", Sci. Rep. 8, 7178 (2018). IBM aihwkit,
    ``PowStepDevice`` (``src/rpucuda/rpu_powstep_device.cpp``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .numerics import safe_pow
from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, in_use, register_model

__all__ = ["PowStep"]


@register_model
@dataclasses.dataclass(frozen=True)
class PowStep(AbstractPulsedModel):
    """Power step with hard bounds.

    Args:
      pulsed: the common pulsed-device parameters.
      gamma_up: exponent of the up step (>= 0, unit 1).
      gamma_down: exponent of the down step (>= 0, unit 1).

    Defaults are aihwkit's ``PowStepDevice`` class defaults (``pow_gamma = 1``,
    ``pow_up_down = 0``, so ``gamma_up = gamma_down = 1``).

    Example:
      >>> model = PowStep(PulsedParams(dw_min=0.001), gamma_up=2.0, gamma_down=0.5)
    """

    name: ClassVar[str] = "pow-step"
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "gamma_up": ParameterRule(lambda v: v >= 0, ">= 0"),
        "gamma_down": ParameterRule(lambda v: v >= 0, ">= 0"),
        "pow_gamma_dtod": ParameterRule(lambda v: v >= 0, ">= 0", optional=True),
        "pow_up_down_dtod": ParameterRule(lambda v: v >= 0, ">= 0", optional=True),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    gamma_up: jax.Array | float = 1.0  # exponent of the up step (unit 1)
    gamma_down: jax.Array | float = 1.0  # exponent of the down step (unit 1)
    pow_gamma_dtod: jax.Array | float = 0.1  # device-to-device spread of both exponents (fraction)
    pow_up_down_dtod: jax.Array | float = 0.0  # device-to-device spread of their asymmetry (fraction)

    def extra_draws(self) -> tuple[str, ...]:
        return tuple(
            n for n, v in (("shape_up", self.pow_gamma_dtod), ("shape_down", self.pow_up_down_dtod)) if in_use(v)
        )

    def own_crosspoints(self, draws, common: dict) -> dict:
        gamma = jnp.maximum(self.gamma_up, self.gamma_down)
        g = self.pow_gamma_dtod * draws.extra["shape_up"] if "shape_up" in draws.extra else 0.0
        r = self.pow_up_down_dtod * draws.extra["shape_down"] if "shape_down" in draws.extra else 0.0
        enforce = jnp.asarray(self.pulsed.enforce_consistency) > 0.5
        up, down = self.gamma_up + gamma * (g + r), self.gamma_down + gamma * (g - r)
        return {
            "shape_up": jnp.where(enforce, jnp.abs(up), up),
            "shape_down": jnp.where(enforce, jnp.abs(down), down),
        }

    @staticmethod
    def _fraction(num: jax.Array, cp: CrossPoints) -> tuple[jax.Array, jax.Array]:
        span = cp.b_max - cp.b_min
        ok = span > 0
        safe = jnp.where(ok, span, 1.0)
        return jnp.clip(num / safe, 0.0, 1.0), ok

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        omega, ok = self._fraction(cp.b_max - w, cp)
        gamma = self.gamma_up if cp.shape_up is None else cp.shape_up
        return jnp.where(ok, cp.scale_up * safe_pow(omega, gamma), 0.0).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        one_minus_omega, ok = self._fraction(w - cp.b_min, cp)
        gamma = self.gamma_down if cp.shape_down is None else cp.shape_down
        return jnp.where(ok, cp.scale_down * safe_pow(one_minus_omega, gamma), 0.0).astype(w.dtype)
