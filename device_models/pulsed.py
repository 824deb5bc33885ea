"""The pulsed-device core shared by every step-response model.

A pulsed device (aihwkit's ``PulsedDevice``) is described by a *nominal* parameter set
(``PulsedParams``, one value per card) from which each cross-point of an array draws its
own parameters once, at array creation (``CrossPoints``, device-to-device variation).
Every pulse then moves the cross-point's state ``w`` (normalised weight units) by a
model-specific step, multiplied by fresh cycle-to-cycle noise, and clipped to the
cross-point's bounds:

.. math::

    w \\leftarrow \\mathrm{clip}\\big(w \\pm \\Delta w_\\pm(w)\\,(1 + \\sigma_{c2c}\\,\\xi),
    \\; b_{min}, b_{max}\\big), \\qquad \\xi \\sim \\mathcal{N}(0, 1).

The model-specific part (``step_up``/``step_down``) lives in one module per model
(``device_models.constant_step``, ``device_models.soft_bounds``,
``device_models.linear_step``, ``device_models.exp_step``, ``device_models.pow_step``,
``device_models.piecewise_step``); everything here is shared.

References:
    Gokmen & Vlasov, "Acceleration of deep neural network training with resistive cross-point
    devices", Front. Neurosci. 10, 333 (2016). IBM aihwkit, ``PulsedDevice`` defaults.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp

from .numerics import up_down_bias

__all__ = [
    "AbstractPulsedModel",
    "CrossPointDraws",
    "CrossPoints",
    "ParameterRule",
    "PulsedParams",
    "apply_pulses",
    "crosspoints",
    "draw_crosspoints",
    "standard_draws",
    "expected_step",
    "nominal_crosspoints",
    "in_use",
    "needed_draws",
    "EXTRA_DRAWS",
    "PULSED_FLAGS",
    "REQUIRED_PULSED",
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PulsedParams:
    """Nominal parameters common to all pulsed devices (aihwkit ``PulsedDevice`` defaults).

    All values are in normalised weight units (the unit aihwkit uses), as float arrays so a
    parameter set can be vmapped over or differentiated. The nine first fields are required in
    a card; the others are optional there and default to aihwkit's values. aihwkit's boolean
    switches are flags here (1.0 true, 0.0 false), so that every field stays an array leaf.
    """

    dw_min: jax.Array | float = 0.001  # mean step of one pulse at w = 0 (weight units)
    dw_min_dtod: jax.Array | float = 0.3  # device-to-device spread of the step gain (fraction)
    dw_min_std: jax.Array | float = 0.3  # cycle-to-cycle spread of each pulse's step (fraction)
    up_down: jax.Array | float = 0.0  # systematic up/down asymmetry of the step (fraction)
    up_down_dtod: jax.Array | float = 0.01  # device-to-device spread of the asymmetry (fraction)
    w_max: jax.Array | float = 0.6  # nominal upper bound (weight units)
    w_min: jax.Array | float = -0.6  # nominal lower bound (weight units)
    w_max_dtod: jax.Array | float = 0.3  # device-to-device spread of w_max (fraction)
    w_min_dtod: jax.Array | float = 0.3  # device-to-device spread of w_min (fraction)
    # --- optional in a card (aihwkit PulsedDevice and its subclasses' defaults) ---
    mult_noise: jax.Array | float = 1.0  # flag: cycle-to-cycle noise times the step (1) or additive (0)
    dw_min_dtod_log_normal: jax.Array | float = 0.0  # flag: step gain exp(dtod xi) instead of 1 + dtod xi
    enforce_consistency: jax.Array | float = 1.0  # flag: scales >= 0 and b_min <= 0 <= b_max per device
    write_noise_std: jax.Array | float = 0.0  # noise of the read weight around the device state (x dw_min)
    apply_write_noise_on_set: jax.Array | float = 1.0  # flag: programming the weights draws write noise
    lifetime: jax.Array | float = 0.0  # decay time in mini-batches (0: no decay)
    lifetime_dtod: jax.Array | float = 0.0  # device-to-device spread of the lifetime (fraction)
    reset: jax.Array | float = 0.0  # state a reset (and the decay) goes to (weight units)
    reset_dtod: jax.Array | float = 0.0  # device-to-device spread of the reset state (weight units)
    reset_std: jax.Array | float = 0.01  # cycle-to-cycle spread of a reset (weight units)
    diffusion: jax.Array | float = 0.0  # random walk of the state per mini-batch (std, weight units)
    diffusion_dtod: jax.Array | float = 0.0  # device-to-device spread of the diffusion (fraction)
    corrupt_devices_prob: jax.Array | float = 0.0  # probability that a device is stuck at creation
    corrupt_devices_range: jax.Array | float = 0.1  # stuck devices sit uniformly in +- this (weight units)


# PulsedParams fields that a card must give (the rest default to aihwkit's values)
REQUIRED_PULSED = (
    "dw_min",
    "dw_min_dtod",
    "dw_min_std",
    "up_down",
    "up_down_dtod",
    "w_max",
    "w_min",
    "w_max_dtod",
    "w_min_dtod",
)
# PulsedParams fields that are aihwkit booleans (flags 0/1 here; a card may write true/false)
PULSED_FLAGS = ("mult_noise", "dw_min_dtod_log_normal", "enforce_consistency", "apply_write_noise_on_set")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrossPoints:
    """Per-cross-point parameters, drawn once per array (all arrays of the array's shape).

    The fields after ``dw_min_std`` are ``None`` when the device does not use them (no decay,
    no diffusion, no per-device model parameter), so that a device without that physics pays
    nothing for it; ``crosspoints`` fills them from the draws the device needs.
    """

    scale_up: jax.Array  # step of one up pulse at the reference state (weight units)
    scale_down: jax.Array  # step of one down pulse at the reference state (weight units)
    b_max: jax.Array  # this cross-point's upper bound (weight units)
    b_min: jax.Array  # this cross-point's lower bound (weight units)
    dw_min_std: jax.Array  # cycle-to-cycle spread (fraction), scalar
    decay_scale: jax.Array | None = None  # factor per mini-batch toward reset_bias (1: no decay)
    reset_bias: jax.Array | None = None  # state a reset and the decay go to (weight units)
    diffusion_rate: jax.Array | None = None  # std of the random walk per mini-batch (weight units)
    shape_up: jax.Array | None = None  # the model's own per-device parameter, up direction
    shape_down: jax.Array | None = None  # the model's own per-device parameter, down direction


@dataclasses.dataclass(frozen=True)
class ParameterRule:
    """What a device card may give for one model-specific parameter (unit ``"1"``).

    ``check`` is applied to the value, or to every element when ``table`` is true (then the
    value must be a non-empty array of numbers); ``rule`` says what is allowed, in words, for
    the error message.
    """

    check: Callable[[float], bool]
    rule: str
    table: bool = False
    optional: bool = False  # a card may leave it out: the model class's default applies
    flag: bool = False  # an aihwkit boolean: a card may write true/false (stored as 1.0/0.0)


def register_model(cls):
    """Register a device-model dataclass as a pytree whose structure names its class.

    Like ``jax.tree_util.register_dataclass`` (every field a child, unflattening without
    ``__init__``), but the class is the node's auxiliary data. With ``register_dataclass``,
    JAX 0.10's tree structures of two models with the same fields (``ConstantStep`` and
    ``SoftBounds``, both one ``pulsed`` field) compare equal, so a jitted function given one
    model and then the other could, on a hash collision in its cache, run the first model's
    program (seen once in CI: a soft-bounds response computed as constant step).
    """
    names = tuple(f.name for f in dataclasses.fields(cls))

    def flatten_with_keys(model):
        return [(jax.tree_util.GetAttrKey(n), getattr(model, n)) for n in names], cls

    def unflatten(aux, children):
        obj = object.__new__(aux)
        for n, c in zip(names, children, strict=True):
            object.__setattr__(obj, n, c)
        return obj

    jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten)
    return cls


class AbstractPulsedModel(abc.ABC):
    """Interface of a pulsed step-response model.

    A concrete model is a frozen dataclass registered as a pytree with a ``pulsed``
    (``PulsedParams``) field plus its own continuous parameters. It only has to say how
    large one noise-free up or down step is at state ``w``; drawing, noise and clipping are
    shared (``apply_pulses``). ``parameter_rules`` names every model-specific field (all
    dataclass fields but ``pulsed``) with what a card may set it to
    (``device_models.cards``).
    """

    name: ClassVar[str]
    parameter_rules: ClassVar[Mapping[str, ParameterRule]] = {}
    pulsed: PulsedParams

    @abc.abstractmethod
    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        """Noise-free magnitude (>= 0) of one potentiating step at state ``w``."""

    @abc.abstractmethod
    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        """Noise-free magnitude (>= 0) of one depressing step at state ``w``."""

    def step_noise_std(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        """Standard deviation of one pulse's cycle-to-cycle noise at state ``w`` (weight units).

        aihwkit's two laws: multiplicative (``mult_noise``, its default for most devices),
        :math:`\\sigma_{c2c} \\Delta w_\\pm(w)`, and additive, :math:`\\sigma_{c2c} s_\\pm` with the
        cross-point's step scale, whatever the state (``rpu_linearstep_device.cpp``,
        ``update_once_add``). A model with another law overrides this (exp step's
        ``dw_min_std_add``/``dw_min_std_slope``).
        """
        step = self.step_up(cp, w) if up else self.step_down(cp, w)
        scale = cp.scale_up if up else cp.scale_down
        mult = jnp.asarray(self.pulsed.mult_noise) > 0.5
        return (cp.dw_min_std * jnp.where(mult, step, jnp.broadcast_to(scale, step.shape))).astype(w.dtype)

    def noisy_step(self, cp: CrossPoints, w: jax.Array, pulses: jax.Array, xi: jax.Array) -> jax.Array:
        """Signed change of one slot of ``pulses`` before clipping, given standard normals ``xi``:
        the noise-free step plus ``step_noise_std`` times ``xi``."""
        dw = expected_step(self, cp, w, pulses)
        # signed like the step, so that the multiplicative law is dw (1 + sigma xi) draw for draw
        std = jnp.where(pulses > 0, self.step_noise_std(cp, w, True), -self.step_noise_std(cp, w, False))
        return dw + std * xi

    def sample_step(self, cp: CrossPoints, w: jax.Array, pulses: jax.Array, *, key: jax.Array | None) -> jax.Array:
        """Signed change of one slot of ``pulses`` before clipping, with cycle-to-cycle noise
        (``noisy_step``); a model with its own noise law (a measured lookup table) overrides
        it together with ``step_variance``. ``key=None`` gives the noise-free step.
        """
        if key is None:
            return expected_step(self, cp, w, pulses)
        return self.noisy_step(cp, w, pulses, jax.random.normal(key, w.shape, w.dtype))

    def step_variance(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        """Variance of one pulse's change at ``w`` (consistent with ``sample_step``)."""
        return self.step_noise_std(cp, w, up) ** 2

    def extra_draws(self) -> tuple[str, ...]:
        """Names of the model's own per-device draws (``EXTRA_DRAWS``) that its concrete
        parameters need (a spread > 0); none by default."""
        return ()

    def own_crosspoints(self, draws: CrossPointDraws, common: dict) -> dict:
        """The model's own per-cross-point parameters (``shape_up``/``shape_down`` of
        ``CrossPoints``, or changed ``b_max``/``b_min``) from the draws and the common
        per-cross-point values ``common`` (``scale_up``, ``scale_down``, ``b_max``, ``b_min``); none by default."""
        return {}


