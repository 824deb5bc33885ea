"""Periphery of an analog tile: DAC, ADC, output noise, noise and bound management.

The semantics and defaults are aihwkit's ``IOParameters`` (one-pass analog MVM):

1. *Noise management*: each input vector is divided by a factor :math:`\\alpha`. With
   ``abs_max`` it is the vector's absolute maximum, :math:`\\alpha = \\max_j |x_j|` (capped at
   ``nm_thres`` when that is > 0), so the DAC range is used fully; with ``constant`` it is the
   fixed ``nm_thres`` (1 when ``nm_thres`` is 0, as in aihwkit); with ``none`` it is 1.
2. *DAC*: the scaled input is rounded to steps of ``inp_res * 2 * inp_bound`` and clipped to
   ``[-inp_bound, inp_bound]``.
3. The array computes :math:`y = W \\tilde{x}`; each output gets Gaussian noise of std
   ``out_noise``, and, with read noise on every weight of std ``w_noise`` (aihwkit's additive
   constant weight noise), Gaussian noise of std :math:`\\sigma_w \\lVert\\tilde{x}\\rVert_2`
   (the exact output-referred equivalent, without drawing a noisy matrix).
4. *ADC*: outputs are rounded to steps of ``out_res * 2 * out_bound`` and clipped to
   ``[-out_bound, out_bound]``. Rounding is to the nearest step, ties to even (``torch.round``
   in aihwkit's torch tile, ``jnp.round`` here).
5. *Bound management* (``iterative``): a vector with an output beyond the ADC range (a rounded
   value strictly greater than ``out_bound`` in magnitude, aihwkit's test) is read again with
   its input halved, until it passes, the reduction exceeds ``max_bm_factor``, or it exceeds
   ``max_bm_res / (inp_res * 2 * inp_bound)``.
6. The digital result is multiplied back by :math:`\\alpha` times the bound-management
   reduction.

Bound management here acts per input vector (each vector is its own MVM on hardware). With
``abs_max`` noise management a zero input vector is not read at all and gives an exact zero
output (aihwkit's short cut); with ``constant`` or ``none`` every vector is read.

``max_input_size`` and ``max_output_size`` (aihwkit's ``MappingParameter`` names) give the
size of one physical tile; ``analogsim.tile.analog_matmul`` splits larger matrices over
several tiles. ``analog_mvm`` itself reads one tile.

References:
    IBM aihwkit, ``IOParameters`` and ``AnalogMVM`` (torch tile), ``ForwardBackwardPassIOManaged``
    (C++), ``MappingParameter``; defaults: inp_res 1/126, out_res 1/510, out_bound 12,
    out_noise 0.06, tiles of 512 x 512.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Literal

import jax
import jax.numpy as jnp

from . import rng
from .rng import fast_key

__all__ = ["IOParameters", "MVMResult", "analog_mvm", "quantize"]


@dataclasses.dataclass(frozen=True)
class IOParameters:
    """Periphery settings of one read direction (aihwkit ``IOParameters`` defaults).

    Resolutions are fractions of the full range ``[-bound, bound]``: the step is
    ``res * 2 * bound`` (aihwkit's convention); ``res <= 0`` means no quantisation. aihwkit's
    other form, a number of steps ``> 1``, is refused (write ``1/126``, not ``126``).

    The tile size (``max_input_size`` x ``max_output_size``, aihwkit's ``MappingParameter``)
    describes the physical array, so the forward and the backward settings of one layer must
    agree on it (``analogsim.tile.analog_matmul`` checks). ``0`` means no limit.

    Raises:
      ValueError: a field outside its allowed values (the message names field, value and
        what is allowed).
    """

    inp_bound: float = 1.0  # DAC range, in units of the (noise-managed) input
    inp_res: float = 1.0 / 126  # DAC resolution, fraction of the range (7 bit)
    out_bound: float = 12.0  # ADC range, in units of the array output
    out_res: float = 1.0 / 510  # ADC resolution, fraction of the range (9 bit)
    out_noise: float = 0.06  # std of additive Gaussian output noise, output units
    w_noise: float = 0.0  # std of read noise on each weight (weight units), output-referred
    noise_management: Literal["abs_max", "constant", "none"] = "abs_max"
    nm_thres: float = 0.0  # constant: the fixed alpha (0 -> 1); abs_max: cap on alpha (0: none)
    bound_management: Literal["iterative", "none"] = "iterative"
    max_bm_factor: float = 1000.0  # stop bound management past this input reduction
    max_bm_res: float = 0.25  # ... or past max_bm_res / DAC step
    is_perfect: bool = False  # ideal read: y = W x, every other setting ignored
    max_input_size: int = 512  # columns (inputs) of one physical tile; 0: no limit
    max_output_size: int = 512  # rows (outputs) of one physical tile; 0: no limit

    def __post_init__(self):
        def bad(name, allowed):
            return ValueError(f"IOParameters.{name}: value {getattr(self, name)!r} is not allowed; {allowed}")

        if not isinstance(self.is_perfect, bool):
            raise bad("is_perfect", "must be True or False")
        if self.noise_management not in ("abs_max", "constant", "none"):
            raise bad("noise_management", "allowed: abs_max, constant, none")
        if self.bound_management not in ("iterative", "none"):
            raise bad("bound_management", "allowed: iterative, none")
        real = ("inp_bound", "inp_res", "out_bound", "out_res", "out_noise", "w_noise", "nm_thres")
        for name in (*real, "max_bm_factor", "max_bm_res"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Real):
                raise bad(name, "must be a real number (a Python or NumPy scalar)")
        for name in ("inp_bound", "out_bound", "max_bm_res"):
            if not getattr(self, name) > 0:
                raise bad(name, "must be > 0")
        for name in ("inp_res", "out_res"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v <= 1):
                raise bad(name, "must be a fraction of the range <= 1 (e.g. 1/126), or <= 0 for no quantisation")
        for res, bound in (("inp_res", "inp_bound"), ("out_res", "out_bound")):
            if getattr(self, res) > 0 and math.isinf(getattr(self, bound)):
                raise bad(res, f"must be <= 0 (no quantisation) when {bound} is infinite")
        for name in ("out_noise", "w_noise", "nm_thres"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise bad(name, "must be a finite number >= 0")
        if not self.max_bm_factor >= 1:
            raise bad("max_bm_factor", "must be >= 1 (the first read is at reduction 1)")
        for name in ("max_input_size", "max_output_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 0:
                raise bad(name, "must be an integer >= 1 (cells per tile), or 0 for no limit")

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


def _read_noise(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Standard normal read noise (one place, so a profile can switch it off)."""
    return rng.normal(key, shape, dtype)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MVMResult:
    y: jax.Array  # (batch, out) digital outputs
    reads: jax.Array  # (batch,) int32: analog reads done per vector (0 for a zero vector)


def analog_mvm(
    w: jax.Array, x: jax.Array, io: IOParameters, *, key: jax.Array | None, valid_outputs: jax.Array | None = None
) -> MVMResult:
    """Read ``y = W x`` for each row of ``x`` through the periphery ``io`` (one tile).

    .. math::
        y = \\alpha\\,\\rho\\;\\mathrm{ADC}\\!\\left(W\\,\\mathrm{DAC}\\!\\left(\\frac{x}{\\alpha\\rho}\\right)
        + \\sigma_{out}\\,\\xi\\right),

    with :math:`\\alpha` from noise management and :math:`\\rho = 1, 2, 4, \\ldots` from bound
    management (see the module docstring).

    Args:
      w: (out, in) weights, normalised units.
      x: (batch, in) inputs.
      io: periphery settings (its tile size is not used here: this is one tile).
      key: PRNG key of the output noise (``None``: noise-free).
      valid_outputs: optional (out,) bool; ``False`` marks padding rows of ``w`` (used when
        tiles of unequal size are stacked), which bound management's clip test ignores.

    Returns:
      ``MVMResult`` with ``y`` (batch, out) and the number of reads per vector.

    Example:
      >>> res = analog_mvm(jnp.eye(2), jnp.ones((1, 2)), IOParameters(out_noise=0.0), key=None)
    """
    with jax.named_scope("periphery"):  # names the read's operations in profiles
        return _analog_mvm(w, x, io, key, valid_outputs)


def _analog_mvm(w, x, io, key, valid_outputs) -> MVMResult:
    batch = x.shape[0]
    if io.is_perfect:
        return MVMResult(x @ w.T, jnp.ones((batch,), jnp.int32))
    if io.noise_management == "abs_max":
        alpha = jnp.max(jnp.abs(x), axis=-1)
        if io.nm_thres > 0:
            alpha = jnp.minimum(alpha, io.nm_thres)
        nonzero = alpha > 0  # aihwkit's short cut: a zero vector is not read
    else:
        const = io.nm_thres if (io.noise_management == "constant" and io.nm_thres > 0) else 1.0
        alpha = jnp.full((batch,), const, x.dtype)
        nonzero = jnp.ones((batch,), bool)
    alpha = jnp.where(nonzero, alpha, 1.0)
    x_nm = x / alpha[:, None]

    def read(reduction, k):
        x_dac = quantize(x_nm / reduction[:, None], io.inp_step, io.inp_bound)
        y = x_dac @ w.T
        k_w = None
        if io.w_noise > 0 and k is not None:
            k, k_w = jax.random.split(k)  # (with w_noise = 0 the output-noise stream is unchanged)
        if io.out_noise > 0 and k is not None:
            y = y + io.out_noise * _read_noise(k, y.shape, y.dtype)
        if k_w is not None:
            # independent read noise on every weight, summed along the column: std w_noise * |x|_2
            norm = jnp.sqrt(jnp.sum(x_dac**2, axis=-1, keepdims=True))
            y = y + io.w_noise * norm * _read_noise(k_w, y.shape, y.dtype)
        if k is not None and io.bound_management != "none":
            y = rng.computed_once(y)  # the ADC's clip and the overflow test below both read it
        if io.out_step > 0:
            y = jnp.round(y / io.out_step) * io.out_step
        over = jnp.abs(y) > io.out_bound  # aihwkit: a value on the bound passes
        if valid_outputs is not None:
            over = over & valid_outputs
        return jnp.clip(y, -io.out_bound, io.out_bound), jnp.any(over, axis=-1)

    if key is not None and (io.out_noise > 0 or io.w_noise > 0):
        key = fast_key(key)  # a Philox key: the read noise is most of a read's random numbers
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
        # The first read is taken outside the loop: most vectors pass it, and XLA then keeps the
        # loop's body (and any relayout of the weights it needs) off the common path.
        reduction, y, _, reads, _ = jax.lax.while_loop(cond, body, body(init))
    y = y * (alpha * reduction)[:, None]
    y = jnp.where(nonzero[:, None], y, 0.0)
    return MVMResult(y, reads)
