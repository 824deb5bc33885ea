"""Which rung of the fidelity ladder is safe on a device: the ``auto`` mode.

The fast rungs (``expected``, ``gaussian``) take each cross-point's step at the state before the
batch and replace whole steps by their mean and variance. That is accurate when one pulse
changes the step little and the device has many states; on steep or coarse devices it is not.
Two numbers are computed from the card's nominal device before training:

- the *step change*: the largest relative change of the step that one step causes,
  :math:`\\max_w |\\Delta w(w + \\Delta w(w)) - \\Delta w(w)| / \\Delta w(w)`, over the nominal range,
  both directions;
- the *step size*: ``dw_min`` over the nominal range (the inverse of the number of states).

``auto`` runs ``gaussian`` (the fastest) when the step change is at most
``MAX_STEP_CHANGE``, the step size at most ``MAX_STEP_SIZE`` and the device has no write
noise, else ``exact``, and says so in one line. Write noise: on the two aihwkit ReRAM presets
that have it, ``gaussian`` and ``exact`` differed by 21 (``reram-sb``) and 8
(``reram-es-gong2018``) points on RT-MNIST (``results/crosscheck/zoo_rungs``), not yet explained,
so the fast rungs are not trusted there. The limits are calibrated on the device zoo's RT-MNIST rerun
(docs/fidelity.md): the cards on which ``gaussian`` read more than a point above ``exact``
(the PCM pair, step change 0.98; ``enode-lut``, 130 states) are past them, every card within a
point is inside them (largest: ``wo3-psg-onen2022``, step change 0.032; ``capacitor-li2018``,
step size 0.0025). They are an empirical rule, not a bound: a new device near them should be
checked with ``--update-mode exact`` once.
"""

from __future__ import annotations

import dataclasses
import warnings

import jax.numpy as jnp

from device_models import AbstractPulsedModel, has_write_noise, nominal_crosspoints

from .settings import UpdateParameters

__all__ = ["MAX_STEP_CHANGE", "MAX_STEP_SIZE", "RungCheck", "check_rungs", "resolve_update"]

MAX_STEP_CHANGE = 0.1
MAX_STEP_SIZE = 0.005
_GRID = 2001


@dataclasses.dataclass(frozen=True)
class RungCheck:
    """What ``check_rungs`` found on a device."""

    step_change: float  # largest relative change of the step caused by one step
    step_size: float  # dw_min / (w_max - w_min)
    fast_is_safe: bool
    write_noise: bool = False

    @property
    def reason(self) -> str:
        text = (
            f"one step changes the next by up to {self.step_change:.1%} (limit {MAX_STEP_CHANGE:.0%}) and the "
            f"step is {self.step_size:.2%} of the range (limit {MAX_STEP_SIZE:.1%})"
        )
        return text + ("; it has write noise (fast rungs not validated there)" if self.write_noise else "")


def check_rungs(model: AbstractPulsedModel) -> RungCheck:
    """The step change and step size of ``model``'s nominal device (concrete parameters)."""
    p = model.pulsed
    lo, hi = float(p.w_min), float(p.w_max)
    cp = nominal_crosspoints(model, (_GRID,))
    w = jnp.linspace(lo, hi, _GRID)
    worst = 0.0
    for up in (True, False):
        step_of = model.step_up if up else model.step_down
        s = step_of(cp, w)
        w2 = jnp.clip(w + (s if up else -s), lo, hi)
        s2 = step_of(cp, w2)
        inside = (s > 0) & (w2 > lo) & (w2 < hi)
        rel = jnp.where(inside, jnp.abs(s2 - s) / jnp.where(inside, s, 1.0), 0.0)
        worst = max(worst, float(jnp.max(rel)))
    size = float(p.dw_min) / (hi - lo) if hi > lo else float("inf")
    noisy = has_write_noise(model)
    return RungCheck(worst, size, worst <= MAX_STEP_CHANGE and size <= MAX_STEP_SIZE and not noisy, noisy)


def resolve_update(model: AbstractPulsedModel, up: UpdateParameters, *, where: str = "") -> UpdateParameters:
    """``up`` with ``mode="auto"`` replaced by the rung ``check_rungs`` finds safe (a warning of
    one line when that is ``exact``); other modes are returned unchanged, with a warning when
    ``gaussian`` or ``expected`` was asked for on a device past the limits."""
    check = check_rungs(model)
    name = f"{where}: " if where else ""
    if up.mode == "auto":
        if check.fast_is_safe:
            return dataclasses.replace(up, mode="gaussian")
        warnings.warn(f"{name}update mode auto runs 'exact' on this device: {check.reason}", stacklevel=3)
        return dataclasses.replace(up, mode="exact")
    if up.mode != "exact" and not check.fast_is_safe:
        warnings.warn(
            f"{name}update mode {up.mode!r} may be far from 'exact' on this device: {check.reason}; "
            "use --update-mode auto or exact",
            stacklevel=3,
        )
    return up
