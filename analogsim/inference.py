"""Inference after training: accuracy of a trained network after its weights sat for a while.

For each time ``t``, every analog array's stored states go through the device's retention
(``device_models.retention.retain``: relaxation toward a rest state and/or power-law
drift, from the card's ``[retention]`` section), every read sees the card's read noise
(``IOParameters.w_noise``), and the test set is evaluated. Or, with ``noise_model="pcm"``,
the weights are programmed onto PCM-like device pairs (``analogsim.inference_noise``:
programming noise, drift with a distribution of exponents, accumulated 1/f read noise).
Drift compensation (``analogsim.compensation``: ``global``, ``column`` or ``affine``) corrects
each layer's digital output from reference reads of known inputs. Each of ``draws`` repeats
programs the network afresh (new programming noise, drift exponents, read noise); the mean
and standard deviation over draws are reported.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from device_models.retention import Retention, retain

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from .compensation import COMPENSATIONS, fit_compensation, reference_inputs
from .data import Dataset, load_dataset
from .inference_noise import pcm_weights_at, program_pcm
from .layers import analog_layers
from .training import ConfigError, TrainConfig, build_model, evaluate, make_train_step, split_state

__all__ = [
    "NOISE_MODELS",
    "OutputOffset",
    "evaluate_after",
    "evaluate_model_after",
    "parse_durations",
    "plot_accuracy_vs_time",
]

NOISE_MODELS = ("card", "pcm")


class OutputOffset(nnx.Variable):
    """Per-column offset removed from a layer's analog output, times the sum of the input (affine
    drift compensation); set on evaluation copies only."""


_UNITS_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 365.25 * 86400.0}


def parse_durations(text: str) -> list[float]:
    """``"0,1h,1d,1y"`` -> seconds. Units: s, m, h, d, w, y (a number alone is seconds)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+(?:\.\d*)?(?:e[+-]?\d+)?)\s*([smhdwy]?)", part)
        if not m:
            raise ConfigError(
                f"--after: value {part!r} is not allowed; use numbers with a unit s, m, h, d, w or y, e.g. 0,1h,1d,1y"
            )
        out.append(float(m.group(1)) * _UNITS_S[m.group(2) or "s"])
    return out


