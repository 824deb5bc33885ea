"""Reading, re-pricing and plotting a saved energy report (``--energy-report FILE.json``).

A report keeps the exact counts per layer (``counts_by_layer``), so the same training can be
priced with another device card without retraining (a what-if: the same run with 5 ns
pulses instead of 5 ms, say).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from device_models import load_card
from device_models.units import si

from .energy import COUNT_KINDS, ENERGY_KIND_OF, ENERGY_KINDS, REPORT_SCHEMA_VERSION, analog_prices, price_report
from .periphery import IOParameters
from .periphery_card import load_periphery_card

__all__ = ["ReportError", "load_report", "plot_report", "reprice", "si"]


class ReportError(ValueError):
    """An energy report that cannot be used; names the file and the field."""


def load_report(path: str | Path) -> dict[str, Any]:
    """Load and check a report written by ``analogsim train --energy-report``."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ReportError(f"{path}: not a readable JSON energy report ({err})") from None
    if not isinstance(report, dict):
        raise ReportError(f"{path}: top level must be a JSON object")
    for field in ("total_j", "by_kind", "by_layer", "counts_by_layer", "prices", "digital_baseline_j"):
        if field not in report:
            raise ReportError(
                f"{path}: missing field {field!r}; is this a report from analogsim train --energy-report?"
            )
    version = report.get("schema_version", 1)
    if version not in (1, REPORT_SCHEMA_VERSION):
        raise ReportError(
            f"{path}: field 'schema_version': value {version!r} is not allowed; this analogsim reads versions 1 and "
            f"{REPORT_SCHEMA_VERSION}"
        )
    for layer, counts in report["counts_by_layer"].items():
        for kind in COUNT_KINDS:
            if version == 1 and isinstance(counts, dict) and kind not in counts:
                counts[kind] = 0  # a kind counted since schema 2: version 1 reports did not count it
            value = counts.get(kind) if isinstance(counts, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ReportError(
                    f"{path}: field 'counts_by_layer.{layer}.{kind}': value {value!r} is not allowed; must be an integer >= 0"
                )
    return report


def reprice(report: dict[str, Any], card: str | dict[str, str], periphery: str | None = None) -> dict[str, Any]:
    """The same counts with the analog arrays priced as ``card`` (what-if): one card name or
    path for every analog layer, or ``{layer: card}`` (layers not named keep their prices).

    Digital entries keep their prices; analog entries (those with pulses or reads) get the
    card's write, read, wire and pulse-slot prices and the periphery card's conversion prices at
    aihwkit's default resolutions (the ones ``analogsim train`` uses). Energy and time on chip
    are recomputed; the digital baselines (the same training on digital hardware) are kept.
    """
    per = load_periphery_card(periphery or report.get("periphery_card") or "periphery-default")
    cards = {}
    counts = report["counts_by_layer"]
    prices = {}
    for layer, old in report["prices"].items():
        name = card.get(layer) if isinstance(card, dict) else card
        analog = old["dac_conversions"]["joules"] != 0 or old["crosspoint_reads"]["joules"] != 0
        if name is None or not analog:
            prices[layer] = {k: _as_price(v) for k, v in old.items()}  # a digital part, or a layer not re-priced
        else:
            cards[name] = cards.get(name) or load_card(name)
            prices[layer] = analog_prices(cards[name], per, IOParameters())
    new = price_report(counts, prices)
    for key in ("digital_baseline_j", "digital_baseline", "baselines", "samples", "steps", "layers", "run"):
        if key in report:
            new[key] = report[key]
    if new.get("samples") and new["time_s"] > 0:
        new["chip_samples_per_s"] = new["samples"] / new["time_s"]
    new["digital_over_analog"] = new["digital_baseline_j"] / new["total_j"] if new["total_j"] > 0 else None
    new["device_card"] = ", ".join(c.name for c in cards.values()) or report.get("device_card")
    new["periphery_card"] = per.name
    return new


def _as_price(entry: dict[str, Any]):
    from .energy import Price

    return Price(
        float(entry["joules"]),
        str(entry["source"]),
        float(entry.get("seconds", 0.0)),
        str(entry.get("time_source", "")),
    )


def _layer_kinds(rep: dict[str, Any], layer: str) -> dict[str, float]:
    counts, prices = rep["counts_by_layer"][layer], rep["prices"][layer]
    out = dict.fromkeys(ENERGY_KINDS, 0.0)
    for c in COUNT_KINDS:
        if ENERGY_KIND_OF[c] is not None and c in prices:
            out[ENERGY_KIND_OF[c]] += counts.get(c, 0) * prices[c]["joules"]
    return out


def plot_report(reports: dict[str, dict[str, Any]], path: str | Path | None = None):
    """Energy reports side by side: joules by kind, by layer (stacked by kind), and each run's
    total beside its digital baselines, with the values on the bars.

    Args:
      reports: label -> energy report (``load_report``'s dict or a run's ``energy_report``).
      path: where to save the figure (PNG); ``None``: not saved.

    Returns:
      The ``matplotlib.figure.Figure`` (built without pyplot, so it neither needs nor changes
      a backend: a notebook displays it as the cell's value).
    """
    import numpy as np
    from matplotlib.figure import Figure

    names = list(reports)
    fig = Figure(figsize=(15, 5.2))
    ax_kind, ax_layer, ax_base = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1.1, 1.4, 1.0]})
    # by kind: one bar per report in each kind's group
    width = 0.8 / len(names)
    y = np.arange(len(ENERGY_KINDS))
    for i, name in enumerate(names):
        vals = [reports[name]["by_kind"].get(k, 0.0) for k in ENERGY_KINDS]
        bars = ax_kind.barh(y + i * width, [v if v > 0 else np.nan for v in vals], height=width, label=name)
        ax_kind.bar_label(bars, labels=[si(v, "J") for v in vals], fontsize=7, padding=2)
    ax_kind.set_yticks(y + 0.4 - width / 2, ENERGY_KINDS)
    ax_kind.invert_yaxis()
    ax_kind.set_xscale("log")
    ax_kind.margins(x=0.25)
    ax_kind.set_xlabel("energy (J, log scale)")
    ax_kind.set_title("by kind")
    ax_kind.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    # by layer, stacked by kind
    labels, stacks = [], []
    for name in names:
        for layer in reports[name]["counts_by_layer"]:
            labels.append(f"{name}\n{layer}" if len(names) > 1 else layer)
            stacks.append(_layer_kinds(reports[name], layer))
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    for k in ENERGY_KINDS:
        vals = np.array([st[k] for st in stacks])
        if vals.any():
            ax_layer.bar(x, vals, bottom=bottom, label=k)
            bottom += vals
    tops = ax_layer.bar(x, np.zeros(len(labels)), bottom=bottom)
    ax_layer.bar_label(tops, labels=[si(v, "J") for v in bottom], fontsize=7, padding=2)
    ax_layer.set_xticks(x, labels, fontsize=7, rotation=35, ha="right")
    ax_layer.set_ylabel("energy (J)")
    ax_layer.set_title("by layer")
    ax_layer.legend(fontsize=7)
    # totals against the baselines (log scale)
    bar_labels, vals, colors, shown = [], [], [], []
    for i, name in enumerate(names):
        rep = reports[name]
        bar_labels.append(f"chip\n{name}" if len(names) > 1 else "chip")
        vals.append(rep["total_j"])
        colors.append(f"C{i}")
        base = rep.get("baselines") or {"gpu-fp32": {"j": rep["digital_baseline_j"]}}
        for b, entry in base.items():
            if (b, entry["j"]) in shown:  # the same training's baseline, already drawn
                continue
            shown.append((b, entry["j"]))
            bar_labels.append(f"{b}\n({name})" if len(names) > 1 else b)
            vals.append(entry["j"])
            colors.append("0.6")
    bars = ax_base.bar(np.arange(len(vals)), vals, color=colors)
    ax_base.bar_label(bars, labels=[si(v, "J") for v in vals], fontsize=7, padding=2)
    ax_base.set_xticks(np.arange(len(vals)), bar_labels, fontsize=7, rotation=35, ha="right")
    ax_base.set_yscale("log")
    ax_base.set_ylabel("energy (J)")
    ax_base.set_title("the chip against digital baselines")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