# Optional draws of a device, by name: what each one spreads. Drawn only when the device's
# concrete parameters need them (a spread > 0), each from its own key folded from the array's
# key, so the four common draws (and so every result without these spreads) stay the same.
EXTRA_DRAWS = {
    "lifetime": "lifetime spread (times lifetime_dtod)",
    "reset": "reset-state spread (times reset_dtod)",
    "diffusion": "diffusion-rate spread (times diffusion_dtod)",
    "corrupt": "uniform in [0, 1): is the device stuck (below corrupt_devices_prob)",
    "corrupt_at": "uniform in [0, 1): where a stuck device sits",
    "shape_up": "the model's own parameter spread, up direction",
    "shape_down": "the model's own parameter spread, down direction",
    "slope_up": "soft-bounds-reference: slope spread, up",
    "slope_down": "soft-bounds-reference: slope spread, down",
    "reference": "soft-bounds-reference: reference-device spread",
}
_UNIFORM_DRAWS = ("corrupt", "corrupt_at")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrossPointDraws:
    """The standard-normal draws behind an array's device-to-device variation, drawn once.

    Kept apart from the nominal parameters, so that the cross-points of any parameter set
    follow from the same draws (``crosspoints``): a sweep over a nominal parameter, or a
    gradient with respect to it, moves every cross-point consistently (common random numbers).
    The four common arrays have the array's shape, dimensionless; ``extra`` holds the optional
    draws the device needs (``EXTRA_DRAWS``, ``needed_draws``), by name.
    """

    gain: jax.Array  # xi_1: step gain spread (times dw_min_dtod)
    up_down: jax.Array  # xi_2: up/down asymmetry spread (times up_down_dtod)
    w_max: jax.Array  # xi_3: upper-bound spread (times w_max_dtod)
    w_min: jax.Array  # xi_4: lower-bound spread (times w_min_dtod)
    extra: dict = dataclasses.field(default_factory=dict)  # name -> draws (EXTRA_DRAWS)


