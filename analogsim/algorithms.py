"""Analog update rules: analog SGD, the Tiki-Taka family and mixed precision, one interface.

Every rule is a frozen dataclass of hyperparameters with two pure functions, in the manner of
optax: ``init`` builds the rule's typed state for one array, ``update`` turns a batch of layer
inputs ``x`` and output errors ``d`` into pulses on the arrays and returns the new weight
array, the new state and what happened (:class:`RuleCounts`, for the energy ledger). Layers
hold a rule as a static attribute and its state in a :class:`RuleState` variable, so rules
swap without touching layers (``AnalogLinear(..., algorithm=TTv2())``).

Notation: ``W`` is the array the forward and backward passes read (``layer.weight``); in the
transfer rules it is the *slow* array ``C``, and ``A`` is the *fast* array that takes the
gradient pulses. Learning rates follow aihwkit's ``TransferCompound``: with
``scale_fast_lr``/``scale_transfer_lr`` the rule's ``fast_lr``/``transfer_lr`` multiply the SGD
learning rate ``lr``, otherwise they are absolute.

- :class:`SGD`: ``W -= lr d x^T`` by stochastic pulse trains (:func:`pulsed_update`).
- :class:`TikiTaka` (TTv1, Gokmen & Haensch, Front. Neurosci. 14, 103, 2020; aihwkit
  ``TransferCompound``): the gradient goes into ``A``; every ``transfer_every`` mini-batches,
  ``columns_per_transfer`` columns of ``A`` are read (one-hot inputs through the
  ``transfer_io`` periphery) and written into ``C`` by a pulsed update with
  ``lr * transfer_lr``. The network reads ``C + gamma A``.
- :class:`TTv2` (Gokmen, Front. Artif. Intell. 4, 699148, 2021; aihwkit
  ``BufferedTransferCompound``): the column reads accumulate in a digital buffer ``H``
  (weight units); where ``|H|`` reaches ``thres_scale * dw_min`` of ``C``, ``trunc(H /
  threshold)`` pulses (at most ``transfer_update.desired_bl``) go to ``C``, and ``H`` keeps
  ``momentum`` of itself (``forget_buffer``) or loses what was sent.
- :class:`ChoppedTTv2` (Rasch et al., arXiv 2303.04721, 2023; aihwkit
  ``ChoppedTransferCompound``): as TTv2, but the inputs of the gradient update of ``A`` are
  multiplied by per-column random signs (choppers) and the column reads by the same signs;
  after a column is read its chopper flips with probability ``in_chop_prob``. Device biases
  of ``A`` (drift toward its symmetry point) then average out of the buffer.
- :class:`AGAD` (same paper; aihwkit ``DynamicTransferCompound``, simplified): as chopped
  TTv2, with the fixed zero reference replaced by a running mean of ``A``'s reads: the buffer
  takes ``chopper * (read - reference)``, where ``reference`` is the mean read of the column
  over its previous chopper period (an exponential mean with factor ``1 - in_chop_prob``,
  frozen when the chopper flips). The chopper flips regularly every ``1/in_chop_prob`` reads of
  the column (aihwkit's default ``in_chop_random=False``).
- :class:`MixedPrecision` (Nandakumar et al., Front. Neurosci. 14, 406, 2020; aihwkit
  ``MixedPrecisionCompound``): the outer product ``-lr d x^T`` is accumulated exactly in a
  digital matrix ``chi``; every ``transfer_every`` mini-batches ``n = trunc(chi /
  (granularity dw_min))`` pulses (at most ``max_pulses``) are applied to each cross-point and
  ``n granularity dw_min`` is taken out of ``chi``.

What differs from aihwkit, by design: transfers happen after the batch's gradient update
(aihwkit's C++ interleaves them between the samples of a mini-batch when ``transfer_every``
is in mat-vecs); ``columns_per_transfer=None`` reads one column per mat-vec of the batch,
which is what aihwkit does with ``units_in_mbatch=False, transfer_every=1``; AGAD's reference
is the simplified running mean above, not aihwkit's tail-weighted period mean.

Counted events (:class:`RuleCounts`): every pulse on every array, every transfer read (one
vector each), and the digital operations of buffers, choppers and ``chi``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from device_models import (
    AbstractPulsedModel,
    CrossPoints,
    OneSided,
    apply_pulses,
    draw_crosspoints,
    symmetry_point,
)

from .periphery import IOParameters
from .pulsed_update import UpdateParameters, pulsed_update
from .tile import tiled_mvm

__all__ = [
    "AGAD",
    "ALGORITHMS",
    "AbstractTransferRule",
    "AbstractUpdateRule",
    "ChoppedTTv2",
    "DifferentialPair",
    "MixedPrecision",
    "MixedPrecisionState",
    "PairState",
    "RuleCounts",
    "SGD",
    "SGDState",
    "TTv2",
    "TikiTaka",
    "TransferState",
    "apply_counts",
    "make_rule",
]

# Transfer reads in aihwkit's Tiki-Taka presets: no noise or bound management (a one-hot input
# needs neither); output noise and ADC as in the forward read.
TRANSFER_IO = IOParameters(noise_management="none", bound_management="none")
# Buffered transfers (TTv2 and after): at most one pulse per cross-point and transfer, no
# update or BL management (aihwkit's BufferedTransferCompound default).
BUFFERED_TRANSFER_UPDATE = UpdateParameters(desired_bl=1, update_bl_management=False, update_management=False)


class RuleCounts(NamedTuple):
    """What one update of one layer did (int32 scalars, summed over all of the rule's arrays)."""

    pulses_up: jax.Array
    pulses_down: jax.Array
    transfer_reads: jax.Array  # vectors read from a hidden array (one-hot input, n_out outputs)
    digital_ops: jax.Array  # buffer / chi / chopper operations of the rule


def _zero() -> jax.Array:
    return jnp.zeros((), jnp.int32)


def _counts(up=None, down=None, reads=None, ops=None) -> RuleCounts:
    return RuleCounts(
        jnp.asarray(_zero() if up is None else up, jnp.int32),
        jnp.asarray(_zero() if down is None else down, jnp.int32),
        jnp.asarray(_zero() if reads is None else reads, jnp.int32),
        jnp.asarray(_zero() if ops is None else ops, jnp.int32),
    )


def apply_counts(
    model: AbstractPulsedModel, cp: CrossPoints, w: jax.Array, n: jax.Array, *, key: jax.Array, mode: str
) -> tuple[jax.Array, RuleCounts]:
    """Apply ``n`` (signed, int) pulses to each cross-point.

    ``exact``: the pulses one after another (``max |n|`` passes, each pulse with its own
    cycle-to-cycle noise and clip). Any other mode: in closed form from the state before,
    :math:`\\Delta w = n_+ \\Delta w_+(w) - n_- \\Delta w_-(w)` plus Gaussian noise of the summed
    per-pulse variance, clipped once (the ``expected`` rung's approximation).

    Args:
      model: device model.
      cp: cross-point parameters, shaped like ``w`` (or broadcastable).
      w: device states.
      n: pulses per cross-point, positive up, negative down; same shape as ``w``.
      key: PRNG key of the cycle-to-cycle noise.
      mode: ``exact`` or a faster rung of the fidelity ladder.

    Returns:
      The new states and the pulses fired.
    """
    n = n.astype(jnp.int32)
    n_up = jnp.maximum(n, 0)
    n_down = jnp.maximum(-n, 0)
    counts = _counts(jnp.sum(n_up), jnp.sum(n_down))
    if mode == "exact":
        mag = jnp.abs(n)

        def body(i, w):
            pulses = jnp.where(mag > i, jnp.sign(n), 0).astype(jnp.int8)
            return apply_pulses(model, cp, w, pulses, key=jax.random.fold_in(key, i))

        return jax.lax.fori_loop(0, jnp.max(mag), body, w), counts
    f_up, f_down = n_up.astype(w.dtype), n_down.astype(w.dtype)
    dw = f_up * model.step_up(cp, w) - f_down * model.step_down(cp, w)
    var = f_up * model.step_variance(cp, w, True) + f_down * model.step_variance(cp, w, False)
    dw = dw + jnp.sqrt(var) * jax.random.normal(key, w.shape, w.dtype)
    new = jnp.clip(w + dw, cp.b_min, cp.b_max)
    return jnp.where(n != 0, new, w), counts


def _columns(tree: Any, cols: jax.Array) -> Any:
    """The columns ``cols`` of every (out, in) leaf of ``tree`` (scalars pass through)."""
    return jax.tree.map(lambda a: a[:, cols] if jnp.ndim(a) == 2 else a, tree)


def _checked(rule: Any) -> None:
    """Check a rule's numeric hyperparameters (one-line errors naming field, value, rule)."""
    for f in dataclasses.fields(rule):
        v = getattr(rule, f.name)
        name = f"{type(rule).__name__}.{f.name}"
        if f.name in ("transfer_every", "max_pulses") and not (
            isinstance(v, int) and not isinstance(v, bool) and v >= 1
        ):
            raise ValueError(f"{name}: value {v!r} is not allowed; must be an integer >= 1")
        if f.name == "columns_per_transfer" and v is not None and not (isinstance(v, int) and v >= 1):
            raise ValueError(f"{name}: value {v!r} is not allowed; must be an integer >= 1 or None (one per mat-vec)")
        if f.name in ("fast_lr", "transfer_lr", "thres_scale", "granularity") and not (
            isinstance(v, int | float) and math.isfinite(v) and v > 0
        ):
            raise ValueError(f"{name}: value {v!r} is not allowed; must be a finite number > 0")
        if f.name in ("momentum", "in_chop_prob") and not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name}: value {v!r} is not allowed; must be in [0, 1]")
        if f.name == "fast_reference" and v not in ("zero", "symmetry-point"):
            raise ValueError(f"{name}: value {v!r} is not allowed; allowed: zero, symmetry-point")
        if f.name == "gamma" and not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name}: value {v!r} is not allowed; must be a finite number >= 0")


