"""The fittable models: their own parameters, and the model a parameter vector stands for.

A fit's parameter vector ``theta`` holds the model parameters named in ``_Spec``
(``names``) followed by one start state per sweep; ``_build_model`` turns its front part
into a device model and ``_replay`` drives that model, noise-free, through a pulse sequence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..protonic import BOLTZMANN_OVER_CHARGE_V_PER_K, Protonic
from ..pulsed import AbstractPulsedModel, PulsedParams, apply_pulses, nominal_crosspoints
from ..registry import MODELS

AUTO_CANDIDATES = ("constant-step", "soft-bounds", "linear-step", "pow-step", "exp-step", "piecewise-step")
FITTABLE_MODELS = (*AUTO_CANDIDATES, "protonic")
# model -> its own scalar parameters: (initial value, lower bound, upper bound)
_SPECIFIC: dict[str, dict[str, tuple[float, float, float]]] = {
    "constant-step": {},
    "soft-bounds": {},
    "linear-step": {"gamma_up": (0.5, 0.0, 50.0), "gamma_down": (0.5, 0.0, 50.0)},
    "pow-step": {"gamma_up": (1.0, 0.0, 50.0), "gamma_down": (1.0, 0.0, 50.0)},
    "exp-step": {
        "A_up": (0.3, -1e3, 1e3),
        "A_down": (0.3, -1e3, 1e3),
        "gamma_up": (2.0, 0.0, 100.0),
        "gamma_down": (2.0, 0.0, 100.0),
        "a": (0.5, -np.inf, np.inf),
        "b": (0.0, -np.inf, np.inf),
    },
    # v0_v: the field-law voltage V0 = 2 k_B T d / (q a) (bounds set per data set in make_problem)
    "protonic": {
        "saturation_up": (0.5, 0.0, 20.0),
        "saturation_down": (0.5, 0.0, 20.0),
        "width_exponent": (1.0, 0.0, 10.0),
        "v0_v": (1.7, 1e-3, 1e3),
    },
}
# Protonic constants held while fitting (the Protonic defaults): V0 is fitted, a follows from it.
_PROTONIC_THICKNESS_M = 10e-9
_PROTONIC_TEMPERATURE_K = 300.0


@dataclasses.dataclass(frozen=True)
class _Spec:
    """Static structure of a fit (hashable: a jit static argument)."""

    model: str
    names: tuple[str, ...]  # model parameters at the front of theta (starts follow)
    conductance: bool  # True: bounds are g_max/g_min in internal units, w range fixed to [-1, 1]
    n_up: int = 0  # piecewise table lengths
    n_down: int = 0
    ref: tuple[float, float, float] = (1.0, 1.0, 1.0)  # protonic: reference |V_up|, |V_down| (V), width (s)


def _build_model(spec: _Spec, theta: jax.Array) -> AbstractPulsedModel:
    """The device model whose parameters are the front of ``theta`` (weights in [-1, 1] for conductance)."""
    v = {n: theta[i] for i, n in enumerate(spec.names)}
    if spec.conductance:
        w_max, w_min = jnp.asarray(1.0, theta.dtype), jnp.asarray(-1.0, theta.dtype)
    else:
        w_max, w_min = v["w_max"], v["w_min"]
    zero = jnp.asarray(0.0, theta.dtype)
    pulsed = PulsedParams(
        dw_min=v["dw_min"],
        dw_min_dtod=zero,
        dw_min_std=zero,
        up_down=v["up_down"],
        up_down_dtod=zero,
        w_max=w_max,
        w_min=w_min,
        w_max_dtod=zero,
        w_min_dtod=zero,
    )
    if spec.model == "piecewise-step":
        up = jnp.stack([v[f"piecewise_up[{i}]"] for i in range(spec.n_up)])
        down = jnp.stack([v[f"piecewise_down[{i}]"] for i in range(spec.n_down)])
        return MODELS[spec.model](pulsed=pulsed, piecewise_up=up, piecewise_down=down)
    if spec.model == "protonic":
        return _protonic(spec, pulsed, v)
    return MODELS[spec.model](pulsed=pulsed, **{n: v[n] for n in _SPECIFIC[spec.model]})


def _protonic(spec: _Spec, pulsed: PulsedParams, v: dict[str, Any]):
    """The Protonic model at the reference pulse: V0 fitted, thickness and temperature held."""
    v_up, v_down, width = spec.ref
    hop = 2.0 * BOLTZMANN_OVER_CHARGE_V_PER_K * _PROTONIC_TEMPERATURE_K * _PROTONIC_THICKNESS_M / v["v0_v"]
    return Protonic(
        pulsed=pulsed,
        voltage_up_v=v_up,
        voltage_down_v=v_down,
        width_s=width,
        ref_voltage_up_v=v_up,
        ref_voltage_down_v=v_down,
        ref_width_s=width,
        hop_distance_m=hop,
        thickness_m=_PROTONIC_THICKNESS_M,
        temperature_k=_PROTONIC_TEMPERATURE_K,
        width_exponent=v["width_exponent"],
        saturation_up=v["saturation_up"],
        saturation_down=v["saturation_down"],
    )


def _maps(spec: _Spec, theta: jax.Array):
    """(u -> w, w -> u): internal data units to model weights and back."""
    if not spec.conductance:
        return (lambda u: u), (lambda w: w)
    i_max, i_min = spec.names.index("g_max"), spec.names.index("g_min")
    g_max, g_min = theta[i_max], theta[i_min]
    span = g_max - g_min
    return (lambda u: -1.0 + 2.0 * (u - g_min) / span), (lambda w: g_min + (w + 1.0) * 0.5 * span)


def _replay(
    model: AbstractPulsedModel,
    w0: jax.Array,
    pulses: jax.Array,
    voltage: jax.Array | None = None,
    width: jax.Array | None = None,
) -> jax.Array:
    """Noise-free states (L, S) of S nominal devices started at ``w0`` and driven by ``pulses``.

    For a ``Protonic`` model, ``voltage``/``width`` (L, S), where given,
    set each pulse's operating voltage (both polarities) and width, so its step is scaled by
    the model's voltage/width law relative to the reference pulse.
    """
    cp = nominal_crosspoints(model, w0.shape, dtype=w0.dtype)
    per_pulse = isinstance(model, Protonic) and (voltage is not None or width is not None)
    L = pulses.shape[0] - 1
    volts = voltage[1:] if voltage is not None else jnp.zeros((L, 0))
    widths = width[1:] if width is not None else jnp.zeros((L, 0))

    def body(w, inp):
        p, vt, tt = inp
        mdl = model
        if per_pulse:
            change = {}
            if voltage is not None:
                change.update(voltage_up_v=vt, voltage_down_v=vt)
            if width is not None:
                change["width_s"] = tt
            mdl = dataclasses.replace(model, **change)
        w = apply_pulses(mdl, cp, w, p, key=None)
        return w, w

    _, ws = jax.lax.scan(body, w0, (pulses[1:], volts, widths))
    return jnp.concatenate([w0[None], ws], axis=0)
