"""Read noise and retention: what happens to stored weights between and during reads.

Generic for every device model (used by inference after training):

- *Read noise*: each read sees :math:`w + \\sigma_r \\xi` with fresh :math:`\\xi \\sim N(0,1)`
  per cross-point and read; the stored state is unchanged.
- *Relaxation*: the state relaxes toward a rest state with a time constant (for protonic
  devices, protons diffusing back out of the channel):
  :math:`w(t) = w_{rest} + (w_0 - w_{rest})\\,e^{-t/\\tau}`.
- *Power-law drift* (phase-change-like): :math:`w(t) = w(t_0)\\,(t / t_0)^{-\\nu}` for
  :math:`t > t_0`.

Both retention effects are applied in that order; ``tau_s = inf`` and ``drift_nu = 0`` turn
them off (the defaults), so a card without a ``[retention]`` section keeps its weights.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

__all__ = ["Retention", "read_weights", "retain"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Retention:
    """Read-noise and retention parameters of a device (all float, differentiable)."""

    read_noise_std: float | jax.Array = 0.0  # std of the read noise (weight units)
    tau_s: float | jax.Array = math.inf  # relaxation time constant (s)
    w_rest: float | jax.Array = 0.0  # state the device relaxes to (weight units)
    drift_nu: float | jax.Array = 0.0  # power-law drift exponent (1)
    drift_t0_s: float | jax.Array = 1.0  # reference time of the drift (s)

    def __post_init__(self):
        for name in ("read_noise_std", "drift_nu"):
            v = getattr(self, name)
            if isinstance(v, int | float) and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"Retention.{name}: value {v!r} is not allowed; must be finite and >= 0")
        for name in ("tau_s", "drift_t0_s"):
            v = getattr(self, name)
            if isinstance(v, int | float) and not v > 0:
                raise ValueError(f"Retention.{name}: value {v!r} is not allowed; must be > 0 (inf: no effect)")


def read_weights(ret: Retention, w: jax.Array, *, key: jax.Array | None) -> jax.Array:
    """The weights one read sees: :math:`w + \\sigma_r \\xi` (``key=None``: noise-free)."""
    if key is None:
        return w
    return w + jnp.asarray(ret.read_noise_std, w.dtype) * jax.random.normal(key, w.shape, w.dtype)


def retain(ret: Retention, w: jax.Array, t_s: float | jax.Array, *, b_min=None, b_max=None) -> jax.Array:
    """The stored states after ``t_s`` seconds without programming (relaxation, then drift).

    Args:
      ret: the device's retention parameters.
      w: states right after programming (weight units).
      t_s: elapsed time (s), >= 0.
      b_min, b_max: optional bounds to clip to (the cross-points' own).
    """
    dtype = w.dtype
    t = jnp.asarray(t_s, dtype)
    tau = jnp.asarray(ret.tau_s, dtype)
    rest = jnp.asarray(ret.w_rest, dtype)
    decay = jnp.where(jnp.isinf(tau), 1.0, jnp.exp(-t / jnp.where(jnp.isinf(tau), 1.0, tau)))
    w = rest + (w - rest) * decay
    t0 = jnp.asarray(ret.drift_t0_s, dtype)
    ratio = jnp.maximum(t / t0, 1.0)
    w = w * ratio ** (-jnp.asarray(ret.drift_nu, dtype))
    if b_min is not None or b_max is not None:
        w = jnp.clip(w, b_min, b_max)
    return w
