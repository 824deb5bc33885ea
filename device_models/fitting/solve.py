"""Solving a ``FitProblem``: bounded least squares, then freezing what the data do not determine.

After the fit, a parameter whose Jacobian column vanishes, or that lies along a null direction
of the column-normalised Jacobian (condition number above ``_COND_LIMIT``), is frozen at its
value and the fit is repeated.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.optimize import least_squares

from .objective import FitProblem

_COND_LIMIT = 1e7  # condition number of the column-normalised Jacobian beyond which a parameter is frozen


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
    """(theta, free mask, RSS in u units, frozen name -> reason): multi-start fit, then freeze the undetermined."""
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