class AbstractUpdateRule(abc.ABC):
    """Interface of an analog update rule (see the module docstring)."""

    name: ClassVar[str]

    @abc.abstractmethod
    def init(self, model: AbstractPulsedModel, w: jax.Array, *, key: jax.Array) -> Any:
        """The rule's state for an array whose read weights start at ``w`` (out, in)."""

    def read_weight(self, w: jax.Array, state: Any) -> jax.Array:
        """The weights the forward and backward passes read (``w`` unless the rule mixes arrays)."""
        return w

    def program(self, model: AbstractPulsedModel, cp: CrossPoints, target: jax.Array) -> jax.Array:
        """The states of the read array that hold the weights ``target`` (clipped to the bounds)."""
        return jnp.clip(target, cp.b_min, cp.b_max)

    @abc.abstractmethod
    def update(
        self,
        model: AbstractPulsedModel,
        cp: CrossPoints,
        w: jax.Array,
        state: Any,
        x: jax.Array,
        d: jax.Array,
        lr: float | jax.Array,
        up: UpdateParameters,
        *,
        key: jax.Array,
    ) -> tuple[jax.Array, Any, RuleCounts]:
        """Train on one batch.

        Args:
          model: device model of the arrays.
          cp: cross-point parameters of the read array ``w``.
          w: (out, in) states of the read array.
          state: this rule's state (from :meth:`init`).
          x: (rows, in) layer inputs of the batch.
          d: (rows, out) errors at the layer output (zero rows: padding).
          lr: the SGD learning rate.
          up: settings of the gradient's pulsed update (its ``mode`` is the fidelity rung of
            every pulse the rule fires).
          key: PRNG key.

        Returns:
          ``(w, state, counts)``.
        """


