"""Plumbing shared by the experiment scripts: the common flags, the no-overwrite rule, and
writing ``results.json`` beside the plot.

Each script builds its own ``argparse`` parser from ``parser`` (which adds ``--quick``,
``--tiny``, ``--out`` and ``--force``), then hands its ``run`` and ``plot`` functions to
``write_results``. Nothing here is part of the library's API; the scripts use only
``analogsim`` and ``device_models`` for the science.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from analogsim import load_dataset


def parser(name: str, doc: str, quick_help: str, tiny_help: str) -> argparse.ArgumentParser:
    """An argument parser with the flags every experiment takes."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--tiny", action="store_true", help=f"for the test suite: {tiny_help}")
    ap.add_argument("--out", default=f"results/{name}", help="output directory (default: %(default)s)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing results.json")
    return ap


def add_update_mode(ap: argparse.ArgumentParser) -> None:
    """``--update-mode``, ``exact`` by default: one rung for every point of a sweep (``auto`` picks
    per card, ``gaussian`` for fine steps and ``exact`` for coarse ones, and the two differ by up
    to a point on RT-MNIST, which would confound the comparison)."""
    ap.add_argument(
        "--update-mode",
        default="exact",
        choices=("exact", "auto", "gaussian", "expected"),
        help="rung of every training run (default %(default)s: the same rung for every point)",
    )


def mode_of(args: argparse.Namespace) -> str:
    return "tiny" if args.tiny else "quick" if args.quick else "full"


def dataset_for(mode: str, data: str | None, command: str):
    """The digits set for --quick/--tiny; RT-MNIST (``--data``) for the full mode."""
    if mode != "full":
        return load_dataset("digits")
    if not data:
        raise SystemExit(
            f"error: the full run trains on RT-MNIST: give --data PATH/mnist10k.npz (or use --quick); e.g. {command}"
        )
    return load_dataset(data)


def config_record(epochs: int, hidden, lr: float, update_mode: str, **extra) -> dict:
    """The training settings every ``results.json`` records (batch 64 throughout)."""
    return {"epochs": epochs, "hidden": list(hidden), "lr": lr, "batch_size": 64, "update_mode": update_mode, **extra}


def write_results(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], dict],
    plot: Callable[[dict, Path], None],
    summary: Callable[[dict], str] | None = None,
) -> int:
    """Run the experiment and write ``results.json`` and ``<name>.png`` under ``args.out``.

    An existing ``results.json`` is kept (exit status 2) unless ``--force``: a finished run is
    never overwritten by accident.
    """
    out = Path(args.out)
    json_path, png_path = out / "results.json", out / f"{name}.png"
    if json_path.exists() and not args.force:
        print(f"error: {json_path} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    result = run(args)
    out.mkdir(parents=True, exist_ok=True)
    tmp = json_path.with_name(json_path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(json_path)
    plot(result, png_path)
    if summary is not None:
        print(summary(result))
    print(f"wrote {json_path} and {png_path}")
    return 0
