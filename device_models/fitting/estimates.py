"""From a solved ``FitProblem`` to a ``FitResult``: statistics and card entries.

Standard errors are :math:`\\sqrt{\\mathrm{diag}(\\hat\\sigma^2 (J^T J)^{-1})}` at the optimum
with :math:`\\hat\\sigma^2 = \\mathrm{RSS}/(n - k)`; :math:`R^2 = 1 - \\mathrm{RSS}/\\mathrm{TSS}`
and :math:`\\mathrm{AIC} = n \\log(\\mathrm{RSS}/n) + 2k`. A parameter the fit did not free goes
to the card as ``assumed`` with the reason it was frozen.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from ..measurements import Measurement
from ..protonic import BOLTZMANN_OVER_CHARGE_V_PER_K
from ..pulsed import AbstractPulsedModel, PulsedParams
from ..registry import MODELS
from .checks import fit_warnings
from .data import _Prepared
from .models import _PROTONIC_TEMPERATURE_K, _PROTONIC_THICKNESS_M, _SPECIFIC, _Spec
from .noise import _Noise, _noise_estimates
from .objective import FitProblem
from .report import FitResult, ParameterEstimate

# one device determines no device-to-device spread: the card describes that device alone (spread 0,
# marked assumed); the aihwkit defaults (0.3, 0.01, 0.3, 0.3) would invent a population
_DTOD_DEFAULTS = {"dw_min_dtod": 0.0, "up_down_dtod": 0.0, "w_max_dtod": 0.0, "w_min_dtod": 0.0}
_DEFAULT_C2C = 0.3


class _Stats(NamedTuple):
    """Goodness of fit and parameter covariance at the optimum."""

    resid_u: np.ndarray  # (n,) residuals (u units)
    pred_u: np.ndarray  # (n,) noise-free replay (u units)
    n: int  # readings
    k: int  # free parameters
    rss: float  # residual sum of squares (state units squared)
    r2: float
    aic: float
    stderr: np.ndarray  # (len(theta),) standard errors (u units), nan where not free
    cov_full: np.ndarray  # (len(theta), len(theta)) covariance (u units), zero where not free


def _statistics(m: Measurement, problem: FitProblem, theta: np.ndarray, free: np.ndarray) -> _Stats:
    """Residuals, RSS, R^2, AIC and the covariance of the free parameters at ``theta``."""
    prep = problem.prepared
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
    return _Stats(resid_u, pred_u, n, k, rss, r2, aic, stderr, cov_full)


def _result(
    m: Measurement, problem: FitProblem, theta: np.ndarray, free: np.ndarray, frozen: dict[str, str]
) -> FitResult:
    """The ``FitResult`` of a solved problem: statistics, noise, card entries and the model."""
    spec, prep = problem.spec, problem.prepared
    n_model = len(spec.names)
    scale = prep.scale
    st = _statistics(m, problem, theta, free)
    noise = _noise_estimates(problem, theta, st.resid_u, st.pred_u)
    warnings: list[str] = []
    if free[n_model:].sum() and st.n - st.k < 5:
        warnings.append(f"only {st.n - st.k} degrees of freedom left: standard errors are unreliable")
    warnings += fit_warnings(problem, theta, free, st.stderr, st.resid_u, noise)
    params, physical, model_extra, derived = _card_entries(m, problem, theta, free, frozen, st, noise)
    model = _card_model(spec, params, model_extra)
    return FitResult(
        model_name=spec.model,
        model=model,
        source=m.source,
        unit=m.unit,
        parameters=_pulsed_first(params),
        physical=physical,
        n=st.n,
        k=st.k,
        rss=st.rss,
        r2=st.r2,
        aic=st.aic,
        residual_std=math.sqrt(st.rss / st.n),
        dw_min_std=noise.c2c,
        dw_min_std_all_scatter=noise.c2c_all,
        dw_min_std_lag1=noise.c2c_lag1,
        read_noise_std=math.sqrt(noise.read_var) * scale if math.isfinite(noise.read_var) else math.nan,
        labels=prep.labels,
        start_states=prep.center + scale * _start_u(spec, theta),
        observed=m.state.copy(),
        predicted=prep.center + scale * st.pred_u,
        segment_of_row=prep.segment_of_row,
        warnings=tuple(warnings),
        derived=derived or None,
        positions=prep.positions.copy(),
        polarity=np.asarray(m.polarity).copy(),
    )


def _start_u(spec: _Spec, theta: np.ndarray) -> np.ndarray:
    """The start states the replay used (u units): the fitted ones held inside the fitted range."""
    lo_name, hi_name = ("g_min", "g_max") if spec.conductance else ("w_min", "w_max")
    lo, hi = theta[spec.names.index(lo_name)], theta[spec.names.index(hi_name)]
    return np.clip(theta[len(spec.names) :], lo, hi)


def _entry(value, err, reason_if_assumed: str) -> ParameterEstimate:
    """A unit-"1" card entry: fitted with its standard error, or (``err`` None) assumed with the reason."""
    if err is None:
        return ParameterEstimate(value, None, "assumed", "1", reason_if_assumed)
    return ParameterEstimate(value, err, "fitted", "1")


def _card_entries(
    m: Measurement,
    problem: FitProblem,
    theta: np.ndarray,
    free: np.ndarray,
    frozen: dict[str, str],
    st: _Stats,
    noise: _Noise,
) -> tuple[dict[str, ParameterEstimate], dict[str, ParameterEstimate], dict[str, Any], dict[str, Any]]:
    """(parameters, physical, model keyword arguments, derived) of the card of a fit."""
    spec, prep = problem.spec, problem.prepared
    names = spec.names
    val = {nm: float(theta[i]) for i, nm in enumerate(names)}
    se = {nm: (float(st.stderr[i]) if free[i] else None) for i, nm in enumerate(names)}

    def fitted(name: str) -> ParameterEstimate:
        return _entry(val[name], se[name], frozen.get(name, ""))

    if spec.model == "piecewise-step":
        params, model_extra = _piecewise_entries(m, spec, theta, free, frozen, st, val)
    else:
        params, model_extra = {"dw_min": fitted("dw_min")}, {}
    params["dw_min_dtod"] = _entry(_DTOD_DEFAULTS["dw_min_dtod"], None, _dtod_reason())
    params["dw_min_std"] = _c2c_entry(m, noise, prep.scale)
    params["up_down"] = fitted("up_down")
    params["up_down_dtod"] = _entry(_DTOD_DEFAULTS["up_down_dtod"], None, _dtod_reason())
    physical: dict[str, ParameterEstimate] = {}
    if spec.conductance:
        params.update(_unit_weight_range())
        physical.update(_conductance_range(prep, val, se, frozen))
    else:
        params["w_max"] = fitted("w_max")
        params["w_min"] = fitted("w_min")
    params["w_max_dtod"] = _entry(_DTOD_DEFAULTS["w_max_dtod"], None, _dtod_reason())
    params["w_min_dtod"] = _entry(_DTOD_DEFAULTS["w_min_dtod"], None, _dtod_reason())
    derived: dict[str, Any] = {}
    if spec.model == "protonic":
        more, more_extra, derived = _protonic_parameters(m, spec, val, se, frozen)
        params.update(more)
        model_extra.update(more_extra)
    elif spec.model != "piecewise-step":
        for pname in _SPECIFIC[spec.model]:
            params[pname] = fitted(pname)
            model_extra[pname] = val[pname]
    physical.update(_measured_physical(m))
    # card value constraints (cards.py): keep a fitted value valid for the card
    for pname, lo in (("dw_min", 1e-15),):
        if params[pname].value <= 0:
            params[pname] = dataclasses.replace(params[pname], value=lo)
    return params, physical, model_extra, derived


def _piecewise_entries(
    m: Measurement,
    spec: _Spec,
    theta: np.ndarray,
    free: np.ndarray,
    frozen: dict[str, str],
    st: _Stats,
    val: dict[str, float],
) -> tuple[dict[str, ParameterEstimate], dict[str, Any]]:
    """dw_min (the mean of the fitted step tables) and the two tables relative to it, and the model's tables."""
    names = spec.names
    i_up, i_dn = names.index("piecewise_up[0]"), names.index("piecewise_down[0]")
    idx = list(range(i_up, i_up + spec.n_up)) + list(range(i_dn, i_dn + spec.n_down))
    tab = theta[idx]
    mu = float(tab.mean())
    if not mu > 0:
        raise ValueError(f"{m.source}: the piecewise-step fit collapsed to zero steps; the data show no change")
    dw = val["dw_min"] * mu
    g = np.full(len(idx), 1.0 / len(idx))
    var_mu = float(g @ st.cov_full[np.ix_(idx, idx)] @ g)
    dw_entry = _entry(dw, val["dw_min"] * math.sqrt(var_mu), "")
    params = {"dw_min": dataclasses.replace(dw_entry, reason="the mean of the fitted step tables")}
    model_extra: dict[str, Any] = {}
    for tname, sl in (("piecewise_up", idx[: spec.n_up]), ("piecewise_down", idx[spec.n_up :])):
        values = tuple(float(theta[i] / mu) for i in sl)
        errs = tuple(float(st.stderr[i] / mu) if free[i] else 0.0 for i in sl)
        if any(free[i] for i in sl):
            params[tname] = ParameterEstimate(values, errs, "fitted", "1", "relative to dw_min")
        else:
            params[tname] = ParameterEstimate(values, None, "assumed", "1", frozen.get(f"{tname}[0]", ""))
        model_extra[tname] = values
    return params, model_extra


