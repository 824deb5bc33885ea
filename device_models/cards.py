"""Device cards: a device model's nominal parameters, with units and provenance, in TOML.

A card looks like this (every number is a table with ``value``, ``unit``, ``provenance``
(``measured``, ``fitted`` or ``assumed``) and ``source``)::

    name = "soft-bounds"
    model = "soft-bounds"
    description = "aihwkit SoftBoundsDevice defaults"

    [parameters.dw_min]
    value = 0.001
    unit = "1"                 # normalised weight units
    provenance = "assumed"
    source = "aihwkit 1.1.0, SoftBoundsDevice default"

    [physical.g_max]            # optional: mapping of weights to siemens, and pulse energy
    value = 10.0
    unit = "uS"
    ...

Besides the nine common pulsed-device parameters (:class:`~device_models.PulsedParams`, all
required), ``[parameters]`` holds the model's own parameters, named and range-checked by the
model class (``parameter_rules``), all required and in unit ``"1"`` unless the class's
``parameter_units`` names a unit family (then converted to SI at load, e.g. ``V``, ``ns``,
``nm``, ``K`` for ``protonic``): ``gamma_up``/``gamma_down``
for ``linear-step`` and ``pow-step``; ``A_up``, ``A_down``, ``gamma_up``, ``gamma_down``, ``a``,
``b`` for ``exp-step``; and for ``piecewise-step`` the tables ``piecewise_up``/``piecewise_down``,
whose ``value`` is a non-empty TOML array of numbers >= 0::

    [parameters.piecewise_up]
    value = [1.5, 1.0, 0.5]
    unit = "1"
    provenance = "fitted"
    source = "..."

Physical values are converted to SI once, at load (``g_min_s``, ``g_max_s`` in siemens,
``pulse_energy_j`` in joules, ``pulse_voltage_v`` in volts, ``pulse_width_s`` in seconds).
Weights map to conductance linearly: ``G = g_min + (w - w_min) / (w_max - w_min) * (g_max - g_min)``
with the card's nominal ``w_min``/``w_max``.

Every field is checked where the card enters; a bad one raises :class:`CardError` (a
``ValueError``) naming the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from .card_errors import CardError
from .pulsed import PULSED_FLAGS, REQUIRED_PULSED, AbstractPulsedModel, ParameterRule, PulsedParams, nominal_crosspoints
from .registry import MODELS
from .retention import Retention
from .toml_writer import card_toml

__all__ = [
    "BUILTIN_CARDS",
    "CardError",
    "DeviceCard",
    "builtin_card_names",
    "card_toml",
    "load_card",
    "parse_card",
]

PROVENANCES = ("measured", "fitted", "assumed")
_NORMALISED_UNITS = {"1": 1.0}
_UNITS = {
    "conductance": {"S": 1.0, "mS": 1e-3, "uS": 1e-6, "nS": 1e-9},
    "energy": {"J": 1.0, "pJ": 1e-12, "fJ": 1e-15, "aJ": 1e-18},
    "voltage": {"V": 1.0, "mV": 1e-3},
    "time": {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9},
    "length": {"m": 1.0, "um": 1e-6, "nm": 1e-9},
    "temperature": {"K": 1.0},
}
# name in the card -> (SI attribute name, unit family, check, description of what is allowed)
_PHYSICAL = {
    "g_min": ("g_min_s", "conductance", lambda v: v >= 0, ">= 0"),
    "g_max": ("g_max_s", "conductance", lambda v: v > 0, "> 0"),
    "pulse_energy": ("pulse_energy_j", "energy", lambda v: v >= 0, ">= 0"),
    "pulse_voltage": ("pulse_voltage_v", "voltage", lambda v: v != 0, "non-zero"),
    "pulse_width": ("pulse_width_s", "time", lambda v: v > 0, "> 0"),
}
# PulsedParams field -> (check, description of what is allowed)
_PULSED_CHECKS = {
    "dw_min": (lambda v: v > 0, "> 0"),
    "dw_min_dtod": (lambda v: v >= 0, ">= 0"),
    "dw_min_std": (lambda v: v >= 0, ">= 0"),
    "up_down": (lambda v: -1 < v < 1, "in (-1, 1)"),
    "up_down_dtod": (lambda v: v >= 0, ">= 0"),
    "w_max": (lambda v: v > 0, "> 0"),
    "w_min": (lambda v: v <= 0, "<= 0 (0 only for one-directional devices whose steps stay finite there)"),
    "w_max_dtod": (lambda v: v >= 0, ">= 0"),
    "w_min_dtod": (lambda v: v >= 0, ">= 0"),
    # optional (aihwkit's defaults apply when left out)
    "mult_noise": (lambda v: v in (0.0, 1.0), "true or false"),
    "dw_min_dtod_log_normal": (lambda v: v in (0.0, 1.0), "true or false"),
    "enforce_consistency": (lambda v: v in (0.0, 1.0), "true or false"),
    "write_noise_std": (lambda v: v >= 0, ">= 0"),
    "apply_write_noise_on_set": (lambda v: v in (0.0, 1.0), "true or false"),
    "lifetime": (lambda v: v >= 0, ">= 0 (0: no decay)"),
    "lifetime_dtod": (lambda v: v >= 0, ">= 0"),
    "reset": (lambda v: True, "any finite number"),
    "reset_dtod": (lambda v: v >= 0, ">= 0"),
    "reset_std": (lambda v: v >= 0, ">= 0"),
    "diffusion": (lambda v: v >= 0, ">= 0"),
    "diffusion_dtod": (lambda v: v >= 0, ">= 0"),
    "corrupt_devices_prob": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "corrupt_devices_range": (lambda v: v >= 0, ">= 0"),
}
BUILTIN_CARDS = (
    "constant-step",
    "linear-step",
    "soft-bounds",
    "exp-step",
    "pow-step",
    "ecram-tang2018",
    "ecram-mo-kim2019",
    "reram-es-gong2018",
    "reram-sb",
    "capacitor-li2018",
    "pcm-nandakumar2020",
    "idealized",
    "gokmen-vlasov-2016",
    "enode-lut",
    "wo3-protonic-yao2020",
    "wo3-psg-onen2022",
    "reram-array-om-gong2022",
    "reram-array-hfo2-gong2022",
)


@dataclasses.dataclass(frozen=True)
class DeviceCard:
    """A loaded, checked device card."""

    name: str
    model: AbstractPulsedModel  # the model with the card's nominal parameters
    description: str
    source_file: str  # where the card was read from
    physical: dict[str, float]  # SI values: g_min_s, g_max_s, pulse_energy_j, ...
    provenance: dict[str, tuple[str, str]]  # field -> (provenance, source)
    retention: Retention = dataclasses.field(default_factory=Retention)  # read noise, relaxation, drift

    @property
    def model_name(self) -> str:
        return type(self.model).name


def builtin_card_names() -> tuple[str, ...]:
    """The names of the cards shipped with the package."""
    return BUILTIN_CARDS


def _builtin_path(name: str):
    return resources.files("device_models").joinpath("cards", f"{name}.toml")


def load_card(name_or_path: str | Path) -> DeviceCard:
    """Load a card by built-in name (see :func:`builtin_card_names`) or by path to a TOML file.

    Raises:
      CardError: the name is neither built in nor an existing file, the TOML is malformed, or
        any field is missing, unknown, of the wrong type or unit, or out of range.
    """
    text_name = str(name_or_path)
    if text_name in BUILTIN_CARDS:
        res = _builtin_path(text_name)
        return parse_card(res.read_text(encoding="utf-8"), source=f"<built-in {text_name}>")
    path = Path(name_or_path)
    if not path.is_file():
        raise CardError(
            f"device card {text_name!r}: not a built-in card and no such file; "
            f"built-in cards: {', '.join(BUILTIN_CARDS)}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise CardError(f"device card {path}: cannot be read as UTF-8 text ({err})") from None
    return parse_card(text, source=str(path))


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


def parse_card(text: str, *, source: str = "<string>") -> DeviceCard:
    """Parse and check the TOML text of a card (see the module docstring for the format)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CardError(f"{source}: not valid TOML ({err})") from None
    name, model_name, description = _top_level(source, doc)
    model_cls = MODELS[model_name]
    provenance: dict[str, tuple[str, str]] = {}
    values, model_values = _parameters(source, doc["parameters"], model_name, model_cls, provenance)
    physical = _physical(source, doc.get("physical", {}), provenance)
    retention = _retention(source, doc.get("retention", {}), provenance)
    model = _model(source, model_name, model_cls, values, model_values)
    return DeviceCard(
        name=name,
        model=model,
        description=description,
        source_file=source,
        physical=physical,
        provenance=provenance,
        retention=retention,
    )


