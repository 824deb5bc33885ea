"""Deployment: train for an inference chip, then read the network after 1 s to 1 year.

Two questions, each answered on the same trained weights with repeated programmings:

1. **Hardware-aware training against PCM-like inference noise.** The MLP is trained twice on a
   near-ideal device (the ``idealized`` card, plain analog SGD): once as it is, once with a
   training-time weight modifier on the forward read of every step (``--weight-modifier``,
   ``analogsim.modifiers``; aihwkit's ``WeightModifierParameter``). Each network is then
   programmed onto PCM-like device pairs (``analogsim.inference_noise``: programming noise,
   drift with a distribution of exponents, accumulated 1/f read noise; the constants of
   aihwkit's ``PCMLikeNoiseModel`` after Nandakumar et al. 2019 and Joshi et al. 2020) and
   evaluated after 1 s, 1 h, 1 d and 1 y, with aihwkit's default global drift compensation,
   over ``draws`` programmings (mean and std).
2. **The protonic card's retention, compensated.** The MLP is trained on ``wo3-psg-onen2022``
   and its stored states go through the card's ``[retention]`` (relaxation toward the
   proton-depleted bound, tau = 1e6 s, an assumed value: see the card), evaluated with no
   compensation, the old global rescale and the new per-column affine correction from
   reference reads (``analogsim.compensation``), which removes the offset the relaxation adds.

Modes: ``--quick`` (the digits set, 64-wide MLP, 8 epochs, 10 draws; a few minutes on 2 cores),
full (RT-MNIST: ``--data PATH/mnist10k.npz``, the 784-256-128-10 MLP, 10 epochs, 10 draws),
``--tiny`` (for the test suite only). Writes ``results.json`` and ``deployment.png`` under
``--out`` (default ``results/deployment``).

    python experiments/deployment.py --quick
    python experiments/deployment.py --data ../shared/data/mnist-10k/mnist10k.npz
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import config_record, dataset_for, mode_of, parser, write_results  # noqa: E402

from analogsim import TrainConfig, train
from analogsim.inference import evaluate_after

NAME = "deployment"
TIMES = ((1.0, "1 s"), (3600.0, "1 h"), (86400.0, "1 d"), (365.25 * 86400.0, "1 y"))
RETENTION_TIMES = ((1.0, "1 s"), (3600.0, "1 h"), (86400.0, "1 d"), (604800.0, "1 w"), (365.25 * 86400.0, "1 y"))
HWA_CARD = "idealized"
PROTONIC_CARD = "wo3-psg-onen2022"
MODES = {  # epochs, hidden, lr, draws, retention draws
    "tiny": (1, (16,), 0.5, 2, 1),
    "quick": (8, (64,), 0.2, 10, 3),
    "full": (10, (256, 128), 0.1, 10, 3),
}
COMPENSATIONS = ("none", "global", "affine")


def _summary(rows: list[dict]) -> dict:
    return {
        "test_accuracy": [r["test_accuracy"] for r in rows],
        "test_accuracy_std": [r["test_accuracy_std"] for r in rows],
        "accuracies": [r["accuracies"] for r in rows],
    }


def run(args: argparse.Namespace) -> dict:
    mode = mode_of(args)
    epochs, hidden, lr, draws, ret_draws = MODES[mode]
    data = dataset_for(mode, args.data, "python experiments/deployment.py --data PATH/mnist10k.npz")
    t_start = time.perf_counter()
    pcm_rows, retention_rows = [], []
    with tempfile.TemporaryDirectory(prefix="analogsim-deployment-") as tmp:
        for label, modifier in (("standard", ""), ("hardware-aware", args.weight_modifier)):
            ckpt = Path(tmp) / label
            cfg = TrainConfig(
                device=HWA_CARD, epochs=epochs, hidden=hidden, lr=lr, seed=args.seed, weight_modifier=modifier,
                checkpoint_dir=str(ckpt),
            )  # fmt: skip
            res = train(cfg, progress=False, dataset=data)
            rows = evaluate_after(
                ckpt, [t for t, _ in TIMES], dataset=data, noise_model="pcm", compensation="global", draws=draws
            )
            pcm_rows.append({"network": label, "weight_modifier": modifier or None} | _pcm_row(res, rows))
            print(
                f"PCM  {label:<15} trained {res['test_accuracy']:.3f}; "
                + ", ".join(f"{t} {r['test_accuracy']:.3f}+-{r['test_accuracy_std']:.3f}" for (_, t), r in zip(TIMES, rows, strict=True)),
                flush=True,
            )  # fmt: skip
        ckpt = Path(tmp) / "protonic"
        cfg = TrainConfig(device=PROTONIC_CARD, epochs=epochs, hidden=hidden, lr=lr, seed=args.seed,
                          checkpoint_dir=str(ckpt))  # fmt: skip
        res = train(cfg, progress=False, dataset=data)
        for comp in COMPENSATIONS:
            rows = evaluate_after(
                ckpt, [t for t, _ in RETENTION_TIMES], dataset=data, compensation=comp, draws=ret_draws
            )
            retention_rows.append(
                {"compensation": comp, "trained_test_accuracy": res["test_accuracy"]} | _summary(rows)
            )
            print(
                f"{PROTONIC_CARD} {comp:<7} trained {res['test_accuracy']:.3f}; "
                + ", ".join(f"{t} {r['test_accuracy']:.3f}" for (_, t), r in zip(RETENTION_TIMES, rows, strict=True)),
                flush=True,
            )  # fmt: skip
    return {
        "experiment": NAME,
        "mode": mode,
        "dataset": data.name,
        "config": config_record(epochs, hidden, lr, TrainConfig().update_mode, seed=args.seed),
        "pcm": {
            "card": HWA_CARD,
            "noise_model": "PCM-like (analogsim.inference_noise; aihwkit PCMLikeNoiseModel constants)",
            "compensation": "global",
            "draws": draws,
            "times_s": [t for t, _ in TIMES],
            "time_labels": [t for _, t in TIMES],
            "networks": pcm_rows,
        },
        "retention": {
            "card": PROTONIC_CARD,
            "noise_model": "the card's [retention] and read noise",
            "draws": ret_draws,
            "times_s": [t for t, _ in RETENTION_TIMES],
            "time_labels": [t for _, t in RETENTION_TIMES],
            "rows": retention_rows,
        },
        "runtime_s": time.perf_counter() - t_start,
    }


def _pcm_row(res: dict, rows: list[dict]) -> dict:
    s = _summary(rows)
    return {
        "trained_test_accuracy": res["test_accuracy"],
        **s,
        "loss_at_1y": res["test_accuracy"] - s["test_accuracy"][-1],
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    pcm = result["pcm"]
    for row in pcm["networks"]:
        name = row["network"] + (f" ({row['weight_modifier']})" if row["weight_modifier"] else "")
        a.errorbar(
            pcm["times_s"], row["test_accuracy"], yerr=row["test_accuracy_std"], marker="o", capsize=3, label=name
        )
    lows = [m - s for n in pcm["networks"] for m, s in zip(n["test_accuracy"], n["test_accuracy_std"], strict=True)]
    a.set_ylim(min(lows) - 0.03, max(n["trained_test_accuracy"] for n in pcm["networks"]) + 0.02)  # a zoom
    for i, n in enumerate(pcm["networks"]):
        a.axhline(n["trained_test_accuracy"], color=f"C{i}", lw=0.8, ls="--")
    a.set_title(f"PCM-like noise, global compensation, {pcm['draws']} draws (dashed: as trained)", fontsize=9)
    ret = result["retention"]
    for row in ret["rows"]:
        b.plot(ret["times_s"], row["test_accuracy"], marker="o", label=f"compensation {row['compensation']}")
    b.set_title(f"{ret['card']} retention", fontsize=9)
    b.axhline(0.1, color="0.5", lw=0.8, ls=":")
    for ax, part in ((a, pcm), (b, ret)):
        ax.set_xscale("log")
        ax.set_xticks(part["times_s"], part["time_labels"])
        ax.minorticks_off()
        ax.set_xlabel("time since programming")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"deployment ({result['dataset']}, {result['config']['epochs']} epochs, {result['mode']} mode)", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = parser(NAME, __doc__, "the digits set, 64-wide MLP, 8 epochs", "1 epoch, 2 draws")
    ap.add_argument("--data", default=None, help="RT-MNIST mnist10k.npz (the full mode)")
    ap.add_argument("--weight-modifier", default="add_normal:0.1", help="the hardware-aware network's modifier")
    ap.add_argument("--seed", type=int, default=0)
    return write_results(NAME, ap.parse_args(argv), run, plot)


if __name__ == "__main__":
    sys.exit(main())
