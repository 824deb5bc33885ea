"""Periphery cards: the prices of reads, conversions and digital work, with their sources.

A periphery card is TOML; every number is a table ``{value, unit, provenance, source}``
(see ``analogsim/cards/periphery-default.toml``). Values are converted to SI at load:

- ``adc_fom_j``, ``dac_fom_j``: joules per conversion step; a converter of ``b`` bits spends
  ``fom * 2**b`` per conversion (the Walden figure-of-merit model);
- ``read_voltage_v``, ``read_time_s``, ``default_conductance_s``: a cross-point read costs
  :math:`V_{read}^2 G t_{read}`;
- ``digital_op_j``: one digital multiply-add;
- ``wire_capacitance_f_per_m``, ``cell_pitch_m``: a line of the array charges
  ``wire_capacitance * cell_pitch`` per cell it crosses; ``write_voltage_v``: the update's line
  voltage for cards that give no ``physical.pulse_voltage``;
- ``bit_draw_j``: one random bit of a stochastic pulse train (generation and comparison);
- ``sram_access_j``: one 32-bit word read from or written to on-chip SRAM;
- ``adc_time_s``, ``columns_per_adc``, ``pulse_slot_time_s``, ``digital_ops_per_s``: time on
  chip (a read takes ``read_time + columns_per_adc * adc_time``; a pulse slot the card's
  ``physical.pulse_width``, else ``pulse_slot_time``);
- ``grid_kg_per_kwh``: CO2-equivalent per kWh;
- ``baseline_flops_per_s``, ``baseline_power_w``, ``baseline_utilisation``: the FP32 GPU of
  the baseline, at ``power / (utilisation * flops_per_s)`` joules per FLOP;
  ``tensor_flops_per_s``, ``tensor_utilisation``: the same GPU's tensor cores (BF16).

Fields added after the first release (``OPTIONAL``) may be left out of a card; they then
take the built-in ``periphery-default`` card's values, and their provenance says so.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from importlib import resources
from pathlib import Path

__all__ = ["BUILTIN_PERIPHERY", "PeripheryCard", "PeripheryCardError", "load_periphery_card"]

BUILTIN_PERIPHERY = ("periphery-default",)


def _NONNEG(v):  # noqa: N802 (a check, read like the lambdas beside it)
    return v >= 0


_FIELDS = {
    # name: (SI attribute, {unit: factor}, check, rule)
    "adc_fom": ("adc_fom_j", {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15, "aJ": 1e-18}, lambda v: v >= 0, ">= 0"),
    "dac_fom": ("dac_fom_j", {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15, "aJ": 1e-18}, lambda v: v >= 0, ">= 0"),
    "read_voltage": ("read_voltage_v", {"V": 1.0, "mV": 1e-3}, lambda v: v >= 0, ">= 0"),
    "read_time": ("read_time_s", {"s": 1.0, "us": 1e-6, "ns": 1e-9, "ps": 1e-12}, lambda v: v >= 0, ">= 0"),
    "default_conductance": (
        "default_conductance_s",
        {"S": 1.0, "mS": 1e-3, "uS": 1e-6, "nS": 1e-9},
        lambda v: v >= 0,
        ">= 0",
    ),
    "digital_op": ("digital_op_j", {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15}, lambda v: v >= 0, ">= 0"),
    "grid_intensity": ("grid_kg_per_kwh", {"kg/kWh": 1.0, "g/kWh": 1e-3}, lambda v: v >= 0, ">= 0"),
    "baseline_flops_per_s": (
        "baseline_flops_per_s",
        {"FLOP/s": 1.0, "GFLOP/s": 1e9, "TFLOP/s": 1e12},
        lambda v: v > 0,
        "> 0",
    ),
    "baseline_power": ("baseline_power_w", {"W": 1.0, "kW": 1e3}, lambda v: v > 0, "> 0"),
    "baseline_utilisation": ("baseline_utilisation", {"1": 1.0}, lambda v: 0 < v <= 1, "in (0, 1]"),
    "wire_capacitance": ("wire_capacitance_f_per_m", {"fF/um": 1e-9, "aF/nm": 1e-9, "F/m": 1.0}, _NONNEG, ">= 0"),
    "cell_pitch": ("cell_pitch_m", {"m": 1.0, "um": 1e-6, "nm": 1e-9}, lambda v: v > 0, "> 0"),
    "write_voltage": ("write_voltage_v", {"V": 1.0, "mV": 1e-3}, _NONNEG, ">= 0"),
    "bit_draw": ("bit_draw_j", {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15}, _NONNEG, ">= 0"),
    "sram_access": ("sram_access_j", {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15}, _NONNEG, ">= 0"),
    "adc_time": ("adc_time_s", {"s": 1.0, "ns": 1e-9, "ps": 1e-12}, _NONNEG, ">= 0"),
    "columns_per_adc": ("columns_per_adc", {"1": 1.0}, lambda v: v >= 1 and v == int(v), "an integer >= 1"),
    "pulse_slot_time": ("pulse_slot_time_s", {"s": 1.0, "us": 1e-6, "ns": 1e-9}, lambda v: v > 0, "> 0"),
    "digital_ops_per_s": ("digital_ops_per_s", {"op/s": 1.0, "Gop/s": 1e9, "Top/s": 1e12}, lambda v: v > 0, "> 0"),
    "tensor_flops_per_s": ("tensor_flops_per_s", {"FLOP/s": 1.0, "TFLOP/s": 1e12}, lambda v: v > 0, "> 0"),
    "tensor_utilisation": ("tensor_utilisation", {"1": 1.0}, lambda v: 0 < v <= 1, "in (0, 1]"),
}
OPTIONAL = (
    "wire_capacitance",
    "cell_pitch",
    "write_voltage",
    "bit_draw",
    "sram_access",
    "adc_time",
    "columns_per_adc",
    "pulse_slot_time",
    "digital_ops_per_s",
    "tensor_flops_per_s",
    "tensor_utilisation",
)
_PROVENANCES = ("measured", "fitted", "derived", "assumed")


class PeripheryCardError(ValueError):
    """A periphery card that cannot be used; names file, field, value and the rule."""


@dataclasses.dataclass(frozen=True)
class PeripheryCard:
    name: str
    source_file: str
    adc_fom_j: float  # J per conversion step
    dac_fom_j: float  # J per conversion step
    read_voltage_v: float
    read_time_s: float
    default_conductance_s: float
    digital_op_j: float  # J per multiply-add
    grid_kg_per_kwh: float
    baseline_flops_per_s: float
    baseline_power_w: float
    baseline_utilisation: float
    wire_capacitance_f_per_m: float
    cell_pitch_m: float
    write_voltage_v: float
    bit_draw_j: float
    sram_access_j: float
    adc_time_s: float
    columns_per_adc: float
    pulse_slot_time_s: float
    digital_ops_per_s: float
    tensor_flops_per_s: float
    tensor_utilisation: float
    provenance: dict[str, tuple[str, str]]  # field -> (provenance, source)

    def adc_j(self, bits: float) -> float:
        """Energy of one ADC conversion at ``bits`` of resolution."""
        return self.adc_fom_j * 2.0**bits

    def dac_j(self, bits: float) -> float:
        """Energy of one DAC conversion at ``bits`` of resolution."""
        return self.dac_fom_j * 2.0**bits

    @property
    def baseline_j_per_flop(self) -> float:
        return self.baseline_power_w / (self.baseline_utilisation * self.baseline_flops_per_s)

    @property
    def tensor_j_per_flop(self) -> float:
        return self.baseline_power_w / (self.tensor_utilisation * self.tensor_flops_per_s)

    @property
    def wire_f_per_cell(self) -> float:
        """Capacitance of one cell pitch of array wire (F)."""
        return self.wire_capacitance_f_per_m * self.cell_pitch_m

    @property
    def read_cycle_s(self) -> float:
        """Time of one array read: the read pulse, then the conversions of the columns that share an ADC."""
        return self.read_time_s + self.columns_per_adc * self.adc_time_s

    def describe(self, field: str) -> str:
        prov, src = self.provenance[field]
        return f"{prov}: {src}"


def load_periphery_card(name_or_path: str | Path = "periphery-default") -> PeripheryCard:
    """Load a periphery card by built-in name or path; ``PeripheryCardError`` if malformed."""
    text_name = str(name_or_path)
    if text_name in BUILTIN_PERIPHERY:
        text = resources.files("analogsim").joinpath("cards", f"{text_name}.toml").read_text(encoding="utf-8")
        source = f"<built-in {text_name}>"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise PeripheryCardError(
                f"periphery card {text_name!r}: not a built-in card and no such file; built-in: {', '.join(BUILTIN_PERIPHERY)}"
            )
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PeripheryCardError(f"{source}: not valid TOML ({err})") from None
    unknown = sorted(set(doc) - set(_FIELDS) - {"name", "description"})
    if unknown:
        raise PeripheryCardError(f"{source}: unknown field(s) {unknown}; allowed: {sorted(_FIELDS)}")
    values, provenance = {}, {}
    defaults = None
    for field, (si, units, check, rule) in _FIELDS.items():
        entry = doc.get(field)
        if entry is None and field in OPTIONAL and text_name not in BUILTIN_PERIPHERY:
            defaults = defaults or load_periphery_card("periphery-default")
            values[si] = getattr(defaults, si)
            prov, src = defaults.provenance[field]
            provenance[field] = (prov, f"not in {source}, from periphery-default: {src}")
            continue
        if not isinstance(entry, dict) or not {"value", "unit", "provenance", "source"} <= set(entry):
            raise PeripheryCardError(
                f"{source}: field {field!r}: missing, or not a table with value, unit, provenance, source"
            )
        value = entry["value"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise PeripheryCardError(
                f"{source}: field '{field}.value': value {value!r} is not allowed; must be a finite number"
            )
        if entry["unit"] not in units:
            raise PeripheryCardError(
                f"{source}: field '{field}.unit': value {entry['unit']!r} is not allowed; allowed: {', '.join(units)}"
            )
        if entry["provenance"] not in _PROVENANCES:
            raise PeripheryCardError(
                f"{source}: field '{field}.provenance': value {entry['provenance']!r} is not allowed; allowed: {', '.join(_PROVENANCES)}"
            )
        si_value = float(value) * units[entry["unit"]]
        if not check(si_value):
            raise PeripheryCardError(f"{source}: field '{field}.value': value {value!r} is not allowed; must be {rule}")
        values[si] = si_value
        provenance[field] = (entry["provenance"], str(entry["source"]))
    return PeripheryCard(name=str(doc.get("name", text_name)), source_file=source, provenance=provenance, **values)