def _c2c_entry(m: Measurement, noise: _Noise, scale: float) -> ParameterEstimate:
    """The card's dw_min_std: the maximum-likelihood estimate, or the aihwkit default without one."""
    if not math.isfinite(noise.c2c):
        return _entry(_DEFAULT_C2C, None, "no two readings one pulse apart: aihwkit PulsedDevice default")
    return ParameterEstimate(
        noise.c2c,
        None,
        "fitted",
        "1",
        f"cycle-to-cycle spread by maximum likelihood of the residuals as a random walk (the step noise "
        f"accumulates) plus white read noise (std {math.sqrt(noise.read_var) * scale:.4g} "
        f"{'S' if m.unit == 'S' else 'weight units'}, not modelled by this card); the lag-1 moment estimate gives "
        f"{noise.c2c_lag1:.4g}, all pulse-to-pulse scatter as cycle-to-cycle noise {noise.c2c_all:.4g}",
    )


def _unit_weight_range() -> dict[str, ParameterEstimate]:
    """w_max = 1 and w_min = -1: the weight range of conductance data, mapped to [g_min, g_max]."""
    reason = "conductance data: the weight range is set to [-1, 1] and mapped to [g_min, g_max]"
    return {
        "w_max": ParameterEstimate(1.0, None, "assumed", "1", reason),
        "w_min": ParameterEstimate(-1.0, None, "assumed", "1", reason),
    }


