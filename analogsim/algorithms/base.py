"""The interface every analog update rule implements, and what the rules share: the event
counts of an update, whole-pulse application, hyperparameter checks, the transfer periphery."""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from device_models import AbstractPulsedModel, CrossPoints, apply_pulses, safe_sqrt

from ..periphery import IOParameters
from ..pulsed_update import UpdateParameters

__all__ = [
    "BUFFERED_TRANSFER_UPDATE",
    "TRANSFER_IO",
    "AbstractUpdateRule",
    "RuleCounts",
    "apply_counts",
    "check_fields",
    "columns_of",
    "counts_of",
    "plus_streams",
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
    # the probability that each cross-point of the read array received a pulse (None: unknown,
    # the devices whose state changed), for the write noise (AbstractAnalogLayer.settle)
    touched: jax.Array | None = None
    # (out, in) pulses each device of the array written every step received (the expectation
    # where the rung draws none): the endurance tally (AbstractAnalogLayer.wear)
    wear: jax.Array | None = None
    # for the energy ledger's update periphery and time (``counts_of`` sets them all): pulse
    # slots of stochastic bit streams (each draws one random bit per line), slots of direct
    # writes (a number of pulses per cross-point), expected pulses on input and on output lines
    # (float32), and memory words of the rule's digital matrices (buffer, chi, choppers)
    slots: jax.Array | None = None
    direct_slots: jax.Array | None = None
    row_pulses: jax.Array | None = None
    column_pulses: jax.Array | None = None
    memory_words: jax.Array | None = None


def zero() -> jax.Array:
    return jnp.zeros((), jnp.int32)


def counts_of(up=None, down=None, reads=None, ops=None, **wiring) -> RuleCounts:
    """Rule counts with every ledger field set (zero where not given); ``wiring``: ``slots``,
    ``direct_slots``, ``memory_words`` (int32), ``row_pulses``, ``column_pulses`` (float32)."""
    ints = ("slots", "direct_slots", "memory_words")
    return RuleCounts(
        jnp.asarray(zero() if up is None else up, jnp.int32),
        jnp.asarray(zero() if down is None else down, jnp.int32),
        jnp.asarray(zero() if reads is None else reads, jnp.int32),
        jnp.asarray(zero() if ops is None else ops, jnp.int32),
        **{
            k: jnp.asarray(wiring.get(k, 0), jnp.int32 if k in ints else jnp.float32)
            for k in (*ints, "row_pulses", "column_pulses")
        },
    )


def plus_streams(counts: RuleCounts, *pulses) -> RuleCounts:
    """``counts`` with the pulses (``PulseCounts`` of ``pulsed_update``) added: their up and
    down pulses, slots and line pulses."""
    for p in pulses:
        counts = counts._replace(
            pulses_up=counts.pulses_up + p.up,
            pulses_down=counts.pulses_down + p.down,
            slots=counts.slots + p.slots,
            row_pulses=counts.row_pulses + p.row_pulses,
            column_pulses=counts.column_pulses + p.column_pulses,
        )
    return counts


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
    mag = jnp.abs(n)
    # written line by line in max |n| slots: input line j carries max_i |n_ij| pulses, output line i max_j |n_ij|
    counts = counts_of(
        jnp.sum(n_up),
        jnp.sum(n_down),
        direct_slots=jnp.max(mag, initial=0),
        row_pulses=jnp.sum(jnp.max(mag, axis=0, initial=0), dtype=jnp.float32),
        column_pulses=jnp.sum(jnp.max(mag, axis=1, initial=0), dtype=jnp.float32),
    )
    if mode == "exact":

        def body(i, w):
            pulses = jnp.where(mag > i, jnp.sign(n), 0).astype(jnp.int8)
            return apply_pulses(model, cp, w, pulses, key=jax.random.fold_in(key, i))

        return jax.lax.fori_loop(0, jnp.max(mag), body, w), counts
    f_up, f_down = n_up.astype(w.dtype), n_down.astype(w.dtype)
    dw = f_up * model.step_up(cp, w) - f_down * model.step_down(cp, w)
    var = f_up * model.step_variance(cp, w, True) + f_down * model.step_variance(cp, w, False)
    dw = dw + safe_sqrt(var) * jax.random.normal(key, w.shape, w.dtype)
    new = jnp.clip(w + dw, cp.b_min, cp.b_max)
    return jnp.where(n != 0, new, w), counts


def columns_of(tree: Any, cols: jax.Array) -> Any:
    """The columns ``cols`` of every (out, in) leaf of ``tree`` (scalars pass through)."""
    return jax.tree.map(lambda a: a[:, cols] if jnp.ndim(a) == 2 else a, tree)


def check_fields(rule: Any) -> None:
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
          state: this rule's state (from ``init``).
          x: (rows, in) layer inputs of the batch.
          d: (rows, out) errors at the layer output (zero rows: padding).
          lr: the SGD learning rate.
          up: settings of the gradient's pulsed update (its ``mode`` is the fidelity rung of
            every pulse the rule fires).
          key: PRNG key.

        Returns:
          ``(w, state, counts)``.
        """