class SGDState(NamedTuple):
    """Analog SGD keeps no state beside the weights."""


@dataclasses.dataclass(frozen=True)
class SGD(AbstractUpdateRule):
    """Plain analog SGD: ``W -= lr d x^T`` by stochastic pulse trains (aihwkit's default)."""

    name: ClassVar[str] = "sgd"

    def init(self, model, w, *, key):
        return SGDState()

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        w, pulses = pulsed_update(model, cp, w, x, d, lr, up, key=key)
        return w, state, _counts(pulses.up, pulses.down)


class TransferState(NamedTuple):
    """State of the Tiki-Taka family (fields a rule does not use are ``None``)."""

    fast: jax.Array  # A (out, in): the array the gradient pulses go to
    fast_device: CrossPoints  # A's own cross-point parameters (drawn once)
    fast_offset: jax.Array  # A's reference (0, or its symmetry points): A reads as fast - fast_offset
    step: jax.Array  # mini-batches seen (int32)
    column: jax.Array  # next column to transfer (int32)
    buffer: jax.Array | None = None  # H (out, in), weight units (TTv2 and after)
    chopper: jax.Array | None = None  # (in,) +-1 (chopped TTv2, AGAD)
    reference: jax.Array | None = None  # (out, in) reference read of A (AGAD)
    running: jax.Array | None = None  # (out, in) running mean of A's reads this period (AGAD)
    period_reads: jax.Array | None = None  # (in,) reads of each column in its chopper period (AGAD)


