"""The Tiki-Taka family as one composed rule: ``Transfer``, with a column signal and an
optional buffer (``analogsim.algorithms.signals``). TTv1, TTv2, chopped TTv2 and AGAD are
settings of it (``TikiTaka``, ``TTv2``, ``ChoppedTTv2``, ``AGAD``).

The gradient goes into a fast array ``A`` with its own devices; every ``transfer_every``
mini-batches ``columns_per_transfer`` columns of ``A`` are read (one-hot inputs through the
``transfer_io`` periphery); the column signal turns the reads into what the transfer writes;
without a buffer it is written into the slow array ``C`` by a pulsed update (TTv1), with one it
accumulates in the buffer, which sends whole pulses into ``C``. The network reads
``C + gamma A``. ``A``'s device-to-device variation is kept as standard-normal draws
(``device_models.CrossPointDraws``); its cross-points follow from them and the device model
at every update, so a sweep or gradient over a device parameter reaches ``A`` too.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from device_models import CrossPointDraws, crosspoints, decay_and_diffuse, needed_draws, standard_draws, symmetry_point

from ..periphery import IOParameters
from ..pulsed_update import UpdateParameters, pulsed_update
from ..tile import tiled_mvm
from .base import BUFFERED_TRANSFER_UPDATE, TRANSFER_IO, AbstractUpdateRule, check_fields, counts_of, plus_streams
from .signals import AbstractColumnSignal, Buffer, Chopper, Plain, RunningReference

__all__ = ["AGAD", "ChoppedTTv2", "TTv2", "TikiTaka", "Transfer", "TransferState"]


class TransferState(NamedTuple):
    """State of a ``Transfer`` rule."""

    fast: jax.Array  # A (out, in): the array the gradient pulses go to
    fast_draws: CrossPointDraws  # the standard normals of A's device-to-device variation (drawn once)
    fast_offset: jax.Array  # A's reference (0, or its symmetry points): A reads as fast - fast_offset
    step: jax.Array  # mini-batches seen (int32)
    column: jax.Array  # next column to transfer (int32)
    buffer: jax.Array | None = None  # H (out, in), weight units (with a Buffer)
    signal: Any = None  # the column signal's state (choppers, AGAD's reference)


@dataclasses.dataclass(frozen=True)
class Transfer(AbstractUpdateRule):
    """A fast array ``A`` whose columns are transferred into the read array ``C`` (module
    docstring). Learning rates follow aihwkit's ``TransferCompound``: with
    ``scale_fast_lr``/``scale_transfer_lr`` the rates multiply the SGD rate, else they are absolute."""

    name: str = "tiki-taka"
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
    buffer: Buffer | None = None
    signal: AbstractColumnSignal = Plain()

    def __post_init__(self):
        check_fields(self)

    def init(self, model, w, *, key):
        k_dev, k_signal = jax.random.split(key)
        fast_draws = standard_draws(w.shape, key=k_dev, dtype=w.dtype, extra=needed_draws(model))
        offset = jnp.zeros((), w.dtype)
        if self.fast_reference == "symmetry-point":
            offset = symmetry_point(model, crosspoints(model, fast_draws)).astype(w.dtype)
        return TransferState(
            fast=jnp.zeros_like(w) + offset,
            fast_draws=fast_draws,
            fast_offset=offset,
            step=jnp.zeros((), jnp.int32),
            column=jnp.zeros((), jnp.int32),
            buffer=None if self.buffer is None else self.buffer.init(w),
            signal=self.signal.init(w, key=k_signal),
        )

    def read_weight(self, w, state):
        return w + self.gamma * (state.fast - state.fast_offset) if self.gamma else w

    def _lrs(self, lr):
        fast = self.fast_lr * lr if self.scale_fast_lr else self.fast_lr
        transfer = self.transfer_lr * lr if self.scale_transfer_lr else self.transfer_lr
        return fast, transfer

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        k_fast, k_transfer = jax.random.split(key)
        fast_lr, transfer_lr = self._lrs(lr)
        x_in = self.signal.chop_inputs(x, state.signal)
        # materialised once per step (XLA would otherwise recompute it inside every consumer)
        fast_device = jax.lax.optimization_barrier(crosspoints(model, state.fast_draws))
        fast, pulses = pulsed_update(model, fast_device, state.fast, x_in, d, fast_lr, up, key=k_fast)
        # the fast array's decay and diffusion once per mini-batch (nothing where the device has none)
        fast = decay_and_diffuse(model, fast_device, fast, key=jax.random.fold_in(key, 7))
        state = state._replace(fast=fast)
        k = self.columns_per_transfer if self.columns_per_transfer is not None else x.shape[0]
        k = min(k, w.shape[1])

        def transfer(args):
            w, state = args
            return self._transfer(model, cp, w, state, k, transfer_lr, up.mode, k_transfer)

        def skip(args):
            w, state = args
            return w, state, counts_of()

        w, state, counts = jax.lax.cond(state.step % self.transfer_every == 0, transfer, skip, (w, state))
        state = state._replace(step=state.step + 1)
        # the chopper signs of the inputs: one read per input and sample
        chops = x.shape[0] * x.shape[1] if not isinstance(self.signal, Plain) else 0
        counts = plus_streams(counts, pulses)._replace(memory_words=counts.memory_words + chops)
        return w, state, counts._replace(wear=pulses.per_device)  # wear: the fast array, written every step

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
        k_read, k_write, k_signal = jax.random.split(key, 3)
        cols, y = self._read_columns(state, k, k_read)
        n_out, n_in = w.shape
        state = state._replace(column=(state.column + k) % n_in)
        if self.buffer is None:  # TTv1: write the read columns into C with a pulsed update
            onehot = jax.nn.one_hot(cols, n_in, dtype=w.dtype)
            tu = dataclasses.replace(self.transfer_update, mode=mode)
            w, pulses = pulsed_update(model, cp, w, onehot, -y, transfer_lr, tu, key=k_write)
            return w, state, plus_streams(counts_of(reads=k), pulses)
        signal, signal_state, ops = self.signal(state.signal, cols, y, key=k_signal)
        w, buffer, counts = self.buffer.write(
            model,
            cp,
            w,
            state.buffer,
            cols,
            signal,
            transfer_lr,
            self.transfer_update.desired_bl,
            key=k_write,
            mode=mode,
        )
        state = state._replace(buffer=buffer, signal=signal_state)
        # the buffer's columns read and written back, (and the signal's own state, counted in ops)
        return (
            w,
            state,
            counts._replace(
                transfer_reads=jnp.int32(k),
                digital_ops=jnp.int32(ops + 2 * k * n_out),
                memory_words=jnp.int32(2 * k * n_out),
            ),
        )


def _composed(label: str, build):
    """Build a rule, naming ``label`` (the user's constructor) in any error."""
    try:
        return build()
    except ValueError as e:
        raise ValueError(re.sub(r"^\w+\.", f"{label}.", str(e))) from None


def TikiTaka(**settings) -> Transfer:  # noqa: N802  (a rule's name, as aihwkit's)
    """Tiki-Taka v1 (Gokmen & Haensch, Front. Neurosci. 14, 103, 2020; aihwkit
    ``TransferCompound`` defaults: one column read per mat-vec of the batch, ``fast_lr = transfer_lr = 1``
    relative to the SGD learning rate, ``gamma = 0``). ``settings``: ``Transfer`` fields."""
    return _composed("TikiTaka", lambda: Transfer(name="tiki-taka", **settings))


def TTv2(  # noqa: N802
    *,
    thres_scale: float = 1.0,
    momentum: float = 0.1,
    forget_buffer: bool = True,
    transfer_update: UpdateParameters = BUFFERED_TRANSFER_UPDATE,
    **settings,
) -> Transfer:
    """Tiki-Taka v2 (Gokmen, Front. Artif. Intell. 4, 699148, 2021; aihwkit
    ``BufferedTransferCompound`` defaults): ``Transfer`` with a ``Buffer``."""
    return _composed(
        "TTv2",
        lambda: Transfer(
            name="ttv2",
            buffer=Buffer(thres_scale, momentum, forget_buffer),
            transfer_update=transfer_update,
            **settings,
        ),
    )


def _chopped(
    label: str, name: str, signal, thres_scale, momentum, forget_buffer, scale_fast_lr, transfer_update, settings
):
    return _composed(
        label,
        lambda: Transfer(
            name=name,
            buffer=Buffer(thres_scale, momentum, forget_buffer),
            signal=signal(),
            scale_fast_lr=scale_fast_lr,
            transfer_update=transfer_update,
            **settings,
        ),
    )


def ChoppedTTv2(  # noqa: N802
    *,
    thres_scale: float = 1.0,
    momentum: float = 0.0,
    forget_buffer: bool = True,
    in_chop_prob: float = 0.1,
    scale_fast_lr: bool = False,
    transfer_update: UpdateParameters = BUFFERED_TRANSFER_UPDATE,
    **settings,
) -> Transfer:
    """Chopped TTv2 (Rasch et al., arXiv 2303.04721, 2023; aihwkit ``ChoppedTransferCompound``
    defaults: one column read per mat-vec, ``fast_lr = 1`` absolute, chopper flip probability
    0.1, no momentum): ``Transfer`` with a ``Buffer`` and a ``Chopper``."""
    signal = lambda: Chopper(in_chop_prob)  # noqa: E731
    args = (thres_scale, momentum, forget_buffer, scale_fast_lr, transfer_update, settings)
    return _chopped("ChoppedTTv2", "chopped-ttv2", signal, *args)


def AGAD(  # noqa: N802
    *,
    thres_scale: float = 1.0,
    momentum: float = 0.0,
    forget_buffer: bool = True,
    in_chop_prob: float = 0.1,
    scale_fast_lr: bool = False,
    transfer_update: UpdateParameters = BUFFERED_TRANSFER_UPDATE,
    **settings,
) -> Transfer:
    """AGAD (same paper; simplified aihwkit ``DynamicTransferCompound``): chopped TTv2 with a
    running-mean reference of A's reads (``RunningReference``)."""
    signal = lambda: RunningReference(in_chop_prob)  # noqa: E731
    args = (thres_scale, momentum, forget_buffer, scale_fast_lr, transfer_update, settings)
    return _chopped("AGAD", "agad", signal, *args)
