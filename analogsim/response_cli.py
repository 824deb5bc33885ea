"""``analogsim response``: the pulse response of a population of devices (DESIGN.md, 'Command line').

``analogsim response --device CARD [--pulses +N,-M,...] [--devices K] [--start S] [--noise-free]
[--seed N] [--plot F.png] [--force] [--json]`` simulates K devices (device-to-device variation
drawn per device) receiving single pulses in order and prints, per pulse, the mean and spread of
the state and of the fraction of the nominal range
(``device_models.simulate_response``). The CLI only parses and checks flags, then calls
the library. Bad input prints ``error: <one line>`` on stderr and returns 2; an existing
``--plot`` file is never overwritten without ``--force``.

Units: a card with ``[physical] g_min, g_max`` is also shown in conductance (siemens inside,
printed with the SI prefix of the device's ``g_max``: ``927 pS``, not ``0.00092706 uS``), through
the card's linear weight-to-conductance map (``device_models.ConductanceMap``). ``--start``
takes a weight (``-0.3``) or a conductance with its unit (``2467uS``, ``0.5 mS``).
``--pulses`` takes counts as users write them: ``+200,-200``, ``200,-200`` (an unsigned count
potentiates) and depression first, ``--pulses -150,+185``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import jax
import numpy as np

from device_models import CardError, expected_response, load_card, parse_pulse_spec, simulate_response
from device_models.conductance import ConductanceMap

__all__ = [
    "DEFAULT_DEVICES",
    "DEFAULT_PULSES",
    "MAX_DEVICES",
    "add_response_parser",
    "parse_counts",
    "response",
    "run_response",
]

DEFAULT_PULSES = "+200,-200"
DEFAULT_DEVICES = 2000  # DESIGN.md: mean and spread over 2000 devices
MAX_DEVICES = 1_000_000  # more would not fit the per-pulse state in memory comfortably
# argparse takes a value that starts with "-" for an option unless it looks like a negative
# number; a signed count list (-150,+185) is one too on the response parser
_NEGATIVE_VALUE = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d+\s*,[\s\d,+-]*$")


class ResponseError(ValueError):
    """A bad ``analogsim response`` argument; the message names the flag, the value and what is allowed."""


def add_response_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``response`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    r = subparsers.add_parser("response", help="pulse response (mean and spread) of K devices")
    r.add_argument("--device", required=True, help="device card: built-in name or TOML path")
    # depression first (--pulses -150,+185) is a value, not an option (argparse's matcher of
    # negative numbers, widened on this parser only; it has no option that looks like a number)
    r._negative_number_matcher = _NEGATIVE_VALUE
    r.add_argument(
        "--pulses",
        default=DEFAULT_PULSES,
        help=f"counts in order, + up, - down: +200,-200 or -150,+185 (default {DEFAULT_PULSES})",
    )
    r.add_argument("--devices", default=str(DEFAULT_DEVICES), help=f"number of devices K (default {DEFAULT_DEVICES})")
    r.add_argument(
        "--start",
        default=None,
        help="initial state: a weight (-0.3) or a conductance (2467uS; cards with g_min/g_max); default the lower bound",
    )
    r.add_argument("--noise-free", action="store_true", help="no device-to-device and no cycle-to-cycle variation")
    r.add_argument("--seed", default="0", help="PRNG seed (integer)")
    r.add_argument(
        "--plot", default=None, metavar="F.png", help="draw mean +- std of the weight (and conductance) per pulse"
    )
    r.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    r.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return r


def _int_flag(flag: str, text, low: int, high: int | None = None) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" + (f" and <= {high}" if high is not None else "")
        raise ResponseError(f"{flag}: value {text!r} is not allowed; must be {allowed}")
    return value


def parse_counts(text: str) -> list[int]:
    """Pulse counts as users write them: ``"+200,-200"``, ``"200, -200"`` (an unsigned count
    potentiates), ``"-150,+185"`` (depression first); ``[200, -200]`` etc.

    Raises:
      ValueError: naming ``--pulses``, the text and the allowed syntax.
    """
    items = [t.strip() for t in str(text).split(",")]
    signed = ",".join(t if t[:1] in "+-" else f"+{t}" for t in items)
    try:
        return parse_pulse_spec(signed)
    except ValueError:
        raise ResponseError(
            f"--pulses: value {text!r} is not allowed; use comma-separated non-zero counts, + up and - down, "
            "e.g. +200,-200 or -150,+185"
        ) from None


def _start_flag(text) -> float | str | None:
    """A weight (a float), a conductance text to convert with the card (a str), or None."""
    if text is None:
        return None
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        if text[-1:] in ("S", "u", "m", "n", "p", "µ"):  # 2467uS, 0.5 mS (checked with the card)
            return text
        value = math.nan
    if not math.isfinite(value):
        raise ResponseError(
            f"--start: value {text!r} is not allowed; must be a finite weight (-0.3) or a conductance (2467uS)"
        )
    return value


def _start_weight(start: float | str | None, card, cmap: ConductanceMap | None) -> float | None:
    """``--start`` as a weight: conductances go through the card's map (within its window)."""
    if not isinstance(start, str):
        return start
    if cmap is None:
        raise ResponseError(
            f"--start: value {start!r} is not allowed; card {card.name} has no [physical] g_min/g_max, give a weight"
        )
    w = cmap.parse_weight(start, what="--start")
    lo, hi = sorted((cmap.g_min_s, cmap.g_max_s))
    if not lo * (1 - 1e-9) <= cmap.conductance_s(w) <= hi * (1 + 1e-9):
        raise ResponseError(
            f"--start: value {start!r} is not allowed; must lie within card {card.name}'s conductance window "
            f"[{cmap.show(lo)}, {cmap.show(hi)}]"
        )
    return float(min(max(w, cmap.w_min), cmap.w_max))


