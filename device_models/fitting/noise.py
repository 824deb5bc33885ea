"""Cycle-to-cycle and read noise from the residuals of a fit.

``dw_min_std`` (written to the card) and the read noise are the maximum-likelihood values of a
state-space model of the residuals along each sweep (``_kalman_nll``): a random walk whose
variance per pulse is :math:`\\sigma_{c2c}^2 d_j^2` plus white read noise. Two moment estimates
(``_c2c``) are reported beside it, and stand in where the likelihood has nothing to go on.

References:
    Gong et al., "Signal and noise extraction from analog memory elements for neuromorphic
    computing", Nat. Commun. 9, 2102 (2018).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import minimize

from .data import _Prepared
from .objective import FitProblem


class _Noise(NamedTuple):
    """The noise estimates of one fit (see ``device_models.fitting``)."""

    c2c: float  # dw_min_std: maximum likelihood, or the lag-1 moment estimate where that fails
    read_var: float  # read noise variance (u units^2) belonging to ``c2c``
    c2c_lag1: float  # moment estimate: residual steps minus the lag-1 read noise
    c2c_all: float  # all pulse-to-pulse scatter counted as cycle-to-cycle noise


def _noise_estimates(problem: FitProblem, theta: np.ndarray, resid_u: np.ndarray, pred_u: np.ndarray) -> _Noise:
    """Maximum-likelihood noise estimates, falling back to the moment estimates where not finite."""
    c2c_moments, c2c_all, read_var_moments = _c2c(problem.prepared, resid_u, pred_u)
    c2c, read_var = _c2c_state_space(problem, theta, resid_u, pred_u)
    if not math.isfinite(c2c):
        c2c, read_var = c2c_moments, read_var_moments
    return _Noise(c2c=c2c, read_var=read_var, c2c_lag1=c2c_moments, c2c_all=c2c_all)


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


def _walk_inputs(problem: FitProblem, theta: np.ndarray, resid_u: np.ndarray, pred_u: np.ndarray):
    """(v, phi, d2, first) of ``_kalman_nll``, sweeps laid end to end, float64."""
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
    return v, phi, d2, first


def _c2c_state_space(
    problem: FitProblem, theta: np.ndarray, resid_u: np.ndarray, pred_u: np.ndarray
) -> tuple[float, float]:
    """(dw_min_std, read noise variance in u units^2) by maximum likelihood (``_kalman_nll``).

    A random walk (cycle-to-cycle noise accumulates: the deviation's variance grows with each
    step) and white read noise (it does not) are told apart by how the residuals are correlated
    along a sweep, using every lag at once, so a read noise much larger than a step no longer
    leaks into the cycle-to-cycle estimate (as the lag-1 moment estimator does).
    """
    v, phi, d2, first = _walk_inputs(problem, theta, resid_u, pred_u)
    n_sweeps = len(problem.prepared.segment_rows)
    mean_d2 = float(np.mean(np.asarray(d2)[~np.asarray(first)])) if v.size > n_sweeps else 0.0
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
