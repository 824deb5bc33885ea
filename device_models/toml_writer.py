"""The package's one TOML writer: a card document (a dict, as ``tomllib.loads`` returns it) as text.

Top-level values come first, then one ``[section.field]`` table per entry; keys are bare where
TOML allows it and quoted otherwise. Only values a card can hold are written (strings, booleans,
integers, finite floats and arrays of these); anything else raises ``CardError``.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from typing import Any

from .card_errors import CardError

__all__ = ["card_toml"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML keys that need no quotes


def _toml_string(text: str) -> str:
    """A TOML basic string: JSON's escapes (quote, backslash, control characters) plus DEL."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(key: str) -> str:
    """A TOML key: bare where TOML allows it, quoted otherwise."""
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_scalar(value: Any, field: str = "") -> str:
    """One TOML value (string, boolean, integer, finite float, or an array of these) for ``field``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_scalar(v, field) for v in value) + "]"
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise CardError(f"field {field!r}: value {number!r} is not allowed; a card holds finite numbers only")
        return repr(number)
    raise CardError(
        f"field {field!r}: value {value!r} of type {type(value).__name__} cannot be written to a card; "
        "allowed: string, boolean, number or an array of these"
    )


def card_toml(doc: dict[str, Any], *, comment: str = "") -> str:
    """TOML text of a card document (top-level values, then one table per entry).

    This is the package's one TOML writer (``device_models.FitResult.to_card_toml`` uses it
    too). ``comment``, where given, opens the text, each of its lines as a ``#`` comment.

    Raises:
      CardError: a value a card cannot hold (a non-finite number, or not a string, boolean,
        number or array).
    """
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    if lines:
        lines.append("")
    lines += [
        f"{_toml_key(key)} = {_toml_scalar(value, key)}" for key, value in doc.items() if not isinstance(value, dict)
    ]
    for section, entries in doc.items():
        if not isinstance(entries, dict):
            continue
        for field, entry in entries.items():
            lines += ["", f"[{_toml_key(section)}.{_toml_key(field)}]"]
            lines += [
                f"{_toml_key(key)} = {_toml_scalar(value, f'{section}.{field}.{key}')}" for key, value in entry.items()
            ]
    return "\n".join(lines) + "\n"
