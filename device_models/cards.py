"""Device cards: a device model's nominal parameters, with units and provenance, in TOML.

A card looks like this (every number is a table with ``value``, ``unit``, ``provenance``
(``measured``, ``fitted``, ``derived`` (arithmetic on measured figures, shown in the source) or
``assumed``) and ``source``)::

    name = "soft-bounds"
    model = "soft-bounds"
    description = "aihwkit SoftBoundsDevice defaults"

    [parameters.dw_min]
    value = 0.001
    unit = "1"                 # normalised weight units
    provenance = "assumed"
    source = "aihwkit 1.1.0, SoftBoundsDevice default"

    [physical.g_max]            # optional (device_models.card_physical): conductances, energy, limits
    value = 10.0
    unit = "uS"
    ...

Besides the nine common pulsed-device parameters (``PulsedParams``, all
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

Every field is checked where the card enters; a bad one raises ``CardError`` (a
``ValueError``) naming the file, the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from .card_entries import _NORMALISED_UNITS, _UNITS, _number, _table
from .card_errors import CardError
from .card_physical import check_operating_limits, parse_physical
from .pulsed import PULSED_FLAGS, REQUIRED_PULSED, AbstractPulsedModel, PulsedParams, nominal_crosspoints
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
    """Load a card by built-in name (see ``builtin_card_names``) or by path to a TOML file.

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
    physical = parse_physical(source, doc.get("physical", {}), provenance)
    retention = _retention(source, doc.get("retention", {}), provenance)
    model = _model(source, model_name, model_cls, values, model_values)
    check_operating_limits(source, model, physical)
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
    """The common ``PulsedParams`` fields of ``[parameters]``, each range-checked: the nine
    of ``REQUIRED_PULSED`` must be there, the others default to aihwkit's values (the model
    class's ``pulsed_defaults`` where its aihwkit class differs, else ``PulsedParams``)."""
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
    """The optional ``[retention]`` section: read noise, relaxation and drift (see ``device_models.retention``)."""
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
