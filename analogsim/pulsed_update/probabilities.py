"""Firing probabilities of the bit streams and the pulse counts they imply
(``analogsim.pulsed_update``): per sample for the ``exact`` rung, summed over the batch
into expected up and down counts for the ``expected`` and ``gaussian`` rungs."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .settings import UpdateParameters

__all__ = ["pulse_probabilities", "stream_counts"]


def pulse_probabilities(
    x: jax.Array, d: jax.Array, lr: float | jax.Array, dw_min: float | jax.Array, up: UpdateParameters
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Row and column firing probabilities and the train length of one sample.

    Args:
      x: (in,) the layer input of the sample.
      d: (out,) the error at the layer output of the sample.
      lr: learning rate.
      dw_min: the device's nominal step (weight units).
      up: update settings.

    Returns:
      ``(p_rows (in,), q_cols (out,), bl)`` with ``bl`` an int32 scalar; ``bl == 0`` when ``x``
      or ``d`` is all zero (no pulses).
    """
    x_max = jnp.max(jnp.abs(x))
    d_max = jnp.max(jnp.abs(d))
    active = (x_max > 0) & (d_max > 0)
    if up.update_bl_management:
        need = jnp.ceil(lr * x_max * d_max / dw_min)
        bl = jnp.clip(need, 1, up.desired_bl).astype(jnp.int32)
    else:
        bl = jnp.asarray(up.desired_bl, jnp.int32)
    bl = jnp.where(active, bl, 0)
    safe_bl = jnp.maximum(bl, 1).astype(x.dtype)
    a = b = jnp.sqrt(lr / (dw_min * safe_bl))
    if up.update_management:
        safe_x = jnp.where(active, x_max, 1.0)
        safe_d = jnp.where(active, d_max, 1.0)
        ratio = jnp.sqrt(safe_d / safe_x)
        b = b * ratio
        a = a / ratio
    p = jnp.clip(b * jnp.abs(x), 0.0, 1.0)
    q = jnp.clip(a * jnp.abs(d), 0.0, 1.0)
    return p, q, bl


def _count_terms(model, x, d, lr, up):
    """The two products behind the expected counts: per cross-point, the total
    :math:`\\sum_s BL_s p_{sj} q_{si}` and the signed sum (each term times the sign of
    :math:`x_{sj} d_{si}`), (out, in) each; and their sums over the array, (scalars) from the
    per-sample line sums, without a pass over the array."""
    p, q, bl = jax.vmap(pulse_probabilities, in_axes=(0, 0, None, None, None))(x, d, lr, model.pulsed.dw_min, up)
    pb = p * bl[:, None].astype(p.dtype)
    qs, pbs = q * jnp.sign(d), pb * jnp.sign(x)
    total = q.T @ pb
    signed = qs.T @ pbs  # > 0: more down pulses
    sum_total = jnp.sum(jnp.sum(q, axis=1) * jnp.sum(pb, axis=1))
    sum_signed = jnp.sum(jnp.sum(qs, axis=1) * jnp.sum(pbs, axis=1))
    return total, signed, sum_total, sum_signed


def _mean_counts(model, x, d, lr, up):
    """Expected up and down pulses of the batch at each cross-point, (out, in) each.

    :math:`\\sum_s BL_s\\,p_{sj} q_{si}` over the samples whose sign
    :math:`-\\mathrm{sign}(x_{sj} d_{si})` is up, and over those where it is down (probability
    clipping and BL management included). Two matrix products: the total and the signed sum.
    """
    total, signed, _, _ = _count_terms(model, x, d, lr, up)
    return _up_down(total, signed)


def _up_down(total, signed):
    """Up and down pulses from the total and the signed sum (signed > 0: more down pulses)."""
    return jnp.maximum(0.5 * (total - signed), 0.0), jnp.maximum(0.5 * (total + signed), 0.0)


def stream_counts(x, d, lr, dw_min, up: UpdateParameters) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The bit streams of a batch, for the energy ledger: pulse slots :math:`\\sum_s BL_s` (int32),
    and the expected pulses on the input lines :math:`\\sum_s BL_s \\sum_j p_{sj}` and on the
    output lines :math:`\\sum_s BL_s \\sum_i q_{si}` (float32: expectations of the draws)."""
    p, q, bl = jax.vmap(pulse_probabilities, in_axes=(0, 0, None, None, None))(x, d, lr, dw_min, up)
    blf = bl.astype(jnp.float32)
    rows = jnp.sum(blf * jnp.sum(p, axis=1, dtype=jnp.float32))
    cols = jnp.sum(blf * jnp.sum(q, axis=1, dtype=jnp.float32))
    return jnp.sum(bl), rows, cols
