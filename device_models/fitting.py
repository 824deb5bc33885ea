"""Fit a pulsed device model to a measured conductance-versus-pulse curve.

The fit minimises, with :func:`scipy.optimize.least_squares` (trust-region reflective, box
bounds), the sum of squared differences between each measured reading and the model's
*noise-free* prediction, obtained by replaying the measured pulse sequence pulse by pulse
(:func:`~device_models.apply_pulses` with ``key=None`` inside a :func:`jax.lax.scan`). Each
device/cycle is replayed from its own first reading: its start state is a fitted nuisance
parameter (initialised at the first readings), so one noisy first reading does not bias the
whole sweep. The Jacobian comes from JAX (:func:`jax.jacfwd` of the residuals with respect to
the fitted parameters), in float64.

**Units and the mapping to weights.** Weight data (``weight`` column) are fitted in normalised
units directly: ``dw_min``, ``up_down``, ``w_max``, ``w_min`` and the model's own parameters.
Conductance data are fitted in siemens through the linear map of the device cards
(:mod:`device_models.cards`),

.. math::
    G = g_{min} + \\frac{w - w_{min}}{w_{max} - w_{min}} (g_{max} - g_{min}),
    \\qquad w_{min} = -1,\\ w_{max} = 1 \\text{ (assumed)},

so the fitted bounds are ``g_min``/``g_max`` (siemens, written to the card's ``[physical]``) and
``dw_min`` is a fraction of the half-range :math:`(g_{max} - g_{min})/2`.

**Which parameters are fitted.** Only those the data determine. After the fit, a parameter whose
Jacobian column vanishes (for example a hard bound the replay never reaches), or that lies along
a null direction of the column-normalised Jacobian (condition number above ``1e7``, e.g.
``w_max`` and ``gamma`` of ``linear-step`` when the data never saturate), is frozen at its value
and the fit is repeated; it goes to the card as ``assumed`` with the reason. ``exp-step``'s
``a`` and ``b`` are always frozen (only :math:`\\gamma a` and :math:`A e^{\\gamma b}` are
identifiable); both signs of ``a`` are tried. Without up (or down) pulses ``up_down`` is frozen
at 0. ``piecewise-step`` (the ``auto`` candidate fitted *directly from the data*) starts from the
mean smoothed step per state bin for up and down pulses and refines the tables by the same least
squares; its nodes span the measured range, the table length (3 to 9 nodes, about one per 80
pulses) is the one with the lowest AIC, ``up_down`` is 0 and ``dw_min`` is the mean table entry.

**Statistics reported** (:class:`FitResult`), with :math:`n` readings, :math:`k` free parameters
(model parameters plus one start state per sweep), residuals :math:`r_i` (state units):

- standard errors :math:`\\sqrt{\\mathrm{diag}(\\hat\\sigma^2 (J^T J)^{-1})}` at the optimum,
  :math:`\\hat\\sigma^2 = \\mathrm{RSS}/(n - k)`; they assume independent residuals, so they are
  optimistic when cycle-to-cycle noise (a random walk around the replay) dominates;
- :math:`R^2 = 1 - \\mathrm{RSS}/\\sum_i (y_i - \\bar y)^2`;
  :math:`\\mathrm{AIC} = n \\log(\\mathrm{RSS}/n) + 2k` (``fit_auto`` ranks by it);
- ``residual_std``: the RMS residual (state units);
- cycle-to-cycle and read noise. ``dw_min_std`` (written to the card) and ``read_noise_std``
  are the maximum-likelihood values of a state-space model of the residuals along each sweep:
  an accumulating random walk whose variance per pulse is :math:`\\sigma_{c2c}^2 d_j^2`
  (:math:`d_j` the predicted step, damped by the fitted curve's pull toward the bounds, and
  restarted where the curve sits clipped at a bound) plus white read noise
  :math:`\\sigma_{read}^2` on every reading, evaluated with a Kalman filter in JAX and
  maximised with L-BFGS-B. Two moment estimates are reported beside it:
  ``dw_min_std_all_scatter`` :math:`= \\sqrt{\\sum \\Delta r_j^2 / \\sum d_j^2}` (all
  pulse-to-pulse scatter of the residual steps :math:`\\Delta r_j` counted as cycle-to-cycle
  noise, an upper bound) and ``dw_min_std_lag1`` (the same with :math:`2 m \\sigma_{read}^2`
  removed, :math:`\\sigma_{read}^2 = \\max(0, -\\overline{\\Delta r_j \\Delta r_{j+1}})`),
  which is biased high when the read noise is several steps wide. A slow model misfit looks
  like a random walk to all three estimators.
- with several devices in the file, each device is fitted alone (same model) and the spread of
  its ``dw_min``, ``up_down``, ``w_max``, ``w_min`` (mapped to the pooled fit's weight units)
  gives ``dw_min_dtod`` (std/mean), ``up_down_dtod`` (std), ``w_max_dtod``/``w_min_dtod``
  (std/|mean|), sample std with ``ddof=1``.

Example:
  >>> from device_models import load_measurement, fit_auto
  >>> m = load_measurement("gong2018_hfo2_rram_pulses.csv")  # doctest: +SKIP
  >>> best = fit_auto(m)[0]  # doctest: +SKIP
  >>> print(best.to_card_toml("hfo2-fitted"))  # doctest: +SKIP

References:
    Gong et al., "Signal and noise extraction from analog memory elements for neuromorphic
    computing", Nat. Commun. 9, 2102 (2018) (separating cycle-to-cycle from read noise);
    Akaike, IEEE Trans. Autom. Control 19, 716 (1974).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import least_squares, minimize

from .measurements import Measurement
from .protonic import BOLTZMANN_OVER_CHARGE_V_PER_K, Protonic
from .pulsed import AbstractPulsedModel, PulsedParams, apply_pulses, nominal_crosspoints
from .registry import MODELS

__all__ = [
    "AUTO_CANDIDATES",
    "FITTABLE_MODELS",
    "FitProblem",
    "FitResult",
    "ParameterEstimate",
    "fit_auto",
    "fit_model",
    "make_problem",
    "replay_measurement",
]

AUTO_CANDIDATES = ("constant-step", "soft-bounds", "linear-step", "pow-step", "exp-step", "piecewise-step")
FITTABLE_MODELS = (*AUTO_CANDIDATES, "protonic")
_COND_LIMIT = 1e7  # condition number of the column-normalised Jacobian beyond which a parameter is frozen
_MAX_REPLAY = 50_000_000  # longest padded replay (pulses x sweeps) a fit will build
# aihwkit PulsedDevice defaults for what one measurement cannot determine (DESIGN.md)
_DTOD_DEFAULTS = {"dw_min_dtod": 0.3, "up_down_dtod": 0.01, "w_max_dtod": 0.3, "w_min_dtod": 0.3}
_DEFAULT_C2C = 0.3
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


# --------------------------------------------------------------------------------------------
# Problem set-up: the replay, the residuals and their Jacobian
# --------------------------------------------------------------------------------------------


class _Data(NamedTuple):
    """The arrays of one fit (a pytree, traced by jit)."""

    pulses: jax.Array  # (L, S) int8: pulse applied before time step t of sweep s (row 0 unused)
    voltage: jax.Array | None  # (L, S) float64 |V| of that pulse (volts), None without a voltage_v column
    width: jax.Array | None  # (L, S) float64 width of that pulse (seconds), None without a width_s column
    obs_t: jax.Array  # (n,) int32: time step of each reading, file order
    obs_s: jax.Array  # (n,) int32: sweep of each reading
    y: jax.Array  # (n,) float64: readings in internal units u = (state - center) / scale


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

    For a :class:`~device_models.Protonic` model, ``voltage``/``width`` (L, S), where given,
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


def _predict(spec: _Spec, theta: jax.Array, data: _Data) -> jax.Array:
    model = _build_model(spec, theta)
    to_w, to_u = _maps(spec, theta)
    u0 = theta[len(spec.names) :]
    states = _replay(model, to_w(u0), data.pulses, data.voltage, data.width)
    return to_u(states[data.obs_t, data.obs_s])


@functools.partial(jax.jit, static_argnums=0)
def _residuals(spec: _Spec, theta: jax.Array, data: _Data) -> jax.Array:
    return _predict(spec, theta, data) - data.y


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(spec: _Spec, theta: jax.Array, data: _Data) -> jax.Array:
    return jax.jacfwd(_residuals, argnums=1)(spec, theta, data)


@dataclasses.dataclass(frozen=True, eq=False)
class _Prepared:
    """A measurement turned into replay arrays, internal units and starting guesses."""

    data: _Data
    center: float  # state = center + scale * u
    scale: float
    labels: tuple[str, ...]  # sweep labels
    segment_rows: tuple[np.ndarray, ...]  # rows of each sweep
    positions: np.ndarray  # (n,) replay step of each reading
    segment_of_row: np.ndarray  # (n,) sweep of each reading
    smooth: tuple[np.ndarray, ...]  # smoothed readings per sweep (u units)
    has_up: bool
    has_down: bool


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or x.size < 3:
        return x.copy()
    window = min(window, x.size)
    c = np.cumsum(np.concatenate([[0.0], x]))
    half = window // 2
    idx = np.arange(x.size)
    lo = np.clip(idx - half, 0, x.size)
    hi = np.clip(idx + half + 1, 0, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def _prepare(m: Measurement) -> _Prepared:
    n = m.n_rows
    if m.unit == "S":
        lo, hi = float(m.state.min()), float(m.state.max())
        center, scale = 0.5 * (lo + hi), 0.5 * (hi - lo)
        if not scale > 0:
            raise ValueError(f"{m.source}: column {m.state_column!r}: all readings equal {lo!r}; nothing to fit")
    else:
        center, scale = 0.0, 1.0
        if float(m.state.max()) == float(m.state.min()):
            raise ValueError(f"{m.source}: column 'weight': all readings equal {m.state[0]!r}; nothing to fit")
    u = (m.state - center) / scale
    segments = m.segments()
    lengths = []
    positions = np.zeros(n, np.int64)
    seg_of_row = np.zeros(n, np.int64)
    for s, seg in enumerate(segments):
        pn = m.pulse_number[seg.rows]
        positions[seg.rows] = pn - pn[0]
        seg_of_row[seg.rows] = s
        lengths.append(int(pn[-1] - pn[0]) + 1)
    n_steps = max(lengths)
    if n_steps * len(segments) > _MAX_REPLAY:
        raise ValueError(
            f"{m.source}: column 'pulse_number': the replay would need {n_steps} steps x {len(segments)} sweeps; "
            f"allowed: at most {_MAX_REPLAY:,} (large gaps in pulse_number?)"
        )
    pulses = np.zeros((n_steps, len(segments)), np.int8)
    # per-pulse |voltage| and width (padding: 1.0, harmless where no pulse is applied)
    volts = None if m.voltage_v is None else np.ones((n_steps, len(segments)))
    widths = None if m.width_s is None else np.ones((n_steps, len(segments)))
    smooth = []
    for s, seg in enumerate(segments):
        pos = positions[seg.rows]
        pulses[1 : pos[-1] + 1, s] = np.repeat(m.polarity[seg.rows][1:], np.diff(pos))
        if volts is not None:
            volts[1 : pos[-1] + 1, s] = np.repeat(np.abs(m.voltage_v[seg.rows][1:]), np.diff(pos))
        if widths is not None:
            widths[1 : pos[-1] + 1, s] = np.repeat(m.width_s[seg.rows][1:], np.diff(pos))
        smooth.append(_moving_average(u[seg.rows], max(1, seg.rows.size // 20)))
    pol_applied = np.concatenate([m.polarity[seg.rows][1:] for seg in segments])
    data = _Data(
        pulses=jnp.asarray(pulses),
        voltage=None if volts is None else jnp.asarray(volts, jnp.float64),
        width=None if widths is None else jnp.asarray(widths, jnp.float64),
        obs_t=jnp.asarray(positions, jnp.int32),
        obs_s=jnp.asarray(seg_of_row, jnp.int32),
        y=jnp.asarray(u, jnp.float64),
    )
    return _Prepared(
        data=data,
        center=center,
        scale=scale,
        labels=tuple(seg.label for seg in segments),
        segment_rows=tuple(seg.rows for seg in segments),
        positions=positions,
        segment_of_row=seg_of_row,
        smooth=tuple(smooth),
        has_up=bool((pol_applied > 0).any()),
        has_down=bool((pol_applied < 0).any()),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class FitProblem:
    """The least-squares problem of one model and one measurement.

    ``residuals(theta)`` (a JAX function, run it under ``jax.enable_x64(True)``) returns the
    predicted minus the measured reading of every row, in internal units
    ``u = (state - center) / scale``; ``theta`` holds the model parameters named in ``names``
    (internal units for ``g_max``/``g_min``), then one start state per sweep (u units).
    """

    spec: _Spec
    prepared: _Prepared
    lower: np.ndarray  # box bounds of theta
    upper: np.ndarray
    starts: tuple[np.ndarray, ...]  # initial theta vectors (multi-start)
    frozen: dict[str, str]  # parameter name -> reason it is never fitted

    @property
    def names(self) -> tuple[str, ...]:
        return self.spec.names + tuple(f"start[{label}]" for label in self.prepared.labels)

    def residuals(self, theta: jax.Array) -> jax.Array:
        return _residuals(self.spec, theta, self.prepared.data)

    def jacobian(self, theta: jax.Array) -> jax.Array:
        return _jacobian(self.spec, theta, self.prepared.data)


def make_problem(
    m: Measurement, model_name: str, *, n_nodes: int | None = None, _prepared: _Prepared | None = None
) -> FitProblem:
    """Set up the fit of ``model_name`` (one of :data:`FITTABLE_MODELS`) to ``m``.

    ``n_nodes`` is the length of each ``piecewise-step`` table (default: from the data size).

    Raises:
      ValueError: the model cannot be fitted, or the data carry nothing to fit.
    """
    if model_name not in FITTABLE_MODELS:
        raise ValueError(f"{m.source}: model {model_name!r} cannot be fitted; allowed: {', '.join(FITTABLE_MODELS)}")
    prep = _prepared if _prepared is not None else _prepare(m)
    cond = m.unit == "S"
    u_all = np.asarray(prep.data.y)
    sm = np.concatenate(prep.smooth)
    u_lo, u_hi = float(sm.min()), float(sm.max())
    r = max(u_hi - u_lo, float(u_all.max() - u_all.min()) * 1e-3, 1e-12)
    to_w_scale = 2.0 / r if cond else 1.0  # rough u -> w step scale for the starting guesses

    # mean smoothed step per pulse, by polarity (u units, one pulse apart only)
    ups, downs = [], []
    for rows, smooth in zip(prep.segment_rows, prep.smooth, strict=True):
        pos = prep.positions[rows]
        gap = np.diff(pos)
        step = np.diff(smooth) / np.maximum(gap, 1)
        pol = np.asarray(m.polarity[rows][1:])
        ups.append(step[pol > 0])
        downs.append(-step[pol < 0])
    ups, downs = np.concatenate(ups), np.concatenate(downs)
    m_up = abs(float(ups.mean())) if ups.size else 0.0
    m_down = abs(float(downs.mean())) if downs.size else 0.0
    typical = max(m_up, m_down, r * 1e-6)
    m_up = max(m_up, 1e-3 * typical)
    m_down = max(m_down, 1e-3 * typical)
    if prep.has_up and prep.has_down:
        ud0 = 1.0 - m_down / m_up if m_up >= m_down else m_up / m_down - 1.0
        ud0 = float(np.clip(ud0, -0.9, 0.9))
    else:
        ud0 = 0.0
    dw0 = max(m_up, m_down) * to_w_scale

    names: list[str] = ["dw_min", "up_down"]
    lower: list[float] = [1e-12, -0.99]
    upper: list[float] = [10.0 * max(1.0, to_w_scale * r), 0.99]
    frozen: dict[str, str] = {}
    if not (prep.has_up and prep.has_down):
        frozen["up_down"] = (
            "the data have only "
            + ("potentiating" if prep.has_up else "depressing")
            + " pulses, so the up/down asymmetry is not determined"
        )
    if cond:
        zero_u = -prep.center / prep.scale
        mid = float(np.median(u_all))
        names += ["g_max", "g_min"]
        lower += [mid, max(u_lo - 100 * r, zero_u)]
        upper += [u_hi + 100 * r, mid]
    else:
        names += ["w_max", "w_min"]
        lower += [1e-9, u_lo - 100 * r]
        upper += [u_hi + 100 * r, -1e-9]
    n_up = n_down = 0
    if model_name == "piecewise-step":
        if n_nodes is None:
            n_nodes = _node_counts(max(ups.size, downs.size))[-1]
        n_up = n_down = n_nodes
        names += [f"piecewise_up[{i}]" for i in range(n_nodes)] + [f"piecewise_down[{i}]" for i in range(n_nodes)]
        lower += [0.0] * (2 * n_nodes)
        upper += [1e3] * (2 * n_nodes)
        frozen["up_down"] = "piecewise-step carries the up/down asymmetry in its two tables"
        frozen["dw_min"] = (
            "fixed while fitting (degenerate with the table scale); set afterwards to the mean table step"
        )
        bound_reason = "the table nodes span the measured range (smoothed readings, 1% margin)"
        frozen.update({n: bound_reason for n in names[2:4]})
    else:
        for pname, (_, lo, hi) in _SPECIFIC[model_name].items():
            names.append(pname)
            lower.append(lo)
            upper.append(hi)
        if model_name == "exp-step":
            frozen["a"] = "not identifiable: only gamma*a enters the step; fixed at +-0.5 (both signs tried)"
            frozen["b"] = "not identifiable: only A*exp(gamma*b) enters the step; fixed at 0"
    ref = (1.0, 1.0, 1.0)
    v0_starts: tuple[float, ...] = (1.0,)
    if model_name == "protonic":
        ref, v0_default, v0_bounds, more_frozen = _protonic_reference(m)
        frozen.update(more_frozen)
        i = names.index("v0_v")
        lower[i], upper[i] = v0_bounds
        v0_starts = (v0_default,) if "v0_v" in frozen else tuple(f * max(ref[:2]) for f in (0.1, 0.3, 1.0))
    spec = _Spec(model_name, tuple(names), cond, n_up, n_down, ref)
    n_seg = len(prep.labels)
    lower_v = np.concatenate([lower, np.full(n_seg, -np.inf)])
    upper_v = np.concatenate([upper, np.full(n_seg, np.inf)])
    u0 = np.array([s[0] for s in prep.smooth])

    def start(dw_scale: float, margin: float, extra: dict[str, float]) -> np.ndarray:
        if model_name == "piecewise-step":
            margin = 0.01
        vals = {"dw_min": dw0 * dw_scale, "up_down": ud0 if "up_down" not in frozen else 0.0}
        hi_b, lo_b = u_hi + margin * r, u_lo - margin * r
        if cond:
            vals["g_max"], vals["g_min"] = hi_b, max(lo_b, zero_u)
        else:
            vals["w_max"], vals["w_min"] = max(hi_b, 1e-3 * r), min(lo_b, -1e-3 * r)
        for pname, (init, _, _) in _SPECIFIC.get(model_name, {}).items():
            vals[pname] = init
        vals.update(extra)
        theta = np.array([vals.get(nm, 0.0) for nm in names], np.float64)
        # keep the start strictly inside the box
        lo_a, hi_a = np.asarray(lower, float), np.asarray(upper, float)
        width = np.where(np.isfinite(hi_a - lo_a), hi_a - lo_a, 1.0)
        theta = np.clip(theta, lo_a + 1e-6 * width, hi_a - 1e-6 * width)
        return np.concatenate([theta, u0])

    if model_name == "piecewise-step":
        base = start(1.0, 0.01, {})
        tables = _binned_tables(m, prep, spec, base, n_nodes)
        starts = (tables,)
    elif model_name == "exp-step":
        starts = tuple(start(s, 0.25, {"a": a}) for a in (0.5, -0.5) for s in (1.0, 2.5))
    elif model_name == "protonic":
        starts = tuple(start(s, mg, {"v0_v": v0}) for v0 in v0_starts for s, mg in ((1.0, 0.02), (2.5, 0.25)))
    else:
        starts = tuple(start(s, mg, {}) for s in (1.0, 2.5) for mg in (0.02, 0.25))
    return FitProblem(spec, prep, lower_v, upper_v, starts, frozen)


def _protonic_reference(m: Measurement):
    """Reference pulse, default and box of V0, and the protonic parameters the data cannot pin.

    The reference pulse (where ``dw_min`` holds) is the median applied |voltage| of each
    polarity and the median applied width (the lower median, so a measured value); without a
    ``voltage_v``/``width_s`` column it is the :class:`~device_models.Protonic` default (10 V,
    5 ns), a fixed operating point.
    """
    default = Protonic()
    v0_default = float(2.0 * BOLTZMANN_OVER_CHARGE_V_PER_K * default.temperature_k * default.thickness_m)
    v0_default /= float(default.hop_distance_m)
    applied = np.ones(m.n_rows, bool)
    applied[0] = False
    for seg in m.segments():
        applied[seg.rows[0]] = False  # a sweep's first reading: its pulse is not replayed
    up, down = applied & (m.polarity > 0), applied & (m.polarity < 0)
    frozen: dict[str, str] = {}

    def lower_median(x: np.ndarray, fallback: float) -> float:
        return float(np.quantile(x, 0.5, method="lower")) if x.size else fallback

    if m.voltage_v is None:
        v_up, v_down = float(default.ref_voltage_up_v), float(default.ref_voltage_down_v)
        frozen["v0_v"] = "no voltage_v column: one operating point, so the voltage law is not determined"
    else:
        av = np.abs(m.voltage_v)
        v_up = lower_median(av[up], lower_median(av[applied], 1.0))
        v_down = lower_median(av[down], v_up)
        if not (v_up > 0 and v_down > 0):
            raise ValueError(f"{m.source}: column 'voltage_v': the median pulse voltage is 0; allowed: non-zero pulses")
        n_up, n_down = np.unique(av[up]).size, np.unique(av[down]).size
        if max(n_up, n_down) < 2:
            frozen["v0_v"] = "every pulse of a polarity has the same voltage, so the voltage law is not determined"
    if m.width_s is None:
        width = float(default.ref_width_s)
        frozen["width_exponent"] = "no width_s column: one operating point, so the width law is not determined"
    else:
        width = lower_median(m.width_s[applied], float(np.median(m.width_s)))
        if np.unique(m.width_s[applied]).size < 2:
            frozen["width_exponent"] = "every pulse has the same width, so the width law is not determined"
    v_max = max(v_up, v_down)
    return (v_up, v_down, width), v0_default, (1e-3 * v_max, 1e3 * v_max), frozen


def _node_counts(pulses_per_polarity: int) -> tuple[int, ...]:
    """Table lengths tried for ``piecewise-step`` (about one node per 80 pulses, 3 to 9)."""
    top = int(np.clip(pulses_per_polarity // 80, 3, 9))
    return tuple(n for n in (3, 5, 7, 9) if n < top) + (top,)


def _binned_tables(m: Measurement, prep: _Prepared, spec: _Spec, theta: np.ndarray, n_nodes: int) -> np.ndarray:
    """Start of the piecewise table: mean smoothed step per state bin, for up and down pulses."""
    names = spec.names
    if spec.conductance:
        g_max, g_min = theta[names.index("g_max")], theta[names.index("g_min")]
        to_w = lambda u: -1.0 + 2.0 * (u - g_min) / (g_max - g_min)  # noqa: E731
        lo, hi = -1.0, 1.0
    else:
        to_w = lambda u: u  # noqa: E731
        lo, hi = theta[names.index("w_min")], theta[names.index("w_max")]
    sums = {1: np.zeros(n_nodes), -1: np.zeros(n_nodes)}
    counts = {1: np.zeros(n_nodes), -1: np.zeros(n_nodes)}
    for rows, smooth in zip(prep.segment_rows, prep.smooth, strict=True):
        w = to_w(smooth)
        gap = np.maximum(np.diff(prep.positions[rows]), 1)
        step = np.diff(w) / gap
        pol = np.asarray(m.polarity[rows][1:])
        node = np.clip(np.rint((w[:-1] - lo) / (hi - lo) * (n_nodes - 1)), 0, n_nodes - 1).astype(int)
        for p in (1, -1):
            sel = pol == p
            np.add.at(sums[p], node[sel], p * step[sel])
            np.add.at(counts[p], node[sel], 1)
    tables = {}
    for p in (1, -1):
        overall = sums[p].sum() / counts[p].sum() if counts[p].sum() else 0.0
        t = np.where(counts[p] > 0, sums[p] / np.maximum(counts[p], 1), overall)
        tables[p] = np.maximum(t, 0.0)
    scale = float(np.mean(np.concatenate([tables[1], tables[-1]])))
    if not scale > 0:
        scale = float(theta[0])
    theta = theta.copy()
    theta[0] = scale  # dw_min: the mean step
    i_up = names.index("piecewise_up[0]")
    i_down = names.index("piecewise_down[0]")
    theta[i_up : i_up + n_nodes] = np.maximum(tables[1] / scale, 0.02)
    theta[i_down : i_down + n_nodes] = np.maximum(tables[-1] / scale, 0.02)
    return theta


# --------------------------------------------------------------------------------------------
# Solving
# --------------------------------------------------------------------------------------------


def _solve(problem: FitProblem, theta0: np.ndarray, free: np.ndarray, max_nfev: int = 300) -> tuple[np.ndarray, float]:
    """Least squares over the ``free`` entries of theta, the rest held at ``theta0``."""
    base = np.array(theta0, np.float64)

    def full(x):
        t = base.copy()
        t[free] = x
        return t

    def fun(x):
        r = np.asarray(problem.residuals(jnp.asarray(full(x))))
        return np.where(np.isfinite(r), r, 1e6)

    def jac(x):
        j = np.asarray(problem.jacobian(jnp.asarray(full(x))))[:, free]
        return np.where(np.isfinite(j), j, 0.0)

    x0 = base[free]
    res = least_squares(
        fun,
        x0,
        jac=jac,
        bounds=(problem.lower[free], problem.upper[free]),
        method="trf",
        x_scale="jac",
        xtol=1e-10,
        ftol=1e-10,
        gtol=1e-10,
        max_nfev=max_nfev,
    )
    return full(res.x), float(2.0 * res.cost)


def _degenerate(problem: FitProblem, theta: np.ndarray, free: np.ndarray) -> tuple[int, str] | None:
    """A free model parameter the data do not determine at ``theta`` (index, reason), or None."""
    n_model = len(problem.spec.names)
    J = np.asarray(problem.jacobian(jnp.asarray(theta)))[:, free]
    norms = np.linalg.norm(J, axis=0)
    free_idx = np.flatnonzero(free)
    if not norms.size:
        return None
    top = norms.max()
    for col, i in enumerate(free_idx):
        if i < n_model and norms[col] <= 1e-10 * top:
            return int(i), "not determined by the data (the replay does not depend on it, e.g. a bound never reached)"
    Jn = J / np.where(norms > 0, norms, 1.0)
    _, s, vt = np.linalg.svd(Jn, full_matrices=False)
    if s[-1] > s[0] / _COND_LIMIT:
        return None
    v = np.abs(vt[-1])
    model_cols = [c for c, i in enumerate(free_idx) if i < n_model]
    if not model_cols:
        return None
    best = max(model_cols, key=lambda c: v[c])
    preferred = [c for c in model_cols if problem.spec.names[free_idx[c]] in ("w_max", "w_min", "g_max", "g_min")]
    pref = [c for c in preferred if v[c] >= 0.3 * v[best]]
    col = max(pref, key=lambda c: v[c]) if pref else best
    partners = [problem.spec.names[free_idx[c]] for c in model_cols if c != col and v[c] >= 0.1 * v[best]]
    with_txt = f" (degenerate with {', '.join(partners)})" if partners else ""
    return int(free_idx[col]), f"not separable from the other parameters by these data{with_txt}"


def _fit_problem(problem: FitProblem, fit_start: bool) -> tuple[np.ndarray, np.ndarray, float, dict[str, str]]:
    names = problem.spec.names
    n_model = len(names)
    free0 = np.ones(len(problem.lower), bool)
    frozen = dict(problem.frozen)
    for nm in frozen:
        free0[names.index(nm)] = False
    if not fit_start:
        free0[n_model:] = False
    best_theta, best_rss = None, np.inf
    for theta0 in problem.starts:  # a short run from every start, then polish the best
        theta, rss = _solve(problem, theta0, free0, max_nfev=40 if len(problem.starts) > 1 else 300)
        if rss < best_rss:
            best_theta, best_rss = theta, rss
    theta, rss, free = best_theta, best_rss, free0.copy()
    if len(problem.starts) > 1:
        theta, rss = _solve(problem, theta, free)
    for _ in range(n_model):
        found = _degenerate(problem, theta, free)
        if found is None:
            break
        i, reason = found
        free[i] = False
        frozen[names[i]] = reason
        theta, rss = _solve(problem, theta, free)
    return theta, free, rss, frozen


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParameterEstimate:
    """One parameter of a fitted card."""

    value: float | tuple[float, ...]  # the card's value (SI for physical values)
    stderr: float | tuple[float, ...] | None  # standard error, None where not fitted
    provenance: str  # "fitted", "assumed" or "measured"
    unit: str  # card unit ("1", "S", "V", "s")
    reason: str = ""  # why it is assumed, or how it was obtained


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted model with its statistics (see the module docstring for the estimators)."""

    model_name: str
    model: AbstractPulsedModel  # nominal parameters as they go to the card
    source: str  # the measurement file
    unit: str  # state unit of the data: "S" or "1"
    parameters: dict[str, ParameterEstimate]  # every card parameter
    physical: dict[str, ParameterEstimate]  # g_min/g_max (siemens), pulse_voltage/pulse_width
    n: int  # readings
    k: int  # free parameters (model parameters + one start state per sweep)
    rss: float  # residual sum of squares (state units squared)
    r2: float
    aic: float
    residual_std: float  # RMS residual (state units)
    dw_min_std: float  # cycle-to-cycle estimate written to the card (read noise removed)
    dw_min_std_all_scatter: float  # all pulse-to-pulse scatter counted as cycle-to-cycle noise
    read_noise_std: float  # independent read noise (state units)
    labels: tuple[str, ...]  # sweeps
    start_states: np.ndarray  # (S,) fitted state at each sweep's first reading (state units)
    observed: np.ndarray  # (n,) readings (state units)
    predicted: np.ndarray  # (n,) noise-free replay (state units)
    segment_of_row: np.ndarray  # (n,) sweep of each reading
    device_spread: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    dw_min_std_lag1: float = math.nan  # moment estimate: residual steps minus the lag-1 read noise
    derived: dict[str, Any] | None = None  # protonic: fitted V0 (volts) and a/d, the reference pulse

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the fit."""

        def est(p: ParameterEstimate) -> dict[str, Any]:
            return {
                "value": list(p.value) if isinstance(p.value, tuple) else p.value,
                "stderr": list(p.stderr) if isinstance(p.stderr, tuple) else p.stderr,
                "provenance": p.provenance,
                "unit": p.unit,
                **({"reason": p.reason} if p.reason else {}),
            }

        return {
            "file": self.source,
            "model": self.model_name,
            "state_unit": self.unit,
            "n": self.n,
            "k": self.k,
            "parameters": {k: est(v) for k, v in self.parameters.items()},
            "physical": {k: est(v) for k, v in self.physical.items()},
            "residual_std": self.residual_std,
            "dw_min_std": self.dw_min_std,
            "dw_min_std_all_scatter": self.dw_min_std_all_scatter,
            "dw_min_std_lag1": self.dw_min_std_lag1,
            "read_noise_std": self.read_noise_std,
            "r2": self.r2,
            "aic": self.aic,
            "rss": self.rss,
            "sweeps": list(self.labels),
            "device_spread": self.device_spread,
            "derived": self.derived,
            "warnings": list(self.warnings),
        }

    def to_card_toml(self, name: str) -> str:
        """A device card (:mod:`device_models.cards` format) holding the fitted model."""
        src_name = Path(self.source).name
        lines = [
            f"# Device card: {name}. Format: device_models/cards.py.",
            f"# Written by `analogsim fit` from {self.source}: model {self.model_name}, R^2 {self.r2:.4f}, "
            f"AIC {self.aic:.1f}, {self.n} readings, residual std {self.residual_std:.4g} ({'S' if self.unit == 'S' else 'weight units'}).",
            "",
            f"name = {_toml_str(name)}",
            f"model = {_toml_str(self.model_name)}",
            f"description = {_toml_str(f'{self.model_name} fitted to {src_name} (analogsim fit)')}",
        ]
        sections = [("parameters", self.parameters), ("physical", self.physical)]
        for section, entries in sections:
            for key, p in entries.items():
                lines += ["", f"[{section}.{key}]"]
                if section == "physical" and p.unit == "uS":
                    value = _scaled(p.value, 1e6)
                else:
                    value = p.value
                lines.append(f"value = {_toml_value(value)}")
                lines.append(f"unit = {_toml_str(p.unit)}")
                lines.append(f"provenance = {_toml_str(p.provenance)}")
                lines.append(f"source = {_toml_str(self._source_text(p))}")
                note = p.reason
                if p.stderr is not None:
                    se = _scaled(p.stderr, 1e6) if (section == "physical" and p.unit == "uS") else p.stderr
                    note = (f"standard error {_fmt(se)}" + (f"; {note}" if note else "")).strip()
                if note:
                    lines.append(f"note = {_toml_str(note)}")
        return "\n".join(lines) + "\n"

    def _source_text(self, p: ParameterEstimate) -> str:
        fit = (
            f"analogsim fit of {self.model_name} to {self.source} (scipy.optimize.least_squares on the noise-free "
            f"pulse-by-pulse replay, {self.n} readings, {len(self.labels)} sweeps, R^2 {self.r2:.4f})"
        )
        if p.provenance == "fitted":
            return fit
        if p.provenance == "measured":
            return f"{self.source} (column of the measurement)"
        return f"assumed when fitting {self.source}: {p.reason}"


def _scaled(v, factor):
    if isinstance(v, tuple):
        return tuple(x * factor for x in v)
    return None if v is None else v * factor


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
    return f"{v:.3g}"


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def _toml_value(v) -> str:
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"cannot write the non-finite value {v!r} to a card")
    return repr(v)


def _c2c(prep: _Prepared, resid_u: np.ndarray, pred_u: np.ndarray) -> tuple[float, float, float]:
    """(dw_min_std, dw_min_std_all_scatter, read_noise_var in u units^2) from consecutive readings."""
    sum_dr2 = sum_d2 = 0.0
    m = 0
    lag_products = []
    for rows in prep.segment_rows:
        gap = np.diff(prep.positions[rows])
        dr = np.diff(resid_u[rows])
        d = np.diff(pred_u[rows])
        one = gap == 1
        sum_dr2 += float(np.sum(dr[one] ** 2))
        sum_d2 += float(np.sum(d[one] ** 2))
        m += int(one.sum())
        both = one[:-1] & one[1:]
        lag_products.append((dr[:-1] * dr[1:])[both])
    lags = np.concatenate(lag_products) if lag_products else np.empty(0)
    if m == 0 or not sum_d2 > 0:
        return math.nan, math.nan, math.nan
    read_var = max(0.0, -float(lags.mean())) if lags.size else 0.0
    all_scatter = math.sqrt(sum_dr2 / sum_d2)
    corrected = math.sqrt(max(0.0, sum_dr2 - 2.0 * m * read_var) / sum_d2)
    return corrected, all_scatter, read_var


def _kalman_nll(log_sigmas: jax.Array, v: jax.Array, phi: jax.Array, d2: jax.Array, first: jax.Array) -> jax.Array:
    r"""Negative log-likelihood of residuals ``v`` under a random walk plus white read noise.

    State-space model of the deviation :math:`e_j` of the device from the noise-free replay and
    of the residual :math:`r_j` (all arrays per reading, sweeps laid end to end):

    .. math::
        e_j = \phi_j e_{j-1} + \eta_j, \quad \eta_j \sim N(0, \sigma_{c2c}^2 D_j), \qquad
        r_j = e_j + \epsilon_j, \quad \epsilon_j \sim N(0, \sigma_{read}^2),

    with :math:`D_j` the sum of the squared predicted steps since the previous reading,
    :math:`\phi_j` the replay's sensitivity to its previous state (soft bounds pull a
    deviation back) and :math:`e = 0` at each sweep's start (``first``; the start is fitted).
    """
    q_scale, r_var = jnp.exp(2.0 * log_sigmas[0]), jnp.exp(2.0 * log_sigmas[1])

    def body(carry, inp):
        a, p_var = carry
        vj, fj, dj, start = inp
        a = jnp.where(start, 0.0, fj * a)
        p_var = jnp.where(start, 0.0, fj * fj * p_var + q_scale * dj)
        f = p_var + r_var
        innov = vj - a
        k = p_var / f
        return (a + k * innov, p_var * r_var / f), jnp.log(f) + innov * innov / f

    _, terms = jax.lax.scan(body, (jnp.zeros((), v.dtype), jnp.zeros((), v.dtype)), (v, phi, d2, first))
    return 0.5 * jnp.sum(terms)


_kalman_value_and_grad = jax.jit(jax.value_and_grad(_kalman_nll))


def _c2c_state_space(
    problem: FitProblem, theta: np.ndarray, resid_u: np.ndarray, pred_u: np.ndarray
) -> tuple[float, float]:
    """(dw_min_std, read noise variance in u units^2) by maximum likelihood (:func:`_kalman_nll`).

    A random walk (cycle-to-cycle noise accumulates: the deviation's variance grows with each
    step) and white read noise (it does not) are told apart by how the residuals are correlated
    along a sweep, using every lag at once, so a read noise much larger than a step no longer
    leaks into the cycle-to-cycle estimate (as the lag-1 moment estimator does).
    """
    prep = problem.prepared
    n_model = len(problem.spec.names)
    J = np.asarray(problem.jacobian(jnp.asarray(theta)))
    v, phi, d2, first = [], [], [], []
    for s, rows in enumerate(prep.segment_rows):
        sens = J[rows, n_model + s]  # d prediction / d start state, along the sweep
        prev = sens[:-1]
        ok = np.abs(prev) > 1e-300
        ratio = np.where(ok, sens[1:] / np.where(ok, prev, 1.0), 1.0)
        gap = np.maximum(np.diff(prep.positions[rows]), 1)
        v.append(resid_u[rows])
        phi.append(np.concatenate([[1.0], np.clip(ratio, 0.0, 1.5)]))
        d2.append(np.concatenate([[0.0], np.diff(pred_u[rows]) ** 2 / gap]))
        # a replay clipped at a bound (no step, no sensitivity) restarts the walk: the device is there too
        clipped = np.concatenate([[True], (np.diff(pred_u[rows]) == 0) | (ratio == 0)])
        first.append(clipped)
    v, phi, d2 = (jnp.asarray(np.concatenate(x), jnp.float64) for x in (v, phi, d2))
    first = jnp.asarray(np.concatenate(first))
    mean_d2 = float(np.mean(np.asarray(d2)[~np.asarray(first)])) if v.size > len(prep.segment_rows) else 0.0
    r_std = float(np.sqrt(np.mean(resid_u**2)))
    if not (mean_d2 > 0 and r_std > 0):
        return math.nan, math.nan

    def fun(x):
        val, grad = _kalman_value_and_grad(jnp.asarray(x), v, phi, d2, first)
        return float(val), np.asarray(grad, np.float64)

    # box: c2c 1e-4..1e3; read noise 1e-6..10 x the RMS residual
    bounds = [(math.log(1e-4), math.log(1e3)), (math.log(1e-6 * r_std), math.log(10.0 * r_std))]
    best = None
    for c0 in (0.1, 1.0, 10.0):
        for rf in (0.1, 0.9):
            x0 = np.clip([math.log(c0), math.log(rf * r_std)], [b[0] for b in bounds], [b[1] for b in bounds])
            res = minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds)
            if best is None or res.fun < best.fun:
                best = res
    c2c, read = math.exp(best.x[0]), math.exp(best.x[1])
    if best.x[0] <= bounds[0][0] + 1e-6:
        c2c = 0.0
    if best.x[1] <= bounds[1][0] + 1e-6:
        read = 0.0
    return c2c, read * read


def _result(
    m: Measurement, problem: FitProblem, theta: np.ndarray, free: np.ndarray, frozen: dict[str, str]
) -> FitResult:
    spec, prep = problem.spec, problem.prepared
    names = spec.names
    n_model = len(names)
    resid_u = np.asarray(problem.residuals(jnp.asarray(theta)))
    pred_u = resid_u + np.asarray(prep.data.y)
    n = resid_u.size
    k = int(free.sum())
    scale = prep.scale
    rss = float(np.sum(resid_u**2)) * scale**2
    tss = float(np.sum((m.state - m.state.mean()) ** 2))
    r2 = 1.0 - rss / tss if tss > 0 else math.nan
    aic = n * math.log(max(rss, 1e-300) / n) + 2 * k
    J = np.asarray(problem.jacobian(jnp.asarray(theta)))[:, free]
    dof = max(n - k, 1)
    sigma2 = float(np.sum(resid_u**2)) / dof
    cov = sigma2 * np.linalg.pinv(J.T @ J)
    se_free = np.sqrt(np.maximum(np.diag(cov), 0.0))
    stderr = np.full(theta.size, np.nan)
    stderr[free] = se_free
    cov_full = np.zeros((theta.size, theta.size))
    fi = np.flatnonzero(free)
    cov_full[np.ix_(fi, fi)] = cov
    c2c_moments, c2c_all, read_var_moments = _c2c(prep, resid_u, pred_u)
    c2c, read_var = _c2c_state_space(problem, theta, resid_u, pred_u)
    if not math.isfinite(c2c):
        c2c, read_var = c2c_moments, read_var_moments
    warnings: list[str] = []
    if free[n_model:].sum() and n - k < 5:
        warnings.append(f"only {n - k} degrees of freedom left: standard errors are unreliable")

    val = {nm: float(theta[i]) for i, nm in enumerate(names)}
    se = {nm: (float(stderr[i]) if free[i] else None) for i, nm in enumerate(names)}
    fit_src = "fitted"

    params: dict[str, ParameterEstimate] = {}
    physical: dict[str, ParameterEstimate] = {}

    def put(name: str, value, err, reason_if_assumed: str = ""):
        if err is None:
            params[name] = ParameterEstimate(value, None, "assumed", "1", reason_if_assumed or frozen.get(name, ""))
        else:
            params[name] = ParameterEstimate(value, err, fit_src, "1")

    # dw_min (piecewise: the mean table step, derived from the fitted tables)
    model_extra: dict[str, Any] = {}
    if spec.model == "piecewise-step":
        i_up, i_dn = names.index("piecewise_up[0]"), names.index("piecewise_down[0]")
        idx = list(range(i_up, i_up + spec.n_up)) + list(range(i_dn, i_dn + spec.n_down))
        tab = theta[idx]
        mu = float(tab.mean())
        if not mu > 0:
            raise ValueError(f"{m.source}: the piecewise-step fit collapsed to zero steps; the data show no change")
        dw = val["dw_min"] * mu
        g = np.full(len(idx), 1.0 / len(idx))
        var_mu = float(g @ cov_full[np.ix_(idx, idx)] @ g)
        put("dw_min", dw, val["dw_min"] * math.sqrt(var_mu))
        params["dw_min"] = dataclasses.replace(params["dw_min"], reason="the mean of the fitted step tables")
        for tname, sl in (("piecewise_up", idx[: spec.n_up]), ("piecewise_down", idx[spec.n_up :])):
            values = tuple(float(theta[i] / mu) for i in sl)
            errs = tuple(float(stderr[i] / mu) if free[i] else 0.0 for i in sl)
            if any(free[i] for i in sl):
                params[tname] = ParameterEstimate(values, errs, "fitted", "1", "relative to dw_min")
            else:
                params[tname] = ParameterEstimate(values, None, "assumed", "1", frozen.get(f"{tname}[0]", ""))
            model_extra[tname] = values
    else:
        put("dw_min", val["dw_min"], se["dw_min"])
    put("dw_min_dtod", _DTOD_DEFAULTS["dw_min_dtod"], None, _dtod_reason())
    if math.isfinite(c2c):
        params["dw_min_std"] = ParameterEstimate(
            c2c,
            None,
            "fitted",
            "1",
            f"cycle-to-cycle spread by maximum likelihood of the residuals as a random walk (the step noise "
            f"accumulates) plus white read noise (std {math.sqrt(read_var) * scale:.4g} "
            f"{'S' if m.unit == 'S' else 'weight units'}, not modelled by this card); the lag-1 moment estimate gives "
            f"{c2c_moments:.4g}, all pulse-to-pulse scatter as cycle-to-cycle noise {c2c_all:.4g}",
        )
    else:
        put("dw_min_std", _DEFAULT_C2C, None, "no two readings one pulse apart: aihwkit PulsedDevice default")
    put("up_down", val["up_down"], se["up_down"])
    put("up_down_dtod", _DTOD_DEFAULTS["up_down_dtod"], None, _dtod_reason())
    if spec.conductance:
        for wn, wv in (("w_max", 1.0), ("w_min", -1.0)):
            params[wn] = ParameterEstimate(
                wv,
                None,
                "assumed",
                "1",
                "conductance data: the weight range is set to [-1, 1] and mapped to [g_min, g_max]",
            )
        for gname in ("g_max", "g_min"):
            g_si = prep.center + scale * val[gname]
            err = se[gname]
            reason = "" if err is not None else frozen.get(gname, "")
            physical[gname] = ParameterEstimate(
                g_si,
                None if err is None else err * scale,
                "fitted" if err is not None else "assumed",
                "uS",
                ("weight w_max/w_min <-> g_max/g_min, linear" if err is not None else reason),
            )
        physical = {"g_min": physical["g_min"], "g_max": physical["g_max"]}
    else:
        put("w_max", val["w_max"], se["w_max"])
        put("w_min", val["w_min"], se["w_min"])
    put("w_max_dtod", _DTOD_DEFAULTS["w_max_dtod"], None, _dtod_reason())
    put("w_min_dtod", _DTOD_DEFAULTS["w_min_dtod"], None, _dtod_reason())
    derived: dict[str, Any] = {}
    if spec.model == "protonic":
        derived = _protonic_parameters(m, spec, val, se, frozen, params, model_extra)
    elif spec.model != "piecewise-step":
        for pname in _SPECIFIC[spec.model]:
            put(pname, val[pname], se[pname])
            model_extra[pname] = val[pname]
    _measured_physical(m, physical)

    # card value constraints (cards.py): keep a fitted value valid for the card
    for pname, lo in (("dw_min", 1e-15),):
        if params[pname].value <= 0:
            params[pname] = dataclasses.replace(params[pname], value=lo)

    w_max_v = params["w_max"].value
    w_min_v = params["w_min"].value
    pulsed = PulsedParams(
        dw_min=params["dw_min"].value,
        dw_min_dtod=params["dw_min_dtod"].value,
        dw_min_std=params["dw_min_std"].value,
        up_down=params["up_down"].value,
        up_down_dtod=params["up_down_dtod"].value,
        w_max=w_max_v,
        w_min=w_min_v,
        w_max_dtod=params["w_max_dtod"].value,
        w_min_dtod=params["w_min_dtod"].value,
    )
    model = MODELS[spec.model](pulsed=pulsed, **model_extra)
    order = list(dataclasses.fields(PulsedParams))
    ordered = {f.name: params[f.name] for f in order}
    for key in params:
        if key not in ordered:
            ordered[key] = params[key]
    return FitResult(
        model_name=spec.model,
        model=model,
        source=m.source,
        unit=m.unit,
        parameters=ordered,
        physical=physical,
        n=n,
        k=k,
        rss=rss,
        r2=r2,
        aic=aic,
        residual_std=math.sqrt(rss / n),
        dw_min_std=c2c,
        dw_min_std_all_scatter=c2c_all,
        dw_min_std_lag1=c2c_moments,
        read_noise_std=math.sqrt(read_var) * scale if math.isfinite(read_var) else math.nan,
        labels=prep.labels,
        start_states=prep.center + scale * theta[n_model:],
        observed=m.state.copy(),
        predicted=prep.center + scale * pred_u,
        segment_of_row=prep.segment_of_row,
        warnings=tuple(warnings),
        derived=derived or None,
    )


def _protonic_parameters(
    m: Measurement,
    spec: _Spec,
    val: dict[str, float],
    se: dict[str, float | None],
    frozen: dict[str, str],
    params: dict[str, ParameterEstimate],
    model_extra: dict[str, Any],
) -> dict[str, Any]:
    """The protonic card entries (SI units) from a fit; returns V0 and a/d with their errors."""
    v_up, v_down, width = spec.ref

    def est(value, err, unit, reason_fitted="", reason_assumed=""):
        if err is None:
            return ParameterEstimate(float(value), None, "assumed", unit, reason_assumed)
        return ParameterEstimate(float(value), float(err), "fitted", unit, reason_fitted)

    for pname in ("saturation_up", "saturation_down", "width_exponent"):
        params[pname] = est(val[pname], se[pname], "1", "", frozen.get(pname, ""))
        model_extra[pname] = val[pname]
    for pname, v, col in (
        ("voltage_up_v", v_up, m.voltage_v),
        ("voltage_down_v", v_down, m.voltage_v),
        ("width_s", width, m.width_s),
    ):
        text = "operating pulse = the reference pulse"
        if col is None:
            params[pname] = ParameterEstimate(
                v,
                None,
                "assumed",
                "V" if "voltage" in pname else "s",
                f"{text}; no column in the data: Protonic default",
            )
        else:
            params[pname] = ParameterEstimate(
                v,
                None,
                "measured",
                "V" if "voltage" in pname else "s",
                f"{text}: the (lower) median of the applied pulses",
            )
        model_extra[pname] = v
        ref = "ref_" + pname
        params[ref] = dataclasses.replace(params[pname], reason=f"reference pulse of dw_min; {params[pname].reason}")
        model_extra[ref] = v
    kt_q = BOLTZMANN_OVER_CHARGE_V_PER_K * _PROTONIC_TEMPERATURE_K
    v0, v0_err = val["v0_v"], se["v0_v"]
    hop = 2.0 * kt_q * _PROTONIC_THICKNESS_M / v0
    a_over_d = 2.0 * kt_q / v0
    rel = None if v0_err is None else v0_err / v0
    params["hop_distance_m"] = est(
        hop,
        None if rel is None else hop * rel,
        "m",
        f"from the fitted field voltage V0 = 2 k_B T d/(q a) = {v0:.4g} V"
        + ("" if v0_err is None else f" +- {v0_err:.2g} V")
        + f" (a/d = {a_over_d:.4g}) with the thickness and temperature held",
        f"{frozen.get('v0_v', '')}; Protonic default (V0 = {v0:.4g} V)",
    )
    model_extra["hop_distance_m"] = hop
    params["thickness_m"] = ParameterEstimate(
        _PROTONIC_THICKNESS_M, None, "assumed", "m", "held while fitting (Protonic default); only a/d enters the step"
    )
    params["temperature_k"] = ParameterEstimate(
        _PROTONIC_TEMPERATURE_K, None, "assumed", "K", "held while fitting (Protonic default, room temperature)"
    )
    model_extra["thickness_m"] = _PROTONIC_THICKNESS_M
    model_extra["temperature_k"] = _PROTONIC_TEMPERATURE_K
    return {
        "v0_v": {"value": v0, "stderr": v0_err, "provenance": "fitted" if v0_err is not None else "assumed"},
        "a_over_d": {
            "value": a_over_d,
            "stderr": None if rel is None else a_over_d * rel,
            "provenance": "fitted" if v0_err is not None else "assumed",
        },
        "reference_pulse": {"voltage_up_v": v_up, "voltage_down_v": v_down, "width_s": width},
    }


def _dtod_reason() -> str:
    return "one device measured, so the device-to-device spread is not determined; aihwkit PulsedDevice default"


def _measured_physical(m: Measurement, physical: dict[str, ParameterEstimate]) -> None:
    """Pulse amplitude and width from the CSV's voltage_v/width_s columns (median), if any."""
    up = m.polarity > 0
    if m.voltage_v is not None:
        v = m.voltage_v[up] if up.any() else m.voltage_v
        med = float(np.median(v))
        if med != 0:
            down_txt = f"; depressing pulses: median {float(np.median(m.voltage_v[~up])):.4g} V" if (~up).any() else ""
            physical["pulse_voltage"] = ParameterEstimate(
                med, None, "measured", "V", f"median voltage_v of the potentiating pulses{down_txt}"
            )
    if m.width_s is not None:
        physical["pulse_width"] = ParameterEstimate(
            float(np.median(m.width_s)), None, "measured", "s", "median width_s of all pulses"
        )


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _fit_one(m: Measurement, model_name: str, prep: _Prepared, fit_start: bool) -> FitResult:
    """Fit one model; ``piecewise-step`` tries several table lengths and keeps the best AIC."""
    if model_name != "piecewise-step":
        counts: tuple[int | None, ...] = (None,)
    else:
        per_pol = max(int((m.polarity[1:] > 0).sum()), int((m.polarity[1:] < 0).sum()))
        counts = _node_counts(per_pol)
    best = None
    for n_nodes in counts:
        problem = make_problem(m, model_name, n_nodes=n_nodes, _prepared=prep)
        theta, free, _, frozen = _fit_problem(problem, fit_start)
        result = _result(m, problem, theta, free, frozen)
        if best is None or result.aic < best.aic:
            best = result
    return best


