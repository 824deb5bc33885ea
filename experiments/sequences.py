"""Sequence models on crossbars: an LSTM reading images row by row, and a small transformer on
associative recall, each beside its digital twin.

*Sequential MNIST by rows.* A 28 x 28 image is fed as 28 time steps of 28 pixels to an LSTM
(``analogsim.models.RecurrentClassifier``: two arrays per cell, input-to-gates and
hidden-to-gates, each read once per step, so 28 times per image; the update sums the 28 outer
products); the class is read from the last hidden state by an analog head. ``--quick`` uses the
digits set (8 steps of 8 pixels).

*Associative recall.* ``pairs`` key-value tokens (8 of 16 keys; 12 of 24 in the full mode) then a query key; the label is the queried key's
value (``analogsim.models.associative_recall``: a synthetic task with a known answer, chance 1 /
values). A one-block transformer (``TransformerClassifier``: embeddings digital; the query, key,
value, output and MLP matrices analog; scores, softmax and norms digital) must attend from the
query to the matching token to solve it.

Every network trains with analog SGD (digital parameters with SGD at the same rate); the digital
twin is the same network with ``nnx.Linear``/Flax cells. ``CARD@symmetry-point`` reads every
array against each device's symmetry point (``AnalogLinear``'s ``reference``): on the protonic
card, whose symmetry point sits off zero, SGD otherwise drifts the LSTM's weights there. Reported per network: test accuracy per
epoch, time per epoch (training samples over the median throughput of the epochs after the
first, which compiles) and the energy of the run (the ledger; the digital twin's transformer
projections are Flax ``LinearGeneral`` layers, which the ledger does not count).

Modes: ``--quick`` (digits rows and 8,000 recall sequences, 5 epochs, a few minutes on 2 CPU
cores), full (RT-MNIST rows with ``--data PATH/mnist10k.npz`` and 10,000 recall sequences, 10
epochs), ``--tiny`` (for the test suite). Writes ``results.json`` and ``sequences.png`` under
``--out`` (default ``results/sequences``).

    python experiments/sequences.py --quick
    python experiments/sequences.py --data ../shared/data/mnist-10k/mnist10k.npz
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import dataset_for, mode_of, parser, write_results  # noqa: E402
from flax import nnx  # noqa: E402

from analogsim import train_model  # noqa: E402
from analogsim.models import RecurrentClassifier, TransformerClassifier, associative_recall  # noqa: E402

NAME = "sequences"
MODES = {  # epochs, LSTM hidden, recall (train, test), transformer (d_model, heads, d_ff, depth), recall pairs/keys
    "tiny": (1, 16, (256, 64), (16, 2, 32, 1), (8, 16)),
    "quick": (5, 64, (8000, 1000), (32, 2, 64, 1), (8, 16)),
    "full": (10, 128, (10000, 2000), (64, 4, 128, 1), (12, 24)),
}
VALUES = 10  # recall: each key's value is one of 10 (chance 0.1)
LR = 0.1
BATCH = 32


def _train(model, data, epochs: int, seed: int, card) -> dict:
    t0 = time.perf_counter()
    run = train_model(model, data, lr=LR, epochs=epochs, batch_size=BATCH, seed=seed, progress=False,
                      device_card=card)  # fmt: skip
    speeds = run.epoch_samples_per_s[1:] or run.epoch_samples_per_s
    per_s = statistics.median(speeds)
    energy = sum(e["total_j"] for e in run.epoch_energy) if run.epoch_energy else None
    return {
        "test_accuracy": run.epoch_test_accuracy,
        "samples_per_s": per_s,
        "s_per_epoch": len(data.x_train) / per_s,
        "wall_s": time.perf_counter() - t0,
        "energy_j": energy,
    }


def run(args: argparse.Namespace) -> dict:
    mode = mode_of(args)
    epochs, hidden, (n_train, n_test), (d_model, heads, d_ff, depth), (pairs, keys) = MODES[mode]
    recall_spec = {"pairs": pairs, "keys": keys, "values": VALUES}
    images = dataset_for(mode, args.data, "python experiments/sequences.py --data PATH/mnist10k.npz")
    side = images.image()[0]
    recall = associative_recall(n_train, n_test, seed=0, **recall_spec)
    vocab = keys * VALUES + keys
    rows = []
    for spec in (None, *args.cards.split(",")):
        card, _, reference = (spec or "").partition("@")
        card = card or None
        label = spec or "digital"
        analog = {"reference": reference} if reference else {}
        lstm = RecurrentClassifier(side, side, hidden, images.num_classes, device=card, rngs=nnx.Rngs(args.seed),
                                   **analog)  # fmt: skip
        r = _train(lstm, images, epochs, args.seed, card)
        rows.append({"task": f"{images.name} rows (LSTM {hidden})", "network": label, **r})
        print(f"LSTM        {label:<18} test {r['test_accuracy'][-1]:.3f}  {r['s_per_epoch']:.2f} s/epoch", flush=True)
        tf = TransformerClassifier(vocab, pairs + 1, VALUES, d_model=d_model, num_heads=heads, d_ff=d_ff, depth=depth,
                                   device=card, rngs=nnx.Rngs(args.seed), **analog)  # fmt: skip
        r = _train(tf, recall, epochs, args.seed, card)
        rows.append({"task": f"associative recall (transformer d={d_model})", "network": label, **r})
        print(f"transformer {label:<18} test {r['test_accuracy'][-1]:.3f}  {r['s_per_epoch']:.2f} s/epoch", flush=True)
    return {
        "experiment": NAME,
        "mode": mode,
        "config": {
            "epochs": epochs,
            "lr": LR,
            "batch_size": BATCH,
            "seed": args.seed,
            "lstm_hidden": hidden,
            "recall": {**recall_spec, "train": n_train, "test": n_test, "chance": 1 / VALUES},
            "transformer": {"d_model": d_model, "heads": heads, "d_ff": d_ff, "depth": depth},
            "rule": "analog SGD (digital parameters: optax.sgd at the same rate)",
        },  # fmt: skip
        "rows": rows,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(r["task"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for r in (r for r in result["rows"] if r["task"] == task):
            acc = r["test_accuracy"]
            style = "k--" if r["network"] == "digital" else "o-"
            ax.plot(range(1, len(acc) + 1), acc, style, label=f"{r['network']} ({r['s_per_epoch']:.1f} s/epoch)")
        ax.set_title(task, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = parser(NAME, __doc__, "digits rows and 8,000 recall sequences, 5 epochs", "1 epoch, tiny networks")
    ap.add_argument("--data", default=None, help="RT-MNIST .npz for the full mode")
    ap.add_argument(
        "--cards",
        default="wo3-psg-onen2022,wo3-psg-onen2022@symmetry-point,idealized",
        help="comma-separated device cards; CARD@symmetry-point reads the arrays against each device's symmetry point",
    )
    ap.add_argument("--seed", type=int, default=0, help="PRNG seed")
    return write_results(NAME, ap.parse_args(argv), run, plot)


if __name__ == "__main__":
    sys.exit(main())
