"""SI prefixes: quantities shown as people write them (``92.7 nS``, ``2.05 mJ``) and read back
from what they type (``2467uS``, ``0.5 mS``, ``1e-6``).

Values are kept in base SI units everywhere inside (siemens, joules, seconds); these helpers
only choose how a value is shown and parse what a user wrote.
"""

from __future__ import annotations

import math
import re

__all__ = ["PREFIXES", "parse_quantity", "si", "si_scale"]

# prefix -> factor; "u" and "µ" both mean micro
PREFIXES = {"T": 1e12, "G": 1e9, "M": 1e6, "k": 1e3, "": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12,
            "f": 1e-15, "a": 1e-18}  # fmt: skip
_SHOWN = ("T", "G", "M", "k", "", "m", "u", "n", "p", "f", "a")


def si_scale(value: float) -> tuple[float, str]:
    """The factor and prefix that show ``value`` with 1 to 3 digits before the point
    (``si_scale(9.27e-10) == (1e-9, "n")``); 0 and non-finite values get no prefix."""
    if not math.isfinite(value) or value == 0:
        return 1.0, ""
    for prefix in _SHOWN:
        if abs(value) >= PREFIXES[prefix] * (1 - 5e-13):  # 1e-6 is shown as 1 u, not 1000 n
            return PREFIXES[prefix], prefix
    return PREFIXES["a"], "a"


def si(value: float, unit: str, digits: int = 3) -> str:
    """``value`` with the SI prefix chosen for it and ``digits`` significant digits:
    ``si(9.2706e-10, "S") == "927 pS"``, ``si(2.05e-3, "J") == "2.05 mJ"``."""
    factor, prefix = si_scale(value)
    return f"{value / factor:.{digits}g} {prefix}{unit}"


_QUANTITY = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([TGMkmuµnpfa]?)(\w*)\s*")


def parse_quantity(text: str, unit: str, *, what: str = "value") -> float:
    """A number with an optional SI prefix and unit, in base units:
    ``parse_quantity("2467uS", "S") == 2.467e-3``; a bare number is taken in base units.

    Raises:
      ValueError: naming ``what``, the text and what is allowed.
    """
    m = _QUANTITY.fullmatch(str(text))
    if m is not None:
        number, prefix, rest = m.groups()
        if rest in ("", unit):  # "2467uS", "2467u" and "2.467e-3" all mean 2.467 mS
            return float(number) * PREFIXES[prefix]
    raise ValueError(
        f"{what}: value {text!r} is not allowed; a number with an optional SI prefix and unit {unit!r}, "
        f"e.g. 2467u{unit}, 0.5 m{unit}, 1e-6"
    )