def fit_model(m: Measurement, model_name: str, *, fit_start: bool = True, device_spread: bool = True) -> FitResult:
    """Fit one model to a measurement (see the module docstring for the method and estimators).

    Args:
      m: the measurement (:func:`~device_models.load_measurement`).
      model_name: one of :data:`FITTABLE_MODELS`.
      fit_start: fit each sweep's start state (True) or hold it at the sweep's first reading.
      device_spread: with several devices in ``m``, also fit each device alone and put the
        spread of its parameters into the card's ``*_dtod`` values.

    Returns:
      The :class:`FitResult`.

    Raises:
      ValueError: unknown model, or data with nothing to fit.
    """
    if model_name not in FITTABLE_MODELS:
        raise ValueError(
            f"{m.source}: model {model_name!r} cannot be fitted; allowed: {', '.join(FITTABLE_MODELS)} or auto"
        )
    with jax.enable_x64(True):
        result = _fit_one(m, model_name, _prepare(m), fit_start)
        if device_spread and len(m.devices()) >= 2:
            result = _with_device_spread(m, result, fit_start)
    return result


def fit_auto(m: Measurement, candidates: Sequence[str] = AUTO_CANDIDATES, *, fit_start: bool = True) -> list[FitResult]:
    """Fit every candidate model and return the results ranked by AIC (best first).

    ``piecewise-step`` among the candidates is the step table fitted directly from the data.
    The device-to-device spread (several devices) is computed for the best model only.
    """
    if not candidates:
        raise ValueError(f"{m.source}: no candidate models to fit; allowed: {', '.join(FITTABLE_MODELS)}")
    for name in candidates:
        if name not in FITTABLE_MODELS:
            raise ValueError(f"{m.source}: model {name!r} cannot be fitted; allowed: {', '.join(FITTABLE_MODELS)}")
    with jax.enable_x64(True):
        prep = _prepare(m)
        results = []
        for name in dict.fromkeys(candidates):
            results.append(_fit_one(m, name, prep, fit_start))
        results.sort(key=lambda r: r.aic)
        if len(m.devices()) >= 2:
            results[0] = _with_device_spread(m, results[0], fit_start)
    return results


