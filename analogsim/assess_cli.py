"""``analogsim assess CARD_OR_CSV``: a device physicist's first questions, and what to train with.

``analogsim assess CARD_OR_CSV [--no-train] [--epochs N] [--seed N] [--read-voltage V]
[--bins N] [--fit-model NAME] [--plot F.png] [--force] [--json]``

prints the device's conductance range and on/off ratio, the step per pulse at both ends (up and
down), the number of states at the operating pulse, the up/down asymmetry, NeuroSim's
nonlinearity ``A`` of both branches, the symmetry point, and the cycle-to-cycle and
device-to-device spread (``analogsim.assess``); then, unless ``--no-train``, short training runs
on the built-in digits set with SGD, SGD against the symmetry point, chopped TTv2 and mixed
precision (``analogsim.assess_training``), and a recommendation with its reasons.

Inputs: a card (a built-in name or a TOML path); a folder holding CrossSim's
``dG_increasing.txt`` and ``dG_decreasing.txt`` (``device_models.crosssim_lut``); a NeuroSim
description, a file with an ``A_LTP`` key (``device_models.neurosim``); or a ``.csv``.
``--save-card F.toml`` writes the card made from a CSV, CrossSim or NeuroSim input, for
``analogsim train --device F.toml``. A ``.csv`` input is a pulse measurement (``device_models.measurements``; ``--read-voltage``
for a current column without a ``read_voltage_v`` column): its figures are model-free, and
its training runs, only with ``--train``, use a card fitted with ``device_models.fit_model``
(``--fit-model``, default ``piecewise-step``: 20 s for the 2,000 readings of the Gong 2018 file
and 243 s for 53 devices of 500 pulses on this project's CPU, hence opt-in);
``--save-card`` fits the card without training. Bad input prints ``error: <one line>`` on stderr and
returns 2; an existing ``--plot`` file is never overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from device_models import (
    CardError,
    crosssim_lut_card,
    fit_model,
    load_card,
    load_measurement,
    neurosim_card,
    parse_card,
)
from device_models.units import parse_quantity, si_scale

from .assess import Assessment, assess_card, assess_measurement, neurosim_a
from .assess_training import diagnose_training, recommend

__all__ = ["add_assess_parser", "assessment_lines", "run_assess"]


class AssessError(ValueError):
    """A bad ``analogsim assess`` argument; the message names the flag, the value and what is allowed."""


def add_assess_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``assess`` sub-command to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    a = subparsers.add_parser("assess", help="device figures (range, states, asymmetry, ...) and what to train with")
    a.add_argument(
        "source",
        metavar="CARD_OR_CSV",
        help="device card (built-in name or TOML), measurement .csv, CrossSim table folder or NeuroSim description",
    )
    a.add_argument("--no-train", action="store_true", help="the figures only, no training runs")
    a.add_argument(
        "--train", action="store_true", help="train on a CSV too (fits a card first; minutes on large files)"
    )
    a.add_argument("--epochs", default="3", help="epochs of each training run (default 3)")
    a.add_argument("--seed", default="0", help="PRNG seed of the training runs (integer)")
    a.add_argument(
        "--read-voltage", default=None, metavar="V", help="read voltage of a CSV's current column (0.1 or 100mV)"
    )
    a.add_argument("--bins", default="10", help="state bins of a CSV's step table (default 10)")
    a.add_argument("--fit-model", default="piecewise-step", help="model fitted to a CSV for the training runs")
    a.add_argument(
        "--save-card",
        default=None,
        metavar="F.toml",
        help="write the card fitted to a CSV or read from CrossSim/NeuroSim",
    )
    a.add_argument("--plot", default=None, metavar="F.png", help="draw sweeps, steps by state and training results")
    a.add_argument("--force", action="store_true", help="overwrite an existing --plot file")
    a.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return a


def _int_flag(flag: str, text, low: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        value = None
    if value is None or value < low:
        raise AssessError(f"{flag}: value {text!r} is not allowed; must be an integer >= {low}")
    return value


def _check_plot(plot: str | None, force: bool) -> None:
    if not plot:
        return
    path = Path(plot)
    if path.exists() and not force:
        raise AssessError(f"--plot: file {plot!r} exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise AssessError(f"--plot: value {plot!r} is not allowed; directory {str(path.parent)!r} does not exist")
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise AssessError(f"--plot: value {plot!r} is not allowed; the file must end in .png, .pdf or .svg")


def _is_csv(source: str) -> bool:
    return source.lower().endswith(".csv")


def _scale(a: Assessment) -> tuple[float, str]:
    """The factor and unit text of this device's states: the SI prefix of its upper end, or weights."""
    if a.unit != "S":
        return 1.0, "w"
    factor, prefix = si_scale(a.table.hi)
    return factor, f"{prefix}S"


