"""Plain analog SGD: ``W -= lr d x^T`` by stochastic pulse trains (aihwkit's default)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

from ..pulsed_update import pulsed_update
from .base import AbstractUpdateRule, counts_of, plus_streams

__all__ = ["SGD", "SGDState"]


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
        return w, state, plus_streams(counts_of(), pulses)._replace(touched=pulses.touched, wear=pulses.per_device)
