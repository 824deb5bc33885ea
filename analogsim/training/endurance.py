"""Endurance: how many pulses a training run put on its busiest device, against the pulses the
card's device was shown to take without degradation (``physical.endurance``).

Each analog layer whose card gives an endurance tallies the pulses of every device
(``Wear``: the array the update rule writes every step, the expectation
where the rung draws no counts). Transfer writes into the slow array and the refresh pulses of
device pairs are not in the tally (at most one pulse per device and transfer for buffered
transfers), and a device pair's two devices are counted together (G+ takes the up pulses, G-
the down ones), so the tally is a lower bound for transfer rules and an upper bound (within 2x)
for each device of a pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from ..layers import analog_layers
from .state import layer_name

__all__ = ["endurance_line", "endurance_report"]


def endurance_report(model: nnx.Module) -> dict[str, Any] | None:
    """Per layer, the most and the mean pulses per device, and the busiest device of the model
    against its card's endurance; ``None`` when no layer's card gives one.

    Returns:
      ``{"layers": {name: {"max_pulses", "mean_pulses", "endurance_pulses", "ratio"}},
      "busiest_layer", "busiest_pulses", "endurance_pulses", "ratio"}``; ``ratio`` is pulses
      over endurance (above 1: past what the device was shown to take).
    """
    layers = {}
    for path, layer in analog_layers(model):
        if layer.endurance is None:
            continue
        wear = np.asarray(layer.wear.get_value(), np.float64) + np.asarray(layer.wear_fraction.get_value(), np.float64)
        top = float(wear.max())
        layers[layer_name(path)] = {
            "max_pulses": top,
            "mean_pulses": float(wear.mean()),
            "endurance_pulses": float(layer.endurance),
            "ratio": top / float(layer.endurance),
        }
    if not layers:
        return None
    busiest = max(layers, key=lambda n: layers[n]["ratio"])
    b = layers[busiest]
    return {
        "layers": layers,
        "busiest_layer": busiest,
        "busiest_pulses": b["max_pulses"],
        "endurance_pulses": b["endurance_pulses"],
        "ratio": b["ratio"],
    }


def endurance_line(report: dict[str, Any]) -> str:
    """One line for a run's summary: the busiest device against the endurance."""
    past = "past" if report["ratio"] > 1 else "within"
    return (
        f"endurance: busiest device ({report['busiest_layer']}) took {report['busiest_pulses']:,.0f} pulses, "
        f"{report['ratio']:.3g}x the {report['endurance_pulses']:,.0f} its card shows without degradation ({past} it)"
    )
