"""``analogsim response``: the pulse response of a population of devices (DESIGN.md, 'Command line').

``analogsim response --device CARD [--pulses +N,-M,...] [--devices K] [--start S] [--noise-free]
[--seed N] [--plot F.png] [--force] [--json]`` simulates K devices (device-to-device variation
drawn per device) receiving single pulses in order and prints, per pulse, the mean and spread of
the state and of the fraction of the nominal range
(``device_models.simulate_response``). The CLI only parses and checks flags, then calls
the library. Bad input prints ``error: <one line>`` on stderr and returns 2; an existing
``--plot`` file is never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import jax
import numpy as np

from device_models import CardError, expected_response, load_card, parse_pulse_spec, simulate_response

__all__ = ["DEFAULT_DEVICES", "DEFAULT_PULSES", "MAX_DEVICES", "add_response_parser", "response", "run_response"]

DEFAULT_PULSES = "+200,-200"
DEFAULT_DEVICES = 2000  # DESIGN.md: mean and spread over 2000 devices
MAX_DEVICES = 1_000_000  # more would not fit the per-pulse state in memory comfortably


class ResponseError(ValueError):
    """A bad ``analogsim response`` argument; the message names the flag, the value and what is allowed."""


def add_response_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``response`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    r = subparsers.add_parser("response", help="pulse response (mean and spread) of K devices")
    r.add_argument("--device", required=True, help="device card: built-in name or TOML path")
    r.add_argument(
        "--pulses", default=DEFAULT_PULSES, help=f"signed counts in order, e.g. +200,-200 (default {DEFAULT_PULSES})"
    )
    r.add_argument("--devices", default=str(DEFAULT_DEVICES), help=f"number of devices K (default {DEFAULT_DEVICES})")
    r.add_argument("--start", default=None, help="initial state in the model's units (default: the lower bound)")
    r.add_argument("--noise-free", action="store_true", help="no device-to-device and no cycle-to-cycle variation")
    r.add_argument("--seed", default="0", help="PRNG seed (integer)")
    r.add_argument("--plot", default=None, metavar="F.png", help="draw mean +- std of the fraction per pulse")
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


def _start_flag(text) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise ResponseError(f"--start: value {text!r} is not allowed; must be a finite number (normalised weight)")
    return value


def response(
    device: str,
    pulses: str = DEFAULT_PULSES,
    devices: int = DEFAULT_DEVICES,
    start: float | None = None,
    noise_free: bool = False,
    seed: int = 0,
) -> dict:
    """Run the response simulation of card ``device`` and return the JSON-ready result.

    Returns:
      ``{"device", "pulses", "devices", "noise_free", "seed", "start", "polarity",
      "fraction": {"mean", "std"}, "state": {"mean", "std", "unit"}, "expected": {"fraction",
      "state"}}``, lists with one entry per pulse taken after that pulse; ``expected`` is the
      noise-free nominal device.

    Raises:
      CardError: the card cannot be loaded.
      ValueError: bad pulses, devices or start.
    """
    card = load_card(device)
    counts = parse_pulse_spec(pulses)
    model = card.model
    lo, hi = float(model.pulsed.w_min), float(model.pulsed.w_max)
    if start is not None and not lo <= start <= hi:
        raise ResponseError(
            f"--start: value {start!r} is not allowed; must lie within card {card.name}'s nominal range [{lo}, {hi}]"
        )
    res = simulate_response(model, counts, devices, start, noise_free, key=jax.random.key(seed))
    nominal = expected_response(model, counts, start)
    return {
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


def _plot(result: dict, path: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: no backend is chosen or changed

    mean = np.asarray(result["fraction"]["mean"])
    std = np.asarray(result["fraction"]["std"])
    n = np.arange(1, mean.size + 1)
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    ax.fill_between(n, mean - std, mean + std, alpha=0.3, label="mean \u00b1 std")
    ax.plot(n, mean, lw=1.5, label=f"mean of {result['devices']} devices")
    ax.plot(n, result["expected"]["fraction"], "k--", lw=1, label="noise-free nominal device")
    ax.set_xlabel("pulse number")
    ax.set_ylabel("fraction of the nominal range")
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
        parse_pulse_spec(args.pulses)  # syntax first, before loading anything
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
    frac, state = result["fraction"], result["state"]
    print(
        f"{result['device']} ({result['model']}): {result['devices']} devices, pulses "
        f"{','.join(f'{c:+d}' for c in result['pulses'])}{', noise-free' if result['noise_free'] else ''}"
    )
    ends = np.cumsum([abs(c) for c in result["pulses"]])
    for end in ends:
        i = int(end) - 1
        print(
            f"after pulse {end}: fraction {frac['mean'][i]:.4f} \u00b1 {frac['std'][i]:.4f} "
            f"(noise-free nominal {result['expected']['fraction'][i]:.4f}), state {state['mean'][i]:.4g} \u00b1 {state['std'][i]:.3g}"
        )
    if plot:
        print(f"plot written to {plot}")
    return 0
