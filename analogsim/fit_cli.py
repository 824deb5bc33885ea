"""``analogsim fit DATA.csv --model MODEL|auto [--out CARD.toml] [--plot FIT.png] [--force] [--json]``.

Fits a device model to a measured pulse response (``device_models.fitting``), prints the
parameters with standard errors, writes a device card and a plot of data, fit and residuals.
Bad input gives one line ``error: ...`` on stderr and exit status 2; nothing is overwritten
without ``--force``. The lead wires ``add_fit_parser`` and ``run_fit`` into
``analogsim.cli``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from device_models import CardError, parse_card
from device_models.fitting import AUTO_CANDIDATES, FITTABLE_MODELS, FitResult, fit_auto, fit_model
from device_models.measurements import MeasurementError, load_measurement

__all__ = ["add_fit_parser", "run_fit", "plot_fit"]


def add_fit_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``fit`` command to an ``argparse`` sub-parser collection; returns its parser."""
    f = subparsers.add_parser("fit", help="fit a device model to a measured pulse response (CSV)")
    f.add_argument(
        "data",
        metavar="DATA.csv",
        help="pulse measurement: pulse_number, polarity, conductance_s|conductance_us|weight, ...",
    )
    f.add_argument(
        "--model",
        required=True,
        help=f"device model to fit: {', '.join(FITTABLE_MODELS)}, or auto (all of them, ranked by AIC)",
    )
    f.add_argument("--out", default=None, metavar="CARD.toml", help="write the fitted device card here")
    f.add_argument("--plot", default=None, metavar="FIT.png", help="draw data, fit and residuals here")
    f.add_argument("--force", action="store_true", help="overwrite existing --out/--plot files")
    f.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return f


def _card_name(out: str | None, data: str) -> str:
    stem = Path(out).stem if out else f"{Path(data).stem}-fitted"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem) or "fitted"


def _check_output(flag: str, path: str | None, force: bool) -> None:
    if path is None:
        return
    p = Path(path)
    if p.exists() and not force:
        raise ValueError(f"{flag}: file {path!r} exists; pass --force to overwrite it")
    if p.exists() and not p.is_file():
        raise ValueError(f"{flag}: {path!r} is not a regular file")
    if not p.parent.exists() and str(p.parent) not in ("", "."):
        raise ValueError(f"{flag}: directory {str(p.parent)!r} does not exist")


def run_fit(args: argparse.Namespace) -> int:
    """Run ``analogsim fit`` with parsed ``args``; returns the exit status (0, or 2 on bad input)."""
    try:
        model = args.model
        if model != "auto" and model not in FITTABLE_MODELS:
            raise ValueError(f"--model: value {model!r} is not allowed; allowed: {', '.join(FITTABLE_MODELS)}, auto")
        _check_output("--out", args.out, args.force)
        _check_output("--plot", args.plot, args.force)
        if args.out and args.plot and Path(args.out).resolve() == Path(args.plot).resolve():
            raise ValueError(f"--out and --plot name the same file {args.out!r}; give two different files")
        measurement = load_measurement(args.data)
        if model == "auto":
            ranking = fit_auto(measurement, AUTO_CANDIDATES)
        else:
            ranking = [fit_model(measurement, model)]
        best = ranking[0]
        card_text = best.to_card_toml(_card_name(args.out, args.data))
        parse_card(card_text, source=args.out or "<fitted card>")  # the card must load, or nothing is written
        if args.out:
            Path(args.out).write_text(card_text, encoding="utf-8")
        if args.plot:
            plot_fit(best, args.plot)
    except (MeasurementError, CardError, ValueError, OSError) as err:
        text = " ".join(str(err).split())
        print(f"error: {text}", file=sys.stderr)
        return 2
    _report(best, ranking, args)
    return 0


