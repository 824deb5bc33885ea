"""The ``[physical]`` section of a device card: conductances, energies, the read condition and
the device's published operating limits, in SI units.

All fields are optional::

    g_min, g_max                  conductance window (given together; weights map onto it linearly)
    pulse_energy                  energy per programming pulse
    gate_charging_energy,         its two parts, given together (electrostatic gate charging and
    ion_transfer_energy           the faradaic ion transfer); pulse_energy is their sum, derived
                                  at load when left out and checked against it (1%) when given
    pulse_voltage, pulse_width    the operating pulse (information)
    read_voltage                  the device's read condition; it replaces the periphery card's
                                  read voltage in the read energy of this device's arrays
    endurance                     pulses per device shown without degradation; a training run
                                  reports how far past it its busiest device went
    stable_pulse_width,           widths above the first are warned about, at or above the
    failure_pulse_width           second refused (models with a pulse width: ``protonic``)
    demonstrated_field,           gate fields V/d above the first that are also inside the
    breakdown_field_low,          electrolyte's critical-field range (low..breakdown_field) are
    breakdown_field               warned about, fields above breakdown_field refused

The limits are checked where the card loads (``check_operating_limits``): a refusal is a
``CardError`` naming the card field, a caution one warning line.
"""

from __future__ import annotations

import warnings
from typing import Any

from .card_entries import _UNITS, _number
from .card_errors import CardError

__all__ = ["check_operating_limits", "parse_physical", "physical_summary"]

_POS = (lambda v: v > 0, "> 0")
_NONNEG = (lambda v: v >= 0, ">= 0")
# name in the card -> (SI attribute name, unit family, (check, description of what is allowed))
PHYSICAL_FIELDS = {
    "g_min": ("g_min_s", "conductance", _NONNEG),
    "g_max": ("g_max_s", "conductance", _POS),
    "pulse_energy": ("pulse_energy_j", "energy", _NONNEG),
    "gate_charging_energy": ("gate_charging_energy_j", "energy", _NONNEG),
    "ion_transfer_energy": ("ion_transfer_energy_j", "energy", _NONNEG),
    "pulse_voltage": ("pulse_voltage_v", "voltage", (lambda v: v != 0, "non-zero")),
    "pulse_width": ("pulse_width_s", "time", _POS),
    "read_voltage": ("read_voltage_v", "voltage", _POS),
    "endurance": ("endurance_pulses", "count", _POS),
    "stable_pulse_width": ("stable_pulse_width_s", "time", _POS),
    "failure_pulse_width": ("failure_pulse_width_s", "time", _POS),
    "demonstrated_field": ("demonstrated_field_v_per_m", "field", _POS),
    "breakdown_field_low": ("breakdown_field_low_v_per_m", "field", _POS),
    "breakdown_field": ("breakdown_field_v_per_m", "field", _POS),
}
_TOGETHER = (("g_min", "g_max"), ("gate_charging_energy", "ion_transfer_energy"))
_ORDERED = (
    ("g_min", "g_max"),
    ("stable_pulse_width", "failure_pulse_width"),
    ("breakdown_field_low", "breakdown_field"),
)


def parse_physical(source: str, physical_doc: Any, provenance: dict[str, tuple[str, str]]) -> dict[str, float]:
    """The optional ``[physical]`` section, in SI units (``g_min_s``, ``pulse_energy_j``, ...)."""
    if not isinstance(physical_doc, dict):
        raise CardError(f"{source}: field 'physical': must be a table")
    unknown = sorted(set(physical_doc) - set(PHYSICAL_FIELDS))
    if unknown:
        raise CardError(f"{source}: unknown physical field(s) {unknown}; allowed: {sorted(PHYSICAL_FIELDS)}")
    physical: dict[str, float] = {}
    for field, entry in physical_doc.items():
        si_name, family, (check, rule) = PHYSICAL_FIELDS[field]
        value, prov, src = _number(source, f"physical.{field}", entry, _UNITS[family])
        if not check(value):
            raise CardError(f"{source}: field 'physical.{field}': value {value!r} is not allowed; must be {rule}")
        physical[si_name] = value
        provenance[f"physical.{field}"] = (prov, src)
    for a, b in _TOGETHER:
        if (a in physical_doc) != (b in physical_doc):
            raise CardError(f"{source}: field 'physical': {a} and {b} must be given together")
    for a, b in _ORDERED:
        lo, hi = PHYSICAL_FIELDS[a][0], PHYSICAL_FIELDS[b][0]
        if lo in physical and hi in physical and not physical[lo] < physical[hi]:
            raise CardError(
                f"{source}: field 'physical.{a}': value {physical[lo]!r} (SI) is not allowed; "
                f"must be < {b} ({physical[hi]!r})"
            )
    if "gate_charging_energy_j" in physical:
        _pulse_energy_from_parts(source, physical, provenance)
    return physical


