"""Pulse response of a population of devices: single pulses in a given order, no bit streams.

``K`` devices, each with its own parameters (device-to-device variation drawn once with
``draw_crosspoints``), receive the same pulse sequence, e.g. 200
potentiating pulses then 200 depressing ones. After every pulse the population's mean and
standard deviation (over devices, ``ddof = 0``) of the state and of the *fraction*

.. math::
    f = \\frac{w - w_{min}}{w_{max} - w_{min}}

(with the card's **nominal** bounds) are recorded. Each pulse is one slot of
``apply_pulses`` (cycle-to-cycle noise, then clipping to each device's
bounds); the pulses run in a ``jax.lax.scan``.

``expected_response`` is the noise-free trajectory of the nominal device (or of given
cross-points), :math:`w_{n+1} = \\mathrm{clip}(w_n \\pm \\Delta w_\\pm(w_n), b_{min}, b_{max})`. For
models whose step is affine in ``w`` (constant step, linear step, soft bounds, protonic with
:math:`\\nu \\in \\{0, 1\\}`) and multiplicative cycle-to-cycle noise, it is also the exact mean
of the noisy device as long as the bounds do not clip, since the expectation of an affine map
is the map of the expectation; in closed form, for the nominal device from :math:`w_0`:
constant step :math:`w_n = w_0 \\pm n\\,\\Delta w`, soft bounds
:math:`w_n = b - (b - w_0)(1 - s/|b|)^n` with :math:`b` the bound approached.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .between_updates import has_write_noise
from .pulsed import (
    AbstractPulsedModel,
    CrossPoints,
    apply_pulses,
    crosspoints,
    needed_draws,
    nominal_crosspoints,
    standard_draws,
)

__all__ = [
    "MAX_PULSES",
    "Response",
    "expected_response",
    "parse_pulse_spec",
    "pulse_polarities",
    "pulses_across",
    "simulate_response",
]

MAX_PULSES = 1_000_000  # longest pulse sequence accepted (the per-pulse outputs are kept)
_TOKEN = re.compile(r"^[+-][0-9]+$")


@dataclasses.dataclass(frozen=True)
class Response:
    """Per-pulse statistics of a device population (all arrays have shape ``(P,)``, P pulses)."""

    polarity: np.ndarray  # +1 / -1 per pulse, in the order applied
    state_mean: np.ndarray  # mean state after each pulse (normalised weight units)
    state_std: np.ndarray  # std over devices of the state after each pulse (normalised weight units)
    fraction_mean: np.ndarray  # mean of (state - w_min) / (w_max - w_min), nominal bounds (unit 1)
    fraction_std: np.ndarray  # std over devices of that fraction (unit 1)
    start: np.ndarray  # (K,) initial state of each device (normalised weight units)
    crosspoints: CrossPoints  # the K devices' parameters, each array of shape (K,)
    w_min: float  # nominal lower bound (normalised weight units)
    w_max: float  # nominal upper bound (normalised weight units)


def pulse_polarities(pulses: Sequence[int]) -> np.ndarray:
    """Expand ``[+N, -M, ...]`` (N potentiating, then M depressing, ...) into one +1/-1 per pulse.

    Raises:
      ValueError: an entry is not a non-zero integer, or the total exceeds ``MAX_PULSES``.
    """
    counts = list(pulses)
    if not counts:
        raise ValueError("pulses: value [] is not allowed; give at least one non-zero count, e.g. [+200, -200]")
    for n in counts:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n == 0:
            raise ValueError(
                f"pulses: value {n!r} is not allowed; each entry must be a non-zero integer (+N up, -M down)"
            )
    total = sum(abs(int(n)) for n in counts)
    if total > MAX_PULSES:
        raise ValueError(f"pulses: value {total} pulses in all is not allowed; must be at most {MAX_PULSES}")
    return np.concatenate([np.full(abs(int(n)), 1 if n > 0 else -1, np.int8) for n in counts])


def parse_pulse_spec(text: str) -> list[int]:
    """Parse ``"+200,-200"`` into ``[200, -200]``; each item needs its sign.

    Raises:
      ValueError: naming the bad item and the allowed syntax.
    """
    items = [t.strip() for t in str(text).split(",")]
    out = []
    for item in items:
        if not _TOKEN.match(item) or int(item) == 0:
            raise ValueError(
                f"--pulses: value {text!r} is not allowed (item {item!r}); "
                "use comma-separated signed non-zero counts, e.g. +200,-200"
            )
        out.append(int(item))
    pulse_polarities(out)  # total length check
    return out


def _start_states(model: AbstractPulsedModel, cp: CrossPoints, start: float | None) -> jax.Array:
    """Each device's initial state: its own lower bound by default, else ``start`` clipped to its bounds."""
    if start is None:
        return cp.b_min
    return jnp.clip(jnp.full(cp.b_min.shape, start, cp.b_min.dtype), cp.b_min, cp.b_max)