def needed_draws(model: AbstractPulsedModel) -> tuple[str, ...]:
    """The optional draws (``EXTRA_DRAWS``) that ``model``'s concrete parameters need."""
    p = model.pulsed
    names = []
    pos = in_use
    # a draw's presence is also the static switch of its physics (crosspoints): a device draws
    # "lifetime" when it decays, "diffusion" when it diffuses, "reset" when it has a reset state
    if pos(p.lifetime):
        names.append("lifetime")
    if pos(p.reset_dtod) or pos(p.lifetime) or pos(jnp.abs(p.reset)):
        names.append("reset")
    if pos(p.diffusion):
        names.append("diffusion")
    if pos(p.corrupt_devices_prob):
        names += ["corrupt", "corrupt_at"]
    return tuple(names) + tuple(n for n in model.extra_draws() if n not in names)


def standard_draws(
    shape: tuple[int, ...], *, key: jax.Array, dtype=jnp.float32, extra: tuple[str, ...] = ()
) -> CrossPointDraws:
    """Draw the four standard normals of every cross-point of an array of ``shape``, and the
    optional draws named in ``extra`` (``EXTRA_DRAWS``; ``needed_draws`` of a model)."""
    k_gain, k_ud, k_max, k_min = jax.random.split(key, 4)
    unknown = sorted(set(extra) - set(EXTRA_DRAWS))
    if unknown:
        raise ValueError(f"standard_draws: unknown draw(s) {unknown}; allowed: {', '.join(EXTRA_DRAWS)}")
    more = {}
    for name in extra:
        k = jax.random.fold_in(key, 100 + list(EXTRA_DRAWS).index(name))
        sample = jax.random.uniform if name in _UNIFORM_DRAWS else jax.random.normal
        more[name] = sample(k, shape, dtype)
    return CrossPointDraws(
        gain=jax.random.normal(k_gain, shape, dtype),
        up_down=jax.random.normal(k_ud, shape, dtype),
        w_max=jax.random.normal(k_max, shape, dtype),
        w_min=jax.random.normal(k_min, shape, dtype),
        extra=more,
    )


