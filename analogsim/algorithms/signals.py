"""The parts a transfer rule (``Transfer``) is composed of, each a
frozen dataclass of settings with its own NamedTuple state:

- what a read column of the fast array ``A`` contributes (``Plain``, ``Chopper``,
  ``RunningReference``);
- ``Buffer``: TTv2's digital buffer ``H`` between ``A`` and ``C``, which sends whole pulses
  where it crosses a threshold.

References:
    Gokmen, Front. Artif. Intell. 4, 699148 (2021): the buffer (TTv2).
    Rasch et al., arXiv 2303.04721 (2023): choppers (chopped TTv2) and AGAD's reference.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .base import apply_counts, columns_of

__all__ = [
    "AbstractColumnSignal",
    "Buffer",
    "Chopper",
    "ChopperState",
    "Plain",
    "ReferenceState",
    "RunningReference",
]


def _probability(owner: str, name: str, v: float) -> None:
    if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
        raise ValueError(f"{owner}.{name}: value {v!r} is not allowed; must be in [0, 1]")


class AbstractColumnSignal(abc.ABC):
    """What a read column of ``A`` adds to the buffer (or writes into ``C``), and how the
    gradient's inputs are modulated. Final implementations: ``Plain``, ``Chopper``,
    ``RunningReference``."""

    @abc.abstractmethod
    def init(self, w: jax.Array, *, key: jax.Array) -> Any:
        """The state for an (out, in) array ``w``."""

    def chop_inputs(self, x: jax.Array, state: Any) -> jax.Array:
        """The gradient update's inputs (rows, in) as ``A`` receives them."""
        return x

    @abc.abstractmethod
    def __call__(self, state: Any, cols: jax.Array, y: jax.Array, *, key: jax.Array) -> tuple[jax.Array, Any, Any]:
        """``(signal (k, out), state, digital ops)`` for the reads ``y`` (k, out) of columns ``cols``."""


@dataclasses.dataclass(frozen=True)
class Plain(AbstractColumnSignal):
    """The read itself (TTv1, TTv2)."""

    def init(self, w, *, key):
        return None

    def __call__(self, state, cols, y, *, key):
        return y, state, 0


class ChopperState(NamedTuple):
    chopper: jax.Array  # (in,) +-1 per column


def _initial_signs(w: jax.Array, key: jax.Array) -> jax.Array:
    return jnp.where(jax.random.bernoulli(key, 0.5, (w.shape[1],)), 1.0, -1.0).astype(w.dtype)


@dataclasses.dataclass(frozen=True)
class Chopper(AbstractColumnSignal):
    """Per-column random signs on the gradient's inputs, undone at read-out; after a column is
    read its sign flips with probability ``in_chop_prob`` (chopped TTv2, aihwkit's
    ``ChoppedTransferCompound``). Device biases of ``A`` then average out of the buffer."""

    in_chop_prob: float = 0.1

    def __post_init__(self):
        _probability("Chopper", "in_chop_prob", self.in_chop_prob)

    def init(self, w, *, key):
        return ChopperState(_initial_signs(w, key))

    def chop_inputs(self, x, state):
        return x * state.chopper[None, :]

    def __call__(self, state, cols, y, *, key):
        chop = state.chopper[cols]
        flip = jax.random.bernoulli(key, self.in_chop_prob, chop.shape)
        chopper = state.chopper.at[cols].set(jnp.where(flip, -chop, chop))
        return y * chop[:, None], ChopperState(chopper), 2 * cols.shape[0]


class ReferenceState(NamedTuple):
    chopper: jax.Array  # (in,) +-1 per column
    reference: jax.Array  # (out, in) reference read of A
    running: jax.Array  # (out, in) running mean of A's reads this period
    period_reads: jax.Array  # (in,) int32: reads of each column in its chopper period


@dataclasses.dataclass(frozen=True)
class RunningReference(AbstractColumnSignal):
    """AGAD (simplified aihwkit ``DynamicTransferCompound``): choppers, with the fixed zero
    reference replaced by the mean read of the column over its previous chopper period (an
    exponential mean with factor ``1 - in_chop_prob``, frozen when the chopper flips); the
    chopper flips regularly every ``1 / in_chop_prob`` reads of the column."""

    in_chop_prob: float = 0.1

    def __post_init__(self):
        _probability("RunningReference", "in_chop_prob", self.in_chop_prob)

    def init(self, w, *, key):
        zeros = jnp.zeros_like(w)
        return ReferenceState(_initial_signs(w, key), zeros, zeros, jnp.zeros((w.shape[1],), jnp.int32))

    def chop_inputs(self, x, state):
        return x * state.chopper[None, :]

    def __call__(self, state, cols, y, *, key):
        chop = state.chopper[cols]
        ref = state.reference[:, cols].T  # (k, out)
        signal = (y - ref) * chop[:, None]
        beta = 1.0 - self.in_chop_prob
        running = beta * state.running[:, cols].T + (1.0 - beta) * y
        reads = state.period_reads[cols] + 1
        period = max(1, round(1.0 / self.in_chop_prob)) if self.in_chop_prob > 0 else 2**30
        flip = reads >= period
        ref = jnp.where(flip[:, None], running, ref)
        state = ReferenceState(
            chopper=state.chopper.at[cols].set(jnp.where(flip, -chop, chop)),
            reference=state.reference.at[:, cols].set(ref.T),
            running=state.running.at[:, cols].set(running.T),
            period_reads=state.period_reads.at[cols].set(jnp.where(flip, 0, reads)),
        )
        return signal, state, 6 * cols.shape[0] * y.shape[1]


@dataclasses.dataclass(frozen=True)
class Buffer:
    """TTv2's digital buffer ``H`` (weight units): column signals accumulate in it; where
    :math:`|H|` reaches ``thres_scale * dw_min`` of ``C``, ``trunc(H / threshold)`` pulses (at
    most the transfer update's ``desired_bl``) go to ``C``, and ``H`` keeps ``momentum`` of
    itself (``forget_buffer``) or loses what was sent (aihwkit ``BufferedTransferCompound``)."""

    thres_scale: float = 1.0  # threshold, in units of C's dw_min
    momentum: float = 0.1  # fraction of the buffer kept after a transfer
    forget_buffer: bool = True  # after a transfer keep momentum * H (else subtract what was sent)

    def __post_init__(self):
        v = self.thres_scale
        if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
            raise ValueError(f"Buffer.thres_scale: value {v!r} is not allowed; must be a finite number > 0")
        _probability("Buffer", "momentum", self.momentum)

    def init(self, w: jax.Array) -> jax.Array:
        return jnp.zeros_like(w)

    def write(self, model, cp, w, buffer, cols, signal, lr, max_pulses, *, key, mode):
        """Add ``lr * signal`` (k, out) to the buffer's columns ``cols`` and send what crossed
        the threshold into ``C``. Returns ``(w, buffer, counts)``."""
        buf = buffer[:, cols] + lr * signal.T  # (out, k)
        threshold = self.thres_scale * model.pulsed.dw_min
        n = jnp.clip(jnp.trunc(buf / threshold), -max_pulses, max_pulses).astype(jnp.int32)
        new_cols, counts = apply_counts(model, columns_of(cp, cols), w[:, cols], n, key=key, mode=mode)
        w = w.at[:, cols].set(new_cols)
        if self.forget_buffer:
            buf = jnp.where(n != 0, self.momentum * buf, buf)
        else:
            buf = buf - (1.0 - self.momentum) * n.astype(buf.dtype) * threshold
        return w, buffer.at[:, cols].set(buf), counts
