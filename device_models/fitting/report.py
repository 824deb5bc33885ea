"""What a fit hands back: ``ParameterEstimate``, ``FitResult``, its summary and its card.

The card is written by the one TOML writer of the package, ``device_models.cards.card_toml``,
so it loads with ``device_models.load_card`` (fitted values with ``provenance = "fitted"``
and their standard error in ``note``; the rest ``assumed`` with the reason, or ``measured``).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..cards import card_toml
from ..pulsed import AbstractPulsedModel


@dataclasses.dataclass(frozen=True)
class ParameterEstimate:
    """One parameter of a fitted card."""

    value: float | tuple[float, ...]  # the card's value (SI for physical values)
    stderr: float | tuple[float, ...] | None  # standard error, None where not fitted
    provenance: str  # "fitted", "assumed" or "measured"
    unit: str  # card unit ("1", "S", "V", "s")
    reason: str = ""  # why it is assumed, or how it was obtained


@dataclasses.dataclass(frozen=True, eq=False)
class FitResult:
    """A fitted model with its statistics (see ``device_models.fitting`` for the estimators)."""

    model_name: str
    model: AbstractPulsedModel  # nominal parameters as they go to the card
    source: str  # the measurement file
    unit: str  # state unit of the data: "S" or "1"
    parameters: dict[str, ParameterEstimate]  # every card parameter
    physical: dict[str, ParameterEstimate]  # g_min/g_max (siemens), pulse_voltage/pulse_width
    n: int  # readings
    k: int  # free parameters (model parameters + one start state per sweep)
    rss: float  # residual sum of squares (state units squared)
    r2: float
    aic: float
    residual_std: float  # RMS residual (state units)
    dw_min_std: float  # cycle-to-cycle estimate written to the card (read noise removed)
    dw_min_std_all_scatter: float  # all pulse-to-pulse scatter counted as cycle-to-cycle noise
    read_noise_std: float  # independent read noise (state units)
    labels: tuple[str, ...]  # sweeps
    start_states: np.ndarray  # (S,) fitted state at each sweep's first reading (state units)
    observed: np.ndarray  # (n,) readings (state units)
    predicted: np.ndarray  # (n,) noise-free replay (state units)
    segment_of_row: np.ndarray  # (n,) sweep of each reading
    device_spread: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    dw_min_std_lag1: float = math.nan  # moment estimate: residual steps minus the lag-1 read noise
    derived: dict[str, Any] | None = None  # protonic: fitted V0 (volts) and a/d, the reference pulse
    positions: np.ndarray | None = None  # (n,) pulses since its sweep's first reading, per reading
    polarity: np.ndarray | None = None  # (n,) polarity of the pulse before each reading

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the fit."""

        def est(p: ParameterEstimate) -> dict[str, Any]:
            return {
                "value": list(p.value) if isinstance(p.value, tuple) else p.value,
                "stderr": list(p.stderr) if isinstance(p.stderr, tuple) else p.stderr,
                "provenance": p.provenance,
                "unit": p.unit,
                **({"reason": p.reason} if p.reason else {}),
            }

        return {
            "file": self.source,
            "model": self.model_name,
            "state_unit": self.unit,
            "n": self.n,
            "k": self.k,
            "parameters": {k: est(v) for k, v in self.parameters.items()},
            "physical": {k: est(v) for k, v in self.physical.items()},
            # conductance range in siemens under names that say so (physical.g_min/g_max: same values)
            **{
                f"{k}_s": self.physical[k].value
                for k in ("g_min", "g_max")
                if k in self.physical and self.physical[k].unit == "S"
            },
            **{
                f"{k}_stderr_s": self.physical[k].stderr
                for k in ("g_min", "g_max")
                if k in self.physical and self.physical[k].unit == "S"
            },
            "residual_std": self.residual_std,
            "residual_std_unit": "S" if self.unit == "S" else "1",
            "dw_min_std": self.dw_min_std,
            "dw_min_std_all_scatter": self.dw_min_std_all_scatter,
            "dw_min_std_lag1": self.dw_min_std_lag1,
            "read_noise_std": self.read_noise_std,
            "r2": self.r2,
            "aic": self.aic,
            "rss": self.rss,
            "sweeps": list(self.labels),
            "device_spread": self.device_spread,
            "derived": self.derived,
            "warnings": list(self.warnings),
        }

    def to_card_toml(self, name: str) -> str:
        """A device card (``device_models.cards`` format) holding the fitted model."""
        src_name = Path(self.source).name
        unit = "S" if self.unit == "S" else "weight units"
        comment = (
            f"Device card: {name}. Format: device_models/cards.py.\n"
            f"Written by `analogsim fit` from {self.source}: model {self.model_name}, R^2 {self.r2:.4f}, "
            f"AIC {self.aic:.1f}, {self.n} readings, residual std {self.residual_std:.4g} ({unit})."
        )
        doc = {
            "name": name,
            "model": self.model_name,
            "description": f"{self.model_name} fitted to {src_name} (analogsim fit)",
            "parameters": {key: self._card_entry(p, physical=False) for key, p in self.parameters.items()},
            "physical": {key: self._card_entry(p, physical=True) for key, p in self.physical.items()},
        }
        return card_toml(doc, comment=comment)

    def _card_entry(self, p: ParameterEstimate, *, physical: bool) -> dict[str, Any]:
        """One card table: value (conductances in mS, uS or nS, as suits the value), unit, provenance, source, note."""
        factor, unit = 1.0, p.unit
        if physical and p.unit == "S":
            factor, unit = _card_conductance_unit(float(p.value))
        micro = factor != 1.0
        entry: dict[str, Any] = {
            "value": _card_number(_scaled(p.value, factor) if micro else p.value),
            "unit": unit,
            "provenance": p.provenance,
            "source": self._source_text(p),
        }
        note = p.reason
        if p.stderr is not None:
            se = _scaled(p.stderr, factor) if micro else p.stderr
            note = (f"standard error {_fmt(se)}" + (f"; {note}" if note else "")).strip()
        if note:
            entry["note"] = note
        return entry

    def _source_text(self, p: ParameterEstimate) -> str:
        """The card's ``source`` text of one entry: how it was fitted, measured or assumed."""
        fit = (
            f"analogsim fit of {self.model_name} to {self.source} (scipy.optimize.least_squares on the noise-free "
            f"pulse-by-pulse replay, {self.n} readings, {len(self.labels)} sweeps, R^2 {self.r2:.4f})"
        )
        if p.provenance == "fitted":
            return fit
        if p.provenance == "measured":
            return f"{self.source} (column of the measurement)"
        return f"assumed when fitting {self.source}: {p.reason}"


def _card_conductance_unit(value_s: float) -> tuple[float, str]:
    """(factor from siemens, card unit) of a conductance: mS, uS or nS (the card's units), 1 to 999 if possible."""
    for factor, unit in ((1e3, "mS"), (1e6, "uS"), (1e9, "nS")):
        if abs(value_s) * factor >= 1.0:
            return factor, unit
    return 1e9, "nS"


def _scaled(v, factor):
    """``v`` (a number, a tuple of numbers or None) times ``factor``."""
    if isinstance(v, tuple):
        return tuple(x * factor for x in v)
    return None if v is None else v * factor


def _fmt(v) -> str:
    """A standard error for a card note, three significant digits (a bracketed list for a table)."""
    if isinstance(v, tuple):
        return "[" + ", ".join(f"{x:.3g}" for x in v) + "]"
    return f"{v:.3g}"


def _card_number(v) -> float | list[float]:
    """A card value as Python floats (a list for a table)."""
    if isinstance(v, tuple | list):
        return [float(x) for x in v]
    return float(v)