@dataclasses.dataclass(frozen=True)
class AbstractTransferRule(AbstractUpdateRule):
    """Shared machinery of the Tiki-Taka family; the rules below are final and differ only in
    their settings and in :meth:`_signal`, what a read column adds to the buffer."""

    transfer_every: int = 1  # mini-batches between transfers
    columns_per_transfer: int | None = None  # columns read per transfer; None: one per mat-vec
    fast_lr: float = 1.0
    scale_fast_lr: bool = True
    transfer_lr: float = 1.0
    scale_transfer_lr: bool = True
    gamma: float = 0.0  # the network reads C + gamma * A
    # A read against a zero reference, or against its own symmetry point (A starts there):
    # TTv1 and TTv2 need A's symmetry point at the reference (Rasch et al. 2023)
    fast_reference: str = "zero"
    transfer_io: IOParameters = TRANSFER_IO
    transfer_update: UpdateParameters = UpdateParameters()

    buffered: ClassVar[bool] = False
    chopped: ClassVar[bool] = False

    def __post_init__(self):
        _checked(self)

    def init(self, model, w, *, key):
        k_dev, k_chop = jax.random.split(key)
        fast_device = draw_crosspoints(model, w.shape, key=k_dev, dtype=w.dtype)
        n_out, n_in = w.shape
        offset = jnp.zeros((), w.dtype)
        if self.fast_reference == "symmetry-point":
            offset = symmetry_point(model, fast_device).astype(w.dtype)
        state = TransferState(
            fast=jnp.zeros_like(w) + offset,
            fast_offset=offset,
            fast_device=fast_device,
            step=jnp.zeros((), jnp.int32),
            column=jnp.zeros((), jnp.int32),
        )
        if self.buffered:
            state = state._replace(buffer=jnp.zeros_like(w))
        if self.chopped:
            signs = jnp.where(jax.random.bernoulli(k_chop, 0.5, (n_in,)), 1.0, -1.0).astype(w.dtype)
            state = state._replace(chopper=signs)
        return state

    def read_weight(self, w, state):
        return w + self.gamma * (state.fast - state.fast_offset) if self.gamma else w

    def _lrs(self, lr):
        fast = self.fast_lr * lr if self.scale_fast_lr else self.fast_lr
        transfer = self.transfer_lr * lr if self.scale_transfer_lr else self.transfer_lr
        return fast, transfer

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        k_fast, k_transfer = jax.random.split(key)
        fast_lr, transfer_lr = self._lrs(lr)
        x_in = x * state.chopper[None, :] if self.chopped else x
        fast, pulses = pulsed_update(model, state.fast_device, state.fast, x_in, d, fast_lr, up, key=k_fast)
        state = state._replace(fast=fast)
        k = self.columns_per_transfer if self.columns_per_transfer is not None else x.shape[0]
        k = min(k, w.shape[1])

        def transfer(args):
            w, state = args
            return self._transfer(model, cp, w, state, k, transfer_lr, up.mode, k_transfer)

        def skip(args):
            w, state = args
            return w, state, _counts()

        w, state, counts = jax.lax.cond(state.step % self.transfer_every == 0, transfer, skip, (w, state))
        state = state._replace(step=state.step + 1)
        return (
            w,
            state,
            counts._replace(pulses_up=counts.pulses_up + pulses.up, pulses_down=counts.pulses_down + pulses.down),
        )

    def _read_columns(self, state, k, key):
        """Read ``k`` consecutive columns of A: ``(cols, y (k, out))``."""
        n_in = state.fast.shape[1]
        cols = (state.column + jnp.arange(k)) % n_in
        onehot = jax.nn.one_hot(cols, n_in, dtype=state.fast.dtype)
        io = self.transfer_io
        a = state.fast - state.fast_offset
        y = tiled_mvm(a, onehot, io, key=key, max_rows=io.max_output_size, max_cols=io.max_input_size).y
        return cols, y

    def _transfer(self, model, cp, w, state, k, transfer_lr, mode, key):
        k_read, k_write, k_chop = jax.random.split(key, 3)
        cols, y = self._read_columns(state, k, k_read)
        n_out, n_in = w.shape
        state = state._replace(column=(state.column + k) % n_in)
        if not self.buffered:  # TTv1: write the read columns into C with a pulsed update
            onehot = jax.nn.one_hot(cols, n_in, dtype=w.dtype)
            tu = dataclasses.replace(self.transfer_update, mode=mode)
            w, pulses = pulsed_update(model, cp, w, onehot, -y, transfer_lr, tu, key=k_write)
            return w, state, _counts(pulses.up, pulses.down, k)
        signal, state, ops = self._signal(state, cols, y, k_chop)
        buf = state.buffer[:, cols] + transfer_lr * signal.T  # (out, k)
        threshold = self.thres_scale * model.pulsed.dw_min
        bl = self.transfer_update.desired_bl
        n = jnp.clip(jnp.trunc(buf / threshold), -bl, bl).astype(jnp.int32)
        new_cols, counts = apply_counts(model, _columns(cp, cols), w[:, cols], n, key=k_write, mode=mode)
        w = w.at[:, cols].set(new_cols)
        sent = n != 0
        if self.forget_buffer:
            buf = jnp.where(sent, self.momentum * buf, buf)
        else:
            buf = buf - (1.0 - self.momentum) * n.astype(buf.dtype) * threshold
        state = state._replace(buffer=state.buffer.at[:, cols].set(buf))
        return w, state, counts._replace(transfer_reads=jnp.int32(k), digital_ops=jnp.int32(ops + 2 * k * n_out))

    def _signal(self, state, cols, y, key):
        """What a buffered transfer adds to the buffer per read column: ``(signal (k, out), state, ops)``."""
        return y, state, 0