def _check_options(noise_model: str, compensation: str, draws: int) -> None:
    if noise_model not in NOISE_MODELS:
        raise ConfigError(f"--noise-model: value {noise_model!r} is not allowed; allowed: {', '.join(NOISE_MODELS)}")
    if compensation not in COMPENSATIONS:
        raise ConfigError(f"--compensation: value {compensation!r} is not allowed; allowed: {', '.join(COMPENSATIONS)}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"--draws: value {draws!r} is not allowed; must be an integer >= 1")


def _programmed(layers, noise_model: str, key: jax.Array) -> list[dict[str, Any]]:
    """Per layer: the read weights right after programming, and the PCM state of this draw."""
    out = []
    for i, (_, layer) in enumerate(layers):
        ref = layer.reference.get_value() if layer.reference_kind != "zero" else 0.0
        w = layer.weight.get_value() - ref
        entry = {"w": w, "ref": ref}
        if noise_model == "pcm":
            entry["pcm"] = program_pcm(w, key=jax.random.fold_in(key, i))
            entry["w"] = pcm_weights_at(entry["pcm"], 0.0, key=None)  # programmed, before any drift
        out.append(entry)
    return out


def _age_layer(layer, prog, t, retention, noise_model, compensation, key) -> None:
    """Set ``layer`` (an evaluation copy) to its state ``t`` seconds after programming."""
    if noise_model == "pcm":
        wt = pcm_weights_at(prog["pcm"], t, key=key)
    else:
        cp = layer.crosspoints()
        wt = retain(retention, prog["w"] + prog["ref"], t, b_min=cp.b_min, b_max=cp.b_max) - prog["ref"]
        if retention.read_noise_std:
            layer.forward_io = dataclasses.replace(layer.forward_io, w_noise=float(retention.read_noise_std))
    layer.weight.set_value(wt + prog["ref"])
    if compensation != "none":
        x_ref = reference_inputs(layer.in_features)
        scale, offset = fit_compensation(compensation, x_ref, x_ref @ prog["w"].T, x_ref @ wt.T)
        layer.out_scale.set_value(layer.out_scale.get_value() * scale)  # on top of the layer's own scale
        if compensation == "affine":
            layer.out_offset = OutputOffset(offset)


def _time_key(key: jax.Array, t_s: float) -> jax.Array:
    """``key`` folded with the bits of ``t_s`` (as float32): the same wait draws the same noise."""
    return jax.random.fold_in(key, int(np.float32(t_s).view(np.uint32)))


def evaluate_model_after(
    model: nnx.Module,
    x_test: np.ndarray,
    y_test: np.ndarray,
    times_s: list[float],
    *,
    noise_model: str = "card",
    compensation: str = "none",
    draws: int = 1,
    retention: Retention | None = None,
    key: jax.Array | None = None,
    eval_batch_size: int = 500,
) -> list[dict[str, Any]]:
    """Test accuracy of a trained model (an object, e.g. from ``analogsim.train``) after each wait.

    Args:
      model: the trained nnx model with analog layers (not changed).
      x_test: test inputs.
      y_test: their integer labels.
      times_s: waits after programming (s).
      noise_model: ``card`` (each layer's card retention and read noise, or ``retention``) or
        ``pcm`` (``analogsim.inference_noise``).
      compensation: ``none``, ``global``, ``column`` or ``affine`` (``analogsim.compensation``).
      draws: programmings of the network (fresh noise each); mean and std over them.
      retention: the retention of ``card`` (default: a device without retention).
      key: PRNG key of the draws (default ``jax.random.key(0)``).
      eval_batch_size: rows per compiled evaluation call.

    Returns:
      One dict per time: ``t_s``, ``test_accuracy`` (mean over draws), ``test_accuracy_std``
      (population std, 0 for one draw) and ``accuracies`` (one per draw).
    """
    _check_options(noise_model, compensation, draws)
    retention = Retention() if retention is None else retention
    key = jax.random.key(0) if key is None else key
    graphdef, state, _ = make_train_step(model, optax.sgd(0.1), 0.1)  # the step is not used
    accs = np.zeros((draws, len(times_s)))
    for d in range(draws):
        k_d = jax.random.fold_in(key, d)
        base = nnx.merge(graphdef, state.params, state.analog, state.rest, copy=True)
        prog = _programmed(analog_layers(base), noise_model, jax.random.fold_in(k_d, 0))
        for j, t in enumerate(times_s):
            # a copy: each time starts from the programmed weights
            m = nnx.merge(graphdef, state.params, state.analog, state.rest, copy=True)
            k_time = _time_key(k_d, t)  # from the time itself: a time's result does not depend on the others asked
            for i, (_, layer) in enumerate(analog_layers(m)):
                k_t = jax.random.fold_in(jax.random.fold_in(k_time, 1), i)
                _age_layer(layer, prog[i], t, retention, noise_model, compensation, k_t)
            g2, params, analog, rest = split_state(m)
            st = state._replace(params=params, analog=analog, rest=rest)
            k_eval = jax.random.fold_in(k_time, 2)
            accs[d, j], _, _ = evaluate(g2, st, x_test, y_test, eval_batch_size, key=k_eval)
    return [
        {
            "t_s": t,
            "test_accuracy": float(accs[:, j].mean()),
            "test_accuracy_std": float(accs[:, j].std()),
            "accuracies": [float(a) for a in accs[:, j]],
        }
        for j, t in enumerate(times_s)
    ]


def evaluate_after(
    checkpoint_dir: str | Path,
    times_s: list[float],
    *,
    drift_compensation: bool = False,
    dataset: Dataset | None = None,
    retention: Retention | None = None,
    noise_model: str = "card",
    compensation: str | None = None,
    draws: int = 1,
    key: jax.Array | None = None,
) -> list[dict[str, Any]]:
    """Test accuracy of the checkpointed network after each of ``times_s``
    (``evaluate_model_after`` on the network rebuilt from the checkpoint).

    Args:
      checkpoint_dir: a directory written by ``analogsim train --checkpoint-dir``.
      times_s: waits after programming, in seconds.
      drift_compensation: the old flag: ``compensation="global"``.
      dataset: evaluate on this dataset instead of the run's.
      retention: override the card's retention and read noise (``noise_model="card"``).
      noise_model: ``card`` or ``pcm`` (as ``evaluate_model_after``).
      compensation: ``none``, ``global``, ``column`` or ``affine`` (default: from ``drift_compensation``).
      draws: programmings of the network; mean and std over them.
      key: PRNG key of the draws (default ``jax.random.key(0)``).

    Returns:
      One dict per time: ``t_s``, ``test_accuracy`` (mean over draws), ``test_accuracy_std``, ``accuracies``.
    """
    compensation = compensation or ("global" if drift_compensation else "none")
    _check_options(noise_model, compensation, draws)
    meta = read_checkpoint_meta(checkpoint_dir)
    if "config" not in meta:
        raise CheckpointError(
            f"{checkpoint_dir}: field 'config' is missing: the checkpoint was written by analogsim.train(model, ...) "
            "from Python, which records no network to rebuild; evaluate_after needs one written by `analogsim train "
            "--checkpoint-dir` (for a model object, use analogsim.evaluate_model_after)"
        )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = {k: (tuple(v) if k == "hidden" else v) for k, v in meta["config"].items() if k in fields}
    config = TrainConfig(**cfg)
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    model, card = build_model(config, data)
    graphdef, state, _ = make_train_step(model, optax.sgd(config.lr), config.lr)
    state, _ = load_checkpoint(checkpoint_dir, state, allow_version_mismatch=True)  # reads weights only
    model = nnx.merge(graphdef, state.params, state.analog, state.rest)
    if retention is None:
        retention = card.retention if card is not None else Retention()
    return evaluate_model_after(
        model,
        data.x_test,
        data.y_test,
        times_s,
        noise_model=noise_model,
        compensation=compensation,
        draws=draws,
        retention=retention,
        key=key,
        eval_batch_size=config.eval_batch_size,
    )


def plot_accuracy_vs_time(rows_by_label: dict[str, list[dict[str, Any]]], path: str | Path, *, title: str = "") -> None:
    """Accuracy (mean +- std over draws) against the wait, log time axis; one line per label.
    A wait of 0 is drawn at 1 s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, rows in rows_by_label.items():
        t = [max(r["t_s"], 1.0) for r in rows]
        m = np.array([r["test_accuracy"] for r in rows])
        s = np.array([r.get("test_accuracy_std", 0.0) for r in rows])
        ax.errorbar(t, m, yerr=s, marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("time after programming (s)")
    ax.set_ylabel("test accuracy")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
