"""Device requirements for analog SGD, one factor at a time (after Gokmen & Vlasov, Front. Neurosci. 10:333, 2016).

Gokmen & Vlasov asked how good a resistive cross-point device (an "RPU") must be for
stochastic-pulse SGD to train as well as floating point, by degrading one property at a
time. This script does the same on constant-step devices (``device_models.ConstantStep``,
aihwkit's ``ConstantStepDevice`` semantics), starting from an ideal baseline (``dw_min`` =
0.001 over the aihwkit range [-0.6, 0.6], i.e. 1200 states; no asymmetry; no device-to-device
or cycle-to-cycle variation) and varying:

- the number of states, :math:`(w_{max} - w_{min}) / \\Delta w_{min}`, through ``dw_min``;
- the up/down asymmetry ``up_down`` (the down step is ``1 - up_down`` times the up step);
- the device-to-device spread of the step, ``dw_min_dtod`` (std of each device's step gain);
- the cycle-to-cycle spread, ``dw_min_std`` (std of every pulse's step, in units of the step).

Each point is a temporary TOML card (the built-in ``constant-step`` card with those values),
trained with analog SGD and the aihwkit-default periphery; the test accuracy is recorded. The
tolerance of each factor is the worst value whose accuracy stays within ``--tolerance`` of the
baseline's.

Modes: ``--quick`` (digits, 64-wide hidden layer, 3 epochs, 3 points per factor, a minute or two
on 2 CPU cores), full (RT-MNIST from ``--data mnist10k.npz``, the 784-256-128-10 reference task,
5 epochs, 6-7 points per factor), ``--tiny`` (for the test suite only: 2 points per factor,
1 epoch, a single analog layer). Writes ``results.json`` and ``device_requirements.png`` (four
panels) under ``--out`` (default ``results/device_requirements``).

    python experiments/device_requirements.py --quick
    python experiments/device_requirements.py --data ../shared/data/mnist-10k/mnist10k.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import config_record, dataset_for, mode_of, parser, write_results  # noqa: E402

import device_models
from analogsim import TrainConfig, train

NAME = "device_requirements"
BASE_CARD = "constant-step"
BASELINE = {  # the ideal device every factor starts from
    "dw_min": 0.001,
    "up_down": 0.0,
    "dw_min_dtod": 0.0,
    "dw_min_std": 0.0,
    "up_down_dtod": 0.0,
    "w_max": 0.6,
    "w_min": -0.6,
    "w_max_dtod": 0.0,
    "w_min_dtod": 0.0,
}
FACTORS = ("dw_min", "up_down", "dw_min_dtod", "dw_min_std")
SWEEPS = {
    "tiny": {"dw_min": (0.1,), "up_down": (0.5,), "dw_min_dtod": (1.0,), "dw_min_std": (3.0,)},
    "quick": {
        "dw_min": (0.1, 0.01),
        "up_down": (0.05, 0.3),
        "dw_min_dtod": (0.3, 1.0),
        "dw_min_std": (1.0, 4.0),
    },
    "full": {
        "dw_min": (0.1, 0.03, 0.01, 0.003, 0.0005),
        "up_down": (0.01, 0.02, 0.05, 0.1, 0.2, 0.5),
        "dw_min_dtod": (0.1, 0.3, 0.6, 1.0),
        "dw_min_std": (0.3, 1.0, 2.0, 4.0),
    },
}
TRAINING = {  # epochs, hidden, lr
    "tiny": (1, (), 0.5),
    "quick": (3, (64,), 0.5),
    "full": (5, (256, 128), 0.1),
}
PAPER = {
    "source": "Gokmen & Vlasov, 'Acceleration of deep neural network training with resistive cross-point devices: "
    "design considerations', Front. Neurosci. 10:333 (2016)",
    "verified": False,
    "note": "from memory of the paper's abstract and conclusions, not checked against its text here; aihwkit's "
    "GokmenVlasovPresetDevice (dw_min 0.0016 'to keep 1200 states' over [-1, 1], 30% device-to-device and "
    "cycle-to-cycle spread of the step) is consistent with the states and spreads. Their network: a 784-256-128-10 "
    "MLP on MNIST, tolerance judged by the extra test error over floating point",
    "dw_min": "about 600-1200 states (dw_min about 0.001 for weights in [-0.6, 0.6])",
    "up_down": "up/down asymmetry within about 2-5%",
    "dw_min_dtod": "device-to-device variation of the step up to about 30%",
    "dw_min_std": "cycle-to-cycle variation of the step up to about 100% of dw_min",
    # the same limits as numbers in this script's units (drawn as dotted vertical lines)
    "limits": {"dw_min": 0.001, "up_down": 0.05, "dw_min_dtod": 0.3, "dw_min_std": 1.0},
}


def point_card(values: dict[str, float], label: str, folder: Path) -> Path:
    """The constant-step card with ``values`` (the baseline, one factor changed), written into ``folder``."""
    return device_models.card_variant(
        BASE_CARD, f"{BASE_CARD}-{label}", values, source=f"{NAME}.py: one-factor sweep point {label}", folder=folder
    )


def states(values: dict[str, float]) -> float:
    return (values["w_max"] - values["w_min"]) / values["dw_min"]


def run(args: argparse.Namespace) -> dict:
    mode = mode_of(args)
    epochs, hidden, lr = TRAINING[mode]
    data = dataset_for(mode, args.data, "python experiments/device_requirements.py --data mnist10k.npz")
    t_start = time.perf_counter()

    def fit(device: str, algorithm: str = "sgd") -> dict:
        cfg = TrainConfig(device=device, algorithm=algorithm, epochs=epochs, hidden=hidden, lr=lr, seed=args.seed)
        return train(cfg, progress=False, dataset=data)

    digital = fit(BASE_CARD, "digital")["test_accuracy"]
    print(f"digital (float32): {digital:.4f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="analogsim-requirements-") as tmp:
        tmp = Path(tmp)
        base_acc = fit(str(point_card(BASELINE, "baseline", tmp)))["test_accuracy"]
        print(f"baseline (ideal, {states(BASELINE):.0f} states): {base_acc:.4f}", flush=True)
        factors = {}
        for factor in FACTORS:
            values = sorted({BASELINE[factor], *SWEEPS[mode][factor]}, reverse=factor == "dw_min")
            points = []
            for value in values:
                if value == BASELINE[factor]:
                    acc = base_acc
                else:
                    point = {**BASELINE, factor: value}
                    acc = fit(str(point_card(point, f"{factor}-{value:g}", tmp)))["test_accuracy"]
                    print(f"{factor} = {value:g}: {acc:.4f}", flush=True)
                row = {"value": value, "test_accuracy": acc}
                if factor == "dw_min":
                    row["states"] = states({**BASELINE, "dw_min": value})
                points.append(row)
            ok = [p for p in points if p["test_accuracy"] >= base_acc - args.tolerance]
            tolerated = max(p["value"] for p in ok)  # for dw_min: the fewest states that still train as well
            text = f"{factor} {tolerated:g}"
            if factor == "dw_min":
                text += f" ({states({**BASELINE, 'dw_min': tolerated}):.0f} states)"
            factors[factor] = {
                "points": points,
                "tolerated": tolerated,
                "tolerated_text": text,
                "paper": PAPER[factor],
                "paper_limit": PAPER["limits"][factor],
            }
    best = max([base_acc] + [p["test_accuracy"] for f in factors.values() for p in f["points"]])
    return {
        "experiment": NAME,
        "mode": mode,
        "dataset": data.name,
        "device": f"{BASE_CARD} (constant step), ideal baseline with one factor changed",
        "config": config_record(epochs, hidden, lr, TrainConfig().update_mode, seed=args.seed),
        "baseline": {**BASELINE, "states": states(BASELINE), "test_accuracy": base_acc},
        "digital_test_accuracy": digital,
        "tolerance": args.tolerance,
        "tolerance_rule": "worst value whose test accuracy is >= baseline - tolerance (tested points only)",
        "factors": factors,
        "best_test_accuracy": best,
        "paper": PAPER,
        "runtime_s": time.perf_counter() - t_start,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {
        "dw_min": ("number of states (w_max - w_min)/dw_min", True),
        "up_down": ("up/down asymmetry (up_down)", False),
        "dw_min_dtod": ("device-to-device spread of the step (dw_min_dtod)", False),
        "dw_min_std": ("cycle-to-cycle spread of the step (dw_min_std)", False),
    }
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8), sharey=True)
    for ax, factor in zip(axes, FACTORS, strict=True):
        f = result["factors"][factor]
        xs = [p["states"] if factor == "dw_min" else p["value"] for p in f["points"]]
        ax.plot(xs, [p["test_accuracy"] for p in f["points"]], "o-")
        ax.axhline(result["digital_test_accuracy"], color="0.4", ls="--", lw=0.8, label="digital")
        ax.axhline(
            result["baseline"]["test_accuracy"] - result["tolerance"],
            color="tab:red",
            ls=":",
            lw=0.8,
            label=f"baseline - {result['tolerance']:g}",
        )
        limit = result["paper"]["limits"][factor]
        x_limit = states({**BASELINE, "dw_min": limit}) if factor == "dw_min" else limit
        ax.axvline(x_limit, color="tab:green", ls=":", lw=1, label="paper's limit (from memory)")
        label, log = titles[factor]
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(label, fontsize=9)
        ax.set_title(f"paper: {f['paper']}", fontsize=7, wrap=True)
    axes[0].set_ylabel("test accuracy")
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"device requirements, one factor at a time ({result['dataset']}, {result['config']['epochs']} epochs, "
        f"{result['mode']} mode); paper values from memory, see results.json",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _summary(result: dict) -> str:
    lines = []
    for factor, f in result["factors"].items():
        lines.append(f"{factor:<12} tolerated: {f['tolerated_text']:<32} paper: {f['paper']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(NAME, __doc__, "digits, 3 points per factor, 3 epochs", "2 points per factor, 1 epoch")
    ap.add_argument("--data", default=None, help="RT-MNIST npz (x_train, y_train, x_test, y_test) for the full run")
    ap.add_argument("--tolerance", type=float, default=0.01, help="accuracy drop still tolerated (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    return write_results(NAME, ap.parse_args(argv), run, plot, _summary)


if __name__ == "__main__":
    sys.exit(main())
