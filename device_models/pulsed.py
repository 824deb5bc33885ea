"""The pulsed-device core shared by every step-response model.

A pulsed device (aihwkit's ``PulsedDevice``) is described by a *nominal* parameter set
(:class:`PulsedParams`, one value per card) from which each cross-point of an array draws its
own parameters once, at array creation (:class:`CrossPoints`, device-to-device variation).
Every pulse then moves the cross-point's state ``w`` (normalised weight units) by a
model-specific step, multiplied by fresh cycle-to-cycle noise, and clipped to the
cross-point's bounds:

.. math::

    w \\leftarrow \\mathrm{clip}\\big(w \\pm \\Delta w_\\pm(w)\\,(1 + \\sigma_{c2c}\\,\\xi),
    \\; b_{min}, b_{max}\\big), \\qquad \\xi \\sim \\mathcal{N}(0, 1).

The model-specific part (``step_up``/``step_down``) lives in one module per model
(:mod:`device_models.constant_step`, :mod:`device_models.soft_bounds`,
:mod:`device_models.linear_step`, :mod:`device_models.exp_step`, :mod:`device_models.pow_step`,
:mod:`device_models.piecewise_step`); everything here is shared.

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
    "symmetry_point",
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
]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PulsedParams:
    """Nominal parameters common to all pulsed devices (aihwkit ``PulsedDevice`` defaults).

    All values are in normalised weight units (the unit aihwkit uses), as float arrays so a
    parameter set can be vmapped over or differentiated.
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


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrossPoints:
    """Per-cross-point parameters, drawn once per array (all arrays of the array's shape)."""

    scale_up: jax.Array  # step of one up pulse at the reference state (weight units)
    scale_down: jax.Array  # step of one down pulse at the reference state (weight units)
    b_max: jax.Array  # this cross-point's upper bound (weight units)
    b_min: jax.Array  # this cross-point's lower bound (weight units)
    dw_min_std: jax.Array  # cycle-to-cycle spread (fraction), scalar


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
    (:class:`PulsedParams`) field plus its own continuous parameters. It only has to say how
    large one noise-free up or down step is at state ``w``; drawing, noise and clipping are
    shared (:func:`apply_pulses`). ``parameter_rules`` names every model-specific field (all
    dataclass fields but ``pulsed``) with what a card may set it to
    (:mod:`device_models.cards`).
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

    def sample_step(self, cp: CrossPoints, w: jax.Array, pulses: jax.Array, *, key: jax.Array | None) -> jax.Array:
        """Signed change of one slot of ``pulses`` before clipping, with cycle-to-cycle noise.

        The default multiplies the noise-free step by :math:`1 + \\sigma_{c2c}\\xi` (aihwkit's
        pulsed devices); a model with its own noise law (a measured lookup table) overrides
        it together with :meth:`step_variance`. ``key=None`` gives the noise-free step.
        """
        dw = expected_step(self, cp, w, pulses)
        if key is None:
            return dw
        xi = jax.random.normal(key, w.shape, w.dtype)
        return dw * (1.0 + cp.dw_min_std * xi)

    def step_variance(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        """Variance of one pulse's change at ``w`` (consistent with :meth:`sample_step`)."""
        step = self.step_up(cp, w) if up else self.step_down(cp, w)
        return (cp.dw_min_std * step) ** 2


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class CrossPointDraws:
    """The standard-normal draws behind an array's device-to-device variation, drawn once.

    Kept apart from the nominal parameters, so that the cross-points of any parameter set
    follow from the same draws (:func:`crosspoints`): a sweep over a nominal parameter, or a
    gradient with respect to it, moves every cross-point consistently (common random numbers).
    All four arrays have the array's shape, dimensionless.
    """

    gain: jax.Array  # xi_1: step gain spread (times dw_min_dtod)
    up_down: jax.Array  # xi_2: up/down asymmetry spread (times up_down_dtod)
    w_max: jax.Array  # xi_3: upper-bound spread (times w_max_dtod)
    w_min: jax.Array  # xi_4: lower-bound spread (times w_min_dtod)


def standard_draws(shape: tuple[int, ...], *, key: jax.Array, dtype=jnp.float32) -> CrossPointDraws:
    """Draw the four standard normals of every cross-point of an array of ``shape``."""
    k_gain, k_ud, k_max, k_min = jax.random.split(key, 4)
    return CrossPointDraws(
        gain=jax.random.normal(k_gain, shape, dtype),
        up_down=jax.random.normal(k_ud, shape, dtype),
        w_max=jax.random.normal(k_max, shape, dtype),
        w_min=jax.random.normal(k_min, shape, dtype),
    )


def crosspoints(model: AbstractPulsedModel, draws: CrossPointDraws) -> CrossPoints:
    """Each cross-point's own parameters from the nominal ones and the array's draws.

    Follows aihwkit's ``PulsedDevice`` population: with the draws
    :math:`\\xi_1 .. \\xi_4` (:class:`CrossPointDraws`),

    .. math::
        g = 1 + \\sigma_{dw}\\xi_1, \\quad r = \\sigma_{ud}\\xi_2, \\quad
        s_+ = \\Delta w_{min}(u_+ + r) g, \\quad s_- = \\Delta w_{min}(u_- - r) g,

        b_{max} = w_{max}(1 + \\sigma_{w_{max}}\\xi_3), \\quad
        b_{min} = w_{min}(1 + \\sigma_{w_{min}}\\xi_4),

    where :math:`u_+ = 1, u_- = 1 - \\text{up\\_down}` if ``up_down > 0`` and
    :math:`u_+ = 1 + \\text{up\\_down}, u_- = 1` otherwise. Step scales are kept non-negative
    and bounds ordered (``b_min <= 0 <= b_max``), so a rare extreme draw cannot invert a device.
    A pure function of arrays: it can be vmapped over parameter sets and differentiated.

    Args:
      model: the device model (its ``pulsed`` field holds the nominal parameters).
      draws: the array's standard-normal draws (:func:`standard_draws`).

    Returns:
      The :class:`CrossPoints` of the array, in the draws' dtype.
    """
    p = model.pulsed
    dtype = draws.gain.dtype
    gain = 1.0 + p.dw_min_dtod * draws.gain
    r = p.up_down_dtod * draws.up_down
    up_bias, down_bias = up_down_bias(p.up_down)
    scale_up = jnp.maximum(p.dw_min * (up_bias + r) * gain, 0.0)
    scale_down = jnp.maximum(p.dw_min * (down_bias - r) * gain, 0.0)
    b_max = jnp.maximum(p.w_max * (1.0 + p.w_max_dtod * draws.w_max), 0.0)
    b_min = jnp.minimum(p.w_min * (1.0 + p.w_min_dtod * draws.w_min), 0.0)
    return CrossPoints(
        scale_up=scale_up.astype(dtype),
        scale_down=scale_down.astype(dtype),
        b_max=b_max.astype(dtype),
        b_min=b_min.astype(dtype),
        dw_min_std=jnp.asarray(p.dw_min_std, dtype),
    )


def draw_crosspoints(
    model: AbstractPulsedModel, shape: tuple[int, ...], *, key: jax.Array, dtype=jnp.float32
) -> CrossPoints:
    """Draw each cross-point's own parameters (device-to-device variation), once:
    :func:`crosspoints` of :func:`standard_draws`.

    Args:
      model: the device model (its ``pulsed`` field holds the nominal parameters).
      shape: the array shape, ``(out_size, in_size)`` for a crossbar.
      key: PRNG key.
      dtype: float dtype of the drawn arrays.

    Returns:
      The :class:`CrossPoints` of the array.
    """
    return crosspoints(model, standard_draws(shape, key=key, dtype=dtype))


def nominal_crosspoints(model: AbstractPulsedModel, shape: tuple[int, ...], dtype=jnp.float32) -> CrossPoints:
    """Cross-points that all equal the nominal device (no device-to-device variation)."""
    p = model.pulsed
    up_bias, down_bias = up_down_bias(p.up_down)
    full = lambda v: jnp.full(shape, v, dtype)  # noqa: E731
    return CrossPoints(
        scale_up=full(p.dw_min * up_bias),
        scale_down=full(p.dw_min * down_bias),
        b_max=full(p.w_max),
        b_min=full(p.w_min),
        dw_min_std=jnp.asarray(p.dw_min_std, dtype),
    )


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


def symmetry_point(model: AbstractPulsedModel, cp: CrossPoints, iterations: int = 40) -> jax.Array:
    """Each cross-point's *symmetry point*: the state where an up and a down step are equal, so
    that random up/down pulses leave it in place on average (and pull every other state toward
    it).

    Found by bisection of :math:`\\Delta w_+(w) - \\Delta w_-(w)` on ``[b_min, b_max]`` (it
    falls with ``w`` for every model with saturating steps). Where the difference does not
    change sign (a constant step, with or without asymmetry) there is no single symmetry point
    and 0 is returned.

    Args:
      model: the device model.
      cp: the array's cross-point parameters.
      iterations: bisection steps (40 halve the bound range below 1e-12).

    Returns:
      The symmetry points, shaped like ``cp.b_max``.
    """
    lo = jnp.asarray(cp.b_min)
    hi = jnp.asarray(cp.b_max)
    lo, hi = jnp.broadcast_arrays(lo, hi)

    def diff(w):
        return model.step_up(cp, w) - model.step_down(cp, w)

    f_lo, f_hi = diff(lo), diff(hi)
    crosses = (f_lo > 0) & (f_hi < 0)

    def body(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        up = diff(mid) > 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo, hi = jax.lax.fori_loop(0, iterations, body, (lo, hi))
    return jnp.where(crosses, 0.5 * (lo + hi), 0.0)
