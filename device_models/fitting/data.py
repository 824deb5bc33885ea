"""A measurement prepared for fitting: replay arrays, internal units and smoothed readings.

Readings are fitted in internal units ``u = (state - center) / scale`` (conductance data are
centred on and scaled to half their measured range; weight data are used as they are). Each
sweep (device/cycle) becomes one column of a padded pulse-by-pulse replay.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..measurements import Measurement

_MAX_REPLAY = 50_000_000  # longest padded replay (pulses x sweeps) a fit will build


class _Data(NamedTuple):
    """The arrays of one fit (a pytree, traced by jit)."""

    pulses: jax.Array  # (L, S) int8: pulse applied before time step t of sweep s (row 0 unused)
    voltage: jax.Array | None  # (L, S) float64 |V| of that pulse (volts), None without a voltage_v column
    width: jax.Array | None  # (L, S) float64 width of that pulse (seconds), None without a width_s column
    obs_t: jax.Array  # (n,) int32: time step of each reading, file order
    obs_s: jax.Array  # (n,) int32: sweep of each reading
    y: jax.Array  # (n,) float64: readings in internal units u = (state - center) / scale


@dataclasses.dataclass(frozen=True, eq=False)
class _Prepared:
    """A measurement turned into replay arrays, internal units and starting guesses."""

    data: _Data
    center: float  # state = center + scale * u
    scale: float
    labels: tuple[str, ...]  # sweep labels
    segment_rows: tuple[np.ndarray, ...]  # rows of each sweep
    positions: np.ndarray  # (n,) replay step of each reading
    segment_of_row: np.ndarray  # (n,) sweep of each reading
    smooth: tuple[np.ndarray, ...]  # smoothed readings per sweep (u units)
    has_up: bool
    has_down: bool


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of ``x`` over ``window`` samples (shorter at the ends)."""
    if window <= 1 or x.size < 3:
        return x.copy()
    window = min(window, x.size)
    c = np.cumsum(np.concatenate([[0.0], x]))
    half = window // 2
    idx = np.arange(x.size)
    lo = np.clip(idx - half, 0, x.size)
    hi = np.clip(idx + half + 1, 0, x.size)
    return (c[hi] - c[lo]) / (hi - lo)


def _internal_units(m: Measurement) -> tuple[float, float]:
    """(center, scale) of the internal units; raises if the readings are all equal."""
    if m.unit == "S":
        lo, hi = float(m.state.min()), float(m.state.max())
        center, scale = 0.5 * (lo + hi), 0.5 * (hi - lo)
        if not scale > 0:
            raise ValueError(f"{m.source}: column {m.state_column!r}: all readings equal {lo!r}; nothing to fit")
    else:
        center, scale = 0.0, 1.0
        if float(m.state.max()) == float(m.state.min()):
            raise ValueError(f"{m.source}: column 'weight': all readings equal {m.state[0]!r}; nothing to fit")
    return center, scale


def _replay_positions(m: Measurement, segments) -> tuple[np.ndarray, np.ndarray, int]:
    """(replay step of each reading, sweep of each reading, replay length); raises if too long."""
    n = m.n_rows
    lengths = []
    positions = np.zeros(n, np.int64)
    seg_of_row = np.zeros(n, np.int64)
    for s, seg in enumerate(segments):
        pn = m.pulse_number[seg.rows]
        positions[seg.rows] = pn - pn[0]
        seg_of_row[seg.rows] = s
        lengths.append(int(pn[-1] - pn[0]) + 1)
    n_steps = max(lengths)
    if n_steps * len(segments) > _MAX_REPLAY:
        raise ValueError(
            f"{m.source}: column 'pulse_number': the replay would need {n_steps} steps x {len(segments)} sweeps; "
            f"allowed: at most {_MAX_REPLAY:,} (large gaps in pulse_number?)"
        )
    return positions, seg_of_row, n_steps


def _prepare(m: Measurement) -> _Prepared:
    """Turn ``m`` into the replay arrays, internal units and smoothed readings of a fit."""
    center, scale = _internal_units(m)
    u = (m.state - center) / scale
    segments = m.segments()
    positions, seg_of_row, n_steps = _replay_positions(m, segments)
    pulses = np.zeros((n_steps, len(segments)), np.int8)
    # per-pulse |voltage| and width (padding: 1.0, harmless where no pulse is applied)
    volts = None if m.voltage_v is None else np.ones((n_steps, len(segments)))
    widths = None if m.width_s is None else np.ones((n_steps, len(segments)))
    smooth = []
    for s, seg in enumerate(segments):
        pos = positions[seg.rows]
        pulses[1 : pos[-1] + 1, s] = np.repeat(m.polarity[seg.rows][1:], np.diff(pos))
        if volts is not None:
            volts[1 : pos[-1] + 1, s] = np.repeat(np.abs(m.voltage_v[seg.rows][1:]), np.diff(pos))
        if widths is not None:
            widths[1 : pos[-1] + 1, s] = np.repeat(m.width_s[seg.rows][1:], np.diff(pos))
        smooth.append(_moving_average(u[seg.rows], max(1, seg.rows.size // 20)))
    pol_applied = np.concatenate([m.polarity[seg.rows][1:] for seg in segments])
    data = _Data(
        pulses=jnp.asarray(pulses),
        voltage=None if volts is None else jnp.asarray(volts, jnp.float64),
        width=None if widths is None else jnp.asarray(widths, jnp.float64),
        obs_t=jnp.asarray(positions, jnp.int32),
        obs_s=jnp.asarray(seg_of_row, jnp.int32),
        y=jnp.asarray(u, jnp.float64),
    )
    return _Prepared(
        data=data,
        center=center,
        scale=scale,
        labels=tuple(seg.label for seg in segments),
        segment_rows=tuple(seg.rows for seg in segments),
        positions=positions,
        segment_of_row=seg_of_row,
        smooth=tuple(smooth),
        has_up=bool((pol_applied > 0).any()),
        has_down=bool((pol_applied < 0).any()),
    )
