"""Energy ledger: exact counts of hardware events per layer, and their price in joules.

Counted inside the jitted training step (exact ``uint32`` high/low counters,
``analogsim.counters``), per analog layer:

- ``pulses_up``, ``pulses_down``: programming pulses fired at cross-points;
- ``array_reads``: vector reads of the array (forward, backward, and bound-management
  re-reads; the input layer's backward read is not needed and not done);
- ``crosspoint_reads``: cross-points activated by those reads (``in * out`` per read);
- ``dac_conversions``, ``adc_conversions``: one per driven input line and per converted
  output line of each read;
- ``digital_ops``: digital multiply-adds of the layer's periphery and digital parts: noise
  management scaling (``in + out`` per read), bias additions, the pulse-probability
  computation of the update (``in + out`` per sample with an error), and the optimizer step of
  the bias;

and per digital layer (``nnx.Linear``) and activation function: ``digital_ops`` of the forward
pass, the backward pass and the optimizer update.

Prices (joules per event, each with its source) come from the device card and the periphery
card (``analogsim.periphery_card``):

.. math::
    E_{write} = E_{pulse}, \\quad E_{read} = V_{read}^2\\,\\bar G\\,t_{read}, \\quad
    E_{ADC} = F_{ADC}\\,2^{b_{out}}, \\quad E_{DAC} = F_{DAC}\\,2^{b_{in}}, \\quad
    E_{dig} = E_{MAC}

with :math:`V_{read}` the card's read condition (``physical.read_voltage``) where it gives
one, else the periphery card's, :math:`\\bar G` the middle of the card's conductance range and :math:`b = \\log_2(1/res + 2)`
the converter's bits (aihwkit's ``1/(2^b - 2)`` resolutions). Every joule of a report is a
count times a price, so a report can be re-priced with another card without retraining.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from device_models import DeviceCard

from . import counters
from .periphery import IOParameters
from .periphery_card import PeripheryCard

__all__ = [
    "COUNT_KINDS",
    "ENERGY_KIND_OF",
    "Price",
    "Prices",
    "add_counts",
    "analog_prices",
    "converter_bits",
    "digital_prices",
    "host_counts",
    "new_ledger",
    "price_report",
]

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
    "array_reads": None,  # a read is billed through its cross-points and conversions
    "crosspoint_reads": "read",
    "dac_conversions": "dac",
    "adc_conversions": "adc",
    "digital_ops": "digital",
}
ENERGY_KINDS = ("write", "read", "dac", "adc", "digital")


@dataclasses.dataclass(frozen=True)
class Price:
    joules: float  # energy per event
    source: str


Prices = dict[str, Price]


def converter_bits(res: float) -> float:
    """Bits of a converter with aihwkit resolution ``res`` (fraction of the range): ``log2(1/res + 2)``."""
    if res <= 0:
        raise ValueError(
            f"resolution {res!r}: an unquantised converter has no finite energy model; set a resolution > 0"
        )
    return math.log2(1.0 / res + 2.0)


def analog_prices(card: DeviceCard, periphery: PeripheryCard, io: IOParameters) -> Prices:
    """Prices per event of an analog array of ``card`` read through ``io`` (see the module docstring)."""
    phys = card.physical
    if "pulse_energy_j" in phys:
        prov, src = card.provenance["physical.pulse_energy"]
        write = Price(phys["pulse_energy_j"], f"card {card.name}: {prov}, {src}")
    else:
        write = Price(
            1e-15, f"assumed (card {card.name} gives none): ~1 fJ per pulse, ECRAM projection of Tang et al., IEDM 2018"
        )
    if "g_min_s" in phys:
        g = 0.5 * (phys["g_min_s"] + phys["g_max_s"])
        g_src = f"G = {g:.3g} S, middle of card {card.name}'s conductance range"
    else:
        g = periphery.default_conductance_s
        g_src = f"G = {g:.3g} S ({periphery.describe('default_conductance')})"
    if "read_voltage_v" in phys:  # the device's own read condition wins over the periphery's
        v_read = phys["read_voltage_v"]
        prov, src = card.provenance["physical.read_voltage"]
        v_src = f"card {card.name}'s read condition: {prov}, {src}"
    else:
        v_read, v_src = periphery.read_voltage_v, periphery.describe("read_voltage")
    read = Price(
        v_read**2 * g * periphery.read_time_s,
        f"V_read^2 G t_read with V_read = {v_read} V ({v_src}), "
        f"t_read = {periphery.read_time_s:g} s ({periphery.describe('read_time')}), {g_src}",
    )
    b_in, b_out = converter_bits(io.inp_res), converter_bits(io.out_res)
    return {
        "pulses_up": write,
        "pulses_down": write,
        "array_reads": Price(0.0, "billed through crosspoint_reads, dac_conversions and adc_conversions"),
        "crosspoint_reads": read,
        "dac_conversions": Price(
            periphery.dac_j(b_in),
            f"dac_fom * 2^{b_in:g} bits, dac_fom {periphery.dac_fom_j:g} J ({periphery.describe('dac_fom')})",
        ),
        "adc_conversions": Price(
            periphery.adc_j(b_out),
            f"adc_fom * 2^{b_out:g} bits, adc_fom {periphery.adc_fom_j:g} J ({periphery.describe('adc_fom')})",
        ),
        "digital_ops": Price(periphery.digital_op_j, periphery.describe("digital_op")),
    }


def digital_prices(periphery: PeripheryCard) -> Prices:
    """Prices for a digital part (only ``digital_ops`` occur; the other counts stay zero)."""
    zero = Price(0.0, "a digital part has no analog events")
    prices = {kind: zero for kind in COUNT_KINDS}
    prices["digital_ops"] = Price(periphery.digital_op_j, periphery.describe("digital_op"))
    return prices


def new_ledger(names: list[str]) -> dict[str, dict[str, Any]]:
    """Zero counters for each ledger entry and count kind (a pytree of uint32 (2,) counters)."""
    return {name: {kind: counters.zeros() for kind in COUNT_KINDS} for name in names}


def add_counts(ledger, name: str, **increments) -> dict:
    """Return ``ledger`` with ``increments`` (non-negative, < 2**32 each) added to entry ``name``."""
    unknown = set(increments) - set(COUNT_KINDS)
    if unknown:
        raise ValueError(f"unknown count kind(s) {sorted(unknown)}; allowed: {', '.join(COUNT_KINDS)}")
    new = dict(ledger)
    entry = dict(new[name])
    for kind, inc in increments.items():
        entry[kind] = counters.add(entry[kind], jnp.asarray(inc))
    new[name] = entry
    return new


def host_counts(ledger) -> dict[str, dict[str, int]]:
    """The exact integer counts of a ledger, per entry and kind."""
    return {name: {kind: int(counters.to_int(c)) for kind, c in kinds.items()} for name, kinds in ledger.items()}


def price_report(counts: dict[str, dict[str, int]], prices: dict[str, Prices]) -> dict[str, Any]:
    """Joules from exact counts: the total, by energy kind, by ledger entry, and the prices used.

    Args:
      counts: per entry (layer), per count kind, exact integers (``host_counts``).
      prices: per entry, the ``Prices`` used for it.
    """
    by_kind = {kind: 0.0 for kind in ENERGY_KINDS}
    by_layer: dict[str, float] = {}
    totals = {kind: 0 for kind in COUNT_KINDS}
    for name, kinds in counts.items():
        layer_j = 0.0
        for kind, n in kinds.items():
            totals[kind] += n
            energy_kind = ENERGY_KIND_OF[kind]
            if energy_kind is None:
                continue
            j = n * prices[name][kind].joules
            by_kind[energy_kind] += j
            layer_j += j
        by_layer[name] = layer_j
    return {
        "total_j": sum(by_kind.values()),
        "by_kind": by_kind,
        "by_layer": by_layer,
        "counts": totals,
        "counts_by_layer": counts,
        "prices": {
            name: {k: {"joules": p.joules, "source": p.source} for k, p in lp.items()} for name, lp in prices.items()
        },
    }
