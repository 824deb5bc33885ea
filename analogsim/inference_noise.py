"""A PCM-like inference noise model: programming noise, conductance drift and 1/f read noise.

The statistical model of phase-change memory of Nandakumar et al. (2019, "Phase-change memory
models for deep learning training and inference", ICECS) as used by Joshi et al. (Nat. Commun.
11, 2473, 2020) and implemented by aihwkit's ``PCMLikeNoiseModel``
(``aihwkit/inference/noise/pcm.py``), whose constants these are. Conductances are in uS; a
weight maps to one device pair (aihwkit's ``SinglePairConductanceConverter``):
:math:`g^\\pm = g_{max} \\max(\\pm w, 0) / \\omega`, :math:`\\omega = \\max |W|` of the layer,
:math:`g_{max} = 25\\,\\mu S`.

- Programming: :math:`g_p = g_T + \\sigma_p(g_T) \\xi`, clipped at 0, with
  :math:`\\sigma_p = c_0 + c_1 (g_T/g_{max}) + c_2 (g_T/g_{max})^2`,
  ``c = (0.26348, 1.9650, -1.1731)`` uS (fitted at ``g_max = 25 uS``).
- Drift exponents, drawn per device at programming: :math:`\\nu = |\\mu_\\nu + \\sigma_\\nu \\xi|`,
  :math:`\\mu_\\nu = \\mathrm{clip}(-0.0155 \\ln g_r + 0.0244, 0.049, 0.1)`,
  :math:`\\sigma_\\nu = \\mathrm{clip}(-0.0125 \\ln g_r - 0.0059, 0.008, 0.045)`,
  :math:`g_r = \\max(g_T/g_{max}, 10^{-7})`.
- Drift: :math:`g_d = g_p ((t + t_0)/t_0)^{-\\nu}`, :math:`t_0 = 20` s after programming.
- Accumulated 1/f read noise at time t: :math:`g = g_d + |g_d| Q_s \\sqrt{\\ln((t + t_0 + t_r)/(2 t_r))} \\xi`,
  clipped at 0, :math:`Q_s = \\min(0.0088 / \\max((g_p/g_{max})^{0.65}, 10^{-3}), 0.2)`,
  :math:`t_r = 250` ns.

Pure functions with explicit keys: ``program_pcm(w, key=)`` -> ``PCMState``;
``pcm_weights_at(state, t_s, key=)`` -> weights after ``t_s``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "PCM_G_MAX_US",
    "PCM_PROG_COEFF_US",
    "PCMState",
    "drift_exponent_moments",
    "pcm_program_std_us",
    "pcm_read_noise_rel",
    "pcm_weights_at",
    "program_pcm",
]

PCM_G_MAX_US = 25.0  # aihwkit's default g_max (uS)
PCM_PROG_COEFF_US = (0.26348, 1.9650, -1.1731)  # Nandakumar et al. 2019, via aihwkit (uS at g_max 25 uS)
PCM_T0_S = 20.0  # first read after programming (s)
PCM_T_READ_S = 250e-9  # read duration of the 1/f fit (s)
_ZERO_CLIP = 1e-7


class PCMState(NamedTuple):
    """The programmed pair conductances (uS), their drift exponents and the weight scale omega."""

    g_plus: jax.Array
    g_minus: jax.Array
    nu_plus: jax.Array
    nu_minus: jax.Array
    g_target_plus: jax.Array
    g_target_minus: jax.Array
    omega: jax.Array


def pcm_program_std_us(g_target_us: jax.Array, g_max_us: float = PCM_G_MAX_US) -> jax.Array:
    """Standard deviation of the programming noise (uS) at target conductance ``g_target_us``."""
    gr = g_target_us / g_max_us
    c0, c1, c2 = PCM_PROG_COEFF_US
    return (c0 + c1 * gr + c2 * gr**2) * (g_max_us / 25.0)


def drift_exponent_moments(g_target_us: jax.Array, g_max_us: float = PCM_G_MAX_US) -> tuple[jax.Array, jax.Array]:
    """``(mu, sigma)`` of the drift exponent before the absolute value, at ``g_target_us``."""
    gr = jnp.maximum(jnp.abs(g_target_us / g_max_us), _ZERO_CLIP)
    mu = jnp.clip(-0.0155 * jnp.log(gr) + 0.0244, 0.049, 0.1)
    sig = jnp.clip(-0.0125 * jnp.log(gr) - 0.0059, 0.008, 0.045)
    return mu, sig


def pcm_read_noise_rel(g_prog_us: jax.Array, t_s: float, g_max_us: float = PCM_G_MAX_US) -> jax.Array:
    """Relative std of the accumulated 1/f read noise at ``t_s`` after programming."""
    q_s = jnp.minimum(0.0088 / jnp.maximum((jnp.abs(g_prog_us) / g_max_us) ** 0.65, 1e-3), 0.2)
    t = t_s + PCM_T0_S
    return q_s * math.sqrt(math.log((t + PCM_T_READ_S) / (2 * PCM_T_READ_S)))


def _program(g_target, key, g_max_us):
    k_p, k_n = jax.random.split(key)
    g = g_target + pcm_program_std_us(g_target, g_max_us) * jax.random.normal(k_p, g_target.shape, g_target.dtype)
    mu, sig = drift_exponent_moments(g_target, g_max_us)
    nu = jnp.abs(mu + sig * jax.random.normal(k_n, g_target.shape, g_target.dtype))
    return jnp.maximum(g, 0.0), nu


def program_pcm(w: jax.Array, *, key: jax.Array, g_max_us: float = PCM_G_MAX_US) -> PCMState:
    """Program weights ``w`` onto PCM device pairs: one draw of programming noise and drift exponents."""
    omega = jnp.max(jnp.abs(w))
    omega = jnp.where(omega > 0, omega, 1.0)
    gt_p = g_max_us * jnp.maximum(w, 0.0) / omega
    gt_m = g_max_us * jnp.maximum(-w, 0.0) / omega
    k_p, k_m = jax.random.split(key)
    g_p, nu_p = _program(gt_p, k_p, g_max_us)
    g_m, nu_m = _program(gt_m, k_m, g_max_us)
    return PCMState(g_p, g_m, nu_p, nu_m, gt_p, gt_m, omega)


def _drift(g, nu, t_s):
    """Conductance drift of programmed ``g`` with exponents ``nu`` after ``t_s`` seconds."""
    return g * ((t_s + PCM_T0_S) / PCM_T0_S) ** (-nu)


def _drift_read(g, nu, t_s, key, g_max_us):
    gd = _drift(g, nu, t_s)
    noisy = gd + jnp.abs(gd) * pcm_read_noise_rel(g, t_s, g_max_us) * jax.random.normal(key, g.shape, g.dtype)
    return jnp.maximum(noisy, 0.0)


def pcm_weights_at(state: PCMState, t_s: float, *, key: jax.Array | None, g_max_us: float = PCM_G_MAX_US) -> jax.Array:
    """The weights ``t_s`` seconds after programming: drift, then one draw of accumulated read
    noise (``key=None``: drift only, no noise)."""
    if t_s < 0:
        raise ValueError(f"pcm_weights_at.t_s: value {t_s!r} is not allowed; must be >= 0")
    if key is None:
        g_p, g_m = _drift(state.g_plus, state.nu_plus, t_s), _drift(state.g_minus, state.nu_minus, t_s)
    else:
        k_p, k_m = jax.random.split(key)
        g_p = _drift_read(state.g_plus, state.nu_plus, t_s, k_p, g_max_us)
        g_m = _drift_read(state.g_minus, state.nu_minus, t_s, k_m, g_max_us)
    return (g_p - g_m) * state.omega / g_max_us