def _conductance_range(
    prep: _Prepared, val: dict[str, float], se: dict[str, float | None], frozen: dict[str, str]
) -> dict[str, ParameterEstimate]:
    """The card's physical g_min and g_max (siemens) from the fitted bounds in internal units."""
    physical = {}
    for gname in ("g_max", "g_min"):
        g_si = prep.center + prep.scale * val[gname]
        err = se[gname]
        reason = "" if err is not None else frozen.get(gname, "")
        physical[gname] = ParameterEstimate(
            g_si,
            None if err is None else err * prep.scale,
            "fitted" if err is not None else "assumed",
            "S",
            ("weight w_max/w_min <-> g_max/g_min, linear" if err is not None else reason),
        )
    return {"g_min": physical["g_min"], "g_max": physical["g_max"]}


def _card_model(spec: _Spec, params: dict[str, ParameterEstimate], model_extra: dict[str, Any]) -> AbstractPulsedModel:
    """The model with the card's nominal values."""
    pulsed = PulsedParams(
        dw_min=params["dw_min"].value,
        dw_min_dtod=params["dw_min_dtod"].value,
        dw_min_std=params["dw_min_std"].value,
        up_down=params["up_down"].value,
        up_down_dtod=params["up_down_dtod"].value,
        w_max=params["w_max"].value,
        w_min=params["w_min"].value,
        w_max_dtod=params["w_max_dtod"].value,
        w_min_dtod=params["w_min_dtod"].value,
    )
    return MODELS[spec.model](pulsed=pulsed, **model_extra)


def _pulsed_first(params: dict[str, ParameterEstimate]) -> dict[str, ParameterEstimate]:
    """``params`` with the PulsedParams fields first, in their declaration order, then the rest."""
    ordered = {f.name: params[f.name] for f in dataclasses.fields(PulsedParams) if f.name in params}
    for key in params:
        if key not in ordered:
            ordered[key] = params[key]
    return ordered


def _protonic_estimate(value, err, unit: str, reason_fitted: str = "", reason_assumed: str = "") -> ParameterEstimate:
    """A protonic card entry: fitted with its error, or (``err`` None) assumed with the reason."""
    if err is None:
        return ParameterEstimate(float(value), None, "assumed", unit, reason_assumed)
    return ParameterEstimate(float(value), float(err), "fitted", unit, reason_fitted)


