"""The ``expected`` rung of the pulsed update: Poisson counts per batch applied at once
(``analogsim.pulsed_update`` explains the rung and how it departs from ``exact``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from device_models import safe_sqrt

from .. import rng
from ..rng import fast_key as _fast_key
from .probabilities import _mean_counts
from .settings import PulseCounts

__all__: list[str] = []  # private to the package: reached through analogsim.pulsed_update.pulsed_update


def _poisson(key: jax.Array, lam: jax.Array, kmax: int = 12, normal_above: float = 3.0) -> jax.Array:
    """Poisson counts for means ``lam``: exact inverse-CDF sampling (truncated at ``kmax``,
    a tail below 2e-5 for means up to 3) where ``lam <= normal_above``, and a rounded
    Gaussian of mean and variance ``lam`` above it. Fixed cost: ``kmax`` elementwise passes
    and one uniform per element (the Gaussian branch reuses it through the inverse normal CDF).
    """
    # read by every term below: computed once (fused into each, the join of the words is slow)
    u = rng.computed_once(rng.uniform(key, lam.shape, lam.dtype, minval=jnp.finfo(lam.dtype).tiny))
    small = jnp.minimum(lam, normal_above)
    term = jnp.exp(-small)  # P(N = 0)
    cdf = term
    n = jnp.zeros(lam.shape, jnp.int32)
    for k in range(1, kmax + 1):
        n = n + (u > cdf).astype(jnp.int32)
        term = term * small / k
        cdf = cdf + term
    big = jnp.round(lam + safe_sqrt(lam) * jax.scipy.special.ndtri(u))
    return jnp.where(lam <= normal_above, n, jnp.maximum(big, 0).astype(jnp.int32))


def _expected_update(model, cp, w, x, d, lr, up, key):
    """The ``expected`` rung: Poisson counts per batch applied at once (see the module docstring)."""
    mean_up, mean_down = _mean_counts(model, x, d, lr, up)
    k_up, k_down, k_noise = jax.random.split(_fast_key(key), 3)
    n_up = _poisson(k_up, mean_up)
    n_down = _poisson(k_down, mean_down)
    step_up = model.step_up(cp, w)
    step_down = model.step_down(cp, w)
    f_up, f_down = n_up.astype(w.dtype), n_down.astype(w.dtype)
    dw = f_up * step_up - f_down * step_down
    var = f_up * model.step_variance(cp, w, True) + f_down * model.step_variance(cp, w, False)
    std = safe_sqrt(var)
    dw = dw + std * rng.normal(k_noise, w.shape, w.dtype)
    new = jnp.clip(w + dw, cp.b_min, cp.b_max)
    new = jnp.where((n_up + n_down) > 0, new, w)
    touched = ((n_up + n_down) > 0).astype(w.dtype)
    return new, PulseCounts(
        up=jnp.sum(n_up), down=jnp.sum(n_down), touched=touched, per_device=(n_up + n_down).astype(w.dtype)
    )
