"""The linear map between a card's normalised weights and its physical conductances.

A card with ``[physical] g_min, g_max`` maps its nominal weight range onto its conductance
window linearly (``device_models.cards``, ``device_models.fitting``):

.. math::
    G = g_{min} + \\frac{w - w_{min}}{w_{max} - w_{min}}\\,(g_{max} - g_{min}), \\qquad
    w = w_{min} + \\frac{G - g_{min}}{g_{max} - g_{min}}\\,(w_{max} - w_{min}).

Conductances are in siemens; ``device_models.units.si`` shows them with an SI prefix.

Example:
  >>> cmap = ConductanceMap.of_card(load_card("enode-lut"))
  >>> cmap.conductance_s(0.0), cmap.weight(cmap.g_max_s)
  (0.000638, 1.0)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .units import parse_quantity, si_scale

__all__ = ["ConductanceMap"]


@dataclasses.dataclass(frozen=True)
class ConductanceMap:
    """Weights <-> conductances of one card (nominal bounds)."""

    g_min_s: float  # conductance at w_min (siemens)
    g_max_s: float  # conductance at w_max (siemens)
    w_min: float  # nominal lower weight bound (unit 1)
    w_max: float  # nominal upper weight bound (unit 1)

    @classmethod
    def of_card(cls, card) -> ConductanceMap | None:
        """The map of a ``DeviceCard`` with ``[physical] g_min, g_max``; None without them."""
        g_lo, g_hi = card.physical.get("g_min_s"), card.physical.get("g_max_s")
        if g_lo is None or g_hi is None:
            return None
        p = card.model.pulsed
        return cls(float(g_lo), float(g_hi), float(p.w_min), float(p.w_max))

    @property
    def siemens_per_weight(self) -> float:
        """dG/dw: a weight difference times this is a conductance difference (siemens)."""
        return (self.g_max_s - self.g_min_s) / (self.w_max - self.w_min)

    def conductance_s(self, w):
        """The conductance (siemens) of weight ``w`` (a number or an array)."""
        return self.g_min_s + (np.asarray(w, np.float64) - self.w_min) * self.siemens_per_weight

    def weight(self, g_s):
        """The weight of conductance ``g_s`` (siemens; a number or an array)."""
        return self.w_min + (np.asarray(g_s, np.float64) - self.g_min_s) / self.siemens_per_weight

    def prefix(self) -> tuple[float, str]:
        """The SI factor and prefix chosen for this device (those of ``g_max``), so that every
        conductance of one device is shown in the same unit."""
        return si_scale(self.g_max_s)

    def show(self, g_s: float, digits: int = 4) -> str:
        """``g_s`` in this device's unit: ``show(9.2706e-10) == "0.9271 nS"`` for a 2 nS device."""
        factor, prefix = self.prefix()
        return f"{g_s / factor:.{digits}g} {prefix}S"

    def parse_weight(self, text: str, *, what: str = "--start") -> float:
        """A conductance as users write it (``2467uS``) as a weight; ValueError naming ``what``."""
        return float(self.weight(parse_quantity(text, "S", what=what)))