def _check_start(model: AbstractPulsedModel, start: float | None) -> None:
    if start is None:
        return
    p = model.pulsed
    lo, hi = float(p.w_min), float(p.w_max)
    if not (np.isfinite(start) and lo <= start <= hi):
        raise ValueError(
            f"start: value {start!r} is not allowed; must be a state within the nominal range [{lo}, {hi}]"
        )


@jax.jit
def _scan_stats(model, cp, w0, polarity, keys, w_min, w_max, offset, write_std):
    """Apply the pulses one per step; return per-pulse mean/std of the read weight and its
    fraction. The read weight is the state minus the device's reference (``offset``) plus a
    fresh write-noise draw of std ``write_std`` (every device is written by every pulse)."""

    def one(w, inputs):
        pol, key = inputs
        k_pulse, k_write = jax.random.split(key)
        new = apply_pulses(model, cp, w, jnp.broadcast_to(pol, w.shape), key=k_pulse)
        read = new - offset + write_std * jax.random.normal(k_write, new.shape, new.dtype)
        frac = (read - w_min) / (w_max - w_min)
        return new, jnp.stack([jnp.mean(read), jnp.std(read), jnp.mean(frac), jnp.std(frac)])

    _, stats = jax.lax.scan(one, w0, (polarity, keys))
    return stats


@jax.jit
def _scan_noise_free(model, cp, w0, polarity):
    def one(w, pol):
        new = apply_pulses(model, cp, w, jnp.broadcast_to(pol, w.shape), key=None)
        return new, new

    _, states = jax.lax.scan(one, w0, polarity)
    return states


def simulate_response(
    model: AbstractPulsedModel,
    pulses: Sequence[int],
    devices: int = 2000,
    start: float | None = None,
    noise_free: bool = False,
    *,
    key: jax.Array,
) -> Response:
    """Simulate ``devices`` devices receiving the pulse sequence ``pulses``, one pulse at a time.

    .. math::
        w_{k,n+1} = \\mathrm{clip}\\big(w_{k,n} + p_n \\Delta w_{p_n}(w_{k,n})(1 + \\sigma_{c2c}\\xi_{k,n}),
        \\; b_{min,k}, b_{max,k}\\big)

    Args:
      model: the device model with the card's nominal parameters.
      pulses: counts in order, ``[+N, -M, ...]``: N potentiating pulses, then M depressing ones.
      devices: number of devices K (>= 1), each drawn with ``draw_crosspoints`` (shape ``(K,)``).
      start: initial state (normalised weight units, within the nominal range), clipped to each
        device's own bounds; ``None`` starts every device at its own lower bound.
      noise_free: no device-to-device variation (every device nominal) and no
        cycle-to-cycle noise; then all devices are identical and the std is 0.
      key: PRNG key (split into the device draw and the per-pulse noise keys; unused when
        ``noise_free``).

    The statistics are of the weight a read sees: the state minus the device's own reference
    (a reference device, ``SoftBoundsReference``) plus a fresh draw of the
    write noise after every pulse (``write_noise_std``), as aihwkit's ``get_weights`` returns.

    Returns:
      A ``Response`` with per-pulse statistics taken after each pulse.

    Raises:
      ValueError: bad ``pulses``, ``devices < 1`` or ``start`` outside the nominal range.

    Example:
      >>> r = simulate_response(SoftBounds(), [+200, -200], devices=2000, key=jax.random.key(0))
      >>> r.fraction_mean[199], r.fraction_std[199]
    """
    polarity = pulse_polarities(pulses)
    if isinstance(devices, bool) or not isinstance(devices, int | np.integer) or devices < 1:
        raise ValueError(f"devices: value {devices!r} is not allowed; must be an integer >= 1")
    _check_start(model, start)
    p = model.pulsed
    w_min, w_max = float(p.w_min), float(p.w_max)
    k_dev, k_noise = jax.random.split(key)
    if noise_free:
        cp = nominal_crosspoints(model, (int(devices),))
        w0 = _start_states(model, cp, start)
        states = _scan_noise_free(model, cp, w0, jnp.asarray(polarity))
        state_mean = jnp.mean(states, axis=1)
        frac = (states - w_min) / (w_max - w_min)
        stats = jnp.stack([state_mean, jnp.std(states, axis=1), jnp.mean(frac, axis=1), jnp.std(frac, axis=1)], 1)
    else:
        draws = standard_draws((int(devices),), key=k_dev, extra=needed_draws(model))
        cp = crosspoints(model, draws)
        offset = model.device_reference(cp, draws) if hasattr(model, "device_reference") else jnp.zeros(())
        write_std = p.write_noise_std * p.dw_min if has_write_noise(model) else jnp.zeros(())
        w0 = _start_states(model, cp, start) + offset  # the read weight starts at ``start``
        w0 = jnp.clip(w0, cp.b_min, cp.b_max)
        keys = jax.random.split(k_noise, polarity.shape[0])
        stats = _scan_stats(model, cp, w0, jnp.asarray(polarity), keys, w_min, w_max, offset, write_std)
    stats = np.asarray(stats, np.float64)
    return Response(
        polarity=polarity,
        state_mean=stats[:, 0],
        state_std=stats[:, 1],
        fraction_mean=stats[:, 2],
        fraction_std=stats[:, 3],
        start=np.asarray(w0),
        crosspoints=cp,
        w_min=w_min,
        w_max=w_max,
    )


