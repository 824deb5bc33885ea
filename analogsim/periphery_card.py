"""Periphery cards: the prices of reads, conversions and digital work, with their sources.

A periphery card is TOML; every number is a table ``{value, unit, provenance, source}``
(see ``analogsim/cards/periphery-default.toml``). Values are converted to SI at load:

- ``adc_fom_j``, ``dac_fom_j``: joules per conversion step; a converter of ``b`` bits spends
  ``fom * 2**b`` per conversion (the Walden figure-of-merit model);
- ``read_voltage_v``, ``read_time_s``, ``default_conductance_s``: a cross-point read costs
  :math:`V_{read}^2 G t_{read}`;
- ``digital_op_j``: one digital multiply-add;
- ``grid_kg_per_kwh``: CO2-equivalent per kWh;
- ``baseline_flops_per_s``, ``baseline_power_w``, ``baseline_utilisation``: the digital
  accelerator of the baseline, at ``power / (utilisation * flops_per_s)`` joules per FLOP.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from importlib import resources
from pathlib import Path

__all__ = ["BUILTIN_PERIPHERY", "PeripheryCard", "PeripheryCardError", "load_periphery_card"]

BUILTIN_PERIPHERY = ("periphery-default",)
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
}
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
    for field, (si, units, check, rule) in _FIELDS.items():
        entry = doc.get(field)
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
