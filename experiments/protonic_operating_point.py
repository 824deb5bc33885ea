"""Operating point of the protonic WO3 synapse: gate voltage and pulse width against accuracy and energy.

The ``wo3-psg-onen2022`` card programs with 10 V, 5 ns gate pulses. The protonic model
(``device_models.protonic``) scales the step of any other pulse by

.. math::
    M(V, t_p) = \\left(\\frac{t_p}{t_{ref}}\\right)^{\\beta} \\frac{\\sinh(V/V_0)}{\\sinh(V_{ref}/V_0)},

so a lower voltage or a shorter pulse gives finer steps (more states: better updates, but more
pulses per update and a slower update once the bit stream saturates), and a higher voltage
costs more energy per pulse. For each point of a voltage x width grid this script writes a
modified card (a temporary TOML file), trains on it and records the test accuracy and the
energy per epoch, then draws the efficiency frontier.

Per point the card gets:

- ``voltage_up_v``/``voltage_down_v`` = V and ``width_s`` = t (the operating pulse);
- with ``--controller operating`` (default) also ``ref_*`` = (V, t) and ``dw_min`` =
  ``dw_min_card * M(V, t)``: the same physical step, but the update controller is calibrated to
  it (it computes its pulse probabilities from the true step at the operating pulse). With
  ``--controller card`` the controller keeps the card's ``dw_min`` (calibrated at 10 V, 5 ns)
  while the device steps by ``M`` times that, so the effective learning rate scales with ``M``;
- ``physical.gate_charging_energy`` = :math:`C_g V^2` and ``physical.ion_transfer_energy`` =
  :math:`V Q_0 M` (their sum is the pulse energy, ``device_models.pulse_energy_j``), with
  :math:`C_g = 2.5\\times10^{-17}` F and :math:`Q_0 = 1.5\\times10^{-18}` C: the card's 2.5 fJ and
  15 aJ at 10 V, 5 ns (Onen et al., Science 2022, main text) divided by :math:`V^2` and :math:`V`.

Modes: ``--quick`` (digits, 3 V x 2 widths, a minute or two on 2 CPU cores), full (RT-MNIST
from ``--data mnist10k.npz``, 4 V x 4 widths, 5 epochs, the reference task's settings), and
``--tiny`` (for the test suite only: 2 points, 1 epoch). Writes ``results.json`` and
``protonic_operating_point.png`` under ``--out`` (default ``results/protonic_operating_point``).

    python experiments/protonic_operating_point.py --quick
    python experiments/protonic_operating_point.py --data ../shared/data/mnist-10k/mnist10k.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_update_mode, config_record, dataset_for, mode_of, parser, write_results  # noqa: E402

import device_models
from analogsim import TrainConfig, train

NAME = "protonic_operating_point"
CARD = "wo3-psg-onen2022"
# Proton charge per pulse and gate capacitance behind the card's energies at 10 V, 5 ns (Onen et al.,
# Science 377, 539 (2022), main text: ~15 aJ of proton transfer and ~2.5 fJ of gate charging per pulse):
# Q0 = 15 aJ / 10 V, C_g = 2.5 fJ / (10 V)^2 (derived).
Q0_C = 15e-18 / 10.0
GATE_CAPACITANCE_F = 2.5e-15 / 10.0**2
GRIDS = {
    "tiny": ((9.0, 10.0), (5e-9,)),
    "quick": ((8.0, 9.0, 10.0), (5e-9, 10e-9)),
    "full": ((7.0, 8.0, 9.0, 10.0), (2e-9, 5e-9, 10e-9, 20e-9)),
}
TRAINING = {  # epochs, hidden widths, learning rate
    "tiny": (1, (), 0.5),  # one analog layer: the fastest compile
    "quick": (3, (64,), 0.5),
    "full": (5, (256, 128), 0.1),
}


# ----------------------------------------------------------------------------- cards


def operating_point_card(voltage_v: float, width_s: float, controller: str, folder: Path) -> tuple[Path, dict]:
    """Write the card of one operating point into ``folder``; return its path and key figures."""
    base = device_models.load_card(CARD)
    mult = float(device_models.step_size(base.model, voltage_v, width_s))
    dw_card = float(base.model.pulsed.dw_min)
    energy_j = float(device_models.pulse_energy_j(voltage_v, width_s, Q0_C * mult, GATE_CAPACITANCE_F))
    doc = device_models.card_document(CARD)
    label = f"{voltage_v:g}V-{width_s * 1e9:g}ns"
    doc["name"] = f"{CARD}-{label}"
    doc["description"] = (
        f"{CARD} operated at {voltage_v:g} V, {width_s * 1e9:g} ns ({NAME}.py, controller {controller})"
    )
    why = f"{NAME}.py: operating point {label}"
    # (section, field) -> (value, unit, source); whole entries, some in other units than the card's
    entries = {
        ("parameters", "voltage_up_v"): (voltage_v, "V", why),
        ("parameters", "voltage_down_v"): (voltage_v, "V", why),
        ("parameters", "width_s"): (width_s * 1e9, "ns", why),
    }
    if controller == "operating":
        calibrated = f"{why}; the update is calibrated at the operating pulse"
        entries["parameters", "ref_voltage_up_v"] = (voltage_v, "V", calibrated)
        entries["parameters", "ref_voltage_down_v"] = (voltage_v, "V", calibrated)
        entries["parameters", "ref_width_s"] = (width_s * 1e9, "ns", f"{why}; calibrated at the operating pulse")
        entries["parameters", "dw_min"] = (
            dw_card * mult,
            "1",
            f"{why}: card dw_min {dw_card:g} x step_size {mult:.4g}",
        )
    entries["physical", "pulse_voltage"] = (voltage_v, "V", why)
    entries["physical", "pulse_width"] = (width_s * 1e9, "ns", why)
    entries["physical", "gate_charging_energy"] = (
        GATE_CAPACITANCE_F * voltage_v**2,
        "J",
        f"{why}: C_g V^2 with C_g = {GATE_CAPACITANCE_F:g} F (the card's 2.5 fJ at 10 V)",
    )
    entries["physical", "ion_transfer_energy"] = (
        voltage_v * Q0_C * mult,
        "J",
        f"{why}: V Q with Q = {Q0_C:g} C x step_size {mult:.4g} (the card's 15 aJ at 10 V, 5 ns)",
    )
    for (section, field), (value, unit, source) in entries.items():
        doc.setdefault(section, {})[field] = {"value": value, "unit": unit, "provenance": "assumed", "source": source}
    path = folder / f"{doc['name']}.toml"
    with path.open("x", encoding="utf-8") as out:  # an existing file is not overwritten
        out.write(device_models.card_toml(doc))
    card = device_models.load_card(path)  # checked like any user card
    step = dw_card * mult
    states = float(card.model.pulsed.w_max - card.model.pulsed.w_min) / step
    return path, {
        "step_multiplier": mult,
        "dw_min": step,  # the device's step at w = 0 at this pulse (weight units)
        "controller_dw_min": float(card.model.pulsed.dw_min),  # the step the update controller assumes
        "states": states,
        "pulse_energy_j": energy_j,
    }


# ----------------------------------------------------------------------------- experiment


def pareto(points: list[dict], energy_key: str) -> list[int]:
    """Indices of the points no other point beats on both lower energy and higher accuracy."""
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q[energy_key] <= p[energy_key]
            and q["test_accuracy"] >= p["test_accuracy"]
            and (q[energy_key] < p[energy_key] or q["test_accuracy"] > p["test_accuracy"])
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][energy_key])


def run(args: argparse.Namespace) -> dict:
    mode = mode_of(args)
    voltages, widths = GRIDS[mode]
    if args.voltages:
        voltages = tuple(float(v) for v in args.voltages.split(","))
    if args.widths_ns:
        widths = tuple(float(w) * 1e-9 for w in args.widths_ns.split(","))
    epochs, hidden, lr = TRAINING[mode]
    data = dataset_for(mode, args.data, "python experiments/protonic_operating_point.py --data mnist10k.npz")
    points = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="analogsim-opoint-") as tmp:
        for v in voltages:
            for t in widths:
                path, figures = operating_point_card(v, t, args.controller, Path(tmp))
                cfg = TrainConfig(
                    device=str(path), epochs=epochs, hidden=hidden, lr=lr, seed=args.seed, update_mode=args.update_mode
                )
                res = train(cfg, progress=False, dataset=data)
                report = res["energy_report"]
                per_epoch = report["per_epoch"]
                counts = report["counts"]
                point = {
                    "label": f"{v:g} V, {t * 1e9:g} ns",
                    "voltage_v": v,
                    "width_s": t,
                    **figures,
                    "test_accuracy": res["test_accuracy"],
                    "epoch_test_accuracy": res["epoch_test_accuracy"],
                    "energy_per_epoch_j": float(np.mean([e["total_j"] for e in per_epoch])),
                    "write_energy_per_epoch_j": float(np.mean([e["by_kind"]["write"] for e in per_epoch])),
                    "pulses_per_epoch": (counts["pulses_up"] + counts["pulses_down"]) / epochs,
                    "samples_per_s": res["samples_per_s"],
                }
                points.append(point)
                print(
                    f"{point['label']:>12}: step x{point['step_multiplier']:.3f} ({point['states']:.0f} states), "
                    f"{point['pulse_energy_j'] * 1e15:.2f} fJ/pulse, test acc {point['test_accuracy']:.4f}, "
                    f"{point['energy_per_epoch_j']:.4g} J/epoch (writes {point['write_energy_per_epoch_j']:.3g} J)",
                    flush=True,
                )
    front_total = pareto(points, "energy_per_epoch_j")
    front_write = pareto(points, "write_energy_per_epoch_j")
    for i, p in enumerate(points):
        p["on_frontier_total"] = i in front_total
        p["on_frontier_write"] = i in front_write
    best = max(points, key=lambda p: p["test_accuracy"])
    card = device_models.load_card(CARD)
    return {
        "experiment": NAME,
        "mode": mode,
        "dataset": data.name,
        "card": CARD,
        "controller": args.controller,
        "config": config_record(epochs, hidden, lr, args.update_mode, seed=args.seed),
        "energy_model": {
            "pulse_energy": "E = V * Q0 * M(V, t) + C_g * V^2 (device_models.pulse_energy_j, no leakage)",
            "q0_c": Q0_C,
            "gate_capacitance_f": GATE_CAPACITANCE_F,
            "v0_v": float(device_models.field_voltage_v(card.model)),
            "width_exponent": float(card.model.width_exponent),
            "source": f"card {CARD}: physical.gate_charging_energy 2.5 fJ and ion_transfer_energy 15 aJ at 10 V, 5 ns (Onen et al. 2022, main text), scaled by V^2 and V M",
        },
        "paper": {
            "source": "Onen et al., Science 377, 539 (2022)",
            "reported": "5 ns gate pulses at up to about 10 V (the card's operating point); no accuracy-energy frontier reported",
        },
        "points": points,
        "frontier_total": [points[i]["label"] for i in front_total],
        "frontier_write": [points[i]["label"] for i in front_write],
        "best": {"label": best["label"], "test_accuracy": best["test_accuracy"]},
        "runtime_s": time.perf_counter() - t_start,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = result["points"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, title in (
        (axes[0], "energy_per_epoch_j", "total energy per epoch (periphery included)"),
        (axes[1], "write_energy_per_epoch_j", "device write energy per epoch"),
    ):
        front = [p for p in pts if p[f"on_frontier_{'total' if key == 'energy_per_epoch_j' else 'write'}"]]
        front.sort(key=lambda p: p[key])
        volts = sorted({p["voltage_v"] for p in pts})
        cmap = plt.get_cmap("viridis", max(len(volts), 2))
        for p in pts:
            ax.scatter(
                p[key], p["test_accuracy"], color=cmap(volts.index(p["voltage_v"])), s=20 + 8 * p["width_s"] * 1e9
            )
            ax.annotate(p["label"], (p[key], p["test_accuracy"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.plot([p[key] for p in front], [p["test_accuracy"] for p in front], "k--", lw=1, label="efficiency frontier")
        for i, v in enumerate(volts):
            ax.scatter([], [], color=cmap(i), s=30, label=f"{v:g} V")
        if key == "write_energy_per_epoch_j":
            ax.set_xscale("log")
        else:  # the periphery dominates: the points differ in the last digits
            ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 0), useOffset=True)
        ax.set_xlabel(f"{title} (J)")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        f"{result['card']} operating points ({result['dataset']}, {result['config']['epochs']} epochs, "
        f"controller: {result['controller']}); marker size ~ pulse width",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _summary(result: dict) -> str:
    best = result["best"]
    return f"best: {best['label']} ({best['test_accuracy']:.4f}); frontier: {result['frontier_total']}"


def main(argv: list[str] | None = None) -> int:
    ap = parser(NAME, __doc__, "digits, 3 voltages x 2 widths, 3 epochs", "2 points, 1 epoch")
    ap.add_argument("--data", default=None, help="RT-MNIST npz (x_train, y_train, x_test, y_test) for the full run")
    ap.add_argument("--voltages", default=None, help="comma-separated gate voltages (V), overriding the mode's grid")
    ap.add_argument("--widths-ns", default=None, help="comma-separated pulse widths (ns), overriding the mode's grid")
    ap.add_argument("--controller", choices=("operating", "card"), default="operating", help="see the module docstring")
    ap.add_argument("--seed", type=int, default=0)
    add_update_mode(ap)
    return write_results(NAME, ap.parse_args(argv), run, plot, _summary)


if __name__ == "__main__":
    sys.exit(main())
