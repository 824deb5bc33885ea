"""Energy ledger: exact counts of hardware events per layer, and their price in joules.

Counted inside the jitted training step (exact ``uint32`` high/low counters,
``analogsim.counters``), per analog layer:

- ``pulses_up``, ``pulses_down``: programming pulses fired at cross-points;
- ``array_reads``: vector reads of the array (forward, backward, and bound-management
  re-reads; the input layer's backward read is not needed and not done);
- ``crosspoint_reads``: cross-points activated by those reads (``in * out`` per read);
- ``read_wire_cells``: the wire the reads charge, in cell pitches: every input line (as long
  as the array has outputs) and every output line (as long as it has inputs) of each read,
  ``2 in out`` (a one-hot transfer read: one input line and every output line);
- ``dac_conversions``, ``adc_conversions``: one per driven input line and per converted
  output line of each read;
- ``update_slots``: pulse slots of the update (``BL`` per sample for the bit streams,
  ``max |n|`` for a direct write of ``n`` pulses per cross-point): the update's time;
- ``write_wire_cells``: the wire the update's pulses charge, in cell pitches: each pulse on an
  input line charges ``out`` cells, on an output line ``in`` cells (expected counts of the bit
  streams; float32 sums, relative precision 1e-7);
- ``bit_draws``: random bits of the stochastic bit streams, one per line per slot;
- ``memory_words``: 32-bit words read from or written to on-chip SRAM: each read's input
  vector and output, the input and error each update re-reads, and the rules' digital
  matrices (TTv2's buffer, mixed precision's ``chi``, the choppers);
- ``digital_ops``: digital multiply-adds of the layer's periphery and digital parts: noise
  management scaling (``in + out`` per read), bias additions, the pulse-probability
  computation of the update (``in + out`` per sample with an error), and the optimizer step of
  the bias;

per digital layer (``nnx.Linear``, ``nnx.Conv``): ``digital_ops`` and ``memory_words`` of the
forward pass, the backward pass and the optimizer update (``analogsim.events.digital_step_terms``);
and in the ``activations`` entry, the digital element-wise work of activations,
normalisation, pooling (the model's ``digital_ops_per_sample``) and the softmax cross-entropy
(5 operations per class and sample).

Time on chip: each count can carry seconds per event as well (``Price.seconds``): an array
read takes the read pulse plus the conversions of the columns that share one ADC, a pulse
slot the device's pulse width, a digital operation ``1 / digital_ops_per_s``. Summed over
layers (no pipelining between layers; the tiles of one layer work in parallel), this is the
time a chip with one tile per array would take: an upper bound for a pipelined design.

Prices (joules per event, each with its source) come from the device card and the periphery
card (``analogsim.periphery_card``):

.. math::
    E_{write} = E_{pulse}, \\quad E_{read} = V_{read}^2\\,\\bar G\\,t_{read}, \\quad
    E_{wire} = C_{cell} V^2, \\quad
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
    "read_wire_cells",
    "dac_conversions",
    "adc_conversions",
    "update_slots",
    "write_wire_cells",
    "bit_draws",
    "memory_words",
    "digital_ops",
)
# Which energy kind each count is billed to (``by_kind`` of the report).
ENERGY_KIND_OF = {
    "pulses_up": "write",
    "pulses_down": "write",
    "array_reads": None,  # a read is billed through its cross-points, wires and conversions
    "crosspoint_reads": "read",
    "read_wire_cells": "wire",
    "dac_conversions": "dac",
    "adc_conversions": "adc",
    "update_slots": None,  # time only: a slot is billed through its pulses, wires and bits
    "write_wire_cells": "wire",
    "bit_draws": "update",
    "memory_words": "memory",
    "digital_ops": "digital",
}
ENERGY_KINDS = ("write", "read", "wire", "dac", "adc", "update", "memory", "digital")
REPORT_SCHEMA_VERSION = 2  # docs/concepts/energy.md, "The report file"


@dataclasses.dataclass(frozen=True)
class Price:
    joules: float  # energy per event
    source: str
    seconds: float = 0.0  # time on chip per event (0: inside another event's time)
    time_source: str = ""


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
    if "pulse_voltage_v" in phys:
        v_write = abs(phys["pulse_voltage_v"])
        v_write_src = f"card {card.name}'s pulse voltage ({card.provenance['physical.pulse_voltage'][1]})"
    else:
        v_write, v_write_src = periphery.write_voltage_v, periphery.describe("write_voltage")
    if "pulse_width_s" in phys:
        slot = phys["pulse_width_s"]
        slot_src = f"card {card.name}'s pulse width ({card.provenance['physical.pulse_width'][1]})"
    else:
        slot, slot_src = periphery.pulse_slot_time_s, periphery.describe("pulse_slot_time")
    c_cell = periphery.wire_f_per_cell
    wire_src = (
        f"C_cell = wire_capacitance {periphery.wire_capacitance_f_per_m * 1e9:g} fF/um "
        f"({periphery.describe('wire_capacitance')}) x cell_pitch {periphery.cell_pitch_m * 1e6:g} um "
        f"({periphery.describe('cell_pitch')})"
    )
    b_in, b_out = converter_bits(io.inp_res), converter_bits(io.out_res)
    return {
        "pulses_up": write,
        "pulses_down": write,
        "array_reads": Price(
            0.0,
            "billed through crosspoint_reads, read_wire_cells, dac_conversions and adc_conversions",
            periphery.read_cycle_s,
            f"read_time {periphery.read_time_s:g} s + columns_per_adc {periphery.columns_per_adc:g} x adc_time "
            f"{periphery.adc_time_s:g} s ({periphery.describe('columns_per_adc')}; {periphery.describe('adc_time')})",
        ),
        "crosspoint_reads": read,
        "read_wire_cells": Price(c_cell * v_read**2, f"C_cell V_read^2 per cell pitch of a read line, {wire_src}"),
        "dac_conversions": Price(
            periphery.dac_j(b_in),
            f"dac_fom * 2^{b_in:g} bits, dac_fom {periphery.dac_fom_j:g} J ({periphery.describe('dac_fom')})",
        ),
        "adc_conversions": Price(
            periphery.adc_j(b_out),
            f"adc_fom * 2^{b_out:g} bits, adc_fom {periphery.adc_fom_j:g} J ({periphery.describe('adc_fom')})",
        ),
        "update_slots": Price(0.0, "billed through pulses, write_wire_cells and bit_draws", slot, slot_src),
        "write_wire_cells": Price(
            c_cell * v_write**2,
            f"C_cell V_pulse^2 per cell pitch of a pulsed line, V_pulse = {v_write:g} V ({v_write_src}), {wire_src}",
        ),
        "bit_draws": Price(periphery.bit_draw_j, periphery.describe("bit_draw")),
        "memory_words": Price(periphery.sram_access_j, periphery.describe("sram_access")),
        "digital_ops": _digital_op(periphery),
    }


def _digital_op(periphery: PeripheryCard) -> Price:
    return Price(
        periphery.digital_op_j,
        periphery.describe("digital_op"),
        1.0 / periphery.digital_ops_per_s,
        periphery.describe("digital_ops_per_s"),
    )


def digital_prices(periphery: PeripheryCard) -> Prices:
    """Prices for a digital part (only ``digital_ops`` and ``memory_words`` occur)."""
    zero = Price(0.0, "a digital part has no analog events")
    prices = {kind: zero for kind in COUNT_KINDS}
    prices["digital_ops"] = _digital_op(periphery)
    prices["memory_words"] = Price(periphery.sram_access_j, periphery.describe("sram_access"))
    return prices


def new_ledger(names: list[str]) -> dict[str, dict[str, Any]]:
    """Zero counters for each ledger entry and count kind (a pytree of uint32 (2,) counters)."""
    return {name: {kind: counters.zeros() for kind in COUNT_KINDS} for name in names}


def add_counts(ledger, name: str, **increments) -> dict:
    """Return ``ledger`` with ``increments`` added to entry ``name``: each a non-negative
    ``uint32`` value (< 2**32) or a counter (``analogsim.counters``, exact to 2**64)."""
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
    time_by_layer: dict[str, float] = {}
    totals = {kind: 0 for kind in COUNT_KINDS}
    for name, kinds in counts.items():
        layer_j = layer_s = 0.0
        for kind in COUNT_KINDS:
            n = kinds.get(kind, 0)  # (a report written before a kind existed lacks it)
            totals[kind] += n
            price = prices[name].get(kind)
            if price is None:
                continue
            layer_s += n * price.seconds
            energy_kind = ENERGY_KIND_OF[kind]
            if energy_kind is None:
                continue
            j = n * price.joules
            by_kind[energy_kind] += j
            layer_j += j
        by_layer[name] = layer_j
        time_by_layer[name] = layer_s
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "total_j": sum(by_kind.values()),
        "by_kind": by_kind,
        "by_layer": by_layer,
        "time_s": sum(time_by_layer.values()),
        "time_by_layer": time_by_layer,
        "counts": totals,
        "counts_by_layer": counts,
        "prices": {
            name: {
                k: {"joules": p.joules, "source": p.source, "seconds": p.seconds, "time_source": p.time_source}
                for k, p in lp.items()
            }
            for name, lp in prices.items()
        },
    }
