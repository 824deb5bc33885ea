"""The training loop: epochs of compiled multi-step calls, evaluation, checkpoints, the energy
report. ``train_model`` trains any nnx model with analog layers; ``train`` builds the
model of a ``TrainConfig`` (the ``analogsim train`` command) and trains it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from .. import energy
from ..checkpoint import CHECKPOINT_FILE, checkpoint_lock, load_checkpoint, read_checkpoint_meta, save_checkpoint
from ..data import Dataset, load_dataset
from ..layers import analog_layers
from ..periphery_card import PeripheryCard, load_periphery_card
from .config import TrainConfig, build_augment, build_model, check_resume, config_dict
from .endurance import endurance_report
from .epochs import StopOnInterrupt, TrainingInterrupted, compiled_steps, epoch_batches, run_epoch
from .evaluation import evaluate
from .report import accelerator_counts, baseline_report, ledger_prices, training_workload, workload_flops
from .state import FlatState, TrainState, layer_name
from .step import LOSS_OPS_PER_CLASS, make_train_step

__all__ = [
    "AUTO_MAX_STEPS_PER_CALL",
    "RunResult",
    "auto_steps_per_call",
    "digital_conv_on_cpu",
    "run_report",
    "train",
    "train_config",
    "train_model",
]

AUTO_MAX_STEPS_PER_CALL = 25


def digital_conv_on_cpu(model: nnx.Module) -> bool:
    """Whether ``model`` has a digital ``nnx.Conv`` and JAX runs on the CPU: then the default is
    1 step per call, because XLA's CPU convolutions run far slower inside the loop of a
    multi-step call (digital ResNet-20 on the digits set, one thread, 2026-12-05: 1,406 images/s
    at 1 step per call, 170 at 20; the analog network, whose convolutions are matrix products
    of patches, 281 and 346)."""
    return jax.default_backend() == "cpu" and any(isinstance(m, nnx.Conv) for _, m in nnx.iter_modules(model))


def auto_steps_per_call(steps_per_epoch: int) -> int:
    """The default steps per compiled call: the largest divisor of the epoch's steps up to
    ``AUTO_MAX_STEPS_PER_CALL`` (so every call of a run has the same length and compiles once).

    Fewer calls cost less: on CPU (RT-MNIST, one thread, interleaved) 25 steps per call ran the
    default rung 18% and the digital step 22% faster than 1, and compiled no slower; on a GPU,
    where a small network's step is dispatch-bound, 25 ran 5x faster (docs/speed.md).
    The metrics (loss check, progress bar) come back once per call. A prime number of steps
    gets 1.

    Example:
      >>> auto_steps_per_call(125), auto_steps_per_call(23), auto_steps_per_call(127)
      (25, 23, 1)
    """
    return max(k for k in range(1, min(AUTO_MAX_STEPS_PER_CALL, steps_per_epoch) + 1) if steps_per_epoch % k == 0)


@dataclasses.dataclass
class RunResult:
    """What ``train_model`` hands back."""

    model: nnx.Module  # the trained model (a new object; usable as it is)
    state: TrainState  # the final training state
    graphdef: Any  # the model's nnx GraphDef (merge it with ``state`` to rebuild the model)
    epoch_test_accuracy: list[float]
    epoch_samples_per_s: list[float]
    epoch_energy: list[dict[str, Any]]  # joules per epoch, total and by kind
    eval_counts: dict[str, dict[str, int]]  # event counts of the evaluations, per analog layer
    steps_per_call: int
    prices: dict[str, Any]  # joules per event, per ledger entry


def _epoch_energy(report: dict, prev: dict, epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch + 1,
        "total_j": report["total_j"] - prev["total_j"],
        "by_kind": {k: report["by_kind"][k] - prev["by_kind"][k] for k in report["by_kind"]},
    }


def _loop(graphdef, state, plain_step, data: Dataset, opts: dict[str, Any], prices, history) -> RunResult:
    """The epochs of a run (``opts``: epochs, batch_size, seed, spc, progress, hint,
    eval_batch_size, checkpoint_dir, meta, callback); ``history`` continues a resumed run."""
    with StopOnInterrupt() as stop:
        return _epochs(graphdef, state, plain_step, data, opts, prices, history, stop)


def _epochs(graphdef, state, plain_step, data: Dataset, opts: dict[str, Any], prices, history, stop) -> RunResult:
    from tqdm import tqdm  # the text bar: tqdm.auto warns in a notebook without ipywidgets

    k_data, k_train = jax.random.split(jax.random.key(opts["seed"]))
    flat = FlatState(state)
    run_steps = compiled_steps(plain_step, flat, k_train)
    n, bs = data.x_train.shape[0], opts["batch_size"]
    x_all, y_all = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    h = history
    # the ledger at the start of the epoch (an interrupted epoch saved it: its ledger has moved on)
    prev_report = h["epoch_start"] or energy.price_report(energy.host_counts(state.ledger), prices)
    for epoch in range(h["epoch"], opts["epochs"]):
        idx_dev, mask_dev = epoch_batches(jax.random.fold_in(k_data, epoch), n, bs)
        bar = tqdm(
            total=idx_dev.shape[0],
            desc=f"epoch {epoch + 1}/{opts['epochs']}",
            disable=not opts["progress"],
            leave=False,
            unit="step",
        )
        t0 = time.perf_counter()
        resume_at = {"step_in_epoch": h["step_in_epoch"], "tally": h["tally"]} if h["step_in_epoch"] else None
        raw, h["global_step"], tally, done = run_epoch(
            run_steps,
            flat,
            flat.pack(state),
            (x_all, y_all, idx_dev, mask_dev),
            epoch,
            h["global_step"],
            opts,
            prices,
            bar,
            resume_at,
            stop,
        )
        state = flat.unpack(raw)
        bar.close()
        if stop.requested and done < idx_dev.shape[0]:  # Ctrl-C: save where the epoch stopped
            _interrupted(state, h, epoch, done, idx_dev.shape[0], tally, prev_report, opts)
        h["epoch_rate"].append(n * (1 - h["step_in_epoch"] / idx_dev.shape[0]) / (time.perf_counter() - t0))
        h["step_in_epoch"], h["tally"], h["epoch_start"] = 0, None, None
        acc, state, eval_counts = evaluate(graphdef, state, data.x_test, data.y_test, opts["eval_batch_size"])
        for layer, kinds in eval_counts.items():
            total = h["eval_counts"].setdefault(layer, dict.fromkeys(kinds, 0))
            for kind, v in kinds.items():
                total[kind] += v
        h["epoch_acc"].append(acc)
        report = energy.price_report(energy.host_counts(state.ledger), prices)
        h["epoch_energy"].append(_epoch_energy(report, prev_report, epoch))
        prev_report = report
        h["epoch"] = epoch + 1
        if opts["checkpoint_dir"] is not None:
            save_checkpoint(opts["checkpoint_dir"], state, {**opts["meta"], **_history_meta(h)})
        metrics = {
            "epoch": epoch + 1,
            "train_loss": tally.loss_sum / tally.seen,
            "train_accuracy": tally.correct / tally.seen,
            "test_accuracy": acc,
            "samples_per_s": h["epoch_rate"][-1],
            "energy_j": report["total_j"],
        }
        if opts["callback"] is not None:
            opts["callback"](metrics)
        if opts["progress"]:
            tqdm.write(
                f"epoch {epoch + 1}/{opts['epochs']}: train loss {metrics['train_loss']:.4f}, train acc "
                f"{metrics['train_accuracy']:.4f}, test acc {acc:.4f}, {h['epoch_rate'][-1]:,.0f} samples/s, "
                f"energy {report['total_j']:.4g} J"
            )
        if stop.requested and epoch + 1 < opts["epochs"]:  # Ctrl-C in the epoch's last call or its evaluation
            saved = f"saved in {opts['checkpoint_dir']}" if opts["checkpoint_dir"] is not None else "nothing was saved"
            raise TrainingInterrupted(
                f"interrupted after epoch {epoch + 1}; {saved}"
                + ("" if opts["checkpoint_dir"] is None else ": run the same command with --resume to continue")
            )
    model = nnx.merge(
        graphdef,
        *jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, (state.params, state.analog, state.rest)),
    )
    return RunResult(
        model,
        state,
        graphdef,
        h["epoch_acc"],
        h["epoch_rate"],
        h["epoch_energy"],
        h["eval_counts"],
        opts["spc"],
        prices,
    )


def _interrupted(state, h, epoch, done, n_steps, tally, prev_report, opts) -> None:
    """Save the state of an epoch stopped after step ``done`` and raise ``TrainingInterrupted``."""
    where = f"epoch {epoch + 1}, step {done} of {n_steps}"
    if opts["checkpoint_dir"] is None:
        raise TrainingInterrupted(f"interrupted in {where}; nothing was saved (no --checkpoint-dir)")
    h["step_in_epoch"], h["tally"] = done, tally.to_meta()
    h["epoch_start"] = {"total_j": prev_report["total_j"], "by_kind": prev_report["by_kind"]}
    save_checkpoint(opts["checkpoint_dir"], state, {**opts["meta"], **_history_meta(h)})
    raise TrainingInterrupted(
        f"interrupted in {where}; saved in {opts['checkpoint_dir']}: run the same command with --resume to continue"
    )


_HISTORY_KEYS = ("epoch", "global_step", "epoch_acc", "epoch_rate", "epoch_energy", "eval_counts")
_PARTIAL_EPOCH_KEYS = ("step_in_epoch", "tally", "epoch_start")  # where an interrupted epoch stopped


def _history_meta(h: dict[str, Any]) -> dict[str, Any]:
    return {k: h[k] for k in _HISTORY_KEYS + _PARTIAL_EPOCH_KEYS}


def _new_history() -> dict[str, Any]:
    return {
        "epoch": 0,
        "global_step": 0,
        "epoch_acc": [],
        "epoch_rate": [],
        "epoch_energy": [],
        "eval_counts": {},
        "step_in_epoch": 0,
        "tally": None,
        "epoch_start": None,
    }


def train_model(
    model: nnx.Module,
    data: Dataset,
    *,
    tx: optax.GradientTransformation | None = None,
    lr: float | Callable = 0.1,
    epochs: int = 5,
    batch_size: int = 64,
    seed: int = 0,
    steps_per_call: int | None = None,
    eval_batch_size: int = 500,
    device_card=None,
    periphery: PeripheryCard | str = "periphery-default",
    checkpoint_dir: str | None = None,
    resume: bool = False,
    allow_version_mismatch: bool = False,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    augment: Callable | None = None,
    _meta: dict[str, Any] | None = None,
    _hint: str | None = None,
) -> RunResult:
    """Train any nnx model with analog layers on ``data``: pulsed updates for the crossbars,
    ``tx`` for the digital parameters, evaluation in eval mode after every epoch.

    Args:
      model: an nnx model called as ``model(x)`` returning logits; its analog layers may be
        called several times per pass. It is not changed (the result holds the trained one).
      data: a ``Dataset`` (integer labels).
      tx: optax transformation of the digital parameters; default ``optax.sgd(lr)`` (``lr``
        a number) or ``optax.sgd(lr)`` with the same schedule.
      lr: analog learning rate: a number, or a schedule (callable of the step count).
      epochs: passes over the training set.
      batch_size: rows per training step.
      seed: orders the batches and keys the steps.
      steps_per_call: steps per compiled call (speed only); default ``auto_steps_per_call``, or 1
        for a model with digital convolutions on the CPU (``digital_conv_on_cpu``).
      eval_batch_size: rows per evaluation call.
      device_card: the card that prices every analog layer (name, path or
        ``DeviceCard``); ``None``: no energy report for analog layers.
      periphery: the periphery card (DAC/ADC/digital prices).
      checkpoint_dir: save the state there after every epoch (and where Ctrl-C stops a run);
        one run at a time per directory. ``resume``: continue from it (from the beginning,
        with a warning, when it holds no complete checkpoint); ``allow_version_mismatch``:
        resume a checkpoint written by other versions of analogsim, JAX or Flax.
      callback: called after every epoch with a dict of metrics (epoch, losses, accuracies,
        samples/s, energy); ``analogsim.training.MetricsLogger`` writes them to a file.
      progress: show a progress bar on stderr.
      augment: ``f(x, key) -> x`` applied to every training batch inside the compiled step
        (``analogsim.augment.make_augment``); ``None``: none.

    Returns:
      A ``RunResult`` with the trained ``model``, accuracies, speeds and energy.
    """
    from device_models import load_card

    for name, value, least in (
        ("epochs", epochs, 1),
        ("batch_size", batch_size, 1),
        ("eval_batch_size", eval_batch_size, 1),
    ):
        _check_int(name, value, least)
    if steps_per_call is not None:
        _check_int("steps_per_call", steps_per_call, 1)
    if tx is None:
        tx = optax.sgd(lr)
    graphdef, state, plain_step = make_train_step(model, tx, lr, jit=False, augment=augment)
    card = load_card(device_card) if isinstance(device_card, str) else device_card
    periphery = load_periphery_card(periphery) if isinstance(periphery, str) else periphery
    prices = ledger_prices(
        nnx.merge(graphdef, state.params, state.analog, state.rest), card, periphery, list(state.ledger)
    )
    n_steps = math.ceil(data.x_train.shape[0] / batch_size)
    opts = {
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "progress": progress,
        "spc": steps_per_call or (1 if digital_conv_on_cpu(model) else auto_steps_per_call(n_steps)),
        "eval_batch_size": eval_batch_size,
        "checkpoint_dir": checkpoint_dir,
        "meta": _meta or {},
        "callback": callback,
        "hint": _hint or (f"lower the learning rate (now {lr})" if not callable(lr) else "lower the learning rate"),
    }
    history = _new_history()
    # one run per checkpoint directory, for the whole run (the OS drops the lock however it ends)
    with checkpoint_lock(checkpoint_dir) if checkpoint_dir is not None else contextlib.nullcontext():
        if resume and not (Path(checkpoint_dir) / CHECKPOINT_FILE).is_file():
            warnings.warn(
                f"{checkpoint_dir}: no complete checkpoint to resume from; starting from the beginning", stacklevel=2
            )
            resume = False
        if resume:
            state, meta = load_checkpoint(checkpoint_dir, state, allow_version_mismatch=allow_version_mismatch)
            history = {k: meta.get(k, history[k]) for k in history}  # (older checkpoints: no partial epoch)
            if history["step_in_epoch"] and epochs <= history["epoch"]:
                raise ValueError(
                    f"train_model: epochs: value {epochs} is not allowed; the checkpoint in {checkpoint_dir} stopped "
                    f"inside epoch {history['epoch'] + 1}: must be >= {history['epoch'] + 1}"
                )
        return _loop(graphdef, state, plain_step, data, opts, prices, history)


def _check_int(name: str, value: Any, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"train_model: {name}: value {value!r} is not allowed; must be an integer >= {least}")


def train(config_or_model, data: Dataset | None = None, **kwargs):
    """Train a model: ``train(model, data, **options)`` is ``train_model`` (any nnx model
    with analog layers; returns a ``RunResult``), ``train(config)`` is
    ``train_config`` (the network of a ``TrainConfig``, what ``analogsim train``
    runs; returns the result dict).
    """
    if isinstance(config_or_model, nnx.Module):
        if data is None:
            raise TypeError("train(model, data, ...): data (a Dataset) is required")
        return train_model(config_or_model, data, **kwargs)
    if not isinstance(config_or_model, TrainConfig):
        raise TypeError(f"train: expected a TrainConfig or an nnx model, got {type(config_or_model).__name__}")
    if data is not None:
        kwargs["dataset"] = data
    return train_config(config_or_model, **kwargs)


def train_config(config: TrainConfig, *, progress: bool = True, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train the model of ``config`` and return the results (what ``--json`` prints).

    Args:
      config: the run's settings (checked first; ``ConfigError`` if one is not allowed).
      progress: show a progress bar (on stderr) with loss, accuracy and energy so far.
      dataset: use this dataset instead of loading ``config.dataset``.

    Returns:
      A dict with ``test_accuracy``, ``epoch_test_accuracy``, ``samples_per_s`` (median over
      epochs after the first), ``energy_j`` (total, by kind, by layer), ``energy_report``
      (the full ledger), and ``config``.
    """
    config.validate()
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    model, card = build_model(config, data)
    augment = build_augment(config, data)
    if config.resume and not (Path(config.checkpoint_dir) / CHECKPOINT_FILE).is_file():
        # a run killed before its first checkpoint was complete: nothing to continue
        print(
            f"note: {config.checkpoint_dir}: no complete checkpoint to resume from; starting from the beginning",
            file=sys.stderr,
        )
        config = dataclasses.replace(config, resume=False)
    if config.resume:
        check_resume(config, read_checkpoint_meta(config.checkpoint_dir))
    hint = f"lower --lr (now {config.lr})" + (
        "" if config.algorithm == "digital" else f" or check the bounds of card {config.device!r}"
    )
    periphery = load_periphery_card(config.periphery)
    run = train_model(
        model,
        data,
        tx=optax.sgd(config.lr),
        lr=config.lr,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=config.seed,
        steps_per_call=config.steps_per_call,
        eval_batch_size=config.eval_batch_size,
        device_card=card,
        periphery=periphery,
        checkpoint_dir=config.checkpoint_dir,
        resume=config.resume,
        allow_version_mismatch=config.allow_version_mismatch,
        progress=progress,
        augment=augment,
        _meta={"config": config_dict(config)},
        _hint=hint,
    )
    report = run_report(run, config, data, card, periphery)
    rates = run.epoch_samples_per_s[1:] if len(run.epoch_samples_per_s) > 1 else run.epoch_samples_per_s
    result = {
        "test_accuracy": run.epoch_test_accuracy[-1],
        "epoch_test_accuracy": run.epoch_test_accuracy,
        "samples_per_s": float(np.median(rates)),
        "epoch_samples_per_s": run.epoch_samples_per_s,
        "steps_per_call": run.steps_per_call,
        "energy_j": {"total": report["total_j"], "by_kind": report["by_kind"], "by_layer": report["by_layer"]},
        "energy_report": report,
        "config": config_dict(config),
        # the rung each analog layer ran (``--update-mode auto`` resolves it per device)
        "update_modes": {layer_name(path): layer.update.mode for path, layer in analog_layers(run.model)},
        # the busiest device against the card's endurance (None: the card gives none)
        "endurance": endurance_report(run.model),
    }
    if config.energy_report is not None:
        path = Path(config.energy_report)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)
    return result


