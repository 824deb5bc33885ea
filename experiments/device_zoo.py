"""Device zoo: every built-in card trained on the same task, with accuracy, energy per epoch and
time to train in one table and one plot.

Each card trains the same network with analog SGD at the mode's settings (full mode: the
reference task's lr 0.1, batch 64), except where the card's own notes ask for another rule: the
one-directional PCM card (``pcm-nandakumar2020``) trains as a differential pair with refresh
(``sgd-pair``) at a tenth of the learning rate, as its card file says. The digital baseline runs first in the same process.

Energy is the ledger's: the training total per epoch (writes, reads, DAC/ADC, digital parts) and
its device-write part (pulses x the card's energy per pulse, whose provenance is recorded per
card: most cards carry no measured pulse energy, and the periphery card's assumed default is
used). Time to train is the wall time of the whole ``train`` call (compilation included) and the
training throughput (median samples/s over the epochs after the first).

Modes: ``--quick`` (digits, one 64-wide hidden layer, 3 epochs: a few minutes on 2 CPU cores),
full (RT-MNIST from ``--data mnist10k.npz``: the 784-256-128-10 reference task, 5 epochs),
``--tiny`` (for the test suite only). ``--cards`` picks a subset.

    python experiments/device_zoo.py --quick
    python experiments/device_zoo.py --data ../shared/data/mnist-10k/mnist10k.npz
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import config_record, dataset_for, mode_of, parser, write_results  # noqa: E402

import device_models  # noqa: E402
from analogsim import TrainConfig, train  # noqa: E402

NAME = "device_zoo"
# Cards whose notes ask for another rule than SGD: card -> (algorithm, factor on the mode's lr).
RULE_FOR_CARD = {"pcm-nandakumar2020": ("sgd-pair", 0.1)}
SETTINGS = {  # mode -> (epochs, hidden, lr, cards or None for every built-in card)
    "tiny": (1, (16,), 0.5, ("soft-bounds", "wo3-psg-onen2022", "pcm-nandakumar2020")),
    "quick": (3, (64,), 0.5, None),  # digits: 3 short epochs want the larger lr of the other quick modes
    "full": (5, (256, 128), 0.1, None),  # the RT-MNIST reference settings
}


def _pulse_price(report: dict) -> tuple[float, str]:
    """Energy per up pulse of the first analog layer, and where that figure comes from."""
    for layer, prices in report["prices"].items():
        if layer.startswith("layers/") and "pulses_up" in prices:
            p = prices["pulses_up"]
            return float(p["joules"]), str(p["source"])
    return 0.0, "no analog layer"


def run(args) -> dict:
    mode = mode_of(args)
    epochs, hidden, lr, cards = SETTINGS[mode]
    if args.cards:
        cards = tuple(c.strip() for c in args.cards.split(",") if c.strip())
    elif cards is None:
        cards = tuple(device_models.builtin_card_names())
    data = dataset_for(mode, args.data, "python experiments/device_zoo.py --data mnist10k.npz")
    t_start = time.perf_counter()

    def fit(card: str, algorithm: str, lr: float) -> dict:
        cfg = TrainConfig(
            device=card,
            algorithm=algorithm,
            lr=lr,
            epochs=epochs,
            hidden=hidden,
            seed=args.seed,
            update_mode=args.update_mode,
        )
        t0 = time.perf_counter()
        r = train(cfg, progress=False, dataset=data)
        wall = time.perf_counter() - t0
        by_kind = r["energy_j"]["by_kind"]
        counts = r["energy_report"]["counts"]
        joules, source = _pulse_price(r["energy_report"])
        row = {
            "card": card,
            "model": "-" if algorithm == "digital" else type(device_models.load_card(card).model).__name__,
            "algorithm": algorithm,
            "lr": lr,
            "test_accuracy": r["test_accuracy"],
            "epoch_test_accuracy": r["epoch_test_accuracy"],
            "energy_per_epoch_j": r["energy_j"]["total"] / epochs,
            "write_energy_per_epoch_j": by_kind.get("write", 0.0) / epochs,
            "pulses_per_epoch": (counts.get("pulses_up", 0) + counts.get("pulses_down", 0)) / epochs,
            "pulse_energy_j": joules,
            "pulse_energy_source": source,
            "samples_per_s": r["samples_per_s"],
            "train_wall_s": wall,
            "update_modes": r.get("update_modes"),
        }
        print(
            f"{card:<22} {algorithm:<9} acc {row['test_accuracy']:.4f}  "
            f"{row['energy_per_epoch_j']:.3e} J/epoch (writes {row['write_energy_per_epoch_j']:.2e})  "
            f"{row['samples_per_s']:>8,.0f} samples/s  {wall:5.1f} s",
            flush=True,
        )
        return row

    digital = fit(cards[0], "digital", lr)
    digital["card"] = "digital"
    rows = []
    for card in cards:
        algorithm, factor = RULE_FOR_CARD.get(card, ("sgd", 1.0))
        rows.append(fit(card, algorithm, lr * factor))
    return {
        "experiment": NAME,
        "mode": mode,
        "dataset": data.name,
        "config": config_record(epochs, hidden, lr, args.update_mode, seed=args.seed),
        "digital": digital,
        "cards": rows,
        "runtime_s": time.perf_counter() - t_start,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(result["cards"], key=lambda r: r["test_accuracy"])
    names = [r["card"] + (f" ({r['algorithm']})" if r["algorithm"] != "sgd" else "") for r in rows]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 0.32 * len(rows) + 2.5))
    ax1.barh(names, [r["test_accuracy"] for r in rows], color="tab:blue")
    ax1.axvline(result["digital"]["test_accuracy"], color="k", ls="--", lw=1, label="digital")
    ax1.set_xlabel("test accuracy")
    low = min(r["test_accuracy"] for r in [*rows, result["digital"]])
    ax1.set_xlim(max(0.0, low - 0.05), 1.0)
    ax1.legend(fontsize=7, loc="lower right")
    ax1.set_title("accuracy")
    for r in rows:
        x = max(r["write_energy_per_epoch_j"], 1e-18)
        ax2.scatter(x, r["test_accuracy"], s=18)
        ax2.annotate(r["card"], (x, r["test_accuracy"]), fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax2.set_xscale("log")
    ax2.set_xlabel("device-write energy per epoch (J)")
    ax2.set_ylabel("test accuracy")
    totals = sorted(r["energy_per_epoch_j"] for r in rows)
    median = totals[len(totals) // 2] if totals else 0.0
    ax2.set_title(f"writes vs accuracy (a whole epoch: median {median:.3g} J, mostly periphery)", fontsize=9)
    ax3.barh(names, [r["train_wall_s"] for r in rows], color="tab:gray")
    ax3.axvline(result["digital"]["train_wall_s"], color="k", ls="--", lw=1, label="digital")
    ax3.set_xlabel("time to train, compilation included (s)")
    ax3.set_yticks([])
    ax3.legend(fontsize=7)
    ax3.set_title("time")
    fig.suptitle(f"device zoo: {result['dataset']}, {result['config']['epochs']} epochs ({result['mode']} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def summary(result: dict) -> str:
    lines = [
        "| card | model | rule | test accuracy | energy/epoch (J) | writes/epoch (J) | samples/s | time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in [result["digital"], *result["cards"]]:
        lines.append(
            f"| {r['card']} | {r['model']} | {r['algorithm']} (lr {r['lr']:g}) | {r['test_accuracy']:.4f} | "
            f"{r['energy_per_epoch_j']:.3e} | {r['write_energy_per_epoch_j']:.2e} | {r['samples_per_s']:,.0f} | "
            f"{r['train_wall_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = parser(NAME, __doc__, "digits, every card, 3 epochs", "3 cards, 1 epoch")
    ap.add_argument("--data", default=None, help="RT-MNIST npz (x_train, y_train, x_test, y_test) for the full run")
    ap.add_argument("--cards", default=None, help="comma-separated card names or paths (default: every built-in)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--update-mode",
        default=TrainConfig().update_mode,
        choices=("auto", "exact", "expected", "gaussian"),
        help="rung of the fidelity ladder (default %(default)s)",
    )
    args = ap.parse_args(argv)
    for card in (args.cards or "").split(","):
        if card.strip():
            try:
                device_models.load_card(card.strip())
            except (device_models.CardError, OSError) as e:
                print(f"error: --cards: {e}", file=sys.stderr)
                return 2
    return write_results(NAME, args, run, plot, summary)


if __name__ == "__main__":
    sys.exit(main())