def _report(best: FitResult, ranking: list[FitResult], args) -> None:
    unit = "S" if best.unit == "S" else "weight units"
    if args.json:
        out = best.summary()
        out["ranking"] = [
            {
                "model": r.model_name,
                "aic": r.aic,
                "delta_aic": r.aic - best.aic,
                "r2": r.r2,
                "k": r.k,
                "residual_std": r.residual_std,
            }
            for r in ranking
        ]
        out["card"] = args.out
        out["plot"] = args.plot
        out = json.loads(json.dumps(out, default=float), parse_constant=lambda c: None)  # NaN/inf -> null
        print(json.dumps(out, allow_nan=False))
        return
    print(f"{best.source}: {best.n} readings, {len(best.labels)} sweeps ({', '.join(best.labels)})")
    if len(ranking) > 1:
        print("model ranking (AIC, lower is better):")
        for r in ranking:
            print(f"  {r.model_name:<15} AIC {r.aic:10.1f}  dAIC {r.aic - best.aic:8.1f}  R^2 {r.r2:.4f}  k {r.k}")
    print(
        f"best: {best.model_name}  R^2 {best.r2:.4f}  AIC {best.aic:.1f}  residual std {best.residual_std:.4g} {unit}"
    )
    for name, p in {**best.parameters, **best.physical}.items():
        if p.provenance == "assumed":
            continue
        if isinstance(p.value, tuple):
            vals = ", ".join(f"{v:.3g}" for v in p.value)
            print(f"  {name:<15} [{vals}]")
            continue
        value = p.value * 1e6 if p.unit == "uS" else p.value
        err = "" if p.stderr is None else f" +- {(p.stderr * 1e6 if p.unit == 'uS' else p.stderr):.3g}"
        print(f"  {name:<15} {value:.5g}{err} {p.unit if p.unit != '1' else ''}".rstrip())
    print(
        f"cycle-to-cycle: dw_min_std {best.dw_min_std:.4g} (read noise removed; all scatter: "
        f"{best.dw_min_std_all_scatter:.4g}), read noise std {best.read_noise_std:.4g} {unit}"
    )
    if best.device_spread:
        ds = best.device_spread
        print(
            f"device-to-device over {ds['devices']} devices: "
            + ", ".join(
                f"{k} {ds[k]:.3g}" for k in ("dw_min_dtod", "up_down_dtod", "w_max_dtod", "w_min_dtod") if k in ds
            )
        )
    for w in best.warnings:
        print(f"warning: {w}")
    if args.out:
        print(f"card written to {args.out}")
    if args.plot:
        print(f"plot written to {args.plot}")


def plot_fit(result: FitResult, path: str | None = None):
    """Draw the readings, the noise-free replay and the residuals of each sweep.

    Returns the ``matplotlib.figure.Figure`` (made without pyplot: no backend is chosen or
    changed) and saves it as PNG at ``path`` unless ``None``.
    """
    import numpy as np
    from matplotlib.figure import Figure

    scale, unit = (1e6, "µS") if result.unit == "S" else (1.0, "weight")
    fig = Figure(figsize=(9, 6))
    ax, axr = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    x = np.arange(result.n)
    for s, label in enumerate(result.labels):
        sel = result.segment_of_row == s
        ax.plot(x[sel], result.observed[sel] * scale, ".", ms=2, alpha=0.5, label=f"data, {label}")
        ax.plot(x[sel], result.predicted[sel] * scale, "-", lw=1.5, color="k")
        axr.plot(x[sel], (result.observed[sel] - result.predicted[sel]) * scale, ".", ms=2, alpha=0.5)
    ax.plot([], [], "-", color="k", label=f"fit: {result.model_name}")
    ax.set_ylabel(f"state ({unit})")
    ax.set_title(
        f"{Path(result.source).name}: {result.model_name}, R² {result.r2:.4f}, AIC {result.aic:.0f}, "
        f"c2c {result.dw_min_std:.3g}"
    )
    ax.legend(fontsize=8, markerscale=3)
    axr.axhline(0.0, color="k", lw=0.8)
    axr.set_ylabel("residual")
    axr.set_xlabel("reading (sweeps laid end to end)")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
