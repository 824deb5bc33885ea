"""A device physicist's first questions about a device, answered from its card or its measurement
(``analogsim assess``), and a short diagnosis of training on it.

**Step tables.** Every figure comes from the device's noise-free mean change per pulse as a
function of the state, :math:`\\Delta_+(G)` (one up pulse) and :math:`\\Delta_-(G)` (the
magnitude of one down pulse), on a grid of states (``StepTable``):

- a card: the model's ``step_up``/``step_down`` of the nominal device on 1001 states spanning
  its nominal range, in siemens through the card's conductance map when it has ``[physical]
  g_min, g_max`` (``device_models.ConductanceMap``), else in weight units;
- a measurement (model-free): each run of consecutive pulses of one polarity is smoothed by a
  centred moving average of ``W`` readings (``smooth``; by default odd, about 1/50 of the
  median run), and the change of the smoothed state per pulse is taken by the smoothed state
  before it, in ``bins`` equal bins (each bin's mean step placed at its mean state, then
  interpolated onto the bin centres) spanning the 0.5th to 99.5th percentile of the readings
  (robust to a few outlier reads); an empty bin takes its neighbours' values. Binning single
  noisy steps by the noisy state before them would regress them to the mean (a reading high by
  read noise is followed by a lower one); the moving average removes that bias for read noise
  well below ``W`` steps, and it is exact for steps linear in the state (constant step, linear
  step, soft bounds: the average of a geometric sweep is a geometric sweep with the same ratio).

**Figures** (``assess_steps``), with the range :math:`[G_{lo}, G_{hi}]`:

- ``on_off`` :math:`= G_{hi}/G_{lo}` (conductances only);
- ``dg_up_low``/``dg_up_high``/``dg_down_low``/``dg_down_high``: the step at both ends of the
  table (for a measurement, the lowest and highest bin);
- ``states`` :math:`= (G_{hi} - G_{lo}) / \\bar\\Delta` with
  :math:`\\bar\\Delta = (\\Delta_+ + \\Delta_-)/2` at mid-range (the operating pulse): a
  constant-step device has range / dw_min states;
- ``asymmetry`` :math:`= (\\Delta_+ - \\Delta_-)/(\\Delta_+ + \\Delta_-)` at mid-range (0
  symmetric, +1 only up steps);
- the symmetry point: the state where :math:`\\Delta_+ = \\Delta_-` (the first crossing from
  :math:`\\Delta_+ > \\Delta_-`, by linear interpolation), where random up and down pulses pull
  every weight, ``None`` where the steps do not cross (then SGD does not drift to one state);
- NeuroSim's nonlinearity ``A`` of each branch: the noise-free sweep of :math:`P_{max}` pulses
  from one end, :math:`P_{max}` = ``states`` (NeuroSim's ``maxNumLevel``, the pulses that would
  cross the range at the operating step; at most 20,000; a sweep also stops where its step
  vanishes), fitted with :math:`G(P) = B (1 - e^{-P/A}) + G_{min}`,
  :math:`B = (G_{max} - G_{min})/(1 - e^{-P_{max}/A})` for the up branch and its mirror
  :math:`G(P) = G_{max} - B (1 - e^{-P/A})` for the down branch (Chen, Peng and Yu, "NeuroSim: A
  circuit-level macro model for benchmarking neuro-inspired architectures in online learning",
  IEEE TCAD 37, 3067, 2018, Eqs. 1-3; DNN_NeuroSim V2.1, ``Cell.cpp``/``formula.cpp``,
  ``NonlinearWeight``). ``A > 0``: the steps shrink along the sweep (saturating), larger ``A``
  more linear, ``A = inf`` linear; ``a_*_norm = A / P_max`` is NeuroSim's normalised ``A``;
- ``c2c``: a card's ``dw_min_std``; a measurement's scatter of the single steps around the
  table's mean, relative to the mean step at mid-range, read noise removed (``_c2c``);
- ``d2d``: a card's ``dw_min_dtod``; a measurement's std/mean over devices of each device's
  mean up step in the middle half of the range (two devices or more).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from device_models import ConductanceMap, DeviceCard, Measurement, nominal_crosspoints

__all__ = [
    "Assessment",
    "StepTable",
    "assess_card",
    "assess_measurement",
    "assess_steps",
    "card_step_table",
    "measurement_step_table",
    "neurosim_a",
    "noise_free_sweep",
]

GRID = 1001  # states of a card's step table
SWEEP_FRACTION = 0.99  # a NeuroSim sweep covers this fraction of the range
MAX_SWEEP = 20_000  # pulses of one sweep at most


@dataclasses.dataclass(frozen=True)
class StepTable:
    """The noise-free mean step per pulse by state (arrays of shape ``(k,)``)."""

    state: np.ndarray  # increasing states (siemens when unit == "S", else weight units)
    up: np.ndarray  # mean change of one up pulse at each state (unit)
    down: np.ndarray  # mean magnitude of the change of one down pulse (unit, > 0 when it lowers G)
    lo: float  # lower end of the range (unit)
    hi: float  # upper end of the range (unit)
    unit: str  # "S" or "1"

    def step(self, g, up: bool):
        """The interpolated step at state(s) ``g`` (clamped to the table's ends)."""
        return np.interp(g, self.state, self.up if up else self.down)


@dataclasses.dataclass(frozen=True)
class Assessment:
    """The figures of one device (units as ``unit``; see the module docstring)."""

    source: str
    kind: str  # "card" or "measurement"
    unit: str  # "S" or "1"
    figures: dict[str, Any]  # name -> value (None where undefined)
    table: StepTable
    sweeps: dict[str, np.ndarray]  # "up"/"down": the noise-free sweeps the A fit used (unit)
    cmap: ConductanceMap | None = None  # cards with a conductance window
    notes: tuple[str, ...] = ()

    def weight(self, g: float | None) -> float | None:
        """A state as a card weight (None for measurements and for None)."""
        if g is None or self.kind != "card":
            return None
        return float(self.cmap.weight(g)) if self.cmap is not None else float(g)


def noise_free_sweep(table: StepTable, up: bool, pulses: int | None = None) -> np.ndarray:
    """The noise-free sweep from one end (``lo`` up, ``hi`` down): ``pulses`` pulses (at most
    ``MAX_SWEEP``), or with ``None`` until it has covered ``SWEEP_FRACTION`` of the range; it
    stops early at the far end of the range or where the step vanishes (<= 1e-9 of the range).
    The states after 0, 1, ... pulses."""
    span = table.hi - table.lo
    g = table.lo if up else table.hi
    target = span * SWEEP_FRACTION if pulses is None else math.inf
    out = [g]
    for _ in range(MAX_SWEEP if pulses is None else min(int(pulses), MAX_SWEEP)):
        d = float(table.step(g, up))
        if d <= 1e-9 * span:
            break
        g = min(g + d, table.hi) if up else max(g - d, table.lo)
        out.append(g)
        if abs(g - out[0]) >= target or g in (table.lo, table.hi):  # covered, or at the far end
            break
    return np.asarray(out)


def _shape(x: np.ndarray, c: float) -> np.ndarray:
    """NeuroSim's normalised curve :math:`(1 - e^{-cx})/(1 - e^{-c})`, ``c = P_max / A`` (x for c = 0)."""
    if abs(c) < 1e-9:
        return x
    return np.expm1(-c * x) / np.expm1(-c)


def neurosim_a(sweep: np.ndarray) -> tuple[float, int]:
    """NeuroSim's ``A`` (pulses) of a noise-free sweep from one end, and its :math:`P_{max}`.

    The sweep is normalised to :math:`y = (G(P) - G(0)) / (G(P_{max}) - G(0))` (either
    direction) and ``c = P_max / A`` fitted by bounded least squares of
    :math:`y = (1 - e^{-c P/P_{max}}) / (1 - e^{-c})` over ``c`` in [-40, 40]; ``|c| < 1e-3``
    (a straight line within the fit) gives ``A = inf``.

    Raises:
      ValueError: a sweep of fewer than 3 states or without movement.
    """
    s = np.asarray(sweep, np.float64)
    if s.size < 3 or s[-1] == s[0]:
        raise ValueError(
            f"sweep: {s.size} states, moving {float(s[-1] - s[0]) if s.size else 0.0!r}; needs >= 3 that move"
        )
    p_max = s.size - 1
    x = np.arange(s.size) / p_max
    y = (s - s[0]) / (s[-1] - s[0])
    res = minimize_scalar(lambda c: float(np.sum((_shape(x, c) - y) ** 2)), bounds=(-40, 40), method="bounded",
                          options={"xatol": 1e-8})  # fmt: skip
    c = float(res.x)
    return (math.inf if abs(c) < 1e-3 else p_max / c), p_max


def _symmetry(table: StepTable) -> float | None:
    """The first state where the up step falls below the down step (linear interpolation)."""
    diff = table.up - table.down
    idx = np.nonzero((diff[:-1] > 0) & (diff[1:] <= 0))[0]
    if idx.size == 0:
        return None
    i = int(idx[0])
    t = diff[i] / (diff[i] - diff[i + 1])
    return float(table.state[i] + t * (table.state[i + 1] - table.state[i]))


def assess_steps(table: StepTable) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The figures of a step table (module docstring) and the two sweeps the ``A`` fit used."""
    span = table.hi - table.lo
    mid = 0.5 * (table.lo + table.hi)
    up_mid, down_mid = float(table.step(mid, True)), float(table.step(mid, False))
    mean_mid = 0.5 * (up_mid + down_mid)
    sp = _symmetry(table)
    figures: dict[str, Any] = {
        "g_min": table.lo,
        "g_max": table.hi,
        "on_off": table.hi / table.lo if table.unit == "S" and table.lo > 0 else None,
        "dg_up_low": float(table.up[0]),
        "dg_up_high": float(table.up[-1]),
        "dg_down_low": float(table.down[0]),
        "dg_down_high": float(table.down[-1]),
        "dg_mid": mean_mid,
        "states": span / mean_mid if mean_mid > 0 else None,
        "asymmetry": (up_mid - down_mid) / (up_mid + down_mid) if up_mid + down_mid > 0 else None,
        "symmetry_point": sp,
        "symmetry_fraction": None if sp is None else (sp - table.lo) / span,
    }
    sweeps = {}
    for name, up in (("up", True), ("down", False)):
        states = figures["states"]
        sweeps[name] = noise_free_sweep(table, up, None if states is None else max(2, round(states)))
        try:
            a, p_max = neurosim_a(sweeps[name])
        except ValueError:
            a, p_max = None, None
        figures[f"a_{name}"] = a
        figures[f"a_{name}_norm"] = None if a is None else a / p_max
        figures[f"p_max_{name}"] = p_max
    return figures, sweeps


def card_step_table(card: DeviceCard) -> tuple[StepTable, ConductanceMap | None]:
    """The nominal device's steps on ``GRID`` states of its nominal range; in siemens for a card
    with a conductance window (and its map), else in weight units (and None)."""
    model = card.model
    p = model.pulsed
    w = np.linspace(float(p.w_min), float(p.w_max), GRID)
    cp = nominal_crosspoints(model, (GRID,))
    up = np.asarray(model.step_up(cp, np.asarray(w, np.float32)), np.float64)
    down = np.asarray(model.step_down(cp, np.asarray(w, np.float32)), np.float64)
    cmap = ConductanceMap.of_card(card)
    if cmap is None:
        return StepTable(w, up, down, float(w[0]), float(w[-1]), "1"), None
    k = cmap.siemens_per_weight
    g = cmap.conductance_s(w)
    return StepTable(g, up * k, down * k, float(g[0]), float(g[-1]), "S"), cmap


def assess_card(card: DeviceCard) -> Assessment:
    """The figures of a card's nominal device; c2c and d2d from its ``dw_min_std``/``dw_min_dtod``."""
    table, cmap = card_step_table(card)
    figures, sweeps = assess_steps(table)
    p = card.model.pulsed
    figures["c2c"] = float(p.dw_min_std)
    figures["d2d"] = float(p.dw_min_dtod)
    notes = () if cmap is not None else (f"card {card.name} has no [physical] g_min/g_max: figures in weight units",)
    return Assessment(card.name, "card", table.unit, figures, table, sweeps, cmap, notes)


def _runs(m: Measurement) -> list[tuple[np.ndarray, int]]:
    """(rows, polarity) of each run: a reading, then readings one pulse apart after pulses of one polarity."""
    runs = []
    for seg in m.segments():
        r = seg.rows
        step_ok = np.diff(m.pulse_number[r]) == 1
        pol = m.polarity[r[1:]]
        start = 0  # index of the first step of the current run
        for j in range(1, r.size):  # step j - 1 ends at reading j
            last = j == r.size - 1
            if last or not step_ok[j] or pol[j] != pol[j - 1]:
                if step_ok[start:j].all() and j > start:
                    runs.append((r[start : j + 1], int(pol[start])))
                start = j
    return runs


def _pairs(m: Measurement, smooth: int | None) -> tuple[np.ndarray, ...]:
    """(smoothed state before, smoothed change, polarity, row; raw before, raw change, raw polarity, raw run)."""
    runs = _runs(m)
    if smooth is None:
        median = int(np.median([r.size for r, _ in runs])) if runs else 1
        smooth = 2 * (median // 100) + 1
    if not isinstance(smooth, int) or smooth < 1 or smooth % 2 == 0:
        raise ValueError(f"smooth: value {smooth!r} is not allowed; must be an odd integer >= 1 (readings averaged)")
    out: list[list[np.ndarray]] = [[] for _ in range(8)]
    kernel = np.ones(smooth) / smooth
    for k, (rows, p) in enumerate(runs):
        x = m.state[rows]
        xs = np.convolve(x, kernel, mode="valid") if x.size > smooth else x
        for i, a in enumerate((xs[:-1], np.diff(xs), np.full(xs.size - 1, p), rows[: xs.size - 1],
                               x[:-1], np.diff(x), np.full(x.size - 1, p), np.full(x.size - 1, k))):  # fmt: skip
            out[i].append(a)
    return tuple(np.concatenate(a) if a else np.empty(0) for a in out)


def _bin_values(values: np.ndarray, state: np.ndarray, which: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each bin's value at its centre: the bins' mean steps placed at their mean states and
    interpolated (linearly extrapolated past the outer ones, unless that flips the sign) onto the centres. Exact for a step
    linear in the state however the states fill a bin; empty bins are skipped."""
    bins = centres.size
    n = np.bincount(which, minlength=bins)
    full = n > 0
    xs = (np.bincount(which, state, bins) / np.maximum(n, 1))[full]
    ys = (np.bincount(which, values, bins) / np.maximum(n, 1))[full]
    out = np.interp(centres, xs, ys)
    if xs.size >= 2:
        lo, hi = centres < xs[0], centres > xs[-1]
        low = ys[0] + (centres[lo] - xs[0]) * (ys[1] - ys[0]) / (xs[1] - xs[0])
        high = ys[-1] + (centres[hi] - xs[-1]) * (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        # noisy data: an extrapolation that flips the step's sign keeps the outer bin's mean
        out[lo] = np.where(np.sign(low) == np.sign(ys[0]), low, ys[0])
        out[hi] = np.where(np.sign(high) == np.sign(ys[-1]), high, ys[-1])
    return out


def _c2c(resid: np.ndarray, use: np.ndarray, run: np.ndarray, mean_step: float) -> float | None:
    """Cycle-to-cycle std of one step relative to ``mean_step``, read noise removed by the lag-1
    covariance: with read noise :math:`\\sigma_r` on every reading, consecutive residual steps
    have :math:`\\mathrm{Var} = \\sigma_{c2c}^2 \\bar d^2 + 2\\sigma_r^2` and covariance
    :math:`-\\sigma_r^2`, so :math:`\\sigma_{c2c}^2 \\bar d^2 = \\mathrm{Var} + 2\\,\\mathrm{Cov}_1`."""
    if use.sum() < 3 or not mean_step > 0:
        return None
    r = resid - resid[use].mean()
    pair = use[:-1] & use[1:] & (run[:-1] == run[1:])
    var = float(np.mean(r[use] ** 2))
    cov = float(np.mean(r[:-1][pair] * r[1:][pair])) if pair.any() else 0.0
    return math.sqrt(max(var + 2.0 * min(cov, 0.0), 0.0)) / mean_step


def measurement_step_table(
    m: Measurement, bins: int = 10, smooth: int | None = None
) -> tuple[StepTable, dict[str, Any]]:
    """The model-free step table of a measurement and its c2c/d2d (module docstring).

    Raises:
      ValueError: fewer than 2 bins, a bad ``smooth``, or no up or no down pulse one pulse
        after a reading.
    """
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins: value {bins!r} is not allowed; must be an integer >= 2")
    before, change, pol, rows, raw_before, raw_change, raw_pol, raw_run = _pairs(m, smooth)
    for sign, name in ((1, "up (+1)"), (-1, "down (-1)")):
        if not np.any(pol == sign):
            raise ValueError(
                f"{m.source}: column 'polarity': no {name} pulse right after a reading; the figures need both directions"
            )
    lo, hi = (float(v) for v in np.percentile(m.state, [0.5, 99.5]))
    if hi <= lo:
        raise ValueError(f"{m.source}: the readings do not move (range {lo!r} .. {hi!r}); nothing to assess")
    edges = np.linspace(lo, hi, bins + 1)
    which = np.clip(np.searchsorted(edges, before, side="right") - 1, 0, bins - 1)
    up_sel, down_sel = pol > 0, pol < 0
    centres = 0.5 * (edges[:-1] + edges[1:])
    up = _bin_values(change[up_sel], before[up_sel], which[up_sel], centres)
    down = _bin_values(-change[down_sel], before[down_sel], which[down_sel], centres)
    table = StepTable(centres, up, down, lo, hi, m.unit)
    # c2c: single (raw) steps around the table's mean at their state, over the middle half of the range
    expected = np.where(raw_pol > 0, table.step(raw_before, True), -table.step(raw_before, False))
    middle = (raw_before >= lo + 0.25 * (hi - lo)) & (raw_before <= hi - 0.25 * (hi - lo))
    mean_mid = 0.5 * (float(table.step(0.5 * (lo + hi), True)) + float(table.step(0.5 * (lo + hi), False)))
    resid = raw_change - expected
    spread = {"c2c": _c2c(resid, middle, raw_run, mean_mid), "d2d": None}
    # single steps scattered over 10 mean steps: the read noise dominates them (see assess_measurement)
    spread["scatter_per_step"] = float(np.std(resid[middle]) / mean_mid) if middle.any() and mean_mid > 0 else None
    if m.device is not None and len(m.devices()) >= 2:  # each device's mean up step, middle half of the range
        labels = m.device[rows]
        band = up_sel & (before >= lo + 0.25 * (hi - lo)) & (before <= hi - 0.25 * (hi - lo))
        per = [np.mean(change[band & (labels == d)]) for d in m.devices() if np.any(band & (labels == d))]
        if len(per) >= 2 and np.mean(per) > 0:
            spread["d2d"] = float(np.std(per) / np.mean(per))
    return table, spread


def assess_measurement(m: Measurement, bins: int = 10, smooth: int | None = None) -> Assessment:
    """The model-free figures of a measurement (``measurement_step_table``)."""
    table, spread = measurement_step_table(m, bins, smooth)
    figures, sweeps = assess_steps(table)
    figures.update(spread)
    notes = [n for n in (m.note(),) if n]
    if m.unit == "1":
        notes.append(f"{m.source}: normalised readings (weight column): figures in weight units, no on/off ratio")
    if figures["c2c"] is not None:
        notes.append("c2c: scatter of single steps with the read noise removed by their lag-1 covariance")
    if (figures.get("scatter_per_step") or 0) > 10:
        notes.append(
            f"single steps scatter over {figures['scatter_per_step']:.0f} mean steps: read noise dominates and the "
            "moment estimate of c2c is unreliable; analogsim fit's state-space estimate separates the two"
        )
    return Assessment(m.source, "measurement", m.unit, figures, table, sweeps, None, tuple(notes))
