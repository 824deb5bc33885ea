"""The figure and the side-by-side table of ``protonic_onen2022.py`` (kept apart so the
experiment script reads as the science)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _fmt(value: float, unit: str) -> str:
    scaled = {
        "Ohm": (1e-6, "MOhm"),
        "m": (1e10, "Å"),
        "J": (1e15, "fJ") if value >= 1e-16 else (1e18, "aJ"),
        "x": (1.0, "x"),
        "1": (1.0, ""),
    }[unit]
    return f"{value * scaled[0]:.3g} {scaled[1]}".strip()


def readme_table(res: dict) -> str:
    """Markdown: the paper's figure, where it stands, the reproduced figure and the difference;
    then the training results and the sensitivity sweep."""
    lines = [
        f"# {res['paper']}: the `{res['card']}` card against the paper ({res['mode']} run, {res['dataset']})",
        "",
        "Written by `experiments/protonic_onen2022.py`; every figure below is in `results.json`.",
        "",
        "| quantity | paper | where in the paper | reproduced | difference |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in res["table"]:
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(
            f"| {row['quantity']}{note} | {_fmt(row['paper'], row['unit'])} | {row['where']} | "
            f"{_fmt(row['reproduced'], row['unit'])} | {row['difference']:+.1%} |"
        )
    runs = res["training"]["runs"]
    cfg = res["training"]["config"]
    lines += [
        "",
        f"Training ({cfg['epochs']} epochs, hidden {cfg['hidden']}, lr {cfg['lr']}, batch {cfg['batch_size']}, "
        f"seed 0, update mode {cfg['update_mode']}):",
        "",
        "| rule | test accuracy | energy of the run | GPU baseline energy (same work) | busiest device, pulses (x endurance 1e5) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in runs.items():
        end = r["endurance"]
        wear = f"{end['busiest_pulses']:,.0f} ({end['ratio']:.3g}x)" if end else "-"
        energy = f"{r['energy_j']:.3g} J" if name != "digital" else "(digital run)"
        lines.append(f"| {name} | {r['test_accuracy']:.2%} | {energy} | {r['digital_baseline_j']:.3g} J | {wear} |")
    sens = res["sensitivity"]
    lines += [
        "",
        f"One at a time, SGD (card: {sens['baseline_accuracy']:.2%} mean over seeds {sens['seeds']}):",
        "",
        "| assumed number moved | test accuracy | change |",
        "| --- | --- | --- |",
    ]
    for r in sens["rows"]:
        lines.append(f"| {r['parameter']} = {r['value']:g} | {r['test_accuracy']:.2%} | {r['change']:+.2%} |")
    spread = max(sens["baseline_accuracies"]) - min(sens["baseline_accuracies"])
    lines += [
        "",
        f"Largest change: `{sens['most_sensitive']}` ({sens['largest_change'][sens['most_sensitive']]:.2%}); "
        f"the card's own accuracy spans {spread:.2%} between seeds, so read changes of that size as noise.",
    ]
    return "\n".join(lines)


def plot(res: dict, path: Path) -> None:
    """Four panels: the Fig. 2A train, the voltage law, the width law, accuracy and sensitivity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(11, 8))
    a = res["fig2a"]
    n = np.asarray(a["pulse"])
    g_mean, g_std = np.asarray(a["g_mean_s"]), np.asarray(a["g_std_s"])
    ax[0, 0].fill_between(n, (g_mean - g_std) * 1e9, (g_mean + g_std) * 1e9, alpha=0.25, label="population mean +- std")
    ax[0, 0].plot(n, g_mean * 1e9, lw=1.2)
    ax[0, 0].plot(n, np.asarray(a["g_nominal_s"]) * 1e9, "k--", lw=1, label="nominal device")
    for r, lab in ((87.6e6, "87.6 MOhm"), (4.28e6, "4.28 MOhm")):
        ax[0, 0].axhline(1e9 / r, color="C3", lw=0.8, ls=":")
        ax[0, 0].text(20, 1e9 / r, f"paper: {lab}", color="C3", va="bottom", fontsize=8)
    ax[0, 0].set(xlabel="pulse number (+10 V then -8.5 V, 5 ns)", ylabel="conductance (nS)", title="Fig. 2A")
    ax[0, 0].legend(fontsize=8)
    for d, v in res["fig3"]["voltage"].items():
        ax[0, 1].semilogy(v["volts"], v["steps"], "o-", label=f"d = {d}: a fit {v['a_fit_m'] * 1e10:.2f} Å")
    ax[0, 1].set(xlabel="pulse voltage (V)", ylabel="mean step of one pulse (weight units)", title="Fig. 3: sinh law")
    ax[0, 1].legend(fontsize=8, title="paper: a = 5.6 Å", title_fontsize=8)
    w = res["fig3"]["width"]
    ax[1, 0].loglog(np.asarray(w["widths_s"]) * 1e9, w["steps"], "o-", label=f"beta fit {w['beta_fit']:.3f}")
    ax[1, 0].axvline(40, color="C3", ls=":", lw=0.8)
    ax[1, 0].text(40, w["steps"][0], " unstable above 40 ns", color="C3", fontsize=8)
    ax[1, 0].set(xlabel="pulse width (ns)", ylabel="mean step of one pulse", title="Fig. 3: width law (paper: 1.2)")
    ax[1, 0].legend(fontsize=8)
    runs = res["training"]["runs"]
    names = list(runs)
    ax[1, 1].bar(names, [runs[k]["test_accuracy"] * 100 for k in names], color=["0.6", "C0", "C0", "C1", "C1"])
    sens = res["sensitivity"]
    labels = [f"{r['parameter']}={r['value']:g}" for r in sens["rows"]]
    x0 = len(names) + 0.5
    ax[1, 1].bar(np.arange(len(labels)) + x0, [r["test_accuracy"] * 100 for r in sens["rows"]], color="C2")
    ax[1, 1].set_xticks(list(range(len(names))) + list(np.arange(len(labels)) + x0))
    ax[1, 1].set_xticklabels(names + labels, rotation=60, ha="right", fontsize=7)
    accs = [runs[k]["test_accuracy"] * 100 for k in names] + [r["test_accuracy"] * 100 for r in sens["rows"]]
    ax[1, 1].set_ylim(max(0, min(accs) - 5), 100)
    ax[1, 1].set(ylabel="test accuracy (%)", title=f"{res['dataset']}: rules; green: SGD, one number moved")
    fig.suptitle(f"{res['card']} against {res['paper']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