@dataclasses.dataclass(frozen=True)
class TikiTaka(AbstractTransferRule):
    """Tiki-Taka v1 (aihwkit ``TransferCompound`` defaults: one column per mini-batch,
    ``fast_lr = transfer_lr = 1`` relative to the SGD learning rate, ``gamma = 0``)."""

    name: ClassVar[str] = "tiki-taka"


@dataclasses.dataclass(frozen=True)
class TTv2(AbstractTransferRule):
    """Tiki-Taka v2 with a digital buffer (aihwkit ``BufferedTransferCompound`` defaults)."""

    name: ClassVar[str] = "ttv2"
    buffered: ClassVar[bool] = True
    thres_scale: float = 1.0  # buffer threshold, in units of C's dw_min
    momentum: float = 0.1  # fraction of the buffer kept after a transfer
    forget_buffer: bool = True  # after a transfer keep momentum * H (else subtract what was sent)
    transfer_update: UpdateParameters = BUFFERED_TRANSFER_UPDATE


@dataclasses.dataclass(frozen=True)
class ChoppedTTv2(AbstractTransferRule):
    """Chopped TTv2 (aihwkit ``ChoppedTransferCompound`` defaults: one column read per mat-vec,
    ``fast_lr = 1`` absolute, chopper flip probability 0.1, no momentum)."""

    name: ClassVar[str] = "chopped-ttv2"
    buffered: ClassVar[bool] = True
    chopped: ClassVar[bool] = True
    scale_fast_lr: bool = False
    thres_scale: float = 1.0
    momentum: float = 0.0
    forget_buffer: bool = True
    in_chop_prob: float = 0.1
    transfer_update: UpdateParameters = BUFFERED_TRANSFER_UPDATE

    def _signal(self, state, cols, y, key):
        chop = state.chopper[cols]
        flip = jax.random.bernoulli(key, self.in_chop_prob, chop.shape)
        chopper = state.chopper.at[cols].set(jnp.where(flip, -chop, chop))
        return y * chop[:, None], state._replace(chopper=chopper), 2 * cols.shape[0]