def _top_level(source: str, doc: dict[str, Any]) -> tuple[str, str, str]:
    """Check a card's top-level fields; return its (name, model name, description)."""
    allowed_top = {"name", "model", "description", "parameters", "physical", "retention"}
    extra = sorted(set(doc) - allowed_top)
    if extra:
        raise CardError(f"{source}: unknown field(s) {extra}; allowed: {sorted(allowed_top)}")
    for key in ("name", "model", "parameters"):
        if key not in doc:
            raise CardError(f"{source}: missing field {key!r}")
    name = doc["name"]
    if not isinstance(name, str) or not name:
        raise CardError(f"{source}: field 'name': value {name!r} is not allowed; must be a non-empty string")
    model_name = doc["model"]
    if model_name not in MODELS:
        raise CardError(
            f"{source}: field 'model': value {model_name!r} is not allowed; allowed: {', '.join(sorted(MODELS))}"
        )
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise CardError(f"{source}: field 'description': value {description!r} is not allowed; must be a string")
    return name, model_name, description


def _parameters(
    source: str,
    params: Any,
    model_name: str,
    model_cls: type[AbstractPulsedModel],
    provenance: dict[str, tuple[str, str]],
) -> tuple[dict[str, float], dict[str, float | tuple[float, ...]]]:
    """The ``[parameters]`` section: return (PulsedParams values, the model's own values), SI."""
    if not isinstance(params, dict):
        raise CardError(f"{source}: field 'parameters': must be a table of parameters")
    model_rules = dict(model_cls.parameter_rules)
    allowed = set(_PULSED_CHECKS) | set(model_rules)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise CardError(
            f"{source}: unknown parameter(s) {unknown} for model {model_name!r}; allowed: {sorted(allowed)}"
        )
    values = _pulsed_values(source, params, model_name, provenance)
    model_values = _model_values(source, params, model_name, model_cls, provenance)
    return values, model_values


