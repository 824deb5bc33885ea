"""The public entry points: fit one model or rank several, the device spread, and the replay of a card.

Every entry point runs in float64 (``jax.enable_x64``) whatever the caller's setting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_limits

from ..measurements import Measurement
from ..pulsed import AbstractPulsedModel
from .data import _prepare, _Prepared
from .estimates import _result
from .models import AUTO_CANDIDATES, FITTABLE_MODELS, _replay
from .objective import _node_counts, make_problem
from .report import FitResult, ParameterEstimate
from .solve import _fit_problem

_SPREAD_KEYS = ("dw_min", "up_down", "w_max", "w_min")  # parameters whose spread over devices goes to the card


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


def fit_model(
    m: Measurement,
    model_name: str,
    *,
    fit_start: bool = True,
    device_spread: bool = True,
    progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit one model to a measurement (see ``device_models.fitting`` for the method and estimators).

    Args:
      m: the measurement (``load_measurement``).
      model_name: one of ``FITTABLE_MODELS``.
      fit_start: fit each sweep's start state (True) or hold it at the sweep's first reading.
      device_spread: with several devices in ``m``, also fit each device alone and put the
        spread of its parameters into the card's ``*_dtod`` values.
      progress: called with a short description after the pooled fit and after each
        single-device fit (e.g. to advance a progress bar).

    Returns:
      The ``FitResult``.

    Raises:
      ValueError: unknown model, or data with nothing to fit.
    """
    if model_name not in FITTABLE_MODELS:
        raise ValueError(
            f"{m.source}: model {model_name!r} cannot be fitted; allowed: {', '.join(FITTABLE_MODELS)} or auto"
        )
    with jax.enable_x64(True), _one_blas_thread():
        result = _fit_one(m, model_name, _prepare(m), fit_start)
        tick = progress or (lambda _: None)
        tick(model_name)
        if device_spread and len(m.devices()) >= 2:
            result = _with_device_spread(m, result, fit_start, tick)
    return result


def _one_blas_thread():
    """BLAS on one thread while fitting.

    The least squares decompose a tall, narrow Jacobian (n readings x a few parameters) at every
    iteration; a multi-threaded OpenBLAS spends far longer synchronising its threads than
    computing there (scipy's SVD of 2000 x 10: 58 ms on 2 threads of a loaded 2-core machine,
    0.2 ms on one; experiments/benchmarks/fit_auto.py times a whole fit).
    """
    return threadpool_limits(1, user_api="blas")


def fit_auto(
    m: Measurement,
    candidates: Sequence[str] = AUTO_CANDIDATES,
    *,
    fit_start: bool = True,
    progress: Callable[[str], None] | None = None,
) -> list[FitResult]:
    """Fit every candidate model and return the results ranked by AIC (best first).

    ``piecewise-step`` among the candidates is the step table fitted directly from the data.
    The device-to-device spread (several devices) is computed for the best model only.
    ``progress``, if given, is called with a short description after each candidate (and
    each single-device fit) is done, e.g. to advance a progress bar.
    """
    if not candidates:
        raise ValueError(f"{m.source}: no candidate models to fit; allowed: {', '.join(FITTABLE_MODELS)}")
    for name in candidates:
        if name not in FITTABLE_MODELS:
            raise ValueError(f"{m.source}: model {name!r} cannot be fitted; allowed: {', '.join(FITTABLE_MODELS)}")
    tick = progress or (lambda _: None)
    with jax.enable_x64(True), _one_blas_thread():
        prep = _prepare(m)
        results = []
        for name in dict.fromkeys(candidates):
            results.append(_fit_one(m, name, prep, fit_start))
            tick(name)
        results.sort(key=lambda r: r.aic)
        if len(m.devices()) >= 2:
            results[0] = _with_device_spread(m, results[0], fit_start, tick)
    return results


def _per_device(m: Measurement, pooled: FitResult, fit_start: bool, tick) -> tuple[dict, dict, list[str]]:
    """(values per device, whether every device fitted each one, skipped devices) of single-device fits.

    Conductance data are mapped to the pooled fit's weight units.
    """
    per: dict[str, list[float]] = {key: [] for key in _SPREAD_KEYS}
    fitted_ok = dict.fromkeys(_SPREAD_KEYS, True)
    skipped = []
    for label in m.devices():
        sub = m.select_device(label)
        try:
            r = fit_model(sub, pooled.model_name, fit_start=fit_start, device_spread=False)
        except ValueError as err:
            skipped.append(f"device {label}: {err}")
            continue
        finally:
            tick(f"device {label}")
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
    return per, fitted_ok, skipped


def _dtod_entries(
    per: dict[str, list[float]], fitted_ok: dict[str, bool], params: dict[str, ParameterEstimate]
) -> tuple[dict[str, float], dict[str, ParameterEstimate]]:
    """(spread values, updated card entries) of the *_dtod parameters from two or more devices."""
    n_dev = len(per["dw_min"])
    arr = {k: np.asarray(v) for k, v in per.items()}
    dtod = {
        "dw_min_dtod": float(arr["dw_min"].std(ddof=1) / abs(arr["dw_min"].mean())),
        "up_down_dtod": float(arr["up_down"].std(ddof=1)),
        "w_max_dtod": float(arr["w_max"].std(ddof=1) / abs(arr["w_max"].mean())),
        "w_min_dtod": float(arr["w_min"].std(ddof=1) / abs(arr["w_min"].mean())),
    }
    entries = {}
    for key, value in dtod.items():
        base = key[: -len("_dtod")]
        if fitted_ok[base] and math.isfinite(value):
            entries[key] = ParameterEstimate(
                value,
                None,
                "fitted",
                "1",
                f"spread over {n_dev} devices fitted one by one ({'std/|mean|' if base != 'up_down' else 'std'}, ddof=1)",
            )
        else:
            entries[key] = dataclasses.replace(
                params[key],
                reason=f"{base} is not determined in every single-device fit; set to 0 (no spread), give it by hand",
            )
    return dtod, entries


def _with_device_spread(m: Measurement, pooled: FitResult, fit_start: bool, tick) -> FitResult:
    """Fit each device alone and put the spread of its parameters into the card's dtod values."""
    per, fitted_ok, skipped = _per_device(m, pooled, fit_start, tick)
    n_dev = len(per["dw_min"])
    spread: dict[str, Any] = {"devices": n_dev, "per_device": per, "skipped": skipped}
    params = dict(pooled.parameters)
    if n_dev >= 2:
        dtod, entries = _dtod_entries(per, fitted_ok, params)
        spread.update(dtod)
        params.update(entries)
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
      g_min_s: for conductance data, the low end of the card's conductance range (siemens); the
        model's ``[w_min, w_max]`` maps linearly onto ``[g_min_s, g_max_s]``.
      g_max_s: the high end of that range (siemens).
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
