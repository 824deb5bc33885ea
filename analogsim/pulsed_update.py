"""Pulsed update of an analog array with stochastic bit streams (aihwkit
``PulsedUpdateParameter``, ``StochasticCompressed`` pulses).

The SGD step :math:`W \\leftarrow W - \\eta\\, d x^T` of one sample is realised by ``BL``
time slots. In each slot, row (input) ``j`` fires with probability :math:`p_j = B|x_j|` and
column (output) ``i`` with :math:`q_i = A|d_i|`; where both fire, the cross-point receives one
pulse of sign :math:`-\\mathrm{sign}(x_j d_i)` (a positive product lowers the weight), i.e.

.. math::
    A = B = \\sqrt{\\frac{\\eta}{\\Delta w_{min} BL}}, \\qquad
    \\mathbb{E}[n_{ij}] = BL\\,p_j q_i = \\frac{\\eta |x_j d_i|}{\\Delta w_{min}}.

*Update BL management* shortens the train to
:math:`BL = \\min(\\lceil \\eta \\max|x| \\max|d| / \\Delta w_{min} \\rceil, BL_{desired})`;
*update management* multiplies ``B`` by :math:`\\sqrt{\\max|d| / \\max|x|}` and ``A`` by its
inverse, balancing the two probabilities. Probabilities are clipped to 1.

Two rungs of the fidelity ladder:

- ``exact`` (the ground truth) applies samples one after another and, inside a sample, slot
  after slot, every pulse with its own cycle-to-cycle noise.
- ``expected`` draws, per cross-point and batch, the number of up and of down pulses from a
  Poisson law whose mean is the exact expected count of the bit streams,
  :math:`\\sum_s BL_s\\,p_{sj} q_{si}` over the samples whose sign gives that direction (so
  probability clipping and BL management are kept), and applies them at once from the state
  before the batch: :math:`\\Delta w = n_+ \\Delta w_+(w) - n_- \\Delta w_-(w)` plus Gaussian
  cycle-to-cycle noise of the summed variance
  :math:`n_+ \\mathrm{Var}_+(w) + n_- \\mathrm{Var}_-(w)` (the model's per-pulse variance,
  :math:`(\\sigma_{c2c} \\Delta w_\\pm)^2` for aihwkit's devices), then one clip to the bounds. It
  departs from ``exact`` in the order of pulses within a batch (first-order in the step), in
  the count distribution (Poisson instead of a sum of binomials: equal means, a variance
  larger by at most the squared coincidence probability; and independent across cross-points,
  whereas the bit streams correlate cross-points that share a row or a column), and in
  clipping once per batch.

References:
    Gokmen & Vlasov, Front. Neurosci. 10, 333 (2016); IBM aihwkit ``PulsedUpdateParameter``
    (desired_bl 31, update_bl_management and update_management on).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

from device_models import AbstractPulsedModel, CrossPoints, apply_pulses

__all__ = ["UPDATE_MODES", "PulseCounts", "UpdateParameters", "pulse_probabilities", "pulsed_update"]

UPDATE_MODES = ("exact", "expected")


@dataclasses.dataclass(frozen=True)
class UpdateParameters:
    """Settings of the pulsed update (aihwkit defaults)."""

    desired_bl: int = 31  # longest pulse train (time slots per sample)
    update_bl_management: bool = True  # shorten BL to what the sample needs
    update_management: bool = True  # balance row and column probabilities
    # Rung of the fidelity ladder. "expected" is the default: on RT-MNIST it stays within
    # 0.3 points of "exact" at about 10x the speed (README, "Fidelity ladder").
    mode: Literal["exact", "expected"] = "expected"

    def __post_init__(self):
        if not (isinstance(self.desired_bl, int) and self.desired_bl >= 1):
            raise ValueError(
                f"UpdateParameters.desired_bl: value {self.desired_bl!r} is not allowed; must be an int >= 1"
            )
        if self.mode not in UPDATE_MODES:
            raise ValueError(
                f"UpdateParameters.mode: value {self.mode!r} is not allowed; allowed: {', '.join(UPDATE_MODES)}"
            )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PulseCounts:
    """Pulses fired in one update (int32 scalars; a step is far below 2**31 pulses)."""

    up: jax.Array  # potentiating pulses
    down: jax.Array  # depressing pulses


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


def _sample_update(model, cp, w, x, d, lr, up, key):
    """All pulses of one sample, slot by slot (exact)."""
    p, q, bl = pulse_probabilities(x, d, lr, model.pulsed.dw_min, up)
    # +1: potentiate (raise w) where x_j d_i < 0.
    direction = (-jnp.sign(d)[:, None] * jnp.sign(x)[None, :]).astype(jnp.int8)

    def slot(t, carry):
        w, n_up, n_down = carry
        k_row, k_col, k_noise = jax.random.split(jax.random.fold_in(key, t), 3)
        rows = jax.random.bernoulli(k_row, p)
        cols = jax.random.bernoulli(k_col, q)
        pulses = jnp.where(cols[:, None] & rows[None, :], direction, jnp.int8(0))
        w = apply_pulses(model, cp, w, pulses, key=k_noise)
        n_up = n_up + jnp.sum(pulses > 0, dtype=jnp.int32)
        n_down = n_down + jnp.sum(pulses < 0, dtype=jnp.int32)
        return w, n_up, n_down

    zero = jnp.zeros((), jnp.int32)
    return jax.lax.fori_loop(0, bl, slot, (w, zero, zero))


def _poisson(key: jax.Array, lam: jax.Array, kmax: int = 12, normal_above: float = 3.0) -> jax.Array:
    """Poisson counts for means ``lam``: exact inverse-CDF sampling (truncated at ``kmax``,
    a tail below 2e-5 for means up to 3) where ``lam <= normal_above``, and a rounded
    Gaussian of mean and variance ``lam`` above it. Fixed cost: ``kmax`` elementwise passes.
    """
    k_u, k_n = jax.random.split(key)
    u = jax.random.uniform(k_u, lam.shape, lam.dtype)
    small = jnp.minimum(lam, normal_above)
    term = jnp.exp(-small)  # P(N = 0)
    cdf = term
    n = jnp.zeros(lam.shape, jnp.int32)
    for k in range(1, kmax + 1):
        n = n + (u > cdf).astype(jnp.int32)
        term = term * small / k
        cdf = cdf + term
    big = jnp.round(lam + jnp.sqrt(lam) * jax.random.normal(k_n, lam.shape, lam.dtype))
    return jnp.where(lam <= normal_above, n, jnp.maximum(big, 0).astype(jnp.int32))


def _expected_update(model, cp, w, x, d, lr, up, key):
    """The ``expected`` rung: Poisson counts per batch applied at once (see the module docstring)."""
    p, q, bl = jax.vmap(pulse_probabilities, in_axes=(0, 0, None, None, None))(x, d, lr, model.pulsed.dw_min, up)
    pb = p * bl[:, None].astype(p.dtype)
    x_pos, x_neg = pb * (x > 0), pb * (x < 0)
    d_pos, d_neg = q * (d > 0), q * (d < 0)
    # +1 (up) where x_j d_i < 0
    mean_up = d_pos.T @ x_neg + d_neg.T @ x_pos
    mean_down = d_pos.T @ x_pos + d_neg.T @ x_neg
    k_up, k_down, k_noise = jax.random.split(key, 3)
    n_up = _poisson(k_up, mean_up)
    n_down = _poisson(k_down, mean_down)
    step_up = model.step_up(cp, w)
    step_down = model.step_down(cp, w)
    f_up, f_down = n_up.astype(w.dtype), n_down.astype(w.dtype)
    dw = f_up * step_up - f_down * step_down
    var = f_up * model.step_variance(cp, w, True) + f_down * model.step_variance(cp, w, False)
    std = jnp.sqrt(var)
    dw = dw + std * jax.random.normal(k_noise, w.shape, w.dtype)
    new = jnp.clip(w + dw, cp.b_min, cp.b_max)
    new = jnp.where((n_up + n_down) > 0, new, w)
    return new, PulseCounts(up=jnp.sum(n_up), down=jnp.sum(n_down))


def pulsed_update(
    model: AbstractPulsedModel,
    cp: CrossPoints,
    w: jax.Array,
    x: jax.Array,
    d: jax.Array,
    lr: float | jax.Array,
    up: UpdateParameters,
    *,
    key: jax.Array,
) -> tuple[jax.Array, PulseCounts]:
    """Apply the pulsed SGD update of a batch (``exact``: sample after sample, pulse after pulse).

    Args:
      model: device model of the array.
      cp: the array's cross-point parameters.
      w: (out, in) device states.
      x: (batch, in) layer inputs.
      d: (batch, out) errors at the layer output (the gradient of the loss with respect to the
        output, so with a mean-reduced loss it includes the 1/batch factor, as in aihwkit).
      lr: learning rate.
      up: update settings.
      key: PRNG key.

    Returns:
      The new states and the pulses fired.
    """
    if up.mode == "expected":
        return _expected_update(model, cp, w, x, d, lr, up, key)
    keys = jax.random.split(key, x.shape[0])

    def body(carry, inputs):
        w, n_up, n_down = carry
        xs, ds, ks = inputs
        w, u, dn = _sample_update(model, cp, w, xs, ds, lr, up, ks)
        return (w, n_up + u, n_down + dn), None

    zero = jnp.zeros((), jnp.int32)
    (w, n_up, n_down), _ = jax.lax.scan(body, (w, zero, zero), (x, d, keys))
    return w, PulseCounts(up=n_up, down=n_down)
