"""Retention: test accuracy of a trained network after its weights sat for a minute to a year.

For each card, train on the digits set with ``--checkpoint-dir`` (the whole state is saved),
then evaluate the checkpoint after t = 0, 1 min, 1 h, 1 d, 1 w and 1 y
(``analogsim.inference.evaluate_after``): every stored state goes through the card's
``[retention]`` model (``device_models.retention``: relaxation toward a rest state with time
constant ``tau``, and/or power-law drift :math:`w(t_0)(t/t_0)^{-\\nu}`), every read sees the
card's read noise, with and without *global drift compensation* (each layer's output rescaled
by :math:`\\sum|Y(0)| / \\sum|Y(t)|`, the outputs of 32 reference inputs read right after
programming and again after the wait; ``analogsim.compensation``).

Cards: the built-in cards with a ``[retention]`` section, ``wo3-psg-onen2022`` (tau 1e6 s,
relaxing toward the proton-depleted lower bound) and ``wo3-protonic-yao2020`` (tau 1e5 s), both
*assumed* values (see the cards), and an illustrative ``constant-step`` card with pure power-law
drift (nu = 0.05, t0 = 1 s, assumed for illustration, not taken from a measurement), the kind of
drift that global compensation is built for. Relaxation toward a rest state is not a pure
rescaling, so compensation recovers less of it.

Modes: ``--quick`` (3 cards, one seed, 3 epochs of a 64-wide MLP, a minute or two on 2 CPU
cores), full (3 cards, seeds 0-2, 20 epochs of the 256-128 MLP), ``--tiny`` (for the test
suite only: one card, one epoch, a single analog layer). Writes ``results.json`` and
``retention.png`` under ``--out`` (default ``results/retention``).

    python experiments/retention.py --quick
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import config_record, dataset_for, mode_of, parser, write_results  # noqa: E402

import device_models
from analogsim import TrainConfig, train
from analogsim.inference import evaluate_after

NAME = "retention"
TIMES = ((0.0, "0"), (60.0, "1 min"), (3600.0, "1 h"), (86400.0, "1 d"), (604800.0, "1 w"), (365.25 * 86400.0, "1 y"))
DRIFT_CARD = "constant-step-drift"  # derived here: constant-step + power-law drift (illustrative)
MODES = {  # cards, seeds, epochs, hidden, lr
    "tiny": (("wo3-psg-onen2022",), (0,), 1, (), 0.5),
    "quick": (("wo3-psg-onen2022", "wo3-protonic-yao2020", DRIFT_CARD), (0,), 3, (64,), 0.5),
    "full": (("wo3-psg-onen2022", "wo3-protonic-yao2020", DRIFT_CARD), (0, 1, 2), 20, (256, 128), 0.1),
}


def drift_card(folder: Path) -> Path:
    """The built-in constant-step card with an illustrative [retention] section of pure power-law drift."""
    doc = device_models.card_document("constant-step")
    doc["name"] = DRIFT_CARD
    doc["description"] = "constant-step with illustrative power-law drift (experiments/retention.py)"
    why = "assumed, illustrative (experiments/retention.py): "
    doc["retention"] = {
        "read_noise_std": {
            "value": 0.005,
            "unit": "1",
            "provenance": "assumed",
            "source": why + "the read noise of the protonic cards, for a like-for-like comparison",
        },
        "drift_nu": {
            "value": 0.05,
            "unit": "1",
            "provenance": "assumed",
            "source": why
            + "a power-law drift exponent of the order often quoted for phase-change memory; not from a measurement",
        },
        "drift_t0": {
            "value": 1.0,
            "unit": "s",
            "provenance": "assumed",
            "source": why + "drift counted from 1 s after programming",
        },
    }
    path = folder / f"{DRIFT_CARD}.toml"
    with path.open("x", encoding="utf-8") as out:  # an existing file is not overwritten
        out.write(device_models.card_toml(doc))
    device_models.load_card(path)  # checked like any user card
    return path


def run(args: argparse.Namespace) -> dict:
    mode = mode_of(args)
    cards, seeds, epochs, hidden, lr = MODES[mode]
    if args.cards:
        cards = tuple(args.cards.split(","))
    data = dataset_for(mode, None, "")
    times = [t for t, _ in TIMES]
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="analogsim-retention-") as tmp:
        tmp = Path(tmp)
        for name in cards:
            device = str(drift_card(tmp)) if name == DRIFT_CARD else name
            card = device_models.load_card(device)
            per_seed = []
            for seed in seeds:
                ckpt = tmp / f"{name}-seed{seed}"
                cfg = TrainConfig(
                    device=device, epochs=epochs, hidden=hidden, lr=lr, seed=seed, checkpoint_dir=str(ckpt)
                )
                res = train(cfg, progress=False, dataset=data)
                plain = evaluate_after(ckpt, times, drift_compensation=False, dataset=data)
                comp = evaluate_after(ckpt, times, drift_compensation=True, dataset=data)
                per_seed.append(
                    {
                        "seed": seed,
                        "trained_test_accuracy": res["test_accuracy"],
                        "uncompensated": [r["test_accuracy"] for r in plain],
                        "compensated": [r["test_accuracy"] for r in comp],
                    }
                )
                print(
                    f"{name:<22} seed {seed}: trained {res['test_accuracy']:.3f}; after "
                    + ", ".join(
                        f"{label} {a:.3f}/{b:.3f}"
                        for (_, label), a, b in zip(
                            TIMES, per_seed[-1]["uncompensated"], per_seed[-1]["compensated"], strict=True
                        )
                    )
                    + "  (without/with compensation)",
                    flush=True,
                )
            rows.append(
                {
                    "card": name,
                    "derived": name == DRIFT_CARD,
                    # inf (no relaxation) is written as null
                    "retention": {
                        k: (float(v) if math.isfinite(float(v)) else None)
                        for k, v in dataclasses.asdict(card.retention).items()
                    },
                    "trained_test_accuracy": float(np.mean([s["trained_test_accuracy"] for s in per_seed])),
                    "uncompensated": np.mean([s["uncompensated"] for s in per_seed], axis=0).tolist(),
                    "compensated": np.mean([s["compensated"] for s in per_seed], axis=0).tolist(),
                    "per_seed": per_seed,
                }
            )
    return {
        "experiment": NAME,
        "mode": mode,
        "dataset": data.name,
        "config": config_record(epochs, hidden, lr, TrainConfig().update_mode, seeds=list(seeds)),
        "times_s": times,
        "time_labels": [label for _, label in TIMES],
        "drift_compensation": "global: each layer's output x sum|Y(0)| / sum|Y(t)| over reference reads (analogsim.compensation)",
        "paper": {
            "source": "the cards' [retention] sections",
            "reported": "no measured retention enters: tau of wo3-psg-onen2022 (1e6 s) and wo3-protonic-yao2020 (1e5 s) "
            "are assumed in the cards (Onen et al. 2022 call the states non-volatile without a time constant the card takes); "
            "the drift card is illustrative",
        },
        "cards": rows,
        "runtime_s": time.perf_counter() - t_start,
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [max(t, 1.0) for t in result["times_s"]]  # t = 0 drawn at 1 s on the log axis
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    colors = plt.get_cmap("tab10")
    for i, row in enumerate(result["cards"]):
        ax.plot(x, row["uncompensated"], "o-", color=colors(i), label=f"{row['card']}")
        ax.plot(x, row["compensated"], "s--", color=colors(i), label=f"{row['card']}, drift compensation")
    ax.axhline(0.1, color="0.5", lw=0.8, ls=":", label="chance")
    ax.set_xscale("log")
    ax.set_xticks(x, result["time_labels"])
    ax.minorticks_off()
    ax.set_xlabel("time since programming")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(
        f"retention ({result['dataset']}, {result['config']['epochs']} epochs, {result['mode']} mode)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = parser(NAME, __doc__, "3 cards, 1 seed, 3 epochs", "1 card, 1 epoch, one analog layer")
    ap.add_argument("--cards", default=None, help=f"comma-separated cards (built-in names, paths, or {DRIFT_CARD})")
    return write_results(NAME, ap.parse_args(argv), run, plot)


if __name__ == "__main__":
    sys.exit(main())
