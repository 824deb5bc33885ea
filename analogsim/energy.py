"""Energy ledger: counts of hardware events per analog layer, and their price in joules.

Counted per analog layer, inside the jitted training step (exact counters,
:mod:`analogsim.counters`):

- ``pulses_up``, ``pulses_down``: programming pulses fired at cross-points;
- ``array_reads``: vector reads of the array (forward, backward, bound-management re-reads);
- ``crosspoint_reads``: cross-points activated by those reads (``in * out`` per read);
- ``dac_conversions``, ``adc_conversions``: one per input and per output line of each read;
- ``digital_ops``: bias additions and bias updates (the digital part of the layer).

Pricing (simple here; every price carries its source):

- write: the card's ``pulse_energy`` if it has one, else 1 fJ, assumed (Tang et al., IEDM
  2018 project ~1 fJ per pulse for a 100 nm x 100 nm LiWO3 ECRAM);
- read: :math:`V_{read}^2 G t_{read}` per activated cross-point with :math:`V_{read}` = 0.2 V,
  :math:`t_{read}` = 10 ns (assumed) and G the middle of the card's conductance range, or
  1 uS (assumed), i.e. 0.4 fJ (the DESIGN.md example);
- ADC: 2.6 pJ per conversion (Murmann ADC survey, 2025 revision: best SAR converters at
  6.5-8.5 effective bits);
- DAC: 0.1 pJ per conversion (assumed; no survey figure used yet);
- digital: 0.9 pJ per operation (FP32 add at 45 nm, Horowitz ISSCC 2014).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from device_models import DeviceCard

from . import counters

__all__ = ["COUNT_KINDS", "ENERGY_KIND_OF", "Price", "Prices", "default_prices", "new_ledger", "price_report"]

COUNT_KINDS = (
    "pulses_up",
    "pulses_down",
    "array_reads",
    "crosspoint_reads",
    "dac_conversions",
    "adc_conversions",
    "digital_ops",
)
# Which energy kind each count is billed to (``by_kind`` of the report).
ENERGY_KIND_OF = {
    "pulses_up": "write",
    "pulses_down": "write",
    "array_reads": None,  # the energy of a read is billed per cross-point, DAC and ADC
    "crosspoint_reads": "read",
    "dac_conversions": "dac",
    "adc_conversions": "adc",
    "digital_ops": "digital",
}

V_READ_V = 0.2  # assumed read voltage
T_READ_S = 10e-9  # assumed read time
G_DEFAULT_S = 1e-6  # assumed conductance where a card gives none


@dataclasses.dataclass(frozen=True)
class Price:
    joules: float  # energy per event
    source: str


Prices = dict[str, Price]


def default_prices(card: DeviceCard | None) -> Prices:
    """Prices per event for an array of ``card`` (see the module docstring)."""
    phys = card.physical if card is not None else {}
    if "pulse_energy_j" in phys:
        prov, src = card.provenance["physical.pulse_energy"]
        write = Price(phys["pulse_energy_j"], f"card {card.name}: {prov}, {src}")
    else:
        write = Price(1e-15, "assumed: ~1 fJ per pulse, ECRAM projection of Tang et al., IEDM 2018")
    if "g_min_s" in phys:
        g = 0.5 * (phys["g_min_s"] + phys["g_max_s"])
        g_src = f"G = {g:.3g} S, middle of card {card.name}'s range"
    else:
        g = G_DEFAULT_S
        g_src = "G = 1 uS assumed"
    read = Price(
        V_READ_V**2 * g * T_READ_S,
        f"V_read^2 * G * t_read with V_read = {V_READ_V} V and t_read = {T_READ_S:g} s (assumed), {g_src}",
    )
    return {
        "pulses_up": write,
        "pulses_down": write,
        "array_reads": Price(0.0, "billed through crosspoint_reads, dac_conversions and adc_conversions"),
        "crosspoint_reads": read,
        "dac_conversions": Price(0.1e-12, "assumed: 0.1 pJ per DAC conversion"),
        "adc_conversions": Price(2.6e-12, "Murmann ADC survey (2025 revision): best SAR, 6.5-8.5 ENOB, ~2.6 pJ"),
        "digital_ops": Price(0.9e-12, "FP32 add at 45 nm, Horowitz ISSCC 2014"),
    }


def new_ledger(layer_names: list[str]) -> dict[str, dict[str, Any]]:
    """Zero counters for each layer and count kind (a pytree of uint32 (2,) counters)."""
    return {name: {kind: counters.zeros() for kind in COUNT_KINDS} for name in layer_names}


def add_counts(ledger, layer: str, **increments) -> dict:
    """Return ``ledger`` with ``increments`` (uint32-castable scalars) added to ``layer``."""
    new = dict(ledger)
    entry = dict(new[layer])
    for kind, inc in increments.items():
        entry[kind] = counters.add(entry[kind], jnp.asarray(inc))
    new[layer] = entry
    return new


def host_counts(ledger) -> dict[str, dict[str, int]]:
    """The exact integer counts of a ledger, per layer and kind."""
    return {layer: {kind: int(counters.to_int(c)) for kind, c in kinds.items()} for layer, kinds in ledger.items()}


def price_report(counts: dict[str, dict[str, int]], prices: dict[str, Prices]) -> dict[str, Any]:
    """Joules from exact counts: totals, by kind, by layer, and the prices used.

    Args:
      counts: per layer, per count kind, exact integers (:func:`host_counts`).
      prices: per layer, the :data:`Prices` of that layer's array.
    """
    by_kind = {"write": 0.0, "read": 0.0, "dac": 0.0, "adc": 0.0, "digital": 0.0}
    by_layer: dict[str, float] = {}
    totals = {kind: 0 for kind in COUNT_KINDS}
    for layer, kinds in counts.items():
        layer_j = 0.0
        for kind, n in kinds.items():
            totals[kind] += n
            energy_kind = ENERGY_KIND_OF[kind]
            if energy_kind is None:
                continue
            j = n * prices[layer][kind].joules
            by_kind[energy_kind] += j
            layer_j += j
        by_layer[layer] = layer_j
    return {
        "total_j": sum(by_kind.values()),
        "by_kind": by_kind,
        "by_layer": by_layer,
        "counts": totals,
        "counts_by_layer": counts,
        "prices": {
            layer: {k: {"joules": p.joules, "source": p.source} for k, p in lp.items()} for layer, lp in prices.items()
        },
    }
