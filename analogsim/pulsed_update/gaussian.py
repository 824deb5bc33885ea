"""The ``gaussian`` rung of the pulsed update: the batch's compound-Poisson change as its
mean plus near-normal noise of its variance (``analogsim.pulsed_update`` explains the rung)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from device_models import safe_sqrt

from .. import rng
from ..rng import fast_key as _fast_key
from .probabilities import _count_terms, _up_down
from .settings import PulseCounts

__all__: list[str] = []  # private to the package: reached through analogsim.pulsed_update.pulsed_update


def _stochastic_round(key: jax.Array, total: jax.Array) -> jax.Array:
    """``floor(total + u)``, ``u ~ U[0, 1)``: an int32 whose mean is ``total`` (>= 0)."""
    return jnp.floor(total + jax.random.uniform(key, total.shape, total.dtype)).astype(jnp.int32)


def _unit_noise(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Zero-mean, unit-variance noise from 32 random bits per element: the standardised
    popcount, :math:`(\\mathrm{Bin}(32, 1/2) - 16)/\\sqrt{8}`.

    A near-Gaussian (skewness 0, excess kurtosis -1/16, 33 levels 0.35 apart, tails cut at
    5.7) at the cost of the random bits alone: on CPU the inverse error function of
    ``jax.random.normal`` costs about as much again as the bits (and fused into the update
    several times that), and the ``gaussian`` rung's shape of noise is an approximation anyway.
    The bits are ``analogsim.rng.bits`` (four words from each Philox block when the array is
    large).
    """
    bits = rng.bits(key, shape)
    return ((jax.lax.population_count(bits).astype(dtype) - 16.0) * (1.0 / 8.0**0.5)).astype(dtype)


def _gaussian_update(model, cp, w, x, d, lr, up, key):
    """The ``gaussian`` rung: the batch's compound-Poisson change, its mean and variance, with
    one near-normal draw per cross-point (see the module docstring)."""
    total, signed, sum_total, sum_signed = _count_terms(model, x, d, lr, up)
    mean_up, mean_down = _up_down(total, signed)
    k_noise, k_up, k_down = jax.random.split(_fast_key(key), 3)
    step_up = model.step_up(cp, w)
    step_down = model.step_down(cp, w)
    drift = mean_up * step_up - mean_down * step_down
    var = mean_up * (step_up**2 + model.step_variance(cp, w, True)) + mean_down * (
        step_down**2 + model.step_variance(cp, w, False)
    )
    new = jnp.clip(w + drift + safe_sqrt(var) * _unit_noise(k_noise, w.shape, w.dtype), cp.b_min, cp.b_max)
    new = jnp.where(mean_up + mean_down > 0, new, w)
    # the array's expected totals from the line sums (equal to summing mean_up and mean_down, up
    # to rounding, since total >= |signed| at every cross-point), without another pass over it
    sum_up, sum_down = _up_down(sum_total, sum_signed)
    touched = -jnp.expm1(-(mean_up + mean_down))  # P(at least one pulse), Poisson counts
    counts = PulseCounts(
        up=_stochastic_round(k_up, sum_up), down=_stochastic_round(k_down, sum_down), touched=touched, per_device=total
    )
    return new, counts