def _with_device_spread(m: Measurement, pooled: FitResult, fit_start: bool) -> FitResult:
    """Fit each device alone and put the spread of its parameters into the card's dtod values."""
    per: dict[str, list[float]] = {"dw_min": [], "up_down": [], "w_max": [], "w_min": []}
    skipped = []
    fitted_ok = {"dw_min": True, "up_down": True, "w_max": True, "w_min": True}
    for label in m.devices():
        sub = m.select_device(label)
        try:
            r = fit_model(sub, pooled.model_name, fit_start=fit_start, device_spread=False)
        except ValueError as err:
            skipped.append(f"device {label}: {err}")
            continue
        dw = r.parameters["dw_min"].value
        if m.unit == "S":
            gmin_p, gmax_p = pooled.physical["g_min"].value, pooled.physical["g_max"].value
            gmin_i, gmax_i = r.physical["g_min"].value, r.physical["g_max"].value
            to_w = lambda g, lo=gmin_p, hi=gmax_p: -1.0 + 2.0 * (g - lo) / (hi - lo)  # noqa: E731
            per["w_max"].append(to_w(gmax_i))
            per["w_min"].append(to_w(gmin_i))
            per["dw_min"].append(dw * (gmax_i - gmin_i) / (gmax_p - gmin_p))
            fitted_ok["w_max"] &= r.physical["g_max"].provenance == "fitted"
            fitted_ok["w_min"] &= r.physical["g_min"].provenance == "fitted"
        else:
            per["w_max"].append(r.parameters["w_max"].value)
            per["w_min"].append(r.parameters["w_min"].value)
            per["dw_min"].append(dw)
            fitted_ok["w_max"] &= r.parameters["w_max"].provenance == "fitted"
            fitted_ok["w_min"] &= r.parameters["w_min"].provenance == "fitted"
        per["up_down"].append(r.parameters["up_down"].value)
        fitted_ok["up_down"] &= r.parameters["up_down"].provenance == "fitted"
        fitted_ok["dw_min"] &= r.parameters["dw_min"].provenance == "fitted"
    n_dev = len(per["dw_min"])
    spread: dict[str, Any] = {"devices": n_dev, "per_device": per, "skipped": skipped}
    params = dict(pooled.parameters)
    if n_dev >= 2:
        arr = {k: np.asarray(v) for k, v in per.items()}
        dtod = {
            "dw_min_dtod": float(arr["dw_min"].std(ddof=1) / abs(arr["dw_min"].mean())),
            "up_down_dtod": float(arr["up_down"].std(ddof=1)),
            "w_max_dtod": float(arr["w_max"].std(ddof=1) / abs(arr["w_max"].mean())),
            "w_min_dtod": float(arr["w_min"].std(ddof=1) / abs(arr["w_min"].mean())),
        }
        spread.update(dtod)
        for key, value in dtod.items():
            base = key[: -len("_dtod")]
            if fitted_ok[base] and math.isfinite(value):
                params[key] = ParameterEstimate(
                    value,
                    None,
                    "fitted",
                    "1",
                    f"spread over {n_dev} devices fitted one by one ({'std/|mean|' if base != 'up_down' else 'std'}, ddof=1)",
                )
            else:
                params[key] = dataclasses.replace(
                    params[key], reason=f"{base} is not determined in every single-device fit; aihwkit default"
                )
    p = pooled.model.pulsed
    pulsed = dataclasses.replace(
        p, **{k: params[k].value for k in ("dw_min_dtod", "up_down_dtod", "w_max_dtod", "w_min_dtod")}
    )
    model = dataclasses.replace(pooled.model, pulsed=pulsed)
    warnings = pooled.warnings + tuple(skipped)
    return dataclasses.replace(pooled, parameters=params, model=model, device_spread=spread, warnings=warnings)


