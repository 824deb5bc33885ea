"""Mixed precision (Nandakumar et al., Front. Neurosci. 14, 406, 2020; aihwkit
``MixedPrecisionCompound``): the gradient accumulates in a digital matrix that sends whole
pulses when it crosses the device's step."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from .base import AbstractUpdateRule, apply_counts, check_fields, counts_of

__all__ = ["MixedPrecision", "MixedPrecisionState"]


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
        check_fields(self)

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
            return w, chi - n.astype(chi.dtype) * threshold, counts._replace(wear=jnp.abs(n).astype(w.dtype))

        def skip(args):
            w, chi = args
            return w, chi, counts_of()._replace(wear=jnp.zeros_like(w))

        w, chi, counts = jax.lax.cond(state.step % self.transfer_every == 0, transfer, skip, (w, chi))
        ops = rows * n_in * n_out + 2 * n_in * n_out  # outer product, then threshold and subtract
        words = 2 * n_in * n_out  # chi read and written once per batch (the outer products accumulate in registers)
        counts = counts._replace(digital_ops=counts.digital_ops + ops, memory_words=counts.memory_words + words)
        return w, MixedPrecisionState(chi, state.step + 1), counts