def _consistent(p: PulsedParams, scale_up, scale_down, b_max, b_min):
    """aihwkit's ``enforce_consistency``: with the flag, step scales are made non-negative and
    bounds ordered around 0 (``b_min <= 0 <= b_max``, swapped first if crossed); without it, a
    device whose bounds crossed is turned off at their midpoint (``PulsedRPUDevice::populate``)."""
    enforce = jnp.asarray(p.enforce_consistency) > 0.5
    crossed = b_min > b_max
    lo, hi = jnp.where(crossed, b_max, b_min), jnp.where(crossed, b_min, b_max)
    mid = 0.5 * (b_max + b_min)
    return (
        jnp.where(enforce, jnp.abs(scale_up), scale_up),
        jnp.where(enforce, jnp.abs(scale_down), scale_down),
        jnp.where(enforce, jnp.abs(hi), jnp.where(crossed, mid, b_max)),
        jnp.where(enforce, -jnp.abs(lo), jnp.where(crossed, mid, b_min)),
    )


def crosspoints(model: AbstractPulsedModel, draws: CrossPointDraws) -> CrossPoints:
    """Each cross-point's own parameters from the nominal ones and the array's draws.

    Follows aihwkit's ``PulsedDevice`` population (``rpu_pulsed_device.cpp``, ``populate``):
    with the draws :math:`\\xi_1 .. \\xi_4` (``CrossPointDraws``),

    .. math::
        g = 1 + \\sigma_{dw}\\xi_1 \\;(\\text{or } e^{\\sigma_{dw}\\xi_1}), \\quad r = \\sigma_{ud}\\xi_2, \\quad
        s_+ = \\Delta w_{min}(g + u_+ + r), \\quad s_- = \\Delta w_{min}(g + u_- - r),

        b_{max} = w_{max}(1 + \\sigma_{w_{max}}\\xi_3), \\quad
        b_{min} = w_{min}(1 + \\sigma_{w_{min}}\\xi_4),

    where :math:`u_+ = 0, u_- = -\\text{up\\_down}` if ``up_down > 0`` and
    :math:`u_+ = \\text{up\\_down}, u_- = 0` otherwise; then ``enforce_consistency``
    (``_consistent``), stuck devices (``corrupt_devices_prob``), and the decay, reset and
    diffusion parameters of each device where the card uses them. A pure function of arrays:
    it can be vmapped over parameter sets and differentiated.

    Args:
      model: the device model (its ``pulsed`` field holds the nominal parameters).
      draws: the array's draws (``standard_draws``).

    Returns:
      The ``CrossPoints`` of the array, in the draws' dtype.
    """
    p = model.pulsed
    dtype = draws.gain.dtype
    ex = draws.extra
    log_normal = jnp.asarray(p.dw_min_dtod_log_normal) > 0.5
    gain = jnp.where(log_normal, jnp.exp(p.dw_min_dtod * draws.gain), 1.0 + p.dw_min_dtod * draws.gain)
    r = p.up_down_dtod * draws.up_down
    up_bias, down_bias = up_down_bias(p.up_down)
    scale_up = p.dw_min * (gain + up_bias - 1.0 + r)
    scale_down = p.dw_min * (gain + down_bias - 1.0 - r)
    b_max = p.w_max * (1.0 + p.w_max_dtod * draws.w_max)
    b_min = p.w_min * (1.0 + p.w_min_dtod * draws.w_min)
    scale_up, scale_down, b_max, b_min = _consistent(p, scale_up, scale_down, b_max, b_min)
    if "corrupt" in ex:  # stuck somewhere in +- corrupt_devices_range, within the bounds; no steps
        stuck = ex["corrupt"] < p.corrupt_devices_prob
        lo = jnp.maximum(b_min, -jnp.abs(p.corrupt_devices_range))
        hi = jnp.minimum(b_max, jnp.abs(p.corrupt_devices_range))
        at = lo + (hi - lo) * ex["corrupt_at"]
        b_max, b_min = jnp.where(stuck, at, b_max), jnp.where(stuck, at, b_min)
        scale_up, scale_down = jnp.where(stuck, 0.0, scale_up), jnp.where(stuck, 0.0, scale_down)
    own = model.own_crosspoints(draws, {"scale_up": scale_up, "scale_down": scale_down, "b_max": b_max, "b_min": b_min})
    b_max, b_min = own.pop("b_max", b_max), own.pop("b_min", b_min)
    cast = lambda v: None if v is None else jnp.asarray(v).astype(dtype)  # noqa: E731
    return CrossPoints(
        scale_up=cast(scale_up),
        scale_down=cast(scale_down),
        b_max=cast(b_max),
        b_min=cast(b_min),
        dw_min_std=jnp.asarray(p.dw_min_std, dtype),
        **{k: cast(v) for k, v in _lifetime_fields(p, ex).items()},
        **{k: cast(v) for k, v in own.items()},
    )