def response(
    device: str,
    pulses: str = DEFAULT_PULSES,
    devices: int = DEFAULT_DEVICES,
    start: float | str | None = None,
    noise_free: bool = False,
    seed: int = 0,
) -> dict:
    """Run the response simulation of card ``device`` and return the JSON-ready result.

    Args:
      start: a weight, or a conductance as text with its unit (``"2467uS"``) for a card with
        ``[physical] g_min, g_max``; None: each device's lower bound.

    Returns:
      ``{"device", "pulses", "devices", "noise_free", "seed", "start", "polarity",
      "fraction": {"mean", "std"}, "state": {"mean", "std", "unit"}, "expected": {"fraction",
      "state"}}``, lists with one entry per pulse taken after that pulse; ``expected`` is the
      noise-free nominal device. A card with a conductance window adds ``"conductance":
      {"mean", "std", "unit": "S"}``, ``expected["conductance"]``, ``"g_range_s"`` and
      ``"start_s"`` (siemens).

    Raises:
      CardError: the card cannot be loaded.
      ValueError: bad pulses, devices or start.
    """
    card = load_card(device)
    counts = parse_counts(pulses) if isinstance(pulses, str) else parse_pulse_spec(",".join(f"{c:+d}" for c in pulses))
    cmap = ConductanceMap.of_card(card)
    start = _start_weight(start, card, cmap)
    model = card.model
    lo, hi = float(model.pulsed.w_min), float(model.pulsed.w_max)
    if start is not None and not lo <= start <= hi:
        raise ResponseError(
            f"--start: value {start!r} is not allowed; must lie within card {card.name}'s nominal range [{lo}, {hi}]"
        )
    res = simulate_response(model, counts, devices, start, noise_free, key=jax.random.key(seed))
    nominal = expected_response(model, counts, start)
    out = {
        "device": card.name,
        "model": card.model_name,
        "pulses": counts,
        "devices": int(devices),
        "noise_free": bool(noise_free),
        "seed": int(seed),
        "start": start,
        "polarity": res.polarity.astype(int).tolist(),
        "fraction": {"mean": res.fraction_mean.tolist(), "std": res.fraction_std.tolist()},
        "state": {"mean": res.state_mean.tolist(), "std": res.state_std.tolist(), "unit": "1"},
        "expected": {"fraction": ((nominal - lo) / (hi - lo)).tolist(), "state": nominal.tolist()},
        "nominal_range": [lo, hi],
    }
    if cmap is not None:
        k = cmap.siemens_per_weight
        out["conductance"] = {
            "mean": cmap.conductance_s(res.state_mean).tolist(),
            "std": (abs(k) * res.state_std).tolist(),
            "unit": "S",
        }
        out["expected"]["conductance"] = cmap.conductance_s(nominal).tolist()
        out["g_range_s"] = [cmap.g_min_s, cmap.g_max_s]
        out["start_s"] = None if start is None else float(cmap.conductance_s(start))
    return out