def _show(a: Assessment, value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    factor, unit = _scale(a)
    return f"{value / factor:.{digits}g} {unit}"


def _a_text(a: Assessment, name: str) -> str:
    f = a.figures
    value = f[f"a_{name}"]
    if value is None:
        return f"{name}: -"
    if math.isinf(value):
        return f"{name}: linear (A = inf, Pmax {f[f'p_max_{name}']})"
    return f"{name}: {value:.4g} pulses (A/Pmax {f[f'a_{name}_norm']:.3g}, Pmax {f[f'p_max_{name}']})"


def assessment_lines(a: Assessment) -> list[str]:
    """The figures as text, one line per question."""
    f = a.figures
    on_off = f" (on/off {f['on_off']:.3g})" if f["on_off"] is not None else ""
    sp = f["symmetry_point"]
    sp_text = "none (the up and down steps do not cross: no drift to one state)"
    if sp is not None:
        w = a.weight(sp)
        w_text = f" = w {w:.3g}" if w is not None and a.unit == "S" else ""
        sp_text = f"{_show(a, sp)}{w_text} ({100 * f['symmetry_fraction']:.0f}% of the range)"
    spread = " ".join(
        f"{k} {f[k]:.3g}" if f[k] is not None else f"{k} -" for k in ("c2c", "d2d")
    )  # relative to the step
    lines = [
        f"{a.source} ({a.kind})",
        f"  range            {_show(a, f['g_min'])} .. {_show(a, f['g_max'])}{on_off}",
        f"  step up          {_show(a, f['dg_up_low'])} at the low end, {_show(a, f['dg_up_high'])} at the high end",
        f"  step down        {_show(a, f['dg_down_low'])} at the low end, {_show(a, f['dg_down_high'])} at the high end",
        f"  states           {f['states']:.0f} at the operating pulse (mean step {_show(a, f['dg_mid'])} at mid-range)"
        if f["states"] is not None
        else "  states           - (no step at mid-range)",
        f"  asymmetry        {f['asymmetry']:+.3f} ((up - down)/(up + down) at mid-range)"
        if f["asymmetry"] is not None
        else "  asymmetry        -",
        f"  NeuroSim A       {_a_text(a, 'up')}; {_a_text(a, 'down')}",
        f"  symmetry point   {sp_text}",
        f"  spread           {spread} (std relative to the step: cycle-to-cycle, device-to-device)",
    ]
    return lines + [f"  note: {n}" for n in a.notes]


def _plot(a: Assessment, training: list[dict] | None, path: str) -> None:
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no backend is chosen or changed

    from .assess import _shape

    factor, unit = _scale(a)
    panels = 3 if training else 2
    fig = Figure(figsize=(5 * panels, 4))
    axes = fig.subplots(1, panels)
    for name, colour in (("up", "C0"), ("down", "C3")):
        s = a.sweeps[name]
        axes[0].plot(np.arange(s.size), s / factor, color=colour, lw=1.5, label=f"{name} (noise-free)")
        if s.size >= 3 and s[-1] != s[0]:
            value, p_max = neurosim_a(s)
            x = np.arange(s.size) / p_max
            fit = s[0] + (s[-1] - s[0]) * _shape(x, 0.0 if math.isinf(value) else p_max / value)
            axes[0].plot(np.arange(s.size), fit / factor, "k--", lw=1, label=f"NeuroSim fit, {name}")
    axes[0].set(xlabel="pulses from the end of the range", ylabel=f"state ({unit})", title=Path(a.source).name)
    axes[0].legend(loc="best", fontsize=8)
    t = a.table
    axes[1].plot(t.state / factor, t.up / factor, "C0", label="up step")
    axes[1].plot(t.state / factor, t.down / factor, "C3", label="down step (magnitude)")
    if a.figures["symmetry_point"] is not None:
        axes[1].axvline(a.figures["symmetry_point"] / factor, color="k", ls=":", label="symmetry point")
    axes[1].set(xlabel=f"state ({unit})", ylabel=f"step per pulse ({unit})")
    axes[1].legend(loc="best", fontsize=8)
    if training:
        labels = [r["label"] for r in training]
        axes[2].barh(labels, [r["test_accuracy"] for r in training], color="C2")
        axes[2].set(xlabel=f"digits test accuracy after {len(training[0]['epoch_test_accuracy'])} epochs", xlim=(0, 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _converted_card(source: str) -> str | None:
    """The card text of a CrossSim table folder or a NeuroSim description; None for a card."""
    path = Path(source)
    if path.is_dir():
        name = path.name.replace(" ", "-") or "crosssim-lut"
        return crosssim_lut_card(path / "dG_increasing.txt", path / "dG_decreasing.txt", name=name)
    if (
        path.is_file()
        and path.stat().st_size < 100_000
        and "A_LTP" in path.read_text(encoding="utf-8", errors="replace")
    ):
        return neurosim_card(path)
    return None


def _assess(args):
    """(the assessment, the measurement or None, the converted card's text or None)."""
    bins = _int_flag("--bins", args.bins, 2)
    if _is_csv(args.source):
        rv = None if args.read_voltage is None else parse_quantity(args.read_voltage, "V", what="--read-voltage")
        m = load_measurement(args.source, read_voltage_v=rv)
        return assess_measurement(m, bins=bins), m, None
    if args.read_voltage is not None:
        raise AssessError("--read-voltage: only a CSV measurement has a current to convert; a card has none")
    text = _converted_card(args.source)
    card = load_card(args.source) if text is None else parse_card(text, source=args.source)
    return assess_card(card), None, text


def _fitted_card(m, model: str) -> str:
    """The TOML text of ``model`` fitted to ``m`` (one pooled fit, no per-device spread)."""
    result = fit_model(m, model, device_spread=False)
    return result.to_card_toml("fitted-" + Path(m.source).stem.replace(" ", "-"))


def _check_save(args) -> None:
    if not args.save_card:
        return
    path = Path(args.save_card)
    if not (_is_csv(args.source) or Path(args.source).is_dir() or _converted_card(args.source) is not None):
        raise AssessError(
            f"--save-card: {args.source!r} is a card already; it is for CSV, CrossSim and NeuroSim inputs"
        )
    if path.exists() and not args.force:
        raise AssessError(f"--save-card: file {args.save_card!r} exists; pass --force to overwrite it")
    if not path.parent.is_dir() or path.suffix.lower() != ".toml":
        raise AssessError(
            f"--save-card: value {args.save_card!r} is not allowed; a .toml file in an existing directory"
        )


def run_assess(args: argparse.Namespace) -> int:
    """Run ``analogsim assess`` from parsed ``args``; return the exit status (0, or 2 on bad input)."""
    try:
        epochs = _int_flag("--epochs", args.epochs, 1)
        seed = _int_flag("--seed", args.seed, 0)
        _check_plot(args.plot, args.force)
        _check_save(args)
        a, m, text = _assess(args)
        if not args.json:
            print("\n".join(assessment_lines(a)), flush=True)
        training = None
        train_it = not args.no_train and (m is None or args.train)
        if m is not None and not args.train and not args.no_train and not args.json:
            print(
                "note: no training runs on a CSV without --train (they need a fitted card: the piecewise-step fit took "
                "20 s for 2,000 readings and 243 s for 26,500 on this project's CPU)",
                flush=True,
            )
        if m is not None and (args.save_card or train_it):
            text = _fitted_card(m, args.fit_model)
            if not args.json:
                print(f"fitted a {args.fit_model} card to {args.source}", flush=True)
        if args.save_card:
            Path(args.save_card).write_text(text, encoding="utf-8")
        if train_it:
            with tempfile.TemporaryDirectory() as folder:
                card = args.source
                if text is not None:
                    card = str(Path(folder) / "card.toml")
                    Path(card).write_text(text, encoding="utf-8")
                training = diagnose_training(card, epochs=epochs, seed=seed)
        advice = recommend(a, training)
        if args.plot:
            _plot(a, training, args.plot)
    except (CardError, ValueError, OSError) as err:
        print(f"error: {err}".replace("\n", " "), file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(_json(a, training, advice)))
        return 0
    if training:
        print(f"training on digits ({epochs} epochs, MLP 64, lr 0.1, seed {seed}):")
        for r in training:
            what = f"test accuracy {r['test_accuracy']:.3f}" if r["error"] is None else f"stopped: {r['error']}"
            print(f"  {r['label']:<32} {what}  ({r['seconds']:.0f} s)")
        for text in sorted({w for r in training for w in r["warnings"]}):
            print(f"  note: {text}")
    print(f"recommendation: {advice['use']}")
    for reason in advice["reasons"]:
        print(f"  because {reason}")
    if args.plot:
        print(f"plot written to {args.plot}")
    return 0


def _json(a: Assessment, training, advice) -> dict:
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) and not math.isinf(v) else v

    figures = {
        k: (("inf" if v > 0 else "-inf") if isinstance(v, float) and math.isinf(v) else clean(v))
        for k, v in a.figures.items()
    }
    runs = None if training is None else [{**r, "test_accuracy": clean(r["test_accuracy"])} for r in training]
    return {"source": a.source, "kind": a.kind, "unit": a.unit, "figures": figures, "notes": list(a.notes),
            "training": runs, "recommendation": advice}  # fmt: skip
