"""Warnings of a fit that looks good and is not: what R^2 does not show.

Each warning is one line: what, the value, the bound, what to do. The checks and their
thresholds (assumptions of this package, chosen so that a fit to data simulated by the fitted
model itself gives none; ``tests/test_fit_warnings.py`` checks both directions):

- **at a bound**: a fitted model parameter within ``_AT_BOUND`` (0.1 %) of the width of its
  box from a bound: the optimum lies outside the box, so the value and its standard error mean
  little.
- **extrapolated range**: a bound (``g_max``/``g_min``, ``w_max``/``w_min``) farther beyond
  the highest/lowest smoothed reading than ``_EXTRAPOLATION`` (1) times the measured range:
  the data never approach it, so the model's saturation is a guess.
- **degenerate shape**: ``pow-step``/``linear-step`` with both exponents at 0 are a constant
  step; a shape parameter (``gamma_*``, ``A_*``, ``saturation_*``) whose standard error
  exceeds its value is not determined by the data.
- **noise beyond its bound**: ``dw_min_std`` above ``dw_min_std_all_scatter`` (documented as
  its upper bound, all pulse-to-pulse scatter counted as cycle-to-cycle noise) by more than
  ``_NOISE_EXCESS`` (5 %).
- **residual structure**: the lag-1 autocorrelation of the residual's changes over blocks of
  ``_BLOCK`` = 10 readings, pooled over sweeps. Under the noise model (random walk
  plus white read noise) it lies between -0.5 (read noise only) and 0 (walk only) for any block
  length; a smooth misfit of the mean curve makes consecutive changes alike and drives it up. Warned above ``_LAG1_LIMIT`` (0.2) when that is also
  ``_LAG1_SIGMAS`` (3) standard errors :math:`1/\\sqrt{N}` above 0.
"""

from __future__ import annotations

import math

import numpy as np

from .objective import FitProblem

_AT_BOUND = 1e-3  # fraction of a parameter's box width counted as "at the bound"
_EXTRAPOLATION = 1.0  # a bound may lie at most this many measured ranges beyond the data
_NOISE_EXCESS = 0.05  # relative excess of dw_min_std over its all-scatter upper bound
_LAG1_LIMIT = 0.2  # lag-1 autocorrelation of residual steps counted as structure...
_LAG1_SIGMAS = 3.0  # ... when also this many standard errors above 0
_BLOCK = 10  # readings per block of the residual-structure check
_SHAPE_PREFIXES = ("gamma_", "A_", "saturation_", "width_exponent", "v0_v")
_BOUND_NAMES = ("g_max", "g_min", "w_max", "w_min")


def fit_warnings(
    problem: FitProblem,
    theta: np.ndarray,
    free: np.ndarray,
    stderr: np.ndarray,
    resid_u: np.ndarray,
    noise,
) -> list[str]:
    """Every warning of a solved fit (one line each); see the module docstring for the checks."""
    out = _degenerate_shapes(problem, theta, free, stderr)
    flagged = {line.split(" ", 1)[0] for line in out}
    out += [w for w in _at_bounds(problem, theta, free) if w.split(" ", 1)[0] not in flagged]
    out += _extrapolated(problem, theta)
    out += _noise_bounds(noise)
    out += _residual_structure(problem, resid_u)
    return out


def _at_bounds(problem: FitProblem, theta: np.ndarray, free: np.ndarray) -> list[str]:
    """Free model parameters at (within ``_AT_BOUND`` of) a bound of their box; a step table in one line."""
    out, tables = [], {}
    for i, name in enumerate(problem.spec.names):
        lo, hi = problem.lower[i], problem.upper[i]
        if not free[i] or not math.isfinite(hi - lo) or name in _BOUND_NAMES:
            continue
        for side, b in (("lower", lo), ("upper", hi)):
            # a fraction of the box, or of the bound's own size (at least 1) where the box is much wider
            tol = _AT_BOUND * min(hi - lo, max(abs(b), 1.0)) if name != "dw_min" else 10.0 * lo
            if abs(theta[i] - b) > tol:
                continue
            if name.startswith("piecewise_"):
                tables.setdefault((name.split("[")[0], side, b), []).append(name[name.index("[") :])
                continue
            out.append(
                f"{name} = {theta[i]:.4g} is at its {side} bound {b:.4g} (within {tol:.2g}): the best fit lies "
                "outside the model's range, so value and standard error mean little; try another model"
            )
    for (table, side, b), nodes in tables.items():
        out.append(
            f"{table} nodes {', '.join(nodes)} are at their {side} bound {b:g}: no step there (too few readings "
            "in that state range, or a step the other way); try fewer nodes or another model"
        )
    return out


