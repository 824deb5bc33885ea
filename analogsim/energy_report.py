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

from .energy import COUNT_KINDS, ENERGY_KIND_OF, analog_prices, price_report
from .periphery import IOParameters
from .periphery_card import load_periphery_card

__all__ = ["ReportError", "load_report", "plot_report", "reprice"]


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
    for layer, counts in report["counts_by_layer"].items():
        for kind in COUNT_KINDS:
            value = counts.get(kind) if isinstance(counts, dict) else None
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ReportError(
                    f"{path}: field 'counts_by_layer.{layer}.{kind}': value {value!r} is not allowed; must be an integer >= 0"
                )
    return report


def reprice(report: dict[str, Any], card_name: str, periphery: str | None = None) -> dict[str, Any]:
    """The same counts with the analog arrays priced as ``card_name`` (what-if).

    Digital entries keep their prices; analog entries (those with pulses or reads) get the
    card's write and read prices and the periphery card's conversion prices at aihwkit's
    default resolutions (the ones ``analogsim train`` uses).
    """
    card = load_card(card_name)
    per = load_periphery_card(periphery or report.get("periphery_card") or "periphery-default")
    counts = report["counts_by_layer"]
    prices = {}
    for layer, old in report["prices"].items():
        if old["dac_conversions"]["joules"] == 0 and old["crosspoint_reads"]["joules"] == 0:
            prices[layer] = {k: _as_price(v) for k, v in old.items()}  # a digital part: unchanged
        else:
            prices[layer] = analog_prices(card, per, IOParameters())
    new = price_report(counts, prices)
    new["digital_baseline_j"] = report["digital_baseline_j"]
    new["device_card"] = card.name
    return new


def _as_price(entry: dict[str, Any]):
    from .energy import Price

    return Price(float(entry["joules"]), str(entry["source"]))


def plot_report(reports: dict[str, dict[str, Any]], path: str | Path | None = None):
    """Stacked bars of energy by kind for each layer of each report, beside the digital baseline.

    Args:
      reports: label -> energy report (``load_report``'s dict or a run's ``energy_report``).
      path: where to save the figure (PNG); ``None``: not saved.

    Returns:
      The ``matplotlib.figure.Figure`` (built without pyplot, so it neither needs nor changes
      a backend: a notebook displays it as the cell's value).
    """
    from matplotlib.figure import Figure

    kinds = ["write", "read", "dac", "adc", "digital"]
    fig = Figure(figsize=(11, 4.5))
    ax1, ax2 = fig.subplots(1, 2)
    labels = []
    bars = {k: [] for k in kinds}
    for name, rep in reports.items():
        for layer, counts in rep["counts_by_layer"].items():
            labels.append(f"{name}: {layer}")
            for k in kinds:
                j = sum(counts[c] * rep["prices"][layer][c]["joules"] for c in COUNT_KINDS if ENERGY_KIND_OF[c] == k)
                bars[k].append(j)
    bottoms = [0.0] * len(labels)
    for k in kinds:
        ax1.bar(labels, bars[k], bottom=bottoms, label=k)
        bottoms = [b + v for b, v in zip(bottoms, bars[k], strict=True)]
    ax1.set_ylabel("energy (J)")
    ax1.set_title("analog energy by layer and event kind")
    ax1.legend(fontsize=8)
    ax1.tick_params(axis="x", labelsize=7, labelrotation=35)
    for label in ax1.get_xticklabels():
        label.set_horizontalalignment("right")
    names = list(reports)
    ax2.bar([f"analog\n{n}" for n in names], [reports[n]["total_j"] for n in names])
    ax2.bar(["digital baseline"], [next(iter(reports.values()))["digital_baseline_j"]], color="grey")
    ax2.set_yscale("log")
    ax2.set_ylabel("energy (J)")
    ax2.set_title("analog vs digital training energy")
    ax2.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
