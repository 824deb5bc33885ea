"""The ``analogsim`` command line. It only parses flags into a config and calls the library.

Bad input (flags, cards, datasets) gives a one-line ``error: ...`` on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from device_models import BUILTIN_CARDS, CardError, load_card
from device_models.card_physical import physical_summary

from . import __version__
from .assess_cli import add_assess_parser, run_assess
from .checkpoint import CheckpointError
from .data import DataError
from .energy_cli import add_energy_parser, project_parser, report_lines, run_energy, run_project
from .energy_report import ReportError
from .fit_cli import add_fit_parser, run_fit
from .periphery_card import PeripheryCardError, load_periphery_card
from .response_cli import add_response_parser, run_response
from .training import ALGORITHMS, ConfigError, TrainConfig, TrainingError, TrainingInterrupted, train
from .training.endurance import endurance_line

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse would print the usage too)
        self.exit(2, f"error: {self.prog}: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"value {text!r} is not allowed; must be an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"value {value} is not allowed; must be an integer >= 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"value {text!r} is not allowed; must be a number > 0") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"value {text!r} is not allowed; must be a finite number > 0")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"value {text!r} is not allowed; use KEY=VALUE, e.g. transfer_every=2")
    return key.strip(), value.strip()


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"value {text!r} is not allowed; use comma-separated integers, e.g. 256,128"
        ) from None
    if not widths or any(w < 1 for w in widths):
        raise argparse.ArgumentTypeError(f"value {text!r} is not allowed; widths must be integers >= 1, e.g. 256,128")
    return widths


def _add_train_parser(sub) -> None:
    """The ``train`` command: one flag per ``TrainConfig`` field."""
    d = TrainConfig()
    t = sub.add_parser("train", help="train a network on simulated analog hardware")
    t.add_argument(
        "--dataset",
        default=d.dataset,
        help="digits (default, offline), mnist or cifar10 (with --data-dir), or PATH.npz",
    )
    t.add_argument(
        "--data-dir",
        default=None,
        help="directory with the four MNIST IDX files (--dataset mnist) or CIFAR-10's Python batches (cifar10)",
    )
    t.add_argument(
        "--device", default=d.device, help=f"device card: built-in name ({', '.join(BUILTIN_CARDS)}) or TOML path"
    )
    t.add_argument(
        "--algorithm",
        default=d.algorithm,
        choices=ALGORITHMS,
        help="update rule of the analog layers (analogsim.algorithms), or digital (floating point)",
    )
    t.add_argument(
        "--algo-opt",
        action="append",
        type=_key_value,
        default=[],
        metavar="KEY=VALUE",
        help="a hyperparameter of the update rule, e.g. transfer_every=2 (repeatable)",
    )
    t.add_argument(
        "--reference",
        default=d.reference,
        choices=("zero", "symmetry-point"),
        help="read analog weights against 0 or against each device's symmetry point",
    )
    t.add_argument(
        "--update-mode",
        default=d.update_mode,
        help="pulsed-update rung of the fidelity ladder: auto (gaussian where safe on the card, else exact), exact, expected or gaussian (default %(default)s)",
    )
    t.add_argument("--epochs", type=_positive_int, default=d.epochs)
    t.add_argument("--batch-size", type=_positive_int, default=d.batch_size)
    t.add_argument("--lr", type=_positive_float, default=d.lr)
    t.add_argument(
        "--model",
        default=d.model,
        help="mlp (default; --hidden widths), cnn (a small CNN for one-channel images: digits, MNIST), "
        "resnet20, resnet32, resnet56 (CIFAR ResNets, He et al. 2016), vgg8 (NeuroSim's VGG-8), or "
        "module:factory, a function of num_features, num_classes, device, update, algorithm, reference, "
        "activation and rngs returning an nnx model",
    )
    t.add_argument("--hidden", type=_widths, default=d.hidden, help="hidden widths of the MLP, e.g. 256,128")
    t.add_argument(
        "--activation",
        default=None,
        choices=("tanh", "relu", "sigmoid"),
        help="default: tanh for mlp and cnn, relu for resnet* and vgg8",
    )
    t.add_argument(
        "--analog-layers",
        default=d.analog_layers,
        choices=("all", "inner"),
        help="which conv and dense layers are analog: all (default) or inner (the first and the last digital, "
        "as aihwkit's examples keep them)",
    )
    t.add_argument(
        "--augment",
        default=d.augment,
        choices=("auto", "none", "crop-flip"),
        help="training-batch augmentation inside the compiled step: crop-flip (pad 4, random crop, random "
        "horizontal flip), none, or auto (default: crop-flip for cifar10, none otherwise)",
    )
    t.add_argument("--seed", type=int, default=d.seed)
    t.add_argument(
        "--steps-per-call",
        type=_positive_int,
        default=d.steps_per_call,
        help="training steps per compiled call (speed only; default: the largest divisor of an epoch's steps up to 25, "
        "or 1 for a model with digital convolutions on the CPU)",
    )
    t.add_argument(
        "--weight-modifier",
        default=d.weight_modifier,
        metavar="KIND:NUMBER",
        help="hardware-aware training: perturb the forward read of each training step, e.g. add_normal:0.05, "
        "mult_normal:0.05, discretize:0.02, discretize_add_normal:0.02:0.05, drop_connect:0.1, poly:1.0",
    )
    t.add_argument("--energy-report", default=None, metavar="FILE.json", help="write the energy ledger here")
    t.add_argument("--force", action="store_true", help="overwrite an existing --energy-report file")
    t.add_argument(
        "--periphery", default=d.periphery, help="periphery card (prices of reads, conversions, digital ops)"
    )
    t.add_argument("--grid-intensity", type=float, default=None, metavar="KG_PER_KWH", help="grid CO2e intensity")
    t.add_argument(
        "--checkpoint-dir", default=None, metavar="DIR", help="save the full training state after every epoch"
    )
    t.add_argument("--resume", action="store_true", help="continue the run checkpointed in --checkpoint-dir")
    t.add_argument(
        "--allow-version-mismatch",
        action="store_true",
        help="resume a checkpoint written by other versions of analogsim, JAX or Flax",
    )
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="analogsim", description="Train neural networks on simulated analog crossbars.")
    parser.add_argument("--version", action="version", version=f"analogsim {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_train_parser(sub)
    sub.add_parser("devices", help="list the built-in device cards")
    add_response_parser(sub)
    add_fit_parser(sub)
    v = sub.add_parser("evaluate", help="accuracy of a checkpointed network after retention times")
    v.add_argument("--checkpoint", required=True, metavar="DIR", help="directory written by train --checkpoint-dir")
    v.add_argument("--after", default="0,1h,1d,1y", help="waits after programming, e.g. 0,1h,1d,1y")
    v.add_argument("--drift-compensation", action="store_true", help="the old flag: --compensation global")
    v.add_argument(
        "--compensation",
        default=None,
        help="drift compensation from reference reads: none (default), global, column or affine",
    )
    v.add_argument("--noise-model", default="card", help="card (the card's retention, default) or pcm (PCM-like)")
    v.add_argument("--draws", default="1", help="programmings of the network (mean and std over them), default 1")
    v.add_argument("--plot", default=None, metavar="F.png", help="plot accuracy against time (mean +- std)")
    v.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    add_energy_parser(sub)
    add_assess_parser(sub)
    return parser


def _evaluate(args) -> None:
    from .inference import evaluate_after, parse_durations, plot_accuracy_vs_time

    times = parse_durations(args.after)
    if not re.fullmatch(r"[1-9]\d*", args.draws.strip()):
        raise ConfigError(f"--draws: value {args.draws!r} is not allowed; must be an integer >= 1")
    draws = int(args.draws)
    comp = args.compensation or ("global" if args.drift_compensation else "none")
    if args.drift_compensation and comp != "global":
        raise ConfigError(f"--drift-compensation: not allowed with --compensation {comp} (it means global)")
    rows = evaluate_after(args.checkpoint, times, noise_model=args.noise_model, compensation=comp, draws=draws)
    for row, text in zip(rows, args.after.split(","), strict=True):
        spread = f" +- {row['test_accuracy_std']:.4f} over {draws} draws" if draws > 1 else ""
        print(f"after {text.strip():>6}: test accuracy {row['test_accuracy']:.4f}{spread}")
    if args.plot:
        title = f"{Path(args.checkpoint).name}: {args.noise_model}, compensation {comp}"
        plot_accuracy_vs_time({comp: rows}, args.plot, title=title)
        print(f"plot written to {args.plot}")
    if args.json:
        out = {"drift_compensation": comp == "global", "compensation": comp, "noise_model": args.noise_model}
        print(json.dumps(out | {"draws": draws, "results": rows}))


def _devices() -> None:
    print(
        f"{'card':<21} {'model':<14} {'dw_min':>8} {'states':>7} {'up/down':>8} {'c2c':>5} {'d2d':>5} {'E/pulse':>9}  description"
    )
    for name in BUILTIN_CARDS:
        card = load_card(name)
        p = card.model.pulsed
        states = (p.w_max - p.w_min) / p.dw_min
        e = card.physical.get("pulse_energy_j")
        e_txt = f"{e * 1e15:.3g} fJ" if e is not None else "-"
        print(
            f"{name:<21} {card.model_name:<14} {p.dw_min:>8.4g} {states:>7.0f} {p.up_down:>8.3g} "
            f"{p.dw_min_std:>5.2f} {p.dw_min_dtod:>5.2f} {e_txt:>9}  {card.description}"
        )
    lines = [line for line in (physical_summary(load_card(n)) for n in BUILTIN_CARDS) if line]
    if lines:
        print("\nconductance window, pulses across it (noise-free, nominal device), energy, read condition:")
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    projecting = argv[:2] == ["energy", "project"]
    args = project_parser(_Parser).parse_args(argv[2:]) if projecting else _parser().parse_args(argv)
    try:
        if projecting:
            return run_project(args)
        if args.command == "devices":
            _devices()
            return 0
        if args.command == "response":
            return run_response(args)
        if args.command == "fit":
            return run_fit(args)
        if args.command == "energy":
            return run_energy(args)
        if args.command == "assess":
            return run_assess(args)
        if args.command == "evaluate":
            _evaluate(args)
            return 0
        # every config field has a flag of the same name (--algo-opt fills algo_options)
        names = {f.name for f in dataclasses.fields(TrainConfig)} - {"algo_options", "eval_batch_size"}
        config = TrainConfig(algo_options=tuple(args.algo_opt), **{n: getattr(args, n) for n in names})
        config.validate()
        if config.algorithm != "digital":
            load_card(config.device)  # fail on a bad card before loading data
        load_periphery_card(config.periphery)
        result = train(config, progress=not args.no_progress)
    except (ConfigError, CardError, DataError, ReportError, PeripheryCardError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 1
    except TrainingInterrupted as err:
        print(str(err), file=sys.stderr)
        return 130  # the shell's status for a run ended by SIGINT
    except KeyboardInterrupt:  # before the training loop (loading, compiling) or a second Ctrl-C
        print("interrupted; the last checkpoint written (if any) is intact", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`analogsim devices | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python docs' recipe: no error at exit
        return 141  # the shell's status for SIGPIPE
    if args.json:
        out = {k: v for k, v in result.items() if k != "energy_report"}
        print(json.dumps(out))
    else:
        print(f"test accuracy {result['test_accuracy']:.4f} after {config.epochs} epochs")
        print(f"throughput {result['samples_per_s']:,.0f} samples/s (median over epochs after the first)")
        print("\n".join(report_lines(result["energy_report"])))
        if result.get("endurance"):
            print(endurance_line(result["endurance"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
