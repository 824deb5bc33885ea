"""Protonic WO3 electrochemical synapse: field-driven proton insertion through a solid electrolyte.

A three-terminal device: a gate pulse drives protons between a reservoir (PdH\\ :sub:`x` in
Yao et al. 2020; the gate stack in Onen et al. 2022) and a WO\\ :sub:`3` channel through a
solid proton electrolyte (Nafion in Yao 2020, nanoporous phosphosilicate glass, PSG, in
Onen 2022). Each inserted proton donates an electron to the channel, so the channel's
conductance follows its proton content.

**State.** The state is the normalised weight ``w`` (aihwkit's units), the proton content of
the channel mapped linearly onto the card's nominal range:

.. math::
    \\frac{x - x_{lo}}{x_{hi} - x_{lo}} = \\frac{w - w_{min}}{w_{max} - w_{min}}
    \\qquad (\\text{see } ``proton_fraction``),

where :math:`x` is the proton content of H\\ :sub:`x`\\ WO\\ :sub:`3` and
:math:`[x_{lo}, x_{hi}]` the programming window (not needed by the model: only the fraction of
the window enters).

**Step.** The proton charge moved by one pulse of voltage :math:`V` and width :math:`t_p` is
the field-enhanced hopping current through the electrolyte (Mott & Gurney 1940; the
high-field law :math:`j \\propto \\sinh(q a E / 2 k_B T)`, :math:`E = V/d`) times the width
(:math:`\\beta = 1` for a constant current; :math:`\\beta \\ne 1` absorbs a current that
decays or grows during the pulse), so

.. math::
    \\Delta G \\propto k\\, t_p^{\\beta} \\sinh\\!\\left(\\frac{q a V}{2 k_B T d}\\right).

The prefactor :math:`k` is not a free parameter: it is fixed by the card's ``dw_min``, the step
at ``w = 0`` at the card's reference pulse :math:`(V_{ref}, t_{ref})`. With
:math:`V_0 = 2 k_B T d / (q a)` the multiplier of the step relative to the reference is

.. math::
    M_\\pm(V, t_p) = \\left(\\frac{t_p}{t_{ref}}\\right)^{\\beta}
    \\frac{\\sinh(V / V_0)}{\\sinh(V_{ref,\\pm} / V_0)}
    \\qquad (\\text{see } ``step_size``),

and the noise-free up and down steps at state ``w`` of a cross-point with step scales
:math:`s_\\pm` and bounds :math:`b_{max}, b_{min}` (``draw_crosspoints``) are

.. math::
    \\Delta w_+ = s_+ M_+(V_+, t_p) \\max\\!\\left(1 - \\frac{w}{b_{max}}, 0\\right)^{\\nu_+},
    \\qquad
    \\Delta w_- = s_- M_-(V_-, t_p) \\max\\!\\left(1 - \\frac{w}{b_{min}}, 0\\right)^{\\nu_-}.

The saturation factor (a soft bound with exponent :math:`\\nu`) describes the shrinking
driving force as the channel fills with (or empties of) protons: :math:`\\nu = 0` is a constant
step (the near-linear modulation reported by Onen 2022), :math:`\\nu = 1` is aihwkit's soft
bounds. The up/down prefactor asymmetry is the common ``up_down`` parameter
(``PulsedParams``); the operating voltages :math:`V_\\pm` and the exponents
:math:`\\nu_\\pm` may also differ between up and down. At the card's operating point
(:math:`V_\\pm = V_{ref,\\pm}`, :math:`t_p = t_{ref}`) :math:`M_\\pm = 1`, so ``dw_min`` keeps its
aihwkit meaning (the step at ``w = 0``) and the model trains through the shared pulsed-update
machinery (cycle-to-cycle noise multiplies the step, then the state is clipped to the bounds).

Helpers: ``step_size`` (the multiplier, vectorised and differentiable),
``nominal_step`` (the same in weight units), ``conductance_s`` (conductance of a
state), ``proton_fraction``, ``pulse_energy_j`` (energy of one gate pulse).

References:
    Yao et al., "Protonic solid-state electrochemical synapse for physical neural networks",
    Nat. Commun. 11, 3134 (2020). Onen et al., "Nanosecond protonic programmable resistors for
    analog deep learning", Science 377, 539 (2022). Mott & Gurney, "Electronic Processes in
    Ionic Crystals" (Oxford, 1940), high-field ionic conduction.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, ParameterRule, PulsedParams, register_model

__all__ = [
    "BOLTZMANN_OVER_CHARGE_V_PER_K",
    "Protonic",
    "conductance_s",
    "field_voltage_v",
    "nominal_step",
    "proton_fraction",
    "pulse_energy_j",
    "step_size",
]

# k_B / q, exact in the 2019 SI (k_B = 1.380649e-23 J/K, q = 1.602176634e-19 C).
BOLTZMANN_OVER_CHARGE_V_PER_K = 1.380649e-23 / 1.602176634e-19

_POSITIVE = ParameterRule(lambda v: v > 0, "> 0")
_NON_NEGATIVE = ParameterRule(lambda v: v >= 0, ">= 0")


@register_model
@dataclasses.dataclass(frozen=True)
class Protonic(AbstractPulsedModel):
    """Protonic WO3 synapse: sinh field law in voltage, power law in width, soft saturation.

    All fields are continuous (pytree leaves), so a model can be vmapped over or
    differentiated (e.g. with respect to the pulse voltage).

    Args:
      pulsed: the common pulsed-device parameters; ``dw_min`` is the step at ``w = 0`` at the
        reference pulse.
      voltage_up_v: magnitude of the potentiating gate pulse used in operation (V, > 0).
      voltage_down_v: magnitude of the depressing gate pulse used in operation (V, > 0).
      width_s: width of the gate pulses used in operation (s, > 0).
      ref_voltage_up_v: potentiating voltage at which ``dw_min`` holds (V, > 0).
      ref_voltage_down_v: depressing voltage at which ``dw_min`` holds (V, > 0).
      ref_width_s: pulse width at which ``dw_min`` holds (s, > 0).
      hop_distance_m: proton hopping distance :math:`a` in the electrolyte (m, > 0).
      thickness_m: electrolyte thickness :math:`d` (m, > 0).
      temperature_k: device temperature :math:`T` (K, > 0).
      width_exponent: :math:`\\beta`, exponent of the width (unit 1, >= 0).
      saturation_up: :math:`\\nu_+`, exponent of the up step's saturation factor (unit 1, >= 0).
      saturation_down: :math:`\\nu_-`, exponent of the down step's saturation factor (unit 1, >= 0).

    The defaults are a generic, symmetric device (5 ns, 10 V both ways, 10 nm electrolyte,
    :math:`a` = 0.3 nm, :math:`\\beta = 1`, soft-bounds saturation :math:`\\nu = 1`); the published
    device of Onen et al. 2022 (+10 V / -8.5 V, :math:`a` = 5.6 Å, :math:`\\beta = 1.2`) is the
    ``wo3-psg-onen2022`` card, with the source of every number.

    Example:
      >>> model = Protonic(PulsedParams(dw_min=0.002), voltage_up_v=9.0)  # a 9 V pulse, card at 10 V
      >>> float(step_size(model, 9.0, 5e-9))  # about 0.56: sinh(9/1.72)/sinh(10/1.72)

    References:
      Onen et al., Science 377, 539 (2022): 5 ns pulses at up to about 10 V. Yao et al., Nat.
      Commun. 11, 3134 (2020).
    """

    name: ClassVar[str] = "protonic"
    parameter_rules: ClassVar[dict[str, ParameterRule]] = {
        "voltage_up_v": _POSITIVE,
        "voltage_down_v": _POSITIVE,
        "width_s": _POSITIVE,
        "ref_voltage_up_v": _POSITIVE,
        "ref_voltage_down_v": _POSITIVE,
        "ref_width_s": _POSITIVE,
        "hop_distance_m": _POSITIVE,
        "thickness_m": _POSITIVE,
        "temperature_k": _POSITIVE,
        "width_exponent": _NON_NEGATIVE,
        "saturation_up": _NON_NEGATIVE,
        "saturation_down": _NON_NEGATIVE,
    }
    # Unit family of each dimensional parameter in a card (device_models.cards converts to SI at load).
    parameter_units: ClassVar[dict[str, str]] = {
        "voltage_up_v": "voltage",
        "voltage_down_v": "voltage",
        "width_s": "time",
        "ref_voltage_up_v": "voltage",
        "ref_voltage_down_v": "voltage",
        "ref_width_s": "time",
        "hop_distance_m": "length",
        "thickness_m": "length",
        "temperature_k": "temperature",
    }
    pulsed: PulsedParams = dataclasses.field(default_factory=PulsedParams)
    voltage_up_v: jax.Array | float = 10.0  # operating potentiating pulse magnitude (V)
    voltage_down_v: jax.Array | float = 10.0  # operating depressing pulse magnitude (V)
    width_s: jax.Array | float = 5e-9  # operating pulse width (s)
    ref_voltage_up_v: jax.Array | float = 10.0  # potentiating voltage where dw_min holds (V)
    ref_voltage_down_v: jax.Array | float = 10.0  # depressing voltage where dw_min holds (V)
    ref_width_s: jax.Array | float = 5e-9  # width where dw_min holds (s)
    hop_distance_m: jax.Array | float = 0.3e-9  # proton hopping distance a (m)
    thickness_m: jax.Array | float = 10e-9  # electrolyte thickness d (m)
    temperature_k: jax.Array | float = 300.0  # temperature T (K)
    width_exponent: jax.Array | float = 1.0  # beta (unit 1)
    saturation_up: jax.Array | float = 1.0  # nu_+ (unit 1)
    saturation_down: jax.Array | float = 1.0  # nu_- (unit 1)

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        m = step_size(self, self.voltage_up_v, self.width_s, up=True)
        return (cp.scale_up * m * _saturation(w, cp.b_max, self.saturation_up)).astype(w.dtype)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        m = step_size(self, self.voltage_down_v, self.width_s, up=False)
        return (cp.scale_down * m * _saturation(w, cp.b_min, self.saturation_down)).astype(w.dtype)


def _saturation(w: jax.Array, bound: jax.Array, exponent: jax.Array) -> jax.Array:
    """``max(1 - w / bound, 0) ** exponent``; finite values and gradients at the bound and at ``bound == 0``.

    ``0 ** 0 = 1`` (a constant step); at the bound itself the factor is 0 for ``exponent > 0``.
    """
    ok = bound != 0
    safe_bound = jnp.where(ok, bound, 1.0)
    left = jnp.where(ok, jnp.maximum(1.0 - w / safe_bound, 0.0), 0.0)
    positive = left > 0
    safe_left = jnp.where(positive, left, 1.0)
    powered = jnp.exp(exponent * jnp.log(safe_left))
    return jnp.where(positive, powered, jnp.where(exponent == 0, 1.0, 0.0))


def field_voltage_v(model: Protonic) -> jax.Array:
    """The field-law voltage scale :math:`V_0 = 2 k_B T d / (q a)` in volts.

    Below :math:`V_0` the hopping current is ohmic (step proportional to :math:`V`); above it
    the step grows as :math:`e^{V/V_0}`.
    """
    return 2.0 * BOLTZMANN_OVER_CHARGE_V_PER_K * model.temperature_k * model.thickness_m / model.hop_distance_m


def _sinh_ratio(x: jax.Array, y: jax.Array) -> jax.Array:
    """``sinh(x) / sinh(y)`` for ``y > 0`` without overflow: ``exp(x - y) * expm1(-2x) / expm1(-2y)``."""
    return jnp.exp(x - y) * jnp.expm1(-2.0 * x) / jnp.expm1(-2.0 * y)


def step_size(model: Protonic, voltage_v: Any, width_s: Any, *, up: bool = True) -> jax.Array:
    """Step multiplier of a pulse of ``voltage_v`` and ``width_s`` relative to the reference pulse.

    .. math::
        M(V, t_p) = \\left(\\frac{t_p}{t_{ref}}\\right)^{\\beta}
        \\frac{\\sinh(V / V_0)}{\\sinh(V_{ref} / V_0)}, \\qquad V_0 = \\frac{2 k_B T d}{q a}

    :math:`M = 1` at the reference, so the step at ``w = 0`` in weight units is
    ``dw_min * M`` (times the up/down bias; see ``nominal_step``). The ratio is computed
    as :math:`e^{x-y}\\,\\mathrm{expm1}(-2x)/\\mathrm{expm1}(-2y)`, finite for any field, and
    :math:`t_p^{\\beta}` uses the double-``where`` trick, so values and gradients stay finite
    at :math:`t_p = 0`.

    Args:
      model: the protonic model (its reference pulse, :math:`a`, :math:`d`, :math:`T`, :math:`\\beta`).
      voltage_v: pulse magnitude(s) in volts (array-like; a negative value gives a negative
        multiplier, the odd sinh law).
      width_s: pulse width(s) in seconds (array-like, >= 0), broadcast with ``voltage_v``.
      up: compare with the potentiating (``True``) or depressing reference voltage.

    Returns:
      The multiplier (unit 1), broadcast shape of the inputs.

    Example:
      >>> step_size(Protonic(), 10.0, 10e-9)  # twice the width, beta = 1: 2.0
    """
    v0 = field_voltage_v(model)
    v_ref = model.ref_voltage_up_v if up else model.ref_voltage_down_v
    voltage_v = jnp.asarray(voltage_v, jnp.result_type(float))
    width_s = jnp.asarray(width_s, jnp.result_type(float))
    # both arguments rounded alike, so that M = 1 exactly at the reference pulse
    field = _sinh_ratio(voltage_v / v0, jnp.asarray(v_ref, voltage_v.dtype) / v0)
    ratio = width_s / model.ref_width_s
    positive = ratio > 0
    safe = jnp.where(positive, ratio, 1.0)
    exponent = model.width_exponent
    widths = jnp.where(positive, jnp.exp(exponent * jnp.log(safe)), jnp.where(exponent == 0, 1.0, 0.0))
    return field * widths


def nominal_step(model: Protonic, voltage_v: Any, width_s: Any, *, up: bool = True) -> jax.Array:
    """Nominal step at ``w = 0`` in weight units: ``dw_min * bias * step_size(...)``.

    ``bias`` is the up/down asymmetry of ``draw_crosspoints``
    (:math:`1` or :math:`1 + \\text{up\\_down}` for up, :math:`1 - \\text{up\\_down}` or
    :math:`1` for down).
    """
    p = model.pulsed
    if up:
        bias = jnp.where(p.up_down > 0, 1.0, 1.0 + p.up_down)
    else:
        bias = jnp.where(p.up_down > 0, 1.0 - p.up_down, 1.0)
    return p.dw_min * bias * step_size(model, voltage_v, width_s, up=up)


def proton_fraction(model: AbstractPulsedModel, w: Any) -> jax.Array:
    """Fraction of the programming window filled with protons: :math:`(w - w_{min}) / (w_{max} - w_{min})`.

    The state ``w`` is the proton content mapped linearly onto the nominal range (module
    docstring), so 0 is the depleted end and 1 the filled end of the window.
    """
    p = model.pulsed
    return (jnp.asarray(w) - p.w_min) / (p.w_max - p.w_min)


def conductance_s(
    model_or_card: Any, w: Any, *, g_min_s: float | None = None, g_max_s: float | None = None
) -> jax.Array:
    """Channel conductance of state ``w`` in siemens, linear in the proton content.

    .. math::
        G = g_{min} + (g_{max} - g_{min})\\,\\frac{w - w_{min}}{w_{max} - w_{min}}

    In the small-insertion regime each proton donates one electron to the WO3 conduction band
    and the mobility is about constant, so by Drude :math:`G \\propto q n \\mu \\propto x`
    within the programming window; this is the same linear weight-to-conductance map that
    ``device_models.cards`` uses. Over wide ranges it does not hold: Yao 2020 reports that
    proton insertion raises both carrier density and mobility, modulating the channel over
    seven orders of magnitude (abstract), so :math:`g_{min}, g_{max}` must bound a narrow
    window. The state is not clipped; a state beyond the nominal bounds extrapolates.

    Args:
      model_or_card: a ``DeviceCard`` (its ``g_min_s``/``g_max_s``
        physical values are used) or a model (then ``g_min_s`` and ``g_max_s`` are required).
      w: state(s), normalised weight units (array-like).
      g_min_s: conductance at ``w_min`` (S); overrides the card's.
      g_max_s: conductance at ``w_max`` (S); overrides the card's.

    Returns:
      Conductance in siemens, shape of ``w``.

    Raises:
      ValueError: the conductance range is missing or not ``0 <= g_min_s < g_max_s``.

    References:
      Yao et al., Nat. Commun. 11, 3134 (2020), abstract.
    """
    physical = getattr(model_or_card, "physical", None)
    model = getattr(model_or_card, "model", model_or_card)
    name = getattr(model_or_card, "name", type(model).__name__)
    if physical is not None:
        g_min_s = physical.get("g_min_s") if g_min_s is None else g_min_s
        g_max_s = physical.get("g_max_s") if g_max_s is None else g_max_s
    if g_min_s is None or g_max_s is None:
        raise ValueError(
            f"conductance_s: {name}: g_min_s/g_max_s: value (None) is not allowed; "
            "give a card with physical g_min and g_max, or pass g_min_s and g_max_s in siemens"
        )
    if not 0 <= g_min_s < g_max_s:
        raise ValueError(
            f"conductance_s: {name}: g_min_s/g_max_s: value ({g_min_s!r}, {g_max_s!r}) is not allowed; "
            "must be 0 <= g_min_s < g_max_s (S)"
        )
    return g_min_s + (g_max_s - g_min_s) * proton_fraction(model, w)


def pulse_energy_j(
    voltage_v: Any, width_s: Any, charge_c: Any, gate_capacitance_f: Any, *, leakage_current_a: Any = 0.0
) -> jax.Array:
    """Energy drawn from the gate driver by one pulse, in joules.

    .. math::
        E = |V|\\,\\big(|Q| + I_{leak}\\, t_p\\big) + C_g V^2

    :math:`|V||Q|` is the work of moving the proton (faradaic) charge :math:`Q` through the
    electrolyte at the gate voltage; :math:`C_g V^2` is what charging and then discharging the
    electrostatic gate capacitance :math:`C_g` costs per pulse (half stored, half lost in the
    driver, and the stored half lost at discharge); :math:`I_{leak} t_p` is the electronic
    leakage through the electrolyte during the pulse (0 by default).

    Args:
      voltage_v: gate pulse voltage (V; the sign is ignored).
      width_s: pulse width (s, >= 0); enters only through the leakage term.
      charge_c: proton charge moved per pulse (C; the sign is ignored).
      gate_capacitance_f: electrostatic gate capacitance (F, >= 0), e.g.
        :math:`\\varepsilon_0 \\varepsilon_r A / d` for a dielectric electrolyte.
      leakage_current_a: electronic leakage current through the electrolyte (A, >= 0).

    Returns:
      Energy per pulse in joules (broadcast shape of the inputs).

    Example:
      >>> pulse_energy_j(10.0, 5e-9, 3e-18, 3.45e-17)  # 3e-17 + 3.45e-15 J, about 3.5 fJ
    """
    v = jnp.abs(jnp.asarray(voltage_v, jnp.result_type(float)))
    return v * (jnp.abs(charge_c) + leakage_current_a * jnp.asarray(width_s)) + gate_capacitance_f * v**2
