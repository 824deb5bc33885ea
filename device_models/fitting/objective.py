"""The least-squares problem of one model and one measurement: residuals, Jacobian, box, starts.

The residuals are the noise-free replay of the measured pulse sequence minus the readings, in
internal units; their Jacobian with respect to the fitted parameters comes from
``jax.jacfwd``. ``make_problem`` sets the box bounds, the parameters the data cannot
determine (frozen from the start) and the starting guesses of a multi-start fit.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..measurements import Measurement
from ..protonic import BOLTZMANN_OVER_CHARGE_V_PER_K, Protonic
from .data import _Data, _prepare, _Prepared
from .models import _SPECIFIC, FITTABLE_MODELS, _build_model, _maps, _replay, _Spec


def _predict(spec: _Spec, theta: jax.Array, data: _Data) -> jax.Array:
    """The noise-free replay at every reading, internal units."""
    model = _build_model(spec, theta)
    to_w, to_u = _maps(spec, theta)
    w0 = _start_weights(spec, theta, model)
    states = _replay(model, w0, data.pulses, data.voltage, data.width)
    return to_u(states[data.obs_t, data.obs_s])


def _start_weights(spec: _Spec, theta: jax.Array, model) -> jax.Array:
    """Each sweep's start state in weight units, held inside the model's range [w_min, w_max].

    A device cannot start outside its own range (nor below 0 S), so a start the least squares
    pushes beyond a bound is read as the bound itself.
    """
    to_w, _ = _maps(spec, theta)
    w0 = to_w(theta[len(spec.names) :])
    return jnp.clip(w0, model.pulsed.w_min, model.pulsed.w_max)


@functools.partial(jax.jit, static_argnums=0)
def _residuals(spec: _Spec, theta: jax.Array, data: _Data) -> jax.Array:
    """Predicted minus measured reading of every row, internal units."""
    return _predict(spec, theta, data) - data.y


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(spec: _Spec, theta: jax.Array, data: _Data) -> jax.Array:
    """Jacobian (n, len(theta)) of ``_residuals`` by forward-mode differentiation."""
    return jax.jacfwd(_residuals, argnums=1)(spec, theta, data)


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
        """Names of every entry of theta: the model parameters, then ``start[<sweep>]``."""
        return self.spec.names + tuple(f"start[{label}]" for label in self.prepared.labels)

    def residuals(self, theta: jax.Array) -> jax.Array:
        """Predicted minus measured reading of every row at ``theta`` (internal units)."""
        return _residuals(self.spec, theta, self.prepared.data)

    def jacobian(self, theta: jax.Array) -> jax.Array:
        """Jacobian (n, len(theta)) of ``residuals`` at ``theta``."""
        return _jacobian(self.spec, theta, self.prepared.data)


class _Guess(NamedTuple):
    """Scales and starting values from the smoothed data, shared by every model (u units unless noted)."""

    cond: bool  # conductance data (bounds g_max/g_min) rather than weight data (w_max/w_min)
    u_lo: float  # range of the smoothed readings
    u_hi: float
    r: float  # u_hi - u_lo, floored away from zero
    mid: float  # median reading
    zero_u: float  # zero conductance in u units
    to_w_scale: float  # rough u -> w step scale
    dw0: float  # starting dw_min (weight units)
    ud0: float  # starting up_down
    n_steps: int  # most one-pulse steps of one polarity


def _mean_steps(m: Measurement, prep: _Prepared) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed step per pulse of the up and of the down pulses (u units, down steps negated)."""
    ups, downs = [], []
    for rows, smooth in zip(prep.segment_rows, prep.smooth, strict=True):
        pos = prep.positions[rows]
        gap = np.diff(pos)
        step = np.diff(smooth) / np.maximum(gap, 1)
        pol = np.asarray(m.polarity[rows][1:])
        ups.append(step[pol > 0])
        downs.append(-step[pol < 0])
    return np.concatenate(ups), np.concatenate(downs)


