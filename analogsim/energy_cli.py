"""``analogsim energy``: summarise, re-price and plot saved energy reports; ``analogsim energy
project``: project a large training run from a measured one (``analogsim.projection``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from device_models.units import si

from .training.config import ConfigError

__all__ = ["add_energy_parser", "project_parser", "report_lines", "run_energy", "run_project"]

BASELINE_NAMES = {
    "accelerator": "digital accelerator, same technology",
    "gpu-bf16": "GPU, BF16 tensor cores",
    "gpu-fp32": "GPU, FP32",
}


def add_energy_parser(sub) -> None:
    e = sub.add_parser(
        "energy",
        help="summarise, re-price (what-if) and plot saved energy reports; 'energy project --help': project a "
        "large training run",
    )
    e.add_argument("reports", nargs="+", metavar="REPORT", help="FILE.json written by analogsim train --energy-report")
    e.add_argument("--device", default=None, help="re-price the same counts with this card's prices (what-if)")
    e.add_argument("--plot", default=None, metavar="F.png", help="draw the breakdowns side by side")
    e.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def report_lines(rep: dict[str, Any]) -> list[str]:
    """The lines a person reads first: energy by kind, the baselines (the headline named), time on chip."""
    kinds = ", ".join(f"{k} {si(v, 'J')}" for k, v in rep["by_kind"].items() if v > 0)
    lines = [f"energy {si(rep['total_j'], 'J')} ({kinds})"]
    baselines = rep.get("baselines") or {"gpu-fp32": {"j": rep["digital_baseline_j"]}}
    head = (rep.get("digital_baseline") or {}).get("name", "gpu-fp32")
    parts = []
    for name, b in baselines.items():
        ratio = f"{b['j'] / rep['total_j']:,.1f}x" if rep["total_j"] > 0 else "-"
        parts.append(f"{BASELINE_NAMES.get(name, name)} {si(b['j'], 'J')} ({ratio})")
    lines.append(
        f"digital baselines (x the analog run): {'; '.join(parts)}; headline: {BASELINE_NAMES.get(head, head)}"
    )
    if rep.get("time_s"):
        rate = rep.get("chip_samples_per_s")
        per = f", {rate:,.0f} samples/s" if rate else ""
        lines.append(
            f"time on chip {si(rep['time_s'], 's')}{per} (layers in sequence, tiles in parallel, no pipelining)"
        )
    return lines


def run_energy(args) -> int:
    from .energy_report import load_report, plot_report, reprice

    if args.plot and Path(args.plot).exists() and not args.force:
        raise ConfigError(f"--plot: file {args.plot!r} exists; pass --force to overwrite it")
    reports = {}
    for path in args.reports:
        report = load_report(path)
        label = report.get("device_card") or "run"
        if label in reports or len(args.reports) > 1:
            label = f"{Path(path).stem}: {label}"
        reports[label] = report
        if args.device:
            what_if = reprice(report, args.device)
            reports[f"{label} priced as {what_if['device_card']}"] = what_if
    for name, rep in reports.items():
        print(f"{name}:")
        for line in report_lines(rep):
            print(f"  {line}")
    if args.plot:
        plot_report(reports, args.plot)
        print(f"plot written to {args.plot}")
    if args.json:
        keys = ("total_j", "by_kind", "by_layer", "time_s", "digital_baseline_j", "baselines")
        print(json.dumps({n: {k: r.get(k) for k in keys} for n, r in reports.items()}))
    return 0


def project_parser(parser_class) -> argparse.ArgumentParser:
    from .projection import SHAPES

    p = parser_class(
        prog="analogsim energy project",
        description="Project the energy, time on chip and CO2e of training a network on the chip, from the event "
        "rates of a measured run, against the digital baselines; every assumption is printed.",
    )
    p.add_argument(
        "--network",
        required=True,
        help=f"{', '.join(SHAPES)}, dense layers (784x256,256x128,128x10) or a parameter count (1e9)",
    )
    p.add_argument("--samples", type=float, default=None, help="training samples or tokens (default: the shape's own)")
    p.add_argument("--from", dest="report", required=True, metavar="REPORT", help="energy report of a measured run")
    p.add_argument("--device", default=None, help="device card (default: the report's)")
    p.add_argument("--periphery", default=None, help="periphery card (default: the report's)")
    p.add_argument("--batch", type=int, default=64, help="samples per optimizer step of the accelerator baseline")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def run_project(args) -> int:
    from .energy_report import load_report
    from .periphery_card import load_periphery_card
    from .projection import parse_network, project

    try:
        shape = parse_network(args.network)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    samples = args.samples if args.samples is not None else shape.tokens
    if samples is None or not samples > 0:
        raise ConfigError(
            f"--samples: value {args.samples!r} is not allowed; must be > 0 (no default for this network)"
        )
    if args.batch < 1:
        raise ConfigError(f"--batch: value {args.batch} is not allowed; must be an integer >= 1")
    report = load_report(args.report)
    periphery = load_periphery_card(args.periphery or report.get("periphery_card") or "periphery-default")
    try:
        r = project(shape, samples, report, periphery, device=args.device, batch=args.batch)
    except ValueError as err:
        raise ConfigError(f"{args.report}: {err}") from None
    print(f"projected training of {r['network']} ({r['parameters']:,.0f} parameters) on {samples:,.0f} samples/tokens:")
    kinds = ", ".join(f"{k} {si(v, 'J')}" for k, v in r["by_kind"].items() if v > 0)
    print(f"  chip: {si(r['total_j'], 'J')} ({r['total_j'] / 3.6e6:,.4g} kWh; {kinds}), {r['co2e_kg']:,.4g} kg CO2e")
    days = r["time_s"] / 86400
    parts = r["time_by_part"]
    print(
        f"  time on one chip: {si(r['time_s'], 's')} ({days:,.3g} days: arrays {si(parts['arrays'], 's')}, "
        f"digital work {si(parts['digital'], 's')})"
    )
    for name, j in r["baselines"].items():
        print(
            f"  {BASELINE_NAMES[name]}: {si(j, 'J')} ({j / 3.6e6:,.4g} kWh, {j / r['total_j']:,.1f}x the chip), "
            f"{r['baselines_co2e_kg'][name]:,.4g} kg CO2e"
        )
    if r["reference"]:
        ref = r["reference"]
        print(
            f"  for scale, published: {ref['energy_j'] / 3.6e6:,.0f} kWh, {ref['co2e_kg']:,.0f} kg CO2e ({ref['source']})"
        )
    print("assumptions:")
    for line in r["assumptions"]:
        print(f"  - {line}")
    if args.json:
        print(json.dumps(r))
    return 0
