"""Registry of the device models a card can name (``model = "..."``)."""

from __future__ import annotations

from .constant_step import ConstantStep
from .exp_step import ExpStep
from .linear_step import LinearStep
from .lookup_table import LookupTable
from .piecewise_step import PiecewiseStep
from .pow_step import PowStep
from .protonic import Protonic
from .pulsed import AbstractPulsedModel
from .soft_bounds import SoftBounds, SoftBoundsReference

__all__ = ["MODELS", "model_class"]

MODELS: dict[str, type[AbstractPulsedModel]] = {
    ConstantStep.name: ConstantStep,
    SoftBounds.name: SoftBounds,
    SoftBoundsReference.name: SoftBoundsReference,
    LinearStep.name: LinearStep,
    ExpStep.name: ExpStep,
    PowStep.name: PowStep,
    PiecewiseStep.name: PiecewiseStep,
    LookupTable.name: LookupTable,
    Protonic.name: Protonic,
}


def model_class(name: str) -> type[AbstractPulsedModel]:
    """The model class registered under ``name``; ``ValueError`` listing the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown device model {name!r}; allowed: {', '.join(sorted(MODELS))}") from None
