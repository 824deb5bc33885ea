"""A NeuroSim-style nonlinearity description as a ``linear-step`` device card.

**NeuroSim's device** (Chen, Peng and Yu, "NeuroSim: A circuit-level macro model for
benchmarking neuro-inspired architectures in online learning", IEEE TCAD 37, 3067, 2018,
Eqs. 1-3; DNN_NeuroSim V2.1 and MLP_NeuroSim ``Cell.cpp``/``formula.cpp``, ``NonlinearWeight``):
the conductance after :math:`P` potentiating pulses from :math:`G_{min}` is

.. math::
    G(P) = B\\,(1 - e^{-P/A}) + G_{min}, \\qquad B = \\frac{G_{max} - G_{min}}{1 - e^{-P_{max}/A}},

reaching :math:`G_{max}` after :math:`P_{max}` pulses (``maxNumLevelLTP``), and depression is its
mirror from :math:`G_{max}` with its own :math:`A` (``A_LTD``) and :math:`P_{max}`. Cycle-to-cycle
noise is additive, :math:`\\sigma_{c2c} (G_{max} - G_{min})` per pulse.

**The mapping is exact, not fitted.** One pulse multiplies the distance to
:math:`G_{top} = G_{min} + B` by :math:`e^{-1/A}`, so the step is linear in the state,
:math:`\\Delta G_+ = (1 - e^{-1/A})(G_{top} - G)`, vanishing beyond :math:`G_{max}` where the
device is held: that is ``linear-step`` (aihwkit ``LinearStepDevice``) with hard bounds at
:math:`G_{min}, G_{max}` mapped onto weights :math:`[-1, 1]`. With :math:`w_{top} = -1 +
2/(1 - e^{-P_{max}/A})` and :math:`r = 1 - e^{-1/A}`, its up step :math:`s_+ (1 - \\gamma_+ w)`
has :math:`s_+ = r\\,w_{top}`, :math:`\\gamma_+ = 1/w_{top}`; the down step mirrors it
(:math:`w_{bot} = 1 - 2/(1 - e^{-P_{max}/A_{LTD}})`, :math:`s_- = r_-|w_{bot}|`,
:math:`\\gamma_- = 1/|w_{bot}|`). ``A = inf`` is a linear device (:math:`\\gamma = 0`). A convex
branch (:math:`A < 0`, steps growing along the sweep) has no ``linear-step`` card (its slopes
are >= 0) and is refused. The additive cycle-to-cycle noise becomes ``mult_noise = false`` with
``dw_min_std`` :math:`= 2\\sigma_{c2c}/dw_{min}`. NeuroSim's device-to-device spread varies the
nonlinearity label; here ``d2d`` becomes the spread of the step size (``dw_min_dtod``), an
approximation the card marks as ``assumed``.

**The description** is a small TOML file or ``key = value`` lines (``#`` comments):

=============  =========================================================================
key            meaning
=============  =========================================================================
``A_LTP``      NeuroSim's ``paramALTP`` in pulses (> 0 or ``inf``)
``A_LTD``      NeuroSim's ``paramALTD`` in pulses (> 0 or ``inf``)
``Gmin``       lowest conductance, a number in siemens or with a unit (``"1 uS"``)
``Gmax``       highest conductance (> Gmin)
``pulses``     ``maxNumLevelLTP``: pulses from Gmin to Gmax (integer >= 1)
``pulses_LTD`` ``maxNumLevelLTD`` (default: ``pulses``)
``c2c``        ``sigmaCtoC`` as a fraction of Gmax - Gmin per pulse (>= 0, default 0)
``d2d``        device-to-device spread, taken as that of the step size (>= 0, default 0)
``name``       the card's name (default ``neurosim-device``)
=============  =========================================================================
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from .card_errors import CardError
from .toml_writer import card_toml
from .units import parse_quantity

__all__ = ["NEUROSIM_KEYS", "neurosim_card", "read_neurosim"]

NEUROSIM_KEYS = ("A_LTP", "A_LTD", "Gmin", "Gmax", "pulses", "pulses_LTD", "c2c", "d2d", "name")


def read_neurosim(path: str | Path) -> dict[str, Any]:
    """Read a NeuroSim description (TOML or ``key = value`` lines) into checked values in SI units.

    Returns:
      ``{"A_LTP", "A_LTD" (pulses), "Gmin", "Gmax" (siemens), "pulses", "pulses_LTD", "c2c",
      "d2d", "name"}``.

    Raises:
      CardError: a missing file, an unknown or missing key, or a value out of range (one line
        naming the file, the key, the value and what is allowed).
    """
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise CardError(f"{src}: no such file; expected a NeuroSim description ({', '.join(NEUROSIM_KEYS)})")
    text = p.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        raw = None
    return _check(src, raw if raw is not None else _key_values(src, text))


def _key_values(src: str, text: str) -> dict[str, str]:
    """``key = value`` lines (``#`` starts a comment; quotes around a value are dropped)."""
    raw = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise CardError(f"{src}: line {n}: {line!r} is not 'key = value'")
        key, value = (t.strip().strip("\"'") for t in line.split("=", 1))
        raw[key] = value
    return raw


def _positive_or_inf(src: str, key: str, value) -> float:
    try:
        a = float(value)
    except (TypeError, ValueError):
        a = math.nan
    if not (a > 0):  # NaN, <= 0
        raise CardError(
            f"{src}: key {key!r}: value {value!r} is not allowed; must be > 0 pulses or inf "
            "(a convex branch, A < 0, has no linear-step card)"
        )
    return a


def _check(src: str, raw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(raw) - set(NEUROSIM_KEYS))
    if unknown:
        raise CardError(f"{src}: unknown key(s) {unknown}; allowed: {', '.join(NEUROSIM_KEYS)}")
    missing = [k for k in ("A_LTP", "A_LTD", "Gmin", "Gmax", "pulses") if k not in raw]
    if missing:
        raise CardError(f"{src}: missing key(s) {', '.join(missing)}; required: A_LTP, A_LTD, Gmin, Gmax, pulses")
    out: dict[str, Any] = {k: _positive_or_inf(src, k, raw[k]) for k in ("A_LTP", "A_LTD")}
    try:
        for k in ("Gmin", "Gmax"):
            out[k] = parse_quantity(str(raw[k]), "S", what=f"{src}: key {k!r}")
    except ValueError as err:
        raise CardError(str(err)) from None
    if not 0 <= out["Gmin"] < out["Gmax"]:
        raise CardError(f"{src}: keys 'Gmin', 'Gmax': values {out['Gmin']!r}, {out['Gmax']!r} S; need 0 <= Gmin < Gmax")
    for k in ("pulses", "pulses_LTD"):
        value = raw.get(k, raw["pulses"])
        try:
            n = int(str(value))
        except ValueError:
            n = 0
        if n < 1:
            raise CardError(f"{src}: key {k!r}: value {value!r} is not allowed; must be an integer >= 1")
        out[k] = n
    for k in ("c2c", "d2d"):
        try:
            v = float(raw.get(k, 0.0))
        except (TypeError, ValueError):
            v = math.nan
        if not (math.isfinite(v) and v >= 0):
            raise CardError(f"{src}: key {k!r}: value {raw.get(k)!r} is not allowed; must be a finite number >= 0")
        out[k] = v
    out["name"] = str(raw.get("name", "neurosim-device"))
    return out


def _branch(a: float, p_max: int) -> tuple[float, float]:
    """(step at w = 0, slope gamma) of one branch in weight units on [-1, 1] (module docstring)."""
    if math.isinf(a):
        return 2.0 / p_max, 0.0  # linear: the range 2 in p_max pulses
    reach = -math.expm1(-p_max / a)  # 1 - e^{-Pmax/A}
    w_far = -1.0 + 2.0 / reach  # where the step would vanish, beyond the window
    return -math.expm1(-1.0 / a) * w_far, 1.0 / w_far


def neurosim_card(description: str | Path | dict[str, Any]) -> str:
    """The TOML text of the ``linear-step`` card that reproduces a NeuroSim description.

    Args:
      description: a file (``read_neurosim``) or its checked values.

    Raises:
      CardError: a bad description.
    """
    d = read_neurosim(description) if not isinstance(description, dict) else description
    s_up, gamma_up = _branch(d["A_LTP"], d["pulses"])
    s_dn, gamma_dn = _branch(d["A_LTD"], d["pulses_LTD"])
    dw_min = max(s_up, s_dn)
    up_down = 1.0 - s_dn / s_up if s_up >= s_dn else -(1.0 - s_up / s_dn)
    src = (
        f"NeuroSim description (A_LTP {d['A_LTP']:g}, A_LTD {d['A_LTD']:g} pulses, {d['pulses']}/{d['pulses_LTD']} "
        "pulses), mapped exactly by device_models.neurosim (Chen et al., IEEE TCAD 37, 3067, 2018, Eqs. 1-3)"
    )
    assumed = "not in a NeuroSim description; 0"

    def entry(value, provenance="measured", source=src):
        return {"value": value, "unit": "1", "provenance": provenance, "source": source}

    params = {
        "dw_min": entry(dw_min),
        "dw_min_dtod": entry(d["d2d"], "assumed", "NeuroSim's device-to-device spread (of the nonlinearity) taken as the step size's"),
        "dw_min_std": entry(2.0 * d["c2c"] / dw_min, source=f"sigmaCtoC {d['c2c']:g} of the range per pulse, additive; {src}"),
        "up_down": entry(up_down),
        "up_down_dtod": entry(0.0, "assumed", assumed),
        "w_max": entry(1.0, "assumed", "Gmax mapped onto w = 1"),
        "w_min": entry(-1.0, "assumed", "Gmin mapped onto w = -1"),
        "w_max_dtod": entry(0.0, "assumed", assumed),
        "w_min_dtod": entry(0.0, "assumed", assumed),
        "mult_noise": entry(False, "measured", "NeuroSim's cycle-to-cycle noise is additive"),
        "gamma_up": entry(gamma_up),
        "gamma_down": entry(gamma_dn),
        "gamma_up_dtod": entry(0.0, "assumed", assumed),
        "gamma_down_dtod": entry(0.0, "assumed", assumed),
    }  # fmt: skip
    physical = {
        k: {"value": d[key] * 1e6, "unit": "uS", "provenance": "measured", "source": src}
        for k, key in (("g_min", "Gmin"), ("g_max", "Gmax"))
    }
    doc = {
        "name": d["name"],
        "model": "linear-step",
        "description": f"NeuroSim device: {src}",
        "parameters": params,
        "physical": physical,
    }
    return card_toml(doc, comment=f"Device card: {d['name']}. Written by device_models.neurosim.")