def _pulse_energy_from_parts(source: str, physical: dict[str, float], provenance: dict[str, tuple[str, str]]) -> None:
    """``pulse_energy`` = gate charging + ion transfer: derived when absent, checked when given."""
    gate, ion = physical["gate_charging_energy_j"], physical["ion_transfer_energy_j"]
    total = gate + ion
    if "pulse_energy_j" not in physical:
        physical["pulse_energy_j"] = total
        provenance["physical.pulse_energy"] = (
            "derived",
            f"gate_charging_energy + ion_transfer_energy = {gate * 1e15:.4g} fJ + {ion * 1e18:.4g} aJ "
            f"= {total * 1e15:.4g} fJ (sources: {provenance['physical.gate_charging_energy'][1]}; "
            f"{provenance['physical.ion_transfer_energy'][1]})",
        )
    elif abs(physical["pulse_energy_j"] - total) > 0.01 * total:
        raise CardError(
            f"{source}: field 'physical.pulse_energy': value {physical['pulse_energy_j']!r} J is not allowed; "
            f"must be gate_charging_energy + ion_transfer_energy = {total!r} J (within 1%), or left out"
        )


def check_operating_limits(source: str, model: Any, physical: dict[str, float]) -> None:
    """Refuse (``CardError``) or warn about an operating pulse beyond the card's published
    limits: its width (``width_s``) and its gate field (``voltage_*_v / thickness_m``).

    Models without those attributes, and cards without the limits, pass unchecked.
    """
    width = getattr(model, "width_s", None)
    if width is not None:
        width = float(width)
        fail = physical.get("failure_pulse_width_s")
        stable = physical.get("stable_pulse_width_s")
        if fail is not None and width >= fail:
            raise CardError(
                f"{source}: field 'parameters.width_s': value {width * 1e9:g} ns is not allowed; must be < "
                f"{fail * 1e9:g} ns (physical.failure_pulse_width: the device failed at that width)"
            )
        if stable is not None and width > stable:
            warnings.warn(
                f"{source}: parameters.width_s = {width * 1e9:g} ns is above physical.stable_pulse_width "
                f"({stable * 1e9:g} ns): the device was unstable there; results past it are extrapolations",
                stacklevel=3,
            )
    thickness = getattr(model, "thickness_m", None)
    high = physical.get("breakdown_field_v_per_m")
    if thickness is None or high is None:
        return
    for field in ("voltage_up_v", "voltage_down_v"):
        _check_field(source, field, float(getattr(model, field)), float(thickness), physical)


def _check_field(source: str, field: str, volts: float, thickness: float, physical: dict[str, float]) -> None:
    e = abs(volts) / thickness  # V/m
    mv_cm = lambda v: f"{v / 1e8:.3g} MV/cm"  # noqa: E731
    high = physical["breakdown_field_v_per_m"]
    what = f"parameters.{field} = {volts:g} V over parameters.thickness_m = {thickness * 1e9:g} nm is {mv_cm(e)}"
    if e > high:
        raise CardError(
            f"{source}: field 'parameters.{field}': value {volts:g} V is not allowed; {what}, above "
            f"physical.breakdown_field ({mv_cm(high)}): must be <= {high * thickness:.3g} V at this thickness"
        )
    low = physical.get("breakdown_field_low_v_per_m", high)
    shown = physical.get("demonstrated_field_v_per_m", 0.0)
    if e > max(low, shown):
        warnings.warn(
            f"{source}: {what}, beyond the {mv_cm(shown)} demonstrated (physical.demonstrated_field) and inside "
            f"the electrolyte's critical-field range {mv_cm(low)}-{mv_cm(high)}: it may break down",
            stacklevel=4,
        )


def _si(value: float, unit: str) -> str:
    """``value`` with an SI prefix: 1.142e-08, "S" -> "11.4 nS"."""
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"), (1e-18, "a")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def physical_summary(card: Any) -> str | None:
    """One line of a card's physical figures (``analogsim devices``): the conductance window, the
    noise-free pulses that cross it at the operating pulse, the energy per pulse (with its parts),
    the read condition and the endurance; ``None`` for a card without a conductance window."""
    phys = card.physical
    if "g_min_s" not in phys:
        return None
    from .response import pulses_across  # (response imports the models; cards import this module)

    g_lo, g_hi = phys["g_min_s"], phys["g_max_s"]
    parts = [f"G {_si(g_lo, 'S')} to {_si(g_hi, 'S')} ({g_hi / g_lo:.3g}x)" if g_lo > 0 else f"G 0 to {_si(g_hi, 'S')}"]
    up, down = pulses_across(card.model)
    m = card.model
    pulse = ""
    if hasattr(m, "voltage_up_v"):
        pulse = f" at +{float(m.voltage_up_v):g} V / -{float(m.voltage_down_v):g} V, {_si(float(m.width_s), 's')}"
    parts.append(f"{up or 'never (soft bound)'} up / {down or 'never (soft bound)'} down pulses across it{pulse}")
    if "gate_charging_energy_j" in phys:
        gate, ion = phys["gate_charging_energy_j"], phys["ion_transfer_energy_j"]
        parts.append(
            f"{_si(gate, 'J')} gate + {_si(ion, 'J')} ion transfer = {_si(phys['pulse_energy_j'], 'J')} per pulse"
        )
    elif "pulse_energy_j" in phys:
        parts.append(f"{_si(phys['pulse_energy_j'], 'J')} per pulse")
    if "read_voltage_v" in phys:
        parts.append(f"read at {phys['read_voltage_v']:g} V")
    if "endurance_pulses" in phys:
        parts.append(f"endurance {phys['endurance_pulses']:.3g} pulses")
    return f"{card.name}: " + "; ".join(parts)
