"""One entry of a device card: a ``{value, unit, provenance, source}`` table, checked and
converted to SI (shared by ``device_models.cards`` and ``device_models.card_physical``)."""

from __future__ import annotations

import math
from typing import Any

from .card_errors import CardError
from .pulsed import ParameterRule

__all__ = ["PROVENANCES"]

# measured: read from a paper or data; fitted: a fit to data; derived: arithmetic on measured
# figures (the source shows it); assumed: none of these (the source says what would pin it)
PROVENANCES = ("measured", "fitted", "derived", "assumed")
_NORMALISED_UNITS = {"1": 1.0}
_UNITS = {
    "conductance": {"S": 1.0, "mS": 1e-3, "uS": 1e-6, "nS": 1e-9},
    "energy": {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15, "aJ": 1e-18},
    "voltage": {"V": 1.0, "mV": 1e-3},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "length": {"m": 1.0, "um": 1e-6, "nm": 1e-9},
    "temperature": {"K": 1.0},
    "field": {"V/m": 1.0, "V/nm": 1e9, "MV/cm": 1e8},
    "count": {"1": 1.0},
}


def _entry_value(source: str, field: str, entry: Any) -> Any:
    """Check that one card entry is a table with the right keys; return its raw ``value``."""
    if not isinstance(entry, dict):
        raise CardError(
            f"{source}: field {field!r}: value {entry!r} is not allowed; "
            "must be a table with value, unit, provenance and source"
        )
    allowed_keys = {"value", "unit", "provenance", "source", "note"}
    extra = sorted(set(entry) - allowed_keys)
    if extra:
        raise CardError(f"{source}: field {field!r}: unknown key(s) {extra}; allowed: {sorted(allowed_keys)}")
    for key in ("value", "unit", "provenance", "source"):
        if key not in entry:
            raise CardError(f"{source}: field {field!r}: missing {key!r}")
    return entry["value"]


def _entry_meta(source: str, field: str, entry: dict, units: dict[str, float]) -> tuple[float, str, str]:
    """Check the unit, provenance and source of one card entry; return (unit factor, provenance, source)."""
    unit = entry["unit"]
    if unit not in units:
        raise CardError(f"{source}: field '{field}.unit': value {unit!r} is not allowed; allowed: {', '.join(units)}")
    prov = entry["provenance"]
    if prov not in PROVENANCES:
        raise CardError(
            f"{source}: field '{field}.provenance': value {prov!r} is not allowed; allowed: {', '.join(PROVENANCES)}"
        )
    src = entry["source"]
    if not isinstance(src, str) or not src.strip():
        raise CardError(f"{source}: field '{field}.source': value {src!r} is not allowed; must be a non-empty string")
    return units[unit], prov, src


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float)


def _number(
    source: str, field: str, entry: Any, units: dict[str, float], *, flag: bool = False
) -> tuple[float, str, str]:
    """Check one ``{value, unit, provenance, source}`` table; return (SI value, provenance, source).
    A ``flag`` (an aihwkit boolean) may be written ``true``/``false`` and is returned as 1.0/0.0."""
    value = _entry_value(source, field, entry)
    if flag and isinstance(value, bool):
        _, prov, src = _entry_meta(source, field, entry, units)
        return float(value), prov, src
    if not _is_number(value):
        raise CardError(f"{source}: field '{field}.value': value {value!r} is not allowed; must be a number")
    if not math.isfinite(value):
        raise CardError(f"{source}: field '{field}.value': value {value!r} is not allowed; must be finite")
    factor, prov, src = _entry_meta(source, field, entry, units)
    return float(value) * factor, prov, src


def _table(source: str, field: str, entry: Any, rule: ParameterRule) -> tuple[tuple[float, ...], str, str]:
    """Check one entry whose value is a non-empty array of unit-"1" numbers, each passing ``rule``."""
    value = _entry_value(source, field, entry)
    allowed = f"must be a non-empty array of finite numbers, each {rule.rule}"
    if not isinstance(value, list) or not value:
        raise CardError(f"{source}: field '{field}.value': value {value!r} is not allowed; {allowed}")
    for i, v in enumerate(value):
        if not _is_number(v) or not math.isfinite(v) or not rule.check(float(v)):
            raise CardError(
                f"{source}: field '{field}.value': value {value!r} is not allowed; {allowed} (element {i} is {v!r})"
            )
    _, prov, src = _entry_meta(source, field, entry, _NORMALISED_UNITS)
    return tuple(float(v) for v in value), prov, src