def _pulsed_values(
    source: str, params: dict[str, Any], model_name: str, provenance: dict[str, tuple[str, str]]
) -> dict[str, float]:
    """The common :class:`PulsedParams` fields of ``[parameters]``, each range-checked: the nine
    of :data:`REQUIRED_PULSED` must be there, the others default to aihwkit's values (the model
    class's ``pulsed_defaults`` where its aihwkit class differs, else :class:`PulsedParams`)."""
    values: dict[str, float] = {}
    for field in _PULSED_CHECKS:
        if field not in params:
            if field in REQUIRED_PULSED:
                raise CardError(f"{source}: missing field 'parameters.{field}' (model {model_name!r} needs it)")
            continue
        value, prov, src = _number(
            source, f"parameters.{field}", params[field], _NORMALISED_UNITS, flag=field in PULSED_FLAGS
        )
        check, rule = _PULSED_CHECKS[field]
        if not check(value):
            raise CardError(f"{source}: field 'parameters.{field}': value {value!r} is not allowed; must be {rule}")
        values[field] = value
        provenance[f"parameters.{field}"] = (prov, src)
    return values


def _model_values(
    source: str,
    params: dict[str, Any],
    model_name: str,
    model_cls: type[AbstractPulsedModel],
    provenance: dict[str, tuple[str, str]],
) -> dict[str, float | tuple[float, ...]]:
    """The model's own ``[parameters]`` (``parameter_rules``), converted to SI and range-checked."""
    model_values: dict[str, float | tuple[float, ...]] = {}
    model_units = dict(getattr(model_cls, "parameter_units", {}))  # field -> unit family; default unit "1"
    for field, rule in model_cls.parameter_rules.items():
        if field not in params:
            if rule.optional:
                continue
            raise CardError(f"{source}: missing field 'parameters.{field}' (model {model_name!r} needs it)")
        if rule.table:
            model_values[field], prov, src = _table(source, f"parameters.{field}", params[field], rule)
        else:
            units = _UNITS[model_units[field]] if field in model_units else _NORMALISED_UNITS
            value, prov, src = _number(source, f"parameters.{field}", params[field], units, flag=rule.flag)
            if not rule.check(value):
                raise CardError(
                    f"{source}: field 'parameters.{field}': value {value!r} is not allowed; must be {rule.rule}"
                )
            model_values[field] = value
        provenance[f"parameters.{field}"] = (prov, src)
    return model_values