@dataclasses.dataclass(frozen=True)
class AGAD(AbstractTransferRule):
    """AGAD: chopped TTv2 with a running-mean reference of A's reads (simplified aihwkit
    ``DynamicTransferCompound``; regular chopper periods of ``1 / in_chop_prob`` reads)."""

    name: ClassVar[str] = "agad"
    buffered: ClassVar[bool] = True
    chopped: ClassVar[bool] = True
    scale_fast_lr: bool = False
    thres_scale: float = 1.0
    momentum: float = 0.0
    forget_buffer: bool = True
    in_chop_prob: float = 0.1
    transfer_update: UpdateParameters = BUFFERED_TRANSFER_UPDATE

    def init(self, model, w, *, key):
        state = super().init(model, w, key=key)
        n_in = w.shape[1]
        return state._replace(
            reference=jnp.zeros_like(w), running=jnp.zeros_like(w), period_reads=jnp.zeros((n_in,), jnp.int32)
        )

    def _signal(self, state, cols, y, key):
        chop = state.chopper[cols]
        ref = state.reference[:, cols].T  # (k, out)
        signal = (y - ref) * chop[:, None]
        beta = 1.0 - self.in_chop_prob
        running = beta * state.running[:, cols].T + (1.0 - beta) * y
        reads = state.period_reads[cols] + 1
        period = max(1, round(1.0 / self.in_chop_prob)) if self.in_chop_prob > 0 else 2**30
        flip = reads >= period
        ref = jnp.where(flip[:, None], running, ref)
        state = state._replace(
            chopper=state.chopper.at[cols].set(jnp.where(flip, -chop, chop)),
            reference=state.reference.at[:, cols].set(ref.T),
            running=state.running.at[:, cols].set(running.T),
            period_reads=state.period_reads.at[cols].set(jnp.where(flip, 0, reads)),
        )
        return signal, state, 6 * cols.shape[0] * y.shape[1]


class MixedPrecisionState(NamedTuple):
    """Digital accumulator of mixed precision."""

    chi: jax.Array  # (out, in) weight change not yet sent, weight units
    step: jax.Array  # mini-batches seen (int32)


