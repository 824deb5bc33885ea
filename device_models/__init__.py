"""device_models: the physics of one resistive device, usable on its own.

Models are frozen pytree dataclasses (parameters) plus pure functions of
``(model, cross_points, state, pulses, *, key)``. Nothing here imports analogsim, Flax or
optax.
"""

from .between_updates import decay_and_diffuse, has_write_noise, reset_states, write_noise, writes_between_updates
from .card_variants import card_document, card_variant
from .cards import (
    BUILTIN_CARDS,
    CardError,
    DeviceCard,
    builtin_card_names,
    card_toml,
    load_card,
    parse_card,
)
from .conductance import ConductanceMap
from .constant_step import ConstantStep
from .crosssim_lut import crosssim_lut_card, read_crosssim_table
from .exp_step import ExpStep
from .fitting import (
    AUTO_CANDIDATES,
    FITTABLE_MODELS,
    FitResult,
    ParameterEstimate,
    fit_auto,
    fit_model,
    replay_measurement,
)
from .linear_step import LinearStep
from .measurements import Measurement, MeasurementError, load_measurement
from .neurosim import neurosim_card, read_neurosim
from .numerics import safe_pow, safe_sqrt, up_down_bias
from .one_sided import OneSided
from .piecewise_step import PiecewiseStep
from .pow_step import PowStep
from .protonic import (
    Protonic,
    conductance_s,
    field_voltage_v,
    nominal_step,
    proton_fraction,
    pulse_energy_j,
    step_size,
)
from .pulsed import (
    EXTRA_DRAWS,
    PULSED_FLAGS,
    REQUIRED_PULSED,
    AbstractPulsedModel,
    CrossPointDraws,
    CrossPoints,
    ParameterRule,
    PulsedParams,
    apply_pulses,
    crosspoints,
    draw_crosspoints,
    expected_step,
    in_use,
    needed_draws,
    nominal_crosspoints,
    standard_draws,
)
from .registry import MODELS, model_class
from .response import Response, expected_response, parse_pulse_spec, pulse_polarities, pulses_across, simulate_response
from .soft_bounds import SoftBounds, SoftBoundsReference
from .symmetry import symmetry_point

__all__ = [
    "decay_and_diffuse",
    "has_write_noise",
    "reset_states",
    "write_noise",
    "writes_between_updates",
    "in_use",
    "safe_pow",
    "safe_sqrt",
    "up_down_bias",
    "BUILTIN_CARDS",
    "MODELS",
    "OneSided",
    "AbstractPulsedModel",
    "CardError",
    "ConstantStep",
    "CrossPointDraws",
    "CrossPoints",
    "crosspoints",
    "standard_draws",
    "needed_draws",
    "EXTRA_DRAWS",
    "PULSED_FLAGS",
    "REQUIRED_PULSED",
    "DeviceCard",
    "ExpStep",
    "LinearStep",
    "ParameterRule",
    "PiecewiseStep",
    "PowStep",
    "PulsedParams",
    "SoftBounds",
    "SoftBoundsReference",
    "apply_pulses",
    "builtin_card_names",
    "card_document",
    "card_toml",
    "card_variant",
    "draw_crosspoints",
    "expected_step",
    "load_card",
    "model_class",
    "nominal_crosspoints",
    "parse_card",
    "Protonic",
    "conductance_s",
    "field_voltage_v",
    "nominal_step",
    "proton_fraction",
    "pulse_energy_j",
    "step_size",
    "Response",
    "expected_response",
    "pulses_across",
    "parse_pulse_spec",
    "pulse_polarities",
    "simulate_response",
    "symmetry_point",
    "ConductanceMap",
    "crosssim_lut_card",
    "read_crosssim_table",
    "neurosim_card",
    "read_neurosim",
    "Measurement",
    "MeasurementError",
    "load_measurement",
    "AUTO_CANDIDATES",
    "FITTABLE_MODELS",
    "FitResult",
    "ParameterEstimate",
    "fit_auto",
    "fit_model",
    "replay_measurement",
]
