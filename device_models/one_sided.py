"""A one-sided view of a device model: potentiating pulses act, depressing pulses do nothing.

Phase-change memory and other uni-directional devices can be moved gradually only one way
(SET); they are used in pairs, ``w = G+ - G-``, where a weight increase potentiates ``G+``
and a decrease potentiates ``G-`` (aihwkit's ``OneSidedUnitCell``). ``OneSided`` wraps
any model (STYLE.md 5: variants wrap a model) so that the shared pulse machinery
(``device_models.apply_pulses``, the fidelity rungs) applies only the up half.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from .pulsed import AbstractPulsedModel, CrossPoints, PulsedParams

__all__ = ["OneSided"]


@dataclasses.dataclass(frozen=True)
class OneSided(AbstractPulsedModel):
    """``inner`` with its down steps set to zero (the up steps, noise and bounds unchanged).

    Example:
      >>> from device_models import ExpStep, PulsedParams
      >>> pcm = OneSided(ExpStep(PulsedParams(w_min=0.0, w_max=2.0)))
    """

    name: ClassVar[str] = "one-sided"
    inner: AbstractPulsedModel

    @property
    def pulsed(self) -> PulsedParams:
        return self.inner.pulsed

    def step_up(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return self.inner.step_up(cp, w)

    def step_down(self, cp: CrossPoints, w: jax.Array) -> jax.Array:
        return jnp.zeros_like(self.inner.step_down(cp, w))

    def sample_step(self, cp: CrossPoints, w: jax.Array, pulses: jax.Array, *, key: jax.Array | None) -> jax.Array:
        return self.inner.sample_step(cp, w, jnp.maximum(pulses, 0), key=key)

    def step_variance(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        var = self.inner.step_variance(cp, w, True)
        return var if up else jnp.zeros_like(var)

    def step_noise_std(self, cp: CrossPoints, w: jax.Array, up: bool) -> jax.Array:
        std = self.inner.step_noise_std(cp, w, True)
        return std if up else jnp.zeros_like(std)

    def extra_draws(self) -> tuple[str, ...]:
        return self.inner.extra_draws()

    def own_crosspoints(self, draws, common: dict) -> dict:
        return self.inner.own_crosspoints(draws, common)
