"""Exponential-step device: the step falls off exponentially toward one end of the range
(aihwkit ``ExpStepDevice``, a fit to measured ReRAM and CMOS-like responses).

.. math::
    z = \\frac{2 a\\, w}{b_{max} - b_{min}} + b, \\qquad
    \\Delta w_+ = s_+ \\max\\!\\left(1 - A_+ e^{\\gamma_+ z}, 0\\right), \\qquad
    \\Delta w_- = s_- \\max\\!\\left(1 - A_- e^{-\\gamma_- z}, 0\\right)

with the cross-point's step scales :math:`s_\\pm` and its own bounds :math:`b_{max}, b_{min}`.
:math:`A, \\gamma, a, b` are tile-wide fit parameters (no device-to-device spread, as in
aihwkit). A cross-point whose bounds coincide does not move (aihwkit skips the update); the
division uses the double-``where`` trick so values and gradients stay finite there. The
exponent is clipped to [-80, 80] (``exp(80)`` is finite in float32 and bfloat16), so extreme
parameters give a zero or a very large (then clipped) step, never inf or NaN. The noise of
each pulse multiplies the step (aihwkit's default), or, when ``dw_min_std_add`` or
``dw_min_std_slope`` is non-zero, has aihwkit's "complex" standard deviation
:math:`\\sigma_{c2c}(|\\Delta w| + \\sigma_{add} + \\sigma_{slope}|w|)` (``update_once_complex_noise``).

References:
    Gong et al., "Signal and noise extraction from analog memory elements for neuromorphic
    computing", Nat. Commun. 9, 2102 (2018). IBM aihwkit, ``ExpStepDevice``
    (``src/rpucuda/rpu_expstep_device.cpp``).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, register_model

__all__ = ["ExpStep"]

_EXPONENT_LIMIT = 80.0  # exp(80) ~ 5.5e34 < float32/bfloat16 max ~ 3.4e38


_ANY_FINITE = ParameterRule(lambda v: True, "a finite number (any sign)")  # cards check finiteness for every number


def _exp_factor(amplitude: jax.Array, exponent: jax.Array) -> jax.Array:
    """``max(1 - amplitude * exp(exponent), 0)`` with the exponent clipped to +-80."""
    return jnp.maximum(1.0 - amplitude * jnp.exp(jnp.clip(exponent, -_EXPONENT_LIMIT, _EXPONENT_LIMIT)), 0.0)


@register_model
@dataclasses.dataclass(frozen=True)
class ExpStep(AbstractPulsedModel):
    """Exponential step with hard bounds.

    Args:
      pulsed: the common pulsed-device parameters.
      A_up, A_down: amplitudes of the exponential fall-off (any sign; unit 1).
      gamma_up, gamma_down: exponential rates (>= 0; unit 1).
      a: slope of ``z`` over the normalised range (unit 1).
      b: offset of ``z`` (unit 1).

    Defaults are aihwkit's ``ExpStepDevice`` class defaults.

    Example:
      >>> model = ExpStep(PulsedParams(dw_min=0.00135, up_down=0.259359, w_max=1.0, w_min=-1.0),
      ...                 A_up=-1.18445, A_down=-0.081404, gamma_up=5.0, gamma_down=5.0, a=-0.5, b=-0.5)
    """

    name: ClassVar[str] = "exp-step"
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "A_up": _ANY_FINITE,
        "A_down": _ANY_FINITE,
        "gamma_up": ParameterRule(lambda v: v >= 0, ">= 0"),
        "gamma_down": ParameterRule(lambda v: v >= 0, ">= 0"),
        "a": _ANY_FINITE,
        "b": _ANY_FINITE,
        "dw_min_std_add": ParameterRule(lambda v: v >= 0, ">= 0", optional=True),
        "dw_min_std_slope": ParameterRule(lambda v: v >= 0, ">= 0", optional=True),
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    A_up: jax.Array | float = 0.00081  # amplitude, up direction (unit 1)
    A_down: jax.Array | float = 0.36833  # amplitude, down direction (unit 1)
    gamma_up: jax.Array | float = 12.44625  # exponential rate, up direction (unit 1)
    gamma_down: jax.Array | float = 12.78785  # exponential rate, down direction (unit 1)
    a: jax.Array | float = 0.244  # slope of z over the normalised range (unit 1)
    b: jax.Array | float = 0.2425  # offset of z (unit 1)
    dw_min_std_add: jax.Array | float = 0.0  # additive term of the complex noise (weight units)
    dw_min_std_slope: jax.Array | float = 0.0  # state-proportional term of the complex noise (unit 1)

    def step_noise_std(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        step = self.step_up(cp, w) if up else self.step_down(cp, w)
        extra = self.dw_min_std_add + self.dw_min_std_slope * jnp.abs(w)
        complex_noise = (self.dw_min_std_add != 0) | (self.dw_min_std_slope != 0)
        return (cp.dw_min_std * (step + jnp.where(complex_noise, extra, 0.0))).astype(w.dtype)

    def _z(self, cp: CrossPoints, w: jax.Array) -> tuple[jax.Array, jax.Array]:
        span = cp.b_max - cp.b_min
        ok = span > 0
        safe = jnp.where(ok, span, 1.0)
        return 2.0 * self.a * w / safe + self.b, ok

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        z, ok = self._z(cp, w)
        step = cp.scale_up * _exp_factor(self.A_up, self.gamma_up * z)
        return jnp.where(ok, step, 0.0).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        z, ok = self._z(cp, w)
        step = cp.scale_down * _exp_factor(self.A_down, -self.gamma_down * z)
        return jnp.where(ok, step, 0.0).astype(w.dtype)