def _protonic_parameters(
    m: Measurement,
    spec: _Spec,
    val: dict[str, float],
    se: dict[str, float | None],
    frozen: dict[str, str],
) -> tuple[dict[str, ParameterEstimate], dict[str, Any], dict[str, Any]]:
    """The protonic card entries (SI units) of a fit, the model's keyword arguments, and V0 and a/d."""
    params: dict[str, ParameterEstimate] = {}
    for pname in ("saturation_up", "saturation_down", "width_exponent"):
        params[pname] = _protonic_estimate(val[pname], se[pname], "1", "", frozen.get(pname, ""))
    params.update(_protonic_pulse_entries(m, spec))
    field, derived = _protonic_field_entries(val, se, frozen)
    params.update(field)
    model_extra = {pname: p.value for pname, p in params.items()}  # every protonic card entry is a model argument
    derived["reference_pulse"] = dict(zip(("voltage_up_v", "voltage_down_v", "width_s"), spec.ref, strict=True))
    return params, model_extra, derived


def _protonic_pulse_entries(m: Measurement, spec: _Spec) -> dict[str, ParameterEstimate]:
    """The operating and the reference pulse of the card: both the reference pulse of the fit."""
    v_up, v_down, width = spec.ref
    params: dict[str, ParameterEstimate] = {}
    for pname, v, col in (
        ("voltage_up_v", v_up, m.voltage_v),
        ("voltage_down_v", v_down, m.voltage_v),
        ("width_s", width, m.width_s),
    ):
        text = "operating pulse = the reference pulse"
        unit = "V" if "voltage" in pname else "s"
        if col is None:
            params[pname] = ParameterEstimate(
                v, None, "assumed", unit, f"{text}; no column in the data: Protonic default"
            )
        else:
            params[pname] = ParameterEstimate(
                v, None, "measured", unit, f"{text}: the (lower) median of the applied pulses"
            )
        params["ref_" + pname] = dataclasses.replace(
            params[pname], reason=f"reference pulse of dw_min; {params[pname].reason}"
        )
    return params


def _protonic_field_entries(
    val: dict[str, float], se: dict[str, float | None], frozen: dict[str, str]
) -> tuple[dict[str, ParameterEstimate], dict[str, Any]]:
    """hop distance (from the fitted V0), thickness and temperature; and V0 and a/d with their errors."""
    kt_q = BOLTZMANN_OVER_CHARGE_V_PER_K * _PROTONIC_TEMPERATURE_K
    v0, v0_err = val["v0_v"], se["v0_v"]
    hop = 2.0 * kt_q * _PROTONIC_THICKNESS_M / v0
    a_over_d = 2.0 * kt_q / v0
    rel = None if v0_err is None else v0_err / v0
    params = {
        "hop_distance_m": _protonic_estimate(
            hop,
            None if rel is None else hop * rel,
            "m",
            f"from the fitted field voltage V0 = 2 k_B T d/(q a) = {v0:.4g} V"
            + ("" if v0_err is None else f" +- {v0_err:.2g} V")
            + f" (a/d = {a_over_d:.4g}) with the thickness and temperature held",
            f"{frozen.get('v0_v', '')}; Protonic default (V0 = {v0:.4g} V)",
        ),
        "thickness_m": ParameterEstimate(
            _PROTONIC_THICKNESS_M,
            None,
            "assumed",
            "m",
            "held while fitting (Protonic default); only a/d enters the step",
        ),
        "temperature_k": ParameterEstimate(
            _PROTONIC_TEMPERATURE_K, None, "assumed", "K", "held while fitting (Protonic default, room temperature)"
        ),
    }
    provenance = "fitted" if v0_err is not None else "assumed"
    derived = {
        "v0_v": {"value": v0, "stderr": v0_err, "provenance": provenance},
        "a_over_d": {"value": a_over_d, "stderr": None if rel is None else a_over_d * rel, "provenance": provenance},
    }
    return params, derived


def _dtod_reason() -> str:
    """Why a device-to-device spread is 0."""
    return (
        "one device measured, so the device-to-device spread is not determined; set to 0 (this device alone): "
        "give the spread of your device population by hand"
    )


def _measured_physical(m: Measurement) -> dict[str, ParameterEstimate]:
    """Pulse amplitude and width from the CSV's voltage_v/width_s columns (median), if any."""
    physical: dict[str, ParameterEstimate] = {}
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
    return physical