@dataclasses.dataclass(frozen=True)
class MixedPrecision(AbstractUpdateRule):
    """Mixed precision (aihwkit ``MixedPrecisionCompound`` defaults: transfer every mini-batch,
    all rows, granularity = the device's dw_min)."""

    name: ClassVar[str] = "mixed-precision"
    transfer_every: int = 1  # mini-batches between transfers of chi to the array
    granularity: float = 1.0  # threshold, in units of the device's dw_min
    max_pulses: int = 31  # most pulses per cross-point and transfer (the rest stays in chi)

    def __post_init__(self):
        _checked(self)

    def init(self, model, w, *, key):
        return MixedPrecisionState(chi=jnp.zeros_like(w), step=jnp.zeros((), jnp.int32))

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        rows = x.shape[0]
        n_out, n_in = w.shape
        chi = state.chi - lr * (d.T @ x)
        threshold = self.granularity * model.pulsed.dw_min

        def transfer(args):
            w, chi = args
            n = jnp.clip(jnp.trunc(chi / threshold), -self.max_pulses, self.max_pulses).astype(jnp.int32)
            w, counts = apply_counts(model, cp, w, n, key=key, mode=up.mode)
            return w, chi - n.astype(chi.dtype) * threshold, counts

        def skip(args):
            w, chi = args
            return w, chi, _counts()

        w, chi, counts = jax.lax.cond(state.step % self.transfer_every == 0, transfer, skip, (w, chi))
        ops = rows * n_in * n_out + 2 * n_in * n_out  # outer product, then threshold and subtract
        return w, MixedPrecisionState(chi, state.step + 1), counts._replace(digital_ops=counts.digital_ops + ops)


class PairState(NamedTuple):
    """The second device of each differential pair."""

    minus: jax.Array  # G- (out, in), normalised units
    minus_device: CrossPoints  # its own cross-point parameters


