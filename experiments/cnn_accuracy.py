"""ResNet-20 trained on simulated crossbars beside the same network digital (issue 18).

The CIFAR ResNet-20 of ``analogsim.models`` (He et al. 2016, every convolution and the dense
layer analog) trained with analog SGD and with chopped TTv2 on the ``constant-step`` card
(aihwkit's ``ConstantStepDevice`` defaults), and digitally, with the same initial weights
distribution, batch 64, lr 0.1, plain SGD for the digital parameters (biases, batch
normalisation), no augmentation (flips would change digits).

``--quick``: the digits set (8x8 images, 1437 training and 360 test images), 10 epochs.
Full mode: RT-MNIST's images (``--data mnist10k.npz``: 8000 training, 2000 test) zero-padded
from 28x28 to 32x32, the CIFAR input size, 3 epochs; ``--train-size`` takes the first N
training images.

    python experiments/cnn_accuracy.py --quick
    python experiments/cnn_accuracy.py --data ../shared/data/mnist-10k/mnist10k.npz
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from _common import dataset_for, mode_of, parser, write_results
from flax import nnx

from analogsim import make_rule, train_model
from analogsim.models import ResNet

NAME = "cnn_accuracy"
RULES = ("digital", "sgd", "chopped-ttv2")


def _pad_to_32(data):
    """28x28 one-channel images zero-padded to 32x32 (2 pixels each side)."""

    def pad(x):
        return np.pad(x.reshape(-1, 28, 28), ((0, 0), (2, 2), (2, 2))).reshape(x.shape[0], -1)

    return dataclasses.replace(data, x_train=pad(data.x_train), x_test=pad(data.x_test), image_shape=(32, 32, 1))


def run(args) -> dict:
    mode = mode_of(args)
    data = dataset_for(mode, args.data, "python experiments/cnn_accuracy.py --data .../mnist10k.npz")
    if mode == "full":
        data = _pad_to_32(data)
    if args.train_size:
        data = dataclasses.replace(
            data, x_train=data.x_train[: args.train_size], y_train=data.y_train[: args.train_size]
        )
    if mode == "tiny":
        data = dataclasses.replace(data, x_train=data.x_train[:128], y_train=data.y_train[:128])
    epochs = args.epochs or {"tiny": 1, "quick": 10, "full": 3}[mode]
    image = data.image()
    rows = []
    for rule in args.rules.split(","):
        kwargs = {"image_shape": image, "width": 4 if mode == "tiny" else 16, "rngs": nnx.Rngs(args.seed)}
        if rule != "digital":
            kwargs |= {"device": args.device, "algorithm": make_rule(rule)}
        model = ResNet(20, num_classes=data.num_classes, **kwargs)
        t0 = time.perf_counter()
        result = train_model(
            model, data, lr=args.lr, epochs=epochs, batch_size=64, seed=args.seed, progress=not args.no_progress
        )
        wall = time.perf_counter() - t0
        rates = result.epoch_samples_per_s[1:] or result.epoch_samples_per_s
        row = {
            "rule": rule,
            "device": None if rule == "digital" else args.device,
            "test_accuracy": result.epoch_test_accuracy[-1],
            "epoch_test_accuracy": result.epoch_test_accuracy,
            "images_per_s": float(np.median(rates)),
            "epoch_s": data.x_train.shape[0] / float(np.median(rates)),
            "wall_s": wall,
        }
        rows.append(row)
        print(
            f"{rule:<14} test accuracy {row['test_accuracy']:.4f}  {row['images_per_s']:.0f} images/s  "
            f"{row['epoch_s']:.0f} s per epoch  ({wall:.0f} s with compilation)",
            flush=True,
        )
    return {
        "experiment": NAME,
        "mode": mode,
        "dataset": data.name,
        "image_shape": list(image),
        "train_images": int(data.x_train.shape[0]),
        "test_images": int(data.x_test.shape[0]),
        "config": {"model": "resnet20", "epochs": epochs, "batch_size": 64, "lr": args.lr, "seed": args.seed},
        "rows": rows,
    }


def plot(result: dict, path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for row in result["rows"]:
        acc = row["epoch_test_accuracy"]
        ax.plot(range(1, len(acc) + 1), acc, marker="o", label=f"{row['rule']} ({acc[-1]:.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"ResNet-20 on {result['dataset']} {tuple(result['image_shape'])}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary(result: dict) -> str:
    return "; ".join(f"{r['rule']} {r['test_accuracy']:.4f}" for r in result["rows"])


def main(argv=None) -> int:
    ap = parser(NAME, __doc__, "the digits set, 10 epochs", "128 digits, width 4, 1 epoch")
    ap.add_argument("--data", default=None, help="mnist10k.npz for the full mode")
    ap.add_argument("--rules", default=",".join(RULES), help="comma-separated: digital and update rules")
    ap.add_argument("--device", default="constant-step")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-size", type=int, default=None, help="use the first N training images")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    return write_results(NAME, args, run, plot, summary)


if __name__ == "__main__":
    raise SystemExit(main())
