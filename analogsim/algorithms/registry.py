"""The rules by name, and a rule built from command-line options."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from ..periphery import IOParameters
from ..pulsed_update import UpdateParameters
from .base import AbstractUpdateRule
from .mixed_precision import MixedPrecision
from .pair import DifferentialPair
from .sgd import SGD
from .transfer import AGAD, ChoppedTTv2, TikiTaka, TTv2

__all__ = ["ALGORITHMS", "make_rule"]


# name -> the constructor of the rule (a class, or a function that composes a Transfer)
ALGORITHMS: dict[str, Any] = {
    "sgd": SGD,
    "tiki-taka": TikiTaka,
    "ttv2": TTv2,
    "chopped-ttv2": ChoppedTTv2,
    "agad": AGAD,
    "mixed-precision": MixedPrecision,
    "sgd-pair": DifferentialPair,
}

# settings of a composed rule that are its structure, not options
_STRUCTURAL = ("name", "buffer", "signal")


def _options(make) -> dict[str, Any]:
    """What ``--algo-opt`` may set for the constructor ``make``, with the default values."""
    params = inspect.signature(make).parameters
    defaults = {n: p.default for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    rule = make()
    fields = {f.name: getattr(rule, f.name) for f in dataclasses.fields(rule) if f.name not in _STRUCTURAL}
    return {n: v for n, v in {**fields, **defaults}.items() if not isinstance(v, IOParameters | UpdateParameters)}


def _parse_value(current: Any, text: str, where: str) -> Any:
    if isinstance(current, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{where}: value {text!r} is not allowed; must be true or false")
    if current is None or isinstance(current, int):
        if current is None and text.lower() == "none":
            return None
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{where}: value {text!r} is not allowed; must be an integer") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{where}: value {text!r} is not allowed; must be a number") from None
    if isinstance(current, str):
        return text
    raise ValueError(f"{where}: cannot be set from the command line")


def make_rule(name: str, options: dict[str, str] | None = None) -> AbstractUpdateRule:
    """The rule ``name`` (``ALGORITHMS``) with hyperparameters from ``options`` (strings, as
    ``--algo-opt KEY=VALUE`` gives them; parsed by the field's type).

    Raises:
      ValueError: unknown rule, unknown option, or a value that is not allowed.
    """
    if name not in ALGORITHMS:
        raise ValueError(f"--algorithm: value {name!r} is not allowed; allowed: {', '.join(ALGORITHMS)}, digital")
    make = ALGORITHMS[name]
    settable = _options(make)
    kwargs = {}
    for key, text in (options or {}).items():
        if key not in settable:
            allowed = ", ".join(settable) or "none"
            raise ValueError(f"--algo-opt: option {key!r} is not allowed for {name}; allowed: {allowed}")
        kwargs[key] = _parse_value(settable[key], text, f"--algo-opt {key}")
    return make(**kwargs)
