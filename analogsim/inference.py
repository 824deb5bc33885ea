"""Inference after training: accuracy of a trained network after its weights sat for a while.

For each time ``t``, every analog array's stored states go through the device's retention
(``device_models.retention.retain``: relaxation toward a rest state and/or power-law
drift, from the card's ``[retention]`` section), every read sees the card's read noise
(``IOParameters.w_noise``), and the test set is evaluated. *Global drift compensation*
(aihwkit's ``GlobalDriftCompensation``, simplified) rescales each layer's digital output by
:math:`\\sum |W(0)| / \\sum |W(t)|`, measured once after the wait, as a calibration read would.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import optax
from flax import nnx

from device_models.retention import Retention, retain

from .checkpoint import CheckpointError, load_checkpoint, read_checkpoint_meta
from .data import Dataset, load_dataset
from .layers import analog_layers
from .training import ConfigError, TrainConfig, build_model, evaluate, make_train_step, split_state

__all__ = ["evaluate_after", "parse_durations"]

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


def evaluate_after(
    checkpoint_dir: str | Path,
    times_s: list[float],
    *,
    drift_compensation: bool = False,
    dataset: Dataset | None = None,
    retention: Retention | None = None,
) -> list[dict[str, Any]]:
    """Test accuracy of the checkpointed network after each of ``times_s``.

    Args:
      checkpoint_dir: a directory written by ``analogsim train --checkpoint-dir``.
      times_s: waits after programming, in seconds.
      drift_compensation: rescale each layer's output by the drop of its total weight.
      dataset: evaluate on this dataset instead of the run's.
      retention: override the card's retention and read noise.

    Returns:
      One dict per time: ``t_s`` and ``test_accuracy``.
    """
    meta = read_checkpoint_meta(checkpoint_dir)
    if "config" not in meta:
        raise CheckpointError(
            f"{checkpoint_dir}: field 'config' is missing: the checkpoint was written by analogsim.train(model, ...) "
            "from Python, which records no network to rebuild; evaluate_after needs one written by `analogsim train "
            "--checkpoint-dir`"
        )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = {k: (tuple(v) if k == "hidden" else v) for k, v in meta["config"].items() if k in fields}
    config = TrainConfig(**cfg)
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    model, card = build_model(config, data)
    graphdef, state, _ = make_train_step(model, optax.sgd(config.lr), config.lr)
    state, _ = load_checkpoint(checkpoint_dir, state, allow_version_mismatch=True)  # reads weights only
    if retention is None:
        retention = card.retention if card is not None else Retention()
    results = []
    for t in times_s:
        # a copy: set_value below must not write into ``state`` (each time starts from the trained weights)
        m = nnx.merge(graphdef, state.params, state.analog, state.rest, copy=True)
        for _, layer in analog_layers(m):
            w0 = layer.weight.get_value()
            cp = layer.crosspoints()
            wt = retain(retention, w0, t, b_min=cp.b_min, b_max=cp.b_max)
            layer.weight.set_value(wt)
            if retention.read_noise_std:
                layer.forward_io = dataclasses.replace(layer.forward_io, w_noise=float(retention.read_noise_std))
            if drift_compensation:
                total = jnp.sum(jnp.abs(wt))
                ratio = jnp.where(total > 0, jnp.sum(jnp.abs(w0)) / jnp.where(total > 0, total, 1.0), 1.0)
                layer.out_scale.set_value(layer.out_scale.get_value() * ratio)  # on top of the layer's own scale
        g2, params, analog, rest = split_state(m)
        acc, _, _ = evaluate(
            g2,
            state._replace(params=params, analog=analog, rest=rest),
            data.x_test,
            data.y_test,
            config.eval_batch_size,
        )
        results.append({"t_s": t, "test_accuracy": acc})
    return results