def _lifetime_fields(p: PulsedParams, ex: dict) -> dict:
    """Decay, reset and diffusion parameters of each device, where the device has the draws that
    switch them on (``needed_draws``, a static fact) (aihwkit ``populate``: decay scale
    ``1 - 1/t`` for a lifetime ``t > 1`` drawn with ``lifetime_dtod``, else 0, and 1 (no decay)
    for a lifetime of 0; reset bias ``reset + reset_dtod xi``; diffusion rate
    ``|diffusion (1 + diffusion_dtod xi)|``). Fields the device does not use stay ``None``."""
    out: dict = {}
    if "lifetime" in ex:
        t = p.lifetime * (1.0 + p.lifetime_dtod * ex["lifetime"])
        scale = jnp.where(t > 1.0, 1.0 - 1.0 / jnp.where(t > 1.0, t, 2.0), 0.0)
        out["decay_scale"] = jnp.where(p.lifetime > 0, scale, 1.0)
    if "reset" in ex:
        out["reset_bias"] = p.reset + p.reset_dtod * ex["reset"]
    if "diffusion" in ex:
        out["diffusion_rate"] = jnp.abs(p.diffusion * (1.0 + p.diffusion_dtod * ex["diffusion"]))
    return out


def in_use(v) -> bool:
    """Whether ``v`` is known to be > 0 (a traced value counts as in use: a sweep over it)."""
    try:
        return float(v) > 0
    except (TypeError, jax.errors.ConcretizationTypeError):
        return True


