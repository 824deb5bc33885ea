"""Periphery of an analog tile: DAC, ADC, output noise, noise and bound management.

The semantics and defaults are aihwkit's ``IOParameters`` (one-pass analog MVM):

1. *Noise management* (``abs_max``): each input vector is divided by its absolute maximum
   :math:`\\alpha = \\max_j |x_j|`, so the DAC range is used fully.
2. *DAC*: the scaled input is rounded to steps of ``inp_res * 2 * inp_bound`` and clipped to
   ``[-inp_bound, inp_bound]``.
3. The array computes :math:`y = W \\tilde{x}`; each output gets Gaussian noise of std
   ``out_noise``, and, with read noise on every weight of std ``w_noise`` (aihwkit's additive
   constant weight noise), Gaussian noise of std :math:`\\sigma_w \\lVert\\tilde{x}\\rVert_2`
   (the exact output-referred equivalent, without drawing a noisy matrix).
4. *ADC*: outputs are rounded to steps of ``out_res * 2 * out_bound`` and clipped to
   ``[-out_bound, out_bound]``.
5. *Bound management* (``iterative``, forward only): a vector whose output clipped is read
   again with its input halved, until it passes, the reduction exceeds ``max_bm_factor``, or
   it exceeds ``max_bm_res / (inp_res * 2 * inp_bound)``.
6. The digital result is multiplied back by :math:`\\alpha` times the bound-management
   reduction.

Bound management here acts per input vector (each vector is its own MVM on hardware); a zero
input vector is not read at all and gives an exact zero output.

References:
    IBM aihwkit, ``IOParameters`` and ``AnalogMVM`` (torch tile), defaults: inp_res 1/126,
    out_res 1/510, out_bound 12, out_noise 0.06.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp

__all__ = ["IOParameters", "MVMResult", "analog_mvm", "quantize"]


@dataclasses.dataclass(frozen=True)
class IOParameters:
    """Periphery settings of one read direction (aihwkit ``IOParameters`` defaults).

    Resolutions are fractions of the full range ``[-bound, bound]``: the step is
    ``res * 2 * bound`` (aihwkit's convention); ``res <= 0`` means no quantisation.
    """

    inp_bound: float = 1.0  # DAC range, in units of the (noise-managed) input
    inp_res: float = 1.0 / 126  # DAC resolution, fraction of the range (7 bit)
    out_bound: float = 12.0  # ADC range, in units of the array output
    out_res: float = 1.0 / 510  # ADC resolution, fraction of the range (9 bit)
    out_noise: float = 0.06  # std of additive Gaussian output noise
    w_noise: float = 0.0  # std of read noise on each weight (weight units), output-referred
    noise_management: Literal["abs_max", "none"] = "abs_max"
    bound_management: Literal["iterative", "none"] = "iterative"
    max_bm_factor: float = 1000.0  # stop bound management past this input reduction
    max_bm_res: float = 0.25  # ... or past max_bm_res / DAC step
    is_perfect: bool = False  # ideal read: y = W x, every other setting ignored

    def __post_init__(self):
        if self.noise_management not in ("abs_max", "none"):
            raise ValueError(
                f"IOParameters.noise_management: value {self.noise_management!r} is not allowed; allowed: abs_max, none"
            )
        if self.bound_management not in ("iterative", "none"):
            raise ValueError(
                f"IOParameters.bound_management: value {self.bound_management!r} is not allowed; "
                "allowed: iterative, none"
            )
        for name in ("inp_bound", "out_bound"):
            if not getattr(self, name) > 0:
                raise ValueError(f"IOParameters.{name}: value {getattr(self, name)!r} is not allowed; must be > 0")
        for name in ("out_noise", "w_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"IOParameters.{name}: value {getattr(self, name)!r} is not allowed; must be >= 0")

    @property
    def inp_step(self) -> float:
        """The DAC's step, in input units (0 for no quantisation)."""
        return self.inp_res * 2 * self.inp_bound if self.inp_res > 0 else 0.0

    @property
    def out_step(self) -> float:
        """The ADC's step, in output units (0 for no quantisation)."""
        return self.out_res * 2 * self.out_bound if self.out_res > 0 else 0.0

    @property
    def max_bm_reduction(self) -> float:
        """The largest input reduction bound management tries."""
        limit = self.max_bm_factor
        if self.inp_step > 0:
            limit = min(limit, self.max_bm_res / self.inp_step)
        return limit


def quantize(x: jax.Array, step: float, bound: float) -> jax.Array:
    """Round to multiples of ``step`` (if > 0) and clip to ``[-bound, bound]``."""
    if step > 0:
        x = jnp.round(x / step) * step
    return jnp.clip(x, -bound, bound)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MVMResult:
    y: jax.Array  # (batch, out) digital outputs
    reads: jax.Array  # (batch,) int32: analog reads done per vector (0 for a zero vector)


def analog_mvm(w: jax.Array, x: jax.Array, io: IOParameters, *, key: jax.Array | None) -> MVMResult:
    """Read ``y = W x`` for each row of ``x`` through the periphery ``io``.

    Args:
      w: (out, in) weights, normalised units.
      x: (batch, in) inputs.
      io: periphery settings.
      key: PRNG key of the output noise (``None``: noise-free).

    Returns:
      :class:`MVMResult` with ``y`` (batch, out) and the number of reads per vector.
    """
    batch = x.shape[0]
    if io.is_perfect:
        return MVMResult(x @ w.T, jnp.ones((batch,), jnp.int32))
    if io.noise_management == "abs_max":
        alpha = jnp.max(jnp.abs(x), axis=-1)
    else:
        alpha = jnp.ones((batch,), x.dtype)
    nonzero = alpha > 0
    alpha = jnp.where(nonzero, alpha, 1.0)
    x_nm = x / alpha[:, None]

    def read(reduction, k):
        x_dac = quantize(x_nm / reduction[:, None], io.inp_step, io.inp_bound)
        y = x_dac @ w.T
        k_w = None
        if io.w_noise > 0 and k is not None:
            k, k_w = jax.random.split(k)  # (with w_noise = 0 the output-noise stream is unchanged)
        if io.out_noise > 0 and k is not None:
            y = y + io.out_noise * jax.random.normal(k, y.shape, y.dtype)
        if k_w is not None:
            # independent read noise on every weight, summed along the column: std w_noise * |x|_2
            norm = jnp.sqrt(jnp.sum(x_dac**2, axis=-1, keepdims=True))
            y = y + io.w_noise * norm * jax.random.normal(k_w, y.shape, y.dtype)
        y_adc = quantize(y, io.out_step, io.out_bound)
        clipped = jnp.any(jnp.abs(y_adc) >= io.out_bound, axis=-1)
        return y_adc, clipped

    ones = jnp.ones((batch,), x.dtype)
    if io.bound_management == "none":
        y, _ = read(ones, key)
        reads = nonzero.astype(jnp.int32)
        reduction = ones
    else:
        max_red = io.max_bm_reduction

        def cond(carry):
            return jnp.any(~carry[2])

        def body(carry):
            reduction, y, done, reads, i = carry
            k = None if key is None else jax.random.fold_in(key, i)
            y_new, clipped = read(reduction, k)
            y = jnp.where(done[:, None], y, y_new)
            reads = reads + (~done).astype(jnp.int32)
            passed = ~clipped | (reduction > max_red)
            new_done = done | passed
            reduction = jnp.where(new_done, reduction, reduction * 2)
            return reduction, y, new_done, reads, i + 1

        init = (ones, jnp.zeros((batch, w.shape[0]), x.dtype), ~nonzero, jnp.zeros((batch,), jnp.int32), 0)
        reduction, y, _, reads, _ = jax.lax.while_loop(cond, body, init)
    y = y * (alpha * reduction)[:, None]
    y = jnp.where(nonzero[:, None], y, 0.0)
    return MVMResult(y, reads)