def replay_measurement(
    model: AbstractPulsedModel,
    m: Measurement,
    start_states: np.ndarray,
    *,
    g_min_s: float | None = None,
    g_max_s: float | None = None,
) -> np.ndarray:
    """The noise-free replay of ``m``'s pulses by ``model`` (nominal device), per row, state units.

    Args:
      model: a device model (for example a loaded card's ``model``).
      m: the measurement whose pulse sequence is replayed.
      start_states: state at each sweep's first reading (``FitResult.start_states``), state units.
      g_min_s, g_max_s: for conductance data, the card's conductance range (siemens); the model's
        ``[w_min, w_max]`` maps linearly onto it.
    """
    with jax.enable_x64(True):
        prep = _prepare(m)
        start = np.asarray(start_states, np.float64)
        p = model.pulsed
        if m.unit == "S":
            if g_min_s is None or g_max_s is None:
                raise ValueError(f"{m.source}: conductance data need g_min_s and g_max_s to replay")
            w_lo, w_hi = float(p.w_min), float(p.w_max)
            w0 = w_lo + (start - g_min_s) / (g_max_s - g_min_s) * (w_hi - w_lo)
        else:
            w0 = start
        model64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), model)
        d = prep.data
        states = np.asarray(_replay(model64, jnp.asarray(w0), d.pulses, d.voltage, d.width))
        w = states[prep.positions, prep.segment_of_row]
        if m.unit == "S":
            return g_min_s + (w - w_lo) / (w_hi - w_lo) * (g_max_s - g_min_s)
        return w