def expected_response(
    model: AbstractPulsedModel,
    pulses: Sequence[int],
    start: float | None = None,
    *,
    crosspoints: CrossPoints | None = None,
) -> np.ndarray:
    """Noise-free trajectory after each pulse: the nominal device's, or each of ``crosspoints``'.

    .. math::
        w_{n+1} = \\mathrm{clip}(w_n + p_n \\Delta w_{p_n}(w_n), b_{min}, b_{max})

    the exact mean of the noisy device for steps affine in ``w`` while no bound clips (module
    docstring).

    Args:
      model: the device model.
      pulses: counts in order, ``[+N, -M, ...]``.
      start: initial state (normalised weight units); ``None`` is the lower bound.
      crosspoints: devices to follow (e.g. ``Response.crosspoints``); default the nominal one.

    Returns:
      States after each pulse, shape ``(P,)`` for the nominal device or ``(P, K)`` for ``K``
      given cross-points (normalised weight units).
    """
    polarity = pulse_polarities(pulses)
    _check_start(model, start)
    cp = nominal_crosspoints(model, (1,)) if crosspoints is None else crosspoints
    w0 = _start_states(model, cp, start)
    states = np.asarray(_scan_noise_free(model, cp, w0, jnp.asarray(polarity)), np.float64)
    return states[:, 0] if crosspoints is None else states


def pulses_across(
    model: AbstractPulsedModel, *, fraction: float = 1.0, max_pulses: int = 100_000
) -> tuple[int | None, int | None]:
    """Noise-free pulses the nominal device needs to cross its window: up from ``w_min`` until the
    state reaches ``w_min + fraction (w_max - w_min)``, and down from ``w_max`` until it reaches
    ``w_max - fraction (w_max - w_min)`` (nominal bounds).

    A device whose steps shrink to zero at a bound (soft bounds) never reaches it: ``fraction = 1``
    gives ``None`` for it; ``fraction < 1`` gives a finite count.

    Returns:
      ``(up, down)``: the counts, each ``None`` if not reached within ``max_pulses``.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"pulses_across: fraction: value {fraction!r} is not allowed; must be in (0, 1]")
    p = model.pulsed
    span = p.w_max - p.w_min
    counts = []
    for sign, start, target in ((+1, p.w_min, p.w_min + fraction * span), (-1, p.w_max, p.w_max - fraction * span)):
        w = expected_response(model, [sign * max_pulses], start=start)
        tol = 1e-7 * span  # float32 trajectories land on a bound to rounding
        reached = np.nonzero(sign * (w - target) >= -tol)[0]
        counts.append(int(reached[0]) + 1 if reached.size else None)
    return counts[0], counts[1]
