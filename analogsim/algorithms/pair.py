"""Analog SGD on differential pairs of one-sided devices (aihwkit's ``OneSidedUnitCell``)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from device_models import CrossPointDraws, OneSided, crosspoints, needed_draws, standard_draws

from ..pulsed_update import pulsed_update
from .base import AbstractUpdateRule, apply_counts, counts_of, plus_streams

__all__ = ["DifferentialPair", "PairState"]


class PairState(NamedTuple):
    """The second device of each differential pair."""

    minus: jax.Array  # G- (out, in), normalised units
    minus_draws: CrossPointDraws  # the standard normals of its device-to-device variation


@dataclasses.dataclass(frozen=True)
class DifferentialPair(AbstractUpdateRule):
    """Analog SGD on differential pairs of one-sided devices, ``w = G+ - G-`` (aihwkit's
    ``OneSidedUnitCell``, as used for PCM).

    Each pair sees the same pulse trains: coincidences that would raise ``w`` potentiate ``G+``,
    those that would lower it potentiate ``G-`` (``device_models.OneSided``: neither
    device is ever depressed by an update). A device that nears its upper bound cannot take
    more updates, so after every mini-batch the pairs where ``max(G+, G-)`` exceeds
    ``refresh_threshold`` of the device's upper bound are *refreshed*: ``w`` is read, both
    devices are reset to their lower bound (one RESET pulse each, counted as a down pulse),
    and ``|w|`` is written back into one of them by ``round(|w| / dw_min)`` potentiating
    pulses (with their noise). aihwkit reads the refreshed weight through its own periphery;
    here the refresh read is exact, and the ledger counts one array read per refreshed column.
    """

    name: ClassVar[str] = "sgd-pair"
    refresh_threshold: float = 0.75  # fraction of b_max at which a pair is refreshed

    def __post_init__(self):
        v = self.refresh_threshold
        if not (isinstance(v, int | float) and 0.0 < v <= 1.0):
            raise ValueError(f"DifferentialPair.refresh_threshold: value {v!r} is not allowed; must be in (0, 1]")

    def program(self, model, cp, target):
        return jnp.clip(cp.b_min + jnp.maximum(target, 0.0), cp.b_min, cp.b_max)

    def init(self, model, w, *, key):
        # ``w`` is the weight target (before programming): its negative part goes to G-
        minus_draws = standard_draws(w.shape, key=key, dtype=w.dtype, extra=needed_draws(model))
        minus_device = crosspoints(model, minus_draws)
        minus = jnp.clip(minus_device.b_min + jnp.maximum(-w, 0.0), minus_device.b_min, minus_device.b_max)
        return PairState(minus=minus, minus_draws=minus_draws)

    def read_weight(self, w, state):
        return w - state.minus

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        one = OneSided(model)
        k_plus, k_refresh = jax.random.split(key)
        # the same pulse trains drive both devices of a pair (same key, error of opposite sign)
        k_minus = jax.random.clone(k_plus)
        minus_device = crosspoints(model, state.minus_draws)
        plus, p_plus = pulsed_update(one, cp, w, x, d, lr, up, key=k_plus)
        minus, p_minus = pulsed_update(one, minus_device, state.minus, x, -d, lr, up, key=k_minus)
        plus, minus, refreshed = self._refresh(model, cp, minus_device, plus, minus, up.mode, k_refresh)
        counts = plus_streams(refreshed, p_plus, p_minus)
        # only up pulses act on one-sided devices (G-'s up pulses are G+'s down requests)
        counts = counts._replace(
            pulses_up=refreshed.pulses_up + p_plus.up + p_minus.up,
            pulses_down=refreshed.pulses_down,
            wear=p_plus.per_device,
        )  # per pair: G+ takes the up share, G- the rest (an upper bound for each)
        return plus, state._replace(minus=minus), counts

    def _refresh(self, model, cp_plus, cp_minus, plus, minus, mode, key):
        need = (plus - cp_plus.b_min > self.refresh_threshold * (cp_plus.b_max - cp_plus.b_min)) | (
            minus - cp_minus.b_min > self.refresh_threshold * (cp_minus.b_max - cp_minus.b_min)
        )
        w = (plus - cp_plus.b_min) - (minus - cp_minus.b_min)
        n = jnp.round(jnp.abs(w) / model.pulsed.dw_min).astype(jnp.int32)
        k_p, k_m = jax.random.split(key)
        one = OneSided(model)
        new_plus, c_plus = apply_counts(
            one, cp_plus, cp_plus.b_min + 0 * plus, jnp.where(need & (w > 0), n, 0), key=k_p, mode=mode
        )
        new_minus, c_minus = apply_counts(
            one, cp_minus, cp_minus.b_min + 0 * minus, jnp.where(need & (w < 0), n, 0), key=k_m, mode=mode
        )
        plus = jnp.where(need, new_plus, plus)
        minus = jnp.where(need, new_minus, minus)
        resets = 2 * jnp.sum(need, dtype=jnp.int32)
        columns = jnp.sum(jnp.any(need, axis=0), dtype=jnp.int32)
        direct = jnp.maximum(c_plus.direct_slots, c_minus.direct_slots)
        return (
            plus,
            minus,
            counts_of(
                c_plus.pulses_up + c_minus.pulses_up,
                resets,
                columns,
                2 * plus.size,
                direct_slots=direct,
                row_pulses=c_plus.row_pulses + c_minus.row_pulses,
                column_pulses=c_plus.column_pulses + c_minus.column_pulses,
            ),
        )