@dataclasses.dataclass(frozen=True)
class DifferentialPair(AbstractUpdateRule):
    """Analog SGD on differential pairs of one-sided devices, ``w = G+ - G-`` (aihwkit's
    ``OneSidedUnitCell``, as used for PCM).

    Each pair sees the same pulse trains: coincidences that would raise ``w`` potentiate ``G+``,
    those that would lower it potentiate ``G-`` (:class:`device_models.OneSided`: neither
    device is ever depressed by an update). A device that nears its upper bound cannot take
    more updates, so after every mini-batch the pairs where ``max(G+, G-)`` exceeds
    ``refresh_threshold`` of the device's upper bound are *refreshed*: ``w`` is read, both
    devices are reset to their lower bound (one RESET pulse each, counted as a down pulse),
    and ``|w|`` is written back into one of them by ``round(|w| / dw_min)`` potentiating
    pulses (with their noise). aihwkit reads the refreshed weight through its own periphery;
    here the refresh read is exact, and the ledger counts one array read per refreshed column.
    """

    name: ClassVar[str] = "sgd-pair"
    refresh_threshold: float = 0.75  # fraction of b_max at which a pair is refreshed

    def __post_init__(self):
        v = self.refresh_threshold
        if not (isinstance(v, int | float) and 0.0 < v <= 1.0):
            raise ValueError(f"DifferentialPair.refresh_threshold: value {v!r} is not allowed; must be in (0, 1]")

    def program(self, model, cp, target):
        return jnp.clip(cp.b_min + jnp.maximum(target, 0.0), cp.b_min, cp.b_max)

    def init(self, model, w, *, key):
        # ``w`` is the weight target (before programming): its negative part goes to G-
        minus_device = draw_crosspoints(model, w.shape, key=key, dtype=w.dtype)
        minus = jnp.clip(minus_device.b_min + jnp.maximum(-w, 0.0), minus_device.b_min, minus_device.b_max)
        return PairState(minus=minus, minus_device=minus_device)

    def read_weight(self, w, state):
        return w - state.minus

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        one = OneSided(model)
        k_plus, k_refresh = jax.random.split(key)
        # the same pulse trains drive both devices of a pair (same key, error of opposite sign)
        k_minus = jax.random.clone(k_plus)
        plus, p_plus = pulsed_update(one, cp, w, x, d, lr, up, key=k_plus)
        minus, p_minus = pulsed_update(one, state.minus_device, state.minus, x, -d, lr, up, key=k_minus)
        plus, minus, refreshed = self._refresh(model, cp, state.minus_device, plus, minus, up.mode, k_refresh)
        counts = _counts(
            p_plus.up + p_minus.up + refreshed.pulses_up,
            refreshed.pulses_down,
            refreshed.transfer_reads,
            refreshed.digital_ops,
        )
        return plus, state._replace(minus=minus), counts

    def _refresh(self, model, cp_plus, cp_minus, plus, minus, mode, key):
        need = (plus - cp_plus.b_min > self.refresh_threshold * (cp_plus.b_max - cp_plus.b_min)) | (
            minus - cp_minus.b_min > self.refresh_threshold * (cp_minus.b_max - cp_minus.b_min)
        )
        w = (plus - cp_plus.b_min) - (minus - cp_minus.b_min)
        n = jnp.round(jnp.abs(w) / model.pulsed.dw_min).astype(jnp.int32)
        k_p, k_m = jax.random.split(key)
        one = OneSided(model)
        new_plus, c_plus = apply_counts(
            one, cp_plus, cp_plus.b_min + 0 * plus, jnp.where(need & (w > 0), n, 0), key=k_p, mode=mode
        )
        new_minus, c_minus = apply_counts(
            one, cp_minus, cp_minus.b_min + 0 * minus, jnp.where(need & (w < 0), n, 0), key=k_m, mode=mode
        )
        plus = jnp.where(need, new_plus, plus)
        minus = jnp.where(need, new_minus, minus)
        resets = 2 * jnp.sum(need, dtype=jnp.int32)
        columns = jnp.sum(jnp.any(need, axis=0), dtype=jnp.int32)
        return plus, minus, _counts(c_plus.pulses_up + c_minus.pulses_up, resets, columns, 2 * plus.size)


ALGORITHMS: dict[str, type[AbstractUpdateRule]] = {
    cls.name: cls for cls in (SGD, TikiTaka, TTv2, ChoppedTTv2, AGAD, MixedPrecision, DifferentialPair)
}


def _parse_value(current: Any, text: str, where: str) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{where}: value {text!r} is not allowed; must be true or false")
    if current is None or isinstance(current, int):
        if current is None and text.lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: value {text!r} is not allowed; must be an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: value {text!r} is not allowed; must be a number") from None
    if isinstance(current, str):
        return text
    raise ValueError(f"{where}: cannot be set from the command line")


def make_rule(name: str, options: dict[str, str] | None = None) -> AbstractUpdateRule:
    """The rule ``name`` (``ALGORITHMS``) with hyperparameters from ``options`` (strings, as
    ``--algo-opt KEY=VALUE`` gives them; parsed by the field's type).

    Raises:
      ValueError: unknown rule, unknown option, or a value that is not allowed.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"--algorithm: value {name!r} is not allowed; allowed: {', '.join(ALGORITHMS)}, digital")
    cls = ALGORITHMS[name]
    defaults = cls()
    settable = {
        f.name: getattr(defaults, f.name)
        for f in dataclasses.fields(cls)
        if not isinstance(getattr(defaults, f.name), IOParameters | UpdateParameters)
    }
    kwargs = {}
    for key, text in (options or {}).items():
        if key not in settable:
            allowed = ", ".join(settable) or "none"
            raise ValueError(f"--algo-opt: option {key!r} is not allowed for {name}; allowed: {allowed}")
        kwargs[key] = _parse_value(settable[key], text, f"--algo-opt {key}")
    return cls(**kwargs)
