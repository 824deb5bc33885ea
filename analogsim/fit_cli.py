"""``analogsim fit DATA.csv --model MODEL|auto [--out CARD.toml] [--plot FIT.png] [--curve-out CURVE.csv]
[--no-progress] [--force] [--json]``.

Fits a device model to a measured pulse response (``device_models.fitting``), prints the
parameters with standard errors (conductances with SI prefixes) and the fit's warnings (one line
each, also a ``warnings`` list in the JSON), writes a device card, a plot (the mean sweep of
each pulse pattern with its spread against the model, residuals below) and that mean curve as
CSV. A progress bar (tqdm, on stderr) runs while fitting when stderr is a terminal.
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

from tqdm import tqdm

from device_models import CardError, parse_card
from device_models.fitting import AUTO_CANDIDATES, FITTABLE_MODELS, FitResult, fit_auto, fit_model
from device_models.measurements import MeasurementError, load_measurement
from device_models.units import si, si_scale

__all__ = ["add_fit_parser", "mean_curves", "plot_fit", "run_fit", "write_curve_csv"]


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
    f.add_argument(
        "--curve-out",
        default=None,
        metavar="CURVE.csv",
        help="write the mean measured and fitted curve of each pulse pattern here",
    )
    f.add_argument("--no-progress", action="store_true", help="no progress bar (also off when stderr is no terminal)")
    f.add_argument("--force", action="store_true", help="overwrite existing --out/--plot/--curve-out files")
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
        curve_out = getattr(args, "curve_out", None)
        _check_output("--curve-out", curve_out, args.force)
        outs = [Path(x).resolve() for x in (args.out, args.plot, curve_out) if x]
        if len(set(outs)) < len(outs):
            raise ValueError("--out, --plot and --curve-out name the same file; give different files")
        measurement = load_measurement(args.data)
        if measurement.note():  # extra instrument columns: named, not silently dropped
            print(f"note: {measurement.note()}", file=sys.stderr)
        ranking = _fit(measurement, model, not getattr(args, "no_progress", False) and sys.stderr.isatty())
        best = ranking[0]
        card_text = best.to_card_toml(_card_name(args.out, args.data))
        parse_card(card_text, source=args.out or "<fitted card>")  # the card must load, or nothing is written
        if args.out:
            Path(args.out).write_text(card_text, encoding="utf-8")
        if args.plot:
            plot_fit(best, args.plot)
        if curve_out:
            write_curve_csv(best, curve_out)
    except (MeasurementError, CardError, ValueError, OSError) as err:
        text = " ".join(str(err).split())
        print(f"error: {text}", file=sys.stderr)
        return 2
    _report(best, ranking, args)
    return 0


def _fit(measurement, model: str, progress: bool) -> list[FitResult]:
    """The ranking of ``model`` (or of every candidate with ``auto``), with a tqdm bar if ``progress``."""
    n_dev = len(measurement.devices())
    total = (len(AUTO_CANDIDATES) if model == "auto" else 1) + (n_dev if n_dev >= 2 else 0)
    with tqdm(total=total, desc="fit", unit="fit", disable=not progress, file=sys.stderr, leave=False) as bar:

        def tick(what: str) -> None:
            bar.set_postfix_str(what, refresh=False)
            bar.update(1)

        if model == "auto":
            return fit_auto(measurement, AUTO_CANDIDATES, progress=tick)
        return [fit_model(measurement, model, progress=tick)]


def _value_text(p) -> str:
    """A parameter's value and standard error as printed: conductances with SI prefixes."""
    if p.unit == "S":
        err = "" if p.stderr is None else f" +- {si(p.stderr, 'S')}"
        return f"{si(p.value, 'S', 5)}{err}"
    err = "" if p.stderr is None else f" +- {p.stderr:.3g}"
    return f"{p.value:.5g}{err} {p.unit if p.unit != '1' else ''}".rstrip()


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
        out["curve"] = getattr(args, "curve_out", None)
        out = json.loads(json.dumps(out, default=float), parse_constant=lambda c: None)  # NaN/inf -> null
        print(json.dumps(out, allow_nan=False))
        return
    print(f"{best.source}: {best.n} readings, {len(best.labels)} sweeps ({', '.join(best.labels)})")
    if len(ranking) > 1:
        print("model ranking (AIC, lower is better):")
        for r in ranking:
            print(f"  {r.model_name:<15} AIC {r.aic:10.1f}  dAIC {r.aic - best.aic:8.1f}  R^2 {r.r2:.4f}  k {r.k}")
    amount = (lambda v: si(v, "S")) if best.unit == "S" else (lambda v: f"{v:.4g} {unit}")
    print(f"best: {best.model_name}  R^2 {best.r2:.4f}  AIC {best.aic:.1f}  residual std {amount(best.residual_std)}")
    for name, p in {**best.parameters, **best.physical}.items():
        if p.provenance == "assumed":
            continue
        if isinstance(p.value, tuple):
            vals = ", ".join(f"{v:.3g}" for v in p.value)
            print(f"  {name:<15} [{vals}]")
            continue
        print(f"  {name:<15} {_value_text(p)}")
    print(
        f"cycle-to-cycle: dw_min_std {best.dw_min_std:.4g} (read noise removed; all scatter: "
        f"{best.dw_min_std_all_scatter:.4g}), read noise std {amount(best.read_noise_std)}"
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
    if not best.warnings:
        print("warnings: none")
    if args.out:
        print(f"card written to {args.out}")
    if args.plot:
        print(f"plot written to {args.plot}")
    if getattr(args, "curve_out", None):
        print(f"curve written to {args.curve_out}")


def mean_curves(result: FitResult) -> list[dict]:
    """The mean sweep of each pulse pattern: sweeps with the same polarity sequence, averaged.

    Returns one dictionary per pattern: ``label``, ``sweeps`` (count), ``pulse`` (pulses since
    the sweep's first reading), ``observed_mean``, ``observed_std`` (spread over the sweeps,
    ``ddof=0``), ``predicted_mean`` and ``count`` (sweeps read at that pulse), state units.
    """
    import numpy as np

    pos = result.positions if result.positions is not None else np.zeros(result.n, np.int64)
    pol = result.polarity if result.polarity is not None else np.ones(result.n, np.int8)
    groups: dict[bytes, list[int]] = {}
    for s in range(len(result.labels)):
        sel = np.flatnonzero(result.segment_of_row == s)
        groups.setdefault(np.asarray(pol[sel[1:]], np.int8).tobytes(), []).append(s)
    out = []
    for sweeps in groups.values():
        rows = np.flatnonzero(np.isin(result.segment_of_row, sweeps))
        p = pos[rows]
        count = np.bincount(p)
        seen = count > 0
        mean = np.bincount(p, result.observed[rows]) / np.maximum(count, 1)
        sq = np.bincount(p, result.observed[rows] ** 2) / np.maximum(count, 1)
        pred = np.bincount(p, result.predicted[rows]) / np.maximum(count, 1)
        first = pol[rows[p == 1]] if (p == 1).any() else pol[rows[:1]]
        direction = "up" if first[0] > 0 else "down"
        out.append(
            {
                "label": f"{len(sweeps)} sweep{'s' if len(sweeps) > 1 else ''}, first pulse {direction}",
                "sweeps": len(sweeps),
                "pulse": np.flatnonzero(seen),
                "observed_mean": mean[seen],
                "observed_std": np.sqrt(np.maximum(sq[seen] - mean[seen] ** 2, 0.0)),
                "predicted_mean": pred[seen],
                "count": count[seen],
            }
        )
    return out


def write_curve_csv(result: FitResult, path: str) -> None:
    """Write ``mean_curves`` as CSV: pattern, pulse, sweeps read, observed mean and std, fitted mean."""
    unit = "_s" if result.unit == "S" else ""
    lines = [f"pattern,pulse,sweeps,observed_mean{unit},observed_std{unit},fitted_mean{unit}"]
    for c in mean_curves(result):
        for j in range(c["pulse"].size):
            lines.append(
                f"{c['label']},{int(c['pulse'][j])},{int(c['count'][j])},{float(c['observed_mean'][j])!r},"
                f"{float(c['observed_std'][j])!r},{float(c['predicted_mean'][j])!r}"
            )
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_fit(result: FitResult, path: str | None = None):
    """Draw the mean sweep of each pulse pattern with its spread (band) against the model, residuals below.

    Sweeps with the same polarity sequence are averaged (``mean_curves``), so 50 sweeps make
    one or two curves and one legend entry each. Returns the ``matplotlib.figure.Figure`` (made
    without pyplot: no backend is chosen or changed) and saves it as PNG at ``path`` unless ``None``.
    """
    from matplotlib.figure import Figure

    top = max(abs(float(result.observed.max())), abs(float(result.observed.min())))
    factor, prefix = si_scale(top) if result.unit == "S" else (1.0, "")
    scale, unit = (1.0 / factor, f"{prefix}S") if result.unit == "S" else (1.0, "weight")
    fig = Figure(figsize=(9, 6))
    ax, axr = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for i, c in enumerate(mean_curves(result)):
        color = f"C{i % 10}"
        x, mu, sd = c["pulse"], c["observed_mean"] * scale, c["observed_std"] * scale
        band = " ± 1 std" if c["sweeps"] > 1 else ""
        ax.fill_between(x, mu - sd, mu + sd, color=color, alpha=0.25, lw=0)
        ax.plot(x, mu, ".", ms=2, color=color, label=f"data, mean of {c['label']}{band}")
        ax.plot(x, c["predicted_mean"] * scale, "-", lw=1.5, color="k" if i == 0 else color)
        resid = (c["observed_mean"] - c["predicted_mean"]) * scale
        axr.fill_between(x, resid - sd, resid + sd, color=color, alpha=0.25, lw=0)
        axr.plot(x, resid, ".", ms=2, color=color)
    ax.plot([], [], "-", color="k", label=f"fit: {result.model_name}")
    ax.set_ylabel(f"state ({unit})")
    ax.set_title(
        f"{Path(result.source).name}: {result.model_name}, R² {result.r2:.4f}, AIC {result.aic:.0f}, "
        f"c2c {result.dw_min_std:.3g}, {len(result.warnings)} warning(s)"
    )
    ax.legend(fontsize=8, markerscale=3)
    axr.axhline(0.0, color="k", lw=0.8)
    axr.set_ylabel(f"data - fit ({unit})")
    axr.set_xlabel("pulses since the sweep's first reading")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
