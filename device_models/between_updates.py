"""What happens to a device between and beside the pulses of an update (aihwkit ``PulsedDevice``):
decay toward the reset state and diffusion once per mini-batch, resets, and the write noise
between the device state and the weight a read sees.

- Decay (``lifetime``): :math:`w \\leftarrow (w - r)\\,\\delta + r` with the cross-point's decay scale
  :math:`\\delta = 1 - 1/t` (lifetime :math:`t` in mini-batches, drawn with ``lifetime_dtod``) and
  reset state :math:`r` (``reset``, ``reset_dtod``), then the bounds.
- Diffusion (``diffusion``): :math:`w \\leftarrow w + \\rho\\,\\xi` with the cross-point's rate
  :math:`\\rho`, then the bounds.
- Reset: :math:`w \\leftarrow r + \\sigma_{reset}\\xi` (``reset_std``), then the bounds.
- Write noise (``write_noise_std``): the weight a read sees is the device state plus
  :math:`\\sigma_w \\Delta w_{min} \\xi`, a draw kept until the device is written again (a pulse, a
  decay or diffusion step, a reset, a programming). The device state stays hidden (aihwkit's
  persistent weight) and is what the pulses move.

Decay and diffusion are applied once per mini-batch, after the update (aihwkit's
``post_update_step``); a device without them pays nothing (their ``CrossPoints`` fields are
``None``, a static fact).

Reference: IBM aihwkit ``src/rpucuda/rpu_pulsed_device.cpp`` (``decayWeights``,
``diffuseWeights``, ``resetCols``, ``applyUpdateWriteNoise``, ``populate``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, in_use

__all__ = ["decay_and_diffuse", "has_write_noise", "reset_states", "write_noise", "writes_between_updates"]


def writes_between_updates(cp: CrossPoints) -> bool:
    """Whether the devices change between updates (decay or diffusion): a static fact of ``cp``."""
    return cp.decay_scale is not None or cp.diffusion_rate is not None


def has_write_noise(model: AbstractPulsedModel) -> bool:
    """Whether the model's write noise is on (concrete ``write_noise_std > 0``, or traced)."""
    return in_use(model.pulsed.write_noise_std)


def decay_and_diffuse(model: AbstractPulsedModel, cp: CrossPoints, w: jax.Array, *, key: jax.Array) -> jax.Array:
    """One mini-batch of decay and diffusion (each only where the device has it), clipped to the bounds."""
    if cp.decay_scale is not None:
        r = cp.reset_bias if cp.reset_bias is not None else jnp.asarray(model.pulsed.reset, w.dtype)
        w = jnp.clip((w - r) * cp.decay_scale + r, cp.b_min, cp.b_max)
    if cp.diffusion_rate is not None:
        w = jnp.clip(w + cp.diffusion_rate * jax.random.normal(key, w.shape, w.dtype), cp.b_min, cp.b_max)
    return w


def reset_states(
    model: AbstractPulsedModel, cp: CrossPoints, w: jax.Array, where: jax.Array, *, key: jax.Array
) -> jax.Array:
    """Reset the devices where ``where`` is true to their reset state, with ``reset_std`` noise."""
    r = cp.reset_bias if cp.reset_bias is not None else jnp.asarray(model.pulsed.reset, w.dtype)
    new = r + model.pulsed.reset_std * jax.random.normal(key, w.shape, w.dtype)
    return jnp.where(where, jnp.clip(new, cp.b_min, cp.b_max), w)


def write_noise(model: AbstractPulsedModel, shape: tuple[int, ...], *, key: jax.Array, dtype=jnp.float32) -> jax.Array:
    """A fresh draw of the write noise: :math:`\\sigma_w \\Delta w_{min} \\xi` (weight units)."""
    p = model.pulsed
    return (p.write_noise_std * p.dw_min * jax.random.normal(key, shape, dtype)).astype(dtype)