def run_report(run: RunResult, config: TrainConfig, data: Dataset, card, periphery: PeripheryCard) -> dict[str, Any]:
    """The energy report of a finished run of ``config``: the ledger priced, the digital
    baseline of the same training, CO2, per epoch and the evaluations' energy."""
    prices = run.prices
    report = energy.price_report(energy.host_counts(run.state.ledger), prices)
    workload = training_workload(run.model, data.num_features)
    samples, steps = data.x_train.shape[0] * config.epochs, int(run.state.step)
    flops = workload_flops(workload) * samples
    elementwise = int(getattr(run.model, "digital_ops_per_sample", lambda: 0)()) + LOSS_OPS_PER_CLASS * data.num_classes
    accelerator = accelerator_counts(workload, samples, steps, elementwise)
    if config.grid_intensity is not None:
        grid, grid_src = config.grid_intensity, "set by --grid-intensity"
    else:
        grid, grid_src = periphery.grid_kg_per_kwh, periphery.describe("grid_intensity")
    report.update(baseline_report(flops, report["total_j"], periphery, grid, grid_src, accelerator))
    report["samples"], report["steps"] = samples, steps
    report["run"] = {
        "description": (
            f"analogsim train --dataset {config.dataset} --model {config.model} --hidden {','.join(map(str, config.hidden))} "
            f"--algorithm {config.algorithm} --device {config.device} --epochs {config.epochs} "
            f"--batch-size {config.batch_size} --lr {config.lr} --seed {config.seed}"
        ),
        "config": config_dict(config),
    }
    report["chip_samples_per_s"] = samples / report["time_s"] if report["time_s"] > 0 else None
    analog = {layer_name(p) for p, _ in analog_layers(run.model)}
    report["layers"] = {}
    for name, r, i, o, _ in workload:  # (a layer called more than once: its rows add up)
        entry = report["layers"].setdefault(name, {"in": i, "out": o, "rows_per_sample": 0, "analog": name in analog})
        entry["rows_per_sample"] += r
    report["per_epoch"] = run.epoch_energy
    report["device_card"] = None if card is None else card.name
    report["periphery_card"] = periphery.name
    if run.eval_counts:
        ev = energy.price_report(run.eval_counts, {k: prices[k] for k in run.eval_counts})
        report["evaluation"] = {k: ev[k] for k in ("total_j", "by_kind", "by_layer", "counts_by_layer")}
    return report