def _extrapolated(problem: FitProblem, theta: np.ndarray) -> list[str]:
    """Bounds farther beyond the data than ``_EXTRAPOLATION`` measured ranges."""
    spec, prep = problem.spec, problem.prepared
    if spec.model == "piecewise-step":
        return []
    sm = np.concatenate(prep.smooth)
    u_lo, u_hi = float(sm.min()), float(sm.max())
    span = u_hi - u_lo
    if not span > 0:
        return []
    hi_name, lo_name = ("g_max", "g_min") if spec.conductance else ("w_max", "w_min")
    out = []
    for name, beyond in (
        (hi_name, theta[spec.names.index(hi_name)] - u_hi),
        (lo_name, u_lo - theta[spec.names.index(lo_name)]),
    ):
        factor = beyond / span
        if factor > _EXTRAPOLATION:
            out.append(
                f"{name} lies {factor:.3g} measured ranges beyond the data (allowed: {_EXTRAPOLATION:g}): "
                "the readings never approach it, so the saturation is extrapolated; measure until the device "
                "saturates, or prefer a model without bounds in the data (constant-step, piecewise-step)"
            )
    return out


def _degenerate_shapes(problem: FitProblem, theta: np.ndarray, free: np.ndarray, stderr: np.ndarray) -> list[str]:
    """Constant-step in disguise, and shape parameters the data do not determine."""
    names = problem.spec.names
    out = []
    if problem.spec.model in ("pow-step", "linear-step"):
        i_up, i_dn = names.index("gamma_up"), names.index("gamma_down")
        tol = _AT_BOUND * (problem.upper[i_up] - problem.lower[i_up])
        if theta[i_up] <= problem.lower[i_up] + tol and theta[i_dn] <= problem.lower[i_dn] + tol:
            return [
                f"gamma_up = {theta[i_up]:.3g} and gamma_down = {theta[i_dn]:.3g} are both at their lower bound "
                f"{problem.lower[i_up]:g}: {problem.spec.model} has degenerated to a constant step (and its range is "
                "not determined); fit constant-step instead"
            ]
    for i, name in enumerate(names):
        if not free[i] or not name.startswith(_SHAPE_PREFIXES):
            continue
        se = stderr[i]
        if math.isfinite(se) and se > abs(theta[i]):
            out.append(
                f"{name} = {theta[i]:.3g} +- {se:.3g}: the standard error exceeds the value (allowed: below it), "
                "so the data do not determine this nonlinearity; use a simpler model or data that span the range"
            )
    return out


def _noise_bounds(noise) -> list[str]:
    """The cycle-to-cycle estimate above its documented upper bound."""
    c2c, top = noise.c2c, noise.c2c_all
    if math.isfinite(c2c) and math.isfinite(top) and c2c > top * (1.0 + _NOISE_EXCESS):
        return [
            f"dw_min_std = {c2c:.4g} exceeds its upper bound dw_min_std_all_scatter = {top:.4g} (allowed: "
            f"{1 + _NOISE_EXCESS:g}x): the residuals are not the random walk plus read noise of the noise model, "
            "most likely a misfit of the mean curve; check the residual plot and use at most the bound"
        ]
    return []


def residual_step_lag1(problem: FitProblem, resid_u: np.ndarray, block: int = _BLOCK) -> tuple[float, int]:
    """(lag-1 autocorrelation of the residual's changes over blocks along each sweep, pooled; pairs used).

    Each sweep is cut into blocks of ``block`` readings and the residual's change over a block
    is taken. Under the noise model these changes are a sum of independent step noise
    plus the difference of two read errors, so consecutive changes correlate between -0.5 and 0
    whatever the block length; a smooth misfit of the mean curve grows with the block length
    and makes consecutive changes alike (correlation toward +1).
    """
    num = den = 0.0
    pairs = 0
    for rows in problem.prepared.segment_rows:
        r = resid_u[rows][::block]
        dr = np.diff(r)
        if dr.size < 2:
            continue
        den += float(np.sum(dr**2))
        num += float(np.sum(dr[:-1] * dr[1:]))
        pairs += dr.size - 1
    if pairs < 10 or not den > 0:
        return math.nan, pairs
    return num / den, pairs


def _residual_structure(problem: FitProblem, resid_u: np.ndarray) -> list[str]:
    """Consecutive residual steps alike: the mean curve misses the data."""
    rho, pairs = residual_step_lag1(problem, resid_u)
    if not math.isfinite(rho):
        return []
    limit = max(_LAG1_LIMIT, _LAG1_SIGMAS / math.sqrt(pairs))
    if rho > limit:
        return [
            f"residual changes are correlated along the sweeps: lag-1 autocorrelation {rho:.3f} over {pairs} pairs "
            f"(allowed: at most {limit:.3f}; white read noise gives -0.5, a random walk 0): the model misses the "
            "shape of the curve; try another model (--model auto) and check the residual plot"
        ]
    return []
