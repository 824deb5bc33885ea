"""Settings of the pulsed update and the pulses it reports (``analogsim.pulsed_update``)."""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax

__all__ = ["UPDATE_MODES", "PulseCounts", "UpdateParameters"]

UPDATE_MODES = ("auto", "exact", "expected", "gaussian")


@dataclasses.dataclass(frozen=True)
class UpdateParameters:
    """Settings of the pulsed update (aihwkit defaults)."""

    desired_bl: int = 31  # longest pulse train (time slots per sample)
    update_bl_management: bool = True  # shorten BL to what the sample needs
    update_management: bool = True  # balance row and column probabilities
    # Rung of the fidelity ladder (module docstring). "auto" (the default) is resolved per
    # device when a layer is built (analogsim.pulsed_update.safety): "gaussian", the fastest,
    # where it is safe, else "exact", said in one line (docs/fidelity.md).
    mode: Literal["auto", "exact", "expected", "gaussian"] = "auto"

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
    """Pulses fired in one update (int32 scalars; a step is far below 2**31 pulses). The
    ``gaussian`` rung draws no counts: it gives the expected ones, rounded at random without bias."""

    up: jax.Array  # potentiating pulses
    down: jax.Array  # depressing pulses
    # (out, in) probability that each cross-point received at least one pulse (the ``expected``
    # rung: 0/1; ``gaussian``: 1 - exp(-mean count); ``exact``: None, its states tell)
    touched: jax.Array | None = None
    # (out, in) expected pulses at each cross-point (``exact``: the expectation of its draw, from
    # the pulse probabilities; unused values cost nothing under jit), for the endurance tally
    per_device: jax.Array | None = None
    # the bit streams' wiring, for the energy ledger (set by ``pulsed_update`` for every rung):
    # pulse slots (int32, sum of BL over the samples), and the expected pulses on the input
    # (row) and output (column) lines (float32 sums of BL p and BL q)
    slots: jax.Array | None = None
    row_pulses: jax.Array | None = None
    column_pulses: jax.Array | None = None