def _guess(m: Measurement, prep: _Prepared) -> _Guess:
    """The data's range and mean steps, turned into starting values of the common parameters."""
    cond = m.unit == "S"
    u_all = np.asarray(prep.data.y)
    sm = np.concatenate(prep.smooth)
    u_lo, u_hi = float(sm.min()), float(sm.max())
    r = max(u_hi - u_lo, float(u_all.max() - u_all.min()) * 1e-3, 1e-12)
    to_w_scale = 2.0 / r if cond else 1.0  # rough u -> w step scale for the starting guesses
    # mean smoothed step per pulse, by polarity (u units, one pulse apart only)
    ups, downs = _mean_steps(m, prep)
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
    return _Guess(
        cond=cond,
        u_lo=u_lo,
        u_hi=u_hi,
        r=r,
        mid=float(np.median(u_all)),
        zero_u=-prep.center / prep.scale,
        to_w_scale=to_w_scale,
        dw0=dw0,
        ud0=ud0,
        n_steps=max(ups.size, downs.size),
    )


def _common_box(prep: _Prepared, g: _Guess) -> tuple[list[str], list[float], list[float], dict[str, str]]:
    """(names, lower, upper, frozen) of dw_min, up_down and the two bounds, shared by every model."""
    names: list[str] = ["dw_min", "up_down"]
    lower: list[float] = [1e-12, -0.99]
    upper: list[float] = [10.0 * max(1.0, g.to_w_scale * g.r), 0.99]
    frozen: dict[str, str] = {}
    if not (prep.has_up and prep.has_down):
        frozen["up_down"] = (
            "the data have only "
            + ("potentiating" if prep.has_up else "depressing")
            + " pulses, so the up/down asymmetry is not determined"
        )
    if g.cond:
        names += ["g_max", "g_min"]
        lower += [g.mid, max(g.u_lo - 100 * g.r, g.zero_u)]
        upper += [g.u_hi + 100 * g.r, g.mid]
    else:
        names += ["w_max", "w_min"]
        lower += [1e-9, g.u_lo - 100 * g.r]
        upper += [g.u_hi + 100 * g.r, -1e-9]
    return names, lower, upper, frozen


def _model_box(
    model_name: str, n_nodes: int | None, bounds: list[str]
) -> tuple[list[str], list[float], list[float], dict[str, str]]:
    """(names, lower, upper, frozen) of the model's own parameters; ``bounds``: the two bound names."""
    names: list[str] = []
    lower: list[float] = []
    upper: list[float] = []
    frozen: dict[str, str] = {}
    if model_name == "piecewise-step":
        names += [f"piecewise_up[{i}]" for i in range(n_nodes)] + [f"piecewise_down[{i}]" for i in range(n_nodes)]
        lower += [0.0] * (2 * n_nodes)
        upper += [1e3] * (2 * n_nodes)
        frozen["up_down"] = "piecewise-step carries the up/down asymmetry in its two tables"
        frozen["dw_min"] = (
            "fixed while fitting (degenerate with the table scale); set afterwards to the mean table step"
        )
        bound_reason = "the table nodes span the measured range (smoothed readings, 1% margin)"
        frozen.update({n: bound_reason for n in bounds})
    else:
        for pname, (_, lo, hi) in _SPECIFIC[model_name].items():
            names.append(pname)
            lower.append(lo)
            upper.append(hi)
        if model_name == "exp-step":
            frozen["a"] = "not identifiable: only gamma*a enters the step; fixed at +-0.5 (both signs tried)"
            frozen["b"] = "not identifiable: only A*exp(gamma*b) enters the step; fixed at 0"
    return names, lower, upper, frozen