def draw_crosspoints(
    model: AbstractPulsedModel, shape: tuple[int, ...], *, key: jax.Array, dtype=jnp.float32
) -> CrossPoints:
    """Draw each cross-point's own parameters (device-to-device variation), once:
    ``crosspoints`` of ``standard_draws``.

    Args:
      model: the device model (its ``pulsed`` field holds the nominal parameters).
      shape: the array shape, ``(out_size, in_size)`` for a crossbar.
      key: PRNG key.
      dtype: float dtype of the drawn arrays.

    Returns:
      The ``CrossPoints`` of the array.
    """
    return crosspoints(model, standard_draws(shape, key=key, dtype=dtype, extra=needed_draws(model)))


def nominal_crosspoints(model: AbstractPulsedModel, shape: tuple[int, ...], dtype=jnp.float32) -> CrossPoints:
    """Cross-points that all equal the nominal device (no device-to-device variation)."""
    zeros = jnp.zeros(shape, dtype)
    extra = {name: (jnp.full(shape, 0.5, dtype) if name in _UNIFORM_DRAWS else zeros) for name in needed_draws(model)}
    extra.pop("corrupt", None), extra.pop("corrupt_at", None)  # the nominal device is not stuck
    return crosspoints(model, CrossPointDraws(zeros, zeros, zeros, zeros, extra))


def expected_step(model: AbstractPulsedModel, cp: CrossPoints, w: jax.Array, pulses: jax.Array) -> jax.Array:
    """Noise-free signed change of ``w`` for one slot of ``pulses`` (+1 up, -1 down, 0 none)."""
    up = model.step_up(cp, w)
    down = model.step_down(cp, w)
    return jnp.where(pulses > 0, up, jnp.where(pulses < 0, -down, 0.0)).astype(w.dtype)


def apply_pulses(
    model: AbstractPulsedModel,
    cp: CrossPoints,
    w: jax.Array,
    pulses: jax.Array,
    *,
    key: jax.Array | None,
) -> jax.Array:
    """Apply at most one pulse per cross-point (one time slot) and return the new state.

    .. math::
        w' = \\mathrm{clip}(w + p\\,\\Delta w_{p}(w)(1 + \\sigma_{c2c}\\xi), b_{min}, b_{max})

    Args:
      model: the device model.
      cp: the array's cross-point parameters (same shape as ``w``).
      w: device states, normalised weight units.
      pulses: +1 (potentiate), -1 (depress) or 0 (no pulse) per cross-point; any integer or
        float dtype, broadcastable to ``w``.
      key: PRNG key of the cycle-to-cycle noise; ``None`` means noise-free.

    Returns:
      The new states, same shape and dtype as ``w``; cross-points without a pulse are
      returned unchanged bit for bit.
    """
    dw = model.sample_step(cp, w, pulses, key=key)
    new = jnp.clip(w + dw, cp.b_min, cp.b_max)
    return jnp.where(pulses != 0, new, w)