def _physical(source: str, physical_doc: Any, provenance: dict[str, tuple[str, str]]) -> dict[str, float]:
    """The optional ``[physical]`` section, in SI units (``g_min_s``, ``g_max_s``, ...)."""
    if not isinstance(physical_doc, dict):
        raise CardError(f"{source}: field 'physical': must be a table")
    unknown = sorted(set(physical_doc) - set(_PHYSICAL))
    if unknown:
        raise CardError(f"{source}: unknown physical field(s) {unknown}; allowed: {sorted(_PHYSICAL)}")
    physical: dict[str, float] = {}
    for field, entry in physical_doc.items():
        si_name, family, check, rule = _PHYSICAL[field]
        value, prov, src = _number(source, f"physical.{field}", entry, _UNITS[family])
        if not check(value):
            raise CardError(f"{source}: field 'physical.{field}': value {value!r} is not allowed; must be {rule}")
        physical[si_name] = value
        provenance[f"physical.{field}"] = (prov, src)
    if ("g_min_s" in physical) != ("g_max_s" in physical):
        raise CardError(f"{source}: field 'physical': g_min and g_max must be given together")
    if "g_min_s" in physical and not physical["g_min_s"] < physical["g_max_s"]:
        raise CardError(
            f"{source}: field 'physical.g_min': value {physical['g_min_s']!r} S is not allowed; "
            f"must be < g_max ({physical['g_max_s']!r} S)"
        )
    return physical


def _model(
    source: str,
    model_name: str,
    model_cls: type[AbstractPulsedModel],
    values: dict[str, float],
    model_values: dict[str, float | tuple[float, ...]],
) -> AbstractPulsedModel:
    """Build the card's model; a zero ``w_min`` is allowed only where its steps stay finite there."""
    try:
        pulsed = {**getattr(model_cls, "pulsed_defaults", {}), **values}
        model = model_cls(pulsed=PulsedParams(**pulsed), **model_values)
    except ValueError as err:  # a model's own consistency checks (e.g. table shapes)
        raise CardError(f"{source}: {err}") from None
    if values["w_min"] == 0:
        # a lower bound of 0 is fine for one-directional devices (PCM) unless the model's step
        # divides by it (soft bounds, linear step)
        cp = nominal_crosspoints(model, (17,))
        w = jnp.linspace(0.0, values["w_max"], 17)
        if not bool(jnp.all(jnp.isfinite(model.step_up(cp, w)) & jnp.isfinite(model.step_down(cp, w)))):
            raise CardError(
                f"{source}: field 'parameters.w_min': value 0.0 is not allowed for model {model_name!r} "
                "(its steps are not finite at a zero bound); must be < 0"
            )
    return model


# [retention] field -> (Retention attribute, unit family or None for unit "1", check, rule)
_RETENTION = {
    "read_noise_std": ("read_noise_std", None, lambda v: v >= 0, ">= 0"),
    "tau": ("tau_s", "time", lambda v: v > 0, "> 0"),
    "w_rest": ("w_rest", None, lambda v: True, "any finite number"),
    "drift_nu": ("drift_nu", None, lambda v: v >= 0, ">= 0"),
    "drift_t0": ("drift_t0_s", "time", lambda v: v > 0, "> 0"),
}


def _retention(source: str, doc: Any, provenance: dict[str, tuple[str, str]]) -> Retention:
    """The optional ``[retention]`` section: read noise, relaxation and drift (see :mod:`device_models.retention`)."""
    if not isinstance(doc, dict):
        raise CardError(f"{source}: field 'retention': must be a table")
    unknown = sorted(set(doc) - set(_RETENTION))
    if unknown:
        raise CardError(f"{source}: unknown retention field(s) {unknown}; allowed: {sorted(_RETENTION)}")
    values = {}
    for field, entry in doc.items():
        attr, family, check, rule = _RETENTION[field]
        units = _UNITS[family] if family else _NORMALISED_UNITS
        value, prov, src = _number(source, f"retention.{field}", entry, units)
        if not check(value):
            raise CardError(
                f"{source}: field 'retention.{field}': value {entry['value']!r} {entry['unit']} is not allowed; must be {rule}"
            )
        values[attr] = value
        provenance[f"retention.{field}"] = (prov, src)
    return Retention(**values)