def make_problem(
    m: Measurement, model_name: str, *, n_nodes: int | None = None, _prepared: _Prepared | None = None
) -> FitProblem:
    """Set up the fit of ``model_name`` (one of ``FITTABLE_MODELS``) to ``m``.

    ``n_nodes`` is the length of each ``piecewise-step`` table (default: from the data size).

    Raises:
      ValueError: the model cannot be fitted, or the data carry nothing to fit.
    """
    if model_name not in FITTABLE_MODELS:
        raise ValueError(f"{m.source}: model {model_name!r} cannot be fitted; allowed: {', '.join(FITTABLE_MODELS)}")
    prep = _prepared if _prepared is not None else _prepare(m)
    g = _guess(m, prep)
    names, lower, upper, frozen = _common_box(prep, g)
    n_up = n_down = 0
    if model_name == "piecewise-step":
        if n_nodes is None:
            n_nodes = _node_counts(g.n_steps)[-1]
        n_up = n_down = n_nodes
    more = _model_box(model_name, n_nodes, names[2:4])
    names, lower, upper = names + more[0], lower + more[1], upper + more[2]
    frozen.update(more[3])
    ref = (1.0, 1.0, 1.0)
    v0_starts: tuple[float, ...] = (1.0,)
    if model_name == "protonic":
        ref, v0_default, v0_bounds, more_frozen = _protonic_reference(m)
        frozen.update(more_frozen)
        i = names.index("v0_v")
        lower[i], upper[i] = v0_bounds
        v0_starts = (v0_default,) if "v0_v" in frozen else tuple(f * max(ref[:2]) for f in (0.1, 0.3, 1.0))
    spec = _Spec(model_name, tuple(names), g.cond, n_up, n_down, ref)
    n_seg = len(prep.labels)
    # start states: never below 0 S; inside the widest box the bounds may take
    lower_v = np.concatenate([lower, np.full(n_seg, g.zero_u if g.cond else g.u_lo - 100 * g.r)])
    upper_v = np.concatenate([upper, np.full(n_seg, g.u_hi + 100 * g.r)])
    starts = _starts(m, prep, spec, g, (lower, upper), frozen, v0_starts)
    return FitProblem(spec, prep, lower_v, upper_v, starts, frozen)


def _start_vector(
    spec: _Spec,
    g: _Guess,
    box: tuple[list[float], list[float]],
    frozen: dict[str, str],
    u0: np.ndarray,
    dw_scale: float,
    margin: float,
    extra: dict[str, float],
) -> np.ndarray:
    """One starting theta: ``dw_scale`` times the mean step, bounds ``margin`` ranges outside the data."""
    if spec.model == "piecewise-step":
        margin = 0.01
    vals = {"dw_min": g.dw0 * dw_scale, "up_down": g.ud0 if "up_down" not in frozen else 0.0}
    hi_b, lo_b = g.u_hi + margin * g.r, g.u_lo - margin * g.r
    if g.cond:
        vals["g_max"], vals["g_min"] = hi_b, max(lo_b, g.zero_u)
    else:
        vals["w_max"], vals["w_min"] = max(hi_b, 1e-3 * g.r), min(lo_b, -1e-3 * g.r)
    for pname, (init, _, _) in _SPECIFIC.get(spec.model, {}).items():
        vals[pname] = init
    vals.update(extra)
    theta = np.array([vals.get(nm, 0.0) for nm in spec.names], np.float64)
    # keep the start strictly inside the box
    lo_a, hi_a = np.asarray(box[0], float), np.asarray(box[1], float)
    width = np.where(np.isfinite(hi_a - lo_a), hi_a - lo_a, 1.0)
    theta = np.clip(theta, lo_a + 1e-6 * width, hi_a - 1e-6 * width)
    return np.concatenate([theta, u0])


def _starts(
    m: Measurement,
    prep: _Prepared,
    spec: _Spec,
    g: _Guess,
    box: tuple[list[float], list[float]],
    frozen: dict[str, str],
    v0_starts: tuple[float, ...],
) -> tuple[np.ndarray, ...]:
    """The starting theta vectors of the multi-start fit (one per model-specific guess)."""
    u0 = np.array([s[0] for s in prep.smooth])
    start = functools.partial(_start_vector, spec, g, box, frozen, u0)
    if spec.model == "piecewise-step":
        base = start(1.0, 0.01, {})
        return (_binned_tables(m, prep, spec, base, spec.n_up),)
    if spec.model == "exp-step":
        return tuple(start(s, 0.25, {"a": a}) for a in (0.5, -0.5) for s in (1.0, 2.5))
    if spec.model == "protonic":
        return tuple(start(s, mg, {"v0_v": v0}) for v0 in v0_starts for s, mg in ((1.0, 0.02), (2.5, 0.25)))
    return tuple(start(s, mg, {}) for s in (1.0, 2.5) for mg in (0.02, 0.25))


def _protonic_reference(m: Measurement):
    """Reference pulse, default and box of V0, and the protonic parameters the data cannot pin.

    The reference pulse (where ``dw_min`` holds) is the median applied |voltage| of each
    polarity and the median applied width (the lower median, so a measured value); without a
    ``voltage_v``/``width_s`` column it is the ``Protonic`` default (10 V,
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