def _plot(result: dict, path: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no backend is chosen or changed

    mean = np.asarray(result["state"]["mean"])
    std = np.asarray(result["state"]["std"])
    n = np.arange(1, mean.size + 1)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.fill_between(n, mean - std, mean + std, alpha=0.3, label="mean \u00b1 std")
    ax.plot(n, mean, lw=1.5, label=f"mean of {result['devices']} devices")
    ax.plot(n, result["expected"]["state"], "k--", lw=1, label="noise-free nominal device")
    ax.set_xlabel("pulse number")
    ax.set_ylabel("weight (normalised)")
    if "g_range_s" in result:  # the same curve read in conductance on the right-hand axis
        g0, g1 = result["g_range_s"]
        w0, w1 = result["nominal_range"]
        factor, prefix = ConductanceMap(g0, g1, w0, w1).prefix()
        k = (g1 - g0) / (w1 - w0) / factor
        right = ax.secondary_yaxis(
            "right", functions=(lambda w: g0 / factor + (w - w0) * k, lambda g: w0 + (g - g0 / factor) / k)
        )
        right.set_ylabel(f"conductance ({prefix}S)")
    ax.set_title(f"{result['device']}: pulses {','.join(f'{c:+d}' for c in result['pulses'])}")
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_response(args: argparse.Namespace) -> int:
    """Run ``analogsim response`` from parsed ``args``; return the exit status (0, or 2 on bad input)."""
    try:
        devices = _int_flag("--devices", args.devices, 1, MAX_DEVICES)
        seed = _int_flag("--seed", args.seed, 0)
        start = _start_flag(args.start)
        parse_counts(args.pulses)  # syntax first, before loading anything
        plot = getattr(args, "plot", None)
        if plot:
            plot_path = Path(plot)
            if plot_path.exists() and not getattr(args, "force", False):
                raise ResponseError(f"--plot: file {plot!r} exists; pass --force to overwrite it")
            if not plot_path.parent.is_dir():
                raise ResponseError(
                    f"--plot: value {plot!r} is not allowed; directory {str(plot_path.parent)!r} does not exist"
                )
            if plot_path.suffix.lower() not in (".png", ".pdf", ".svg"):
                raise ResponseError(f"--plot: value {plot!r} is not allowed; the file must end in .png, .pdf or .svg")
        result = response(args.device, args.pulses, devices, start, bool(args.noise_free), seed)
        if plot:
            _plot(result, plot)
    except (CardError, ValueError, OSError) as err:
        print(f"error: {err}".replace("\n", " "), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
        return 0
    print("\n".join(_lines(result)))
    if plot:
        print(f"plot written to {plot}")
    return 0


def _lines(result: dict) -> list[str]:
    """The text report: one line per run of pulses, weight and (with a window) conductance."""
    frac, state = result["fraction"], result["state"]
    cmap = None
    if "g_range_s" in result:
        cmap = ConductanceMap(*result["g_range_s"], *result["nominal_range"])
    lines = [
        f"{result['device']} ({result['model']}): {result['devices']} devices, pulses "
        f"{','.join(f'{c:+d}' for c in result['pulses'])}{', noise-free' if result['noise_free'] else ''}"
    ]
    if cmap is not None:
        lines.append(
            f"conductance window {cmap.show(cmap.g_min_s)} .. {cmap.show(cmap.g_max_s)} "
            f"= weights {cmap.w_min:g} .. {cmap.w_max:g}"
        )
    ends = np.cumsum([abs(c) for c in result["pulses"]])
    for end in ends:
        i = int(end) - 1
        line = (
            f"after pulse {end}: fraction {frac['mean'][i]:.4f} \u00b1 {frac['std'][i]:.4f} "
            f"(noise-free nominal {result['expected']['fraction'][i]:.4f}), weight {state['mean'][i]:.4g} \u00b1 {state['std'][i]:.3g}"
        )
        if cmap is not None:
            g = result["conductance"]
            line += f", G {cmap.show(g['mean'][i])} \u00b1 {cmap.show(g['std'][i], 3)}"
        lines.append(line)
    return lines
