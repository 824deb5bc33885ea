"""Training and evaluation of nnx models with analog layers.

One training step is one jitted function of explicit state: the forward read of every
analog layer (with zero *probes* added to its output, so the gradient with respect to the
probe is the per-sample error ``d`` the hardware sees), the backward reads, the optax update
of the digital parameters (biases, digital layers), the pulsed update of every analog array,
and the energy ledger's counts. Nothing loops over samples, pulses or cross-points in Python.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from device_models import DeviceCard, load_card

from . import energy
from .data import Dataset, load_dataset
from .layers import AnalogWeight, analog_layers
from .models import ACTIVATIONS, MLP
from .pulsed_update import UPDATE_MODES, UpdateParameters, pulsed_update

__all__ = [
    "ALGORITHMS",
    "ConfigError",
    "TrainConfig",
    "TrainState",
    "TrainingError",
    "evaluate",
    "make_train_step",
    "train",
]

ALGORITHMS = ("sgd", "digital")
# Digital baseline: NVIDIA H100 SXM, FP32 (non-tensor) peak 67 TFLOP/s at 700 W TDP (NVIDIA
# H100 datasheet); utilisation 50 % assumed, board at TDP: 700 / (0.5 * 67e12) J per FLOP.
BASELINE_ACCELERATOR = "NVIDIA H100 SXM, FP32 67 TFLOP/s peak at 700 W TDP (datasheet), 50% utilisation assumed"
BASELINE_J_PER_FLOP = 700.0 / (0.5 * 67e12)
# World average grid intensity, Ember Global Electricity Review (2023 data): ~0.48 kg CO2e/kWh.
GRID_KG_PER_KWH = 0.48
GRID_SOURCE = "world average, Ember Global Electricity Review 2024 (2023 data)"


class ConfigError(ValueError):
    """A training setting that is not allowed; the message names it and the allowed values."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the ``analogsim train`` flags)."""

    dataset: str = "digits"
    data_dir: str | None = None
    device: str = "wo3-protonic"
    algorithm: str = "sgd"
    update_mode: str = "exact"
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    hidden: tuple[int, ...] = (256, 128)
    activation: str = "tanh"
    seed: int = 0
    energy_report: str | None = None
    force: bool = False
    eval_batch_size: int = 500

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first setting that is not allowed."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"--algorithm: value {self.algorithm!r} is not allowed; allowed: {', '.join(ALGORITHMS)}")
        if self.update_mode not in UPDATE_MODES:
            raise ConfigError(
                f"--update-mode: value {self.update_mode!r} is not allowed; allowed: {', '.join(UPDATE_MODES)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"--activation: value {self.activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}"
            )
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')}: value {value!r} is not allowed; must be an integer >= 1"
                )
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr: value {self.lr!r} is not allowed; must be a finite number > 0")
        if any((not isinstance(h, int)) or h < 1 for h in self.hidden):
            raise ConfigError(
                f"--hidden: value {','.join(map(str, self.hidden))!r} is not allowed; widths must be integers >= 1"
            )
        if self.energy_report is not None and Path(self.energy_report).exists() and not self.force:
            raise ConfigError(f"--energy-report: file {self.energy_report!r} exists; pass --force to overwrite it")


class TrainState(NamedTuple):
    """The whole state of a training run (a pytree)."""

    params: Any  # nnx.State of nnx.Param: digital parameters (biases, digital layers)
    analog: Any  # nnx.State of AnalogWeight: device states of every array
    rest: Any  # nnx.State of everything else: device parameters, read-noise RNG streams
    opt_state: Any  # optax state of the digital parameters
    ledger: Any  # per analog layer, per count kind: exact uint32 (high, low) counters


def _layer_name(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def _split(model: nnx.Module):
    return nnx.split(model, nnx.Param, AnalogWeight, ...)


def _masked_xent(logits, labels, mask):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(ce * mask) / n


def make_train_step(model: nnx.Module, tx: optax.GradientTransformation, lr: float):
    """Build the jitted training step and the initial state for ``model``.

    Args:
      model: an nnx model whose analog layers are :class:`AnalogLinear`; called as ``model(x)``.
      tx: optax transformation for the digital parameters (``nnx.Param``).
      lr: learning rate of the pulsed (analog SGD) update.

    Returns:
      ``(graphdef, state, step)`` where ``step(state, x_all, y_all, idx, mask, key)`` trains
      on the rows ``idx`` of ``x_all``/``y_all`` (``mask`` zero for padding rows) and returns
      ``(state, metrics)``; ``metrics`` has ``loss``, ``correct`` and ``count``.
    """
    graphdef, params, analog, rest = _split(model)
    specs = [
        (_layer_name(path), layer.model, layer.update, layer.in_features, layer.out_features)
        for path, layer in analog_layers(model)
    ]
    state = TrainState(params, analog, rest, tx.init(params), energy.new_ledger([s[0] for s in specs]))

    def step(state: TrainState, x_all, y_all, idx, mask, key):
        xb = x_all[idx]
        yb = y_all[idx]
        batch = xb.shape[0]
        reads_input = []  # trace-time facts: does a layer read the network input directly?

        def loss_fn(params, probes):
            m = nnx.merge(graphdef, params, state.analog, state.rest, copy=True)
            layers = analog_layers(m)
            for (_, layer), probe in zip(layers, probes, strict=True):
                layer.tape.set_value({"probe": probe})
            logits = m(xb)
            loss = _masked_xent(logits, yb, mask)
            tapes = []
            for _, layer in layers:
                tape = layer.tape.get_value()
                reads_input.append(tape["x"] is xb)
                tapes.append({"x": tape["x"], "reads": tape["reads"]})
                layer.tape.set_value({})
            new_rest = _split(m)[3]
            return loss, (logits, tapes, new_rest)

        probes = [jnp.zeros((batch, s[4]), xb.dtype) for s in specs]
        (loss, (logits, tapes, new_rest)), (g_params, g_probes) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True
        )(state.params, probes)
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        m = nnx.merge(graphdef, params, state.analog, new_rest, copy=True)
        ledger = state.ledger
        mask_i = mask.astype(jnp.uint32)
        for i, ((name, dev_model, up, n_in, n_out), (_, layer), tape, d) in enumerate(
            zip(specs, analog_layers(m), tapes, g_probes, strict=True)
        ):
            w_new, pulses = pulsed_update(
                dev_model,
                layer.device.get_value(),
                layer.weight.get_value(),
                tape["x"],
                d,
                lr,
                up,
                key=jax.random.fold_in(key, i),
            )
            layer.weight.set_value(w_new)
            fwd = jnp.sum(tape["reads"].astype(jnp.uint32) * mask_i)
            if reads_input[i]:
                bwd = jnp.zeros((), jnp.uint32)  # the input layer's error is never read back
            else:
                bwd = jnp.sum(jnp.any(d != 0, axis=1).astype(jnp.uint32))
            n_rows = jnp.sum(mask_i)
            bias_ops = (n_rows + 1) * n_out if layer.bias is not None else jnp.zeros((), jnp.uint32)
            ledger = energy.add_counts(
                ledger,
                name,
                pulses_up=pulses.up,
                pulses_down=pulses.down,
                array_reads=fwd + bwd,
                crosspoint_reads=(fwd + bwd) * jnp.uint32(n_in * n_out),
                dac_conversions=fwd * n_in + bwd * n_out,
                adc_conversions=fwd * n_out + bwd * n_in,
                digital_ops=bias_ops,
            )
        _, params, analog, rest = _split(m)
        correct = jnp.sum((jnp.argmax(logits, -1) == yb) * mask)
        metrics = {"loss": loss, "correct": correct, "count": jnp.sum(mask)}
        return TrainState(params, analog, rest, opt_state, ledger), metrics

    return graphdef, state, jax.jit(step, donate_argnums=0)


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(graphdef, params, analog, rest, x, y, mask):
    m = nnx.merge(graphdef, params, analog, rest, copy=True)
    logits = m(x)
    correct = jnp.sum((jnp.argmax(logits, -1) == y) * mask)
    return correct, _split(m)[3]


def evaluate(
    graphdef, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int = 500
) -> tuple[float, TrainState]:
    """Test accuracy of the model in ``state`` (analog reads with their noise).

    Returns the accuracy in [0, 1] and the state with its read-noise streams advanced.
    """
    n = x.shape[0]
    rest = state.rest
    correct = 0
    for start in range(0, n, batch_size):
        xb = x[start : start + batch_size]
        yb = y[start : start + batch_size]
        pad = batch_size - xb.shape[0]
        mask = np.concatenate([np.ones(xb.shape[0], np.float32), np.zeros(pad, np.float32)])
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
        c, rest = _eval_batch(graphdef, state.params, state.analog, rest, xb, yb, mask)
        correct += int(c)
    return correct / n, state._replace(rest=rest)


def _non_finite_where(state: TrainState) -> str:
    """Name the layers whose parameters or device states hold NaN/inf (for error messages)."""
    bad = []
    for label, tree in (("digital parameter", state.params), ("analog weights", state.analog)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if not np.all(np.isfinite(np.asarray(leaf))):
                bad.append(f"{label} {jax.tree_util.keystr(path)}")
    return f" (non-finite: {', '.join(bad)})" if bad else ""


def _flops_per_sample(sizes: list[tuple[int, int]]) -> int:
    """Digital FLOPs of one training sample of an MLP: forward 2*in*out per layer, backward
    2*in*out per layer except the first (the error of the input is not needed), and the
    weight gradient 2*in*out per layer."""
    total = 0
    for i, (n_in, n_out) in enumerate(sizes):
        total += 2 * n_in * n_out * (3 if i > 0 else 2)
    return total


def _layer_card(card: DeviceCard | None, names: list[str]) -> dict[str, energy.Prices]:
    return {name: energy.default_prices(card) for name in names}


def build_model(config: TrainConfig, dataset: Dataset) -> tuple[nnx.Module, DeviceCard | None]:
    """The MLP of ``config`` for ``dataset`` (digital for ``--algorithm digital``)."""
    sizes = (dataset.num_features, *config.hidden, dataset.num_classes)
    card = None if config.algorithm == "digital" else load_card(config.device)
    update = UpdateParameters(mode=config.update_mode)
    model = MLP(sizes, config.activation, device=card, update=update, rngs=nnx.Rngs(config.seed))
    return model, card


def train(config: TrainConfig, *, progress: bool = True, dataset: Dataset | None = None) -> dict[str, Any]:
    """Train the MLP of ``config`` and return the results (what ``--json`` prints).

    Args:
      config: the run's settings (checked first; :class:`ConfigError` if one is not allowed).
      progress: show a progress bar (on stderr) with loss, accuracy and energy so far.
      dataset: use this dataset instead of loading ``config.dataset``.

    Returns:
      A dict with ``test_accuracy``, ``epoch_test_accuracy``, ``samples_per_s`` (median over
      epochs after the first), ``energy_j`` (total, by kind, by layer), ``energy_report``
      (the full ledger), and ``config``.
    """
    from tqdm.auto import tqdm

    config.validate()
    data = dataset if dataset is not None else load_dataset(config.dataset, config.data_dir)
    model, card = build_model(config, data)
    tx = optax.sgd(config.lr)
    graphdef, state, step = make_train_step(model, tx, config.lr)
    names = list(state.ledger)
    prices = _layer_card(card, names)

    key = jax.random.key(config.seed)
    k_data, k_train = jax.random.split(key)
    x_all = jnp.asarray(data.x_train)
    y_all = jnp.asarray(data.y_train)
    n = data.x_train.shape[0]
    bs = config.batch_size
    n_steps = math.ceil(n / bs)

    epoch_acc: list[float] = []
    epoch_rate: list[float] = []
    epoch_energy: list[dict[str, Any]] = []
    prev_report = energy.price_report(energy.host_counts(state.ledger), prices)
    global_step = 0
    for epoch in range(config.epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_data, epoch), n))
        bar = tqdm(
            total=n_steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False, unit="step"
        )
        pending: list[dict[str, jax.Array]] = []
        seen = correct = 0
        loss_sum = 0.0
        t0 = time.perf_counter()
        for s in range(n_steps):
            idx = perm[s * bs : (s + 1) * bs]
            mask = np.ones(bs, np.float32)
            if idx.shape[0] < bs:  # pad the last batch; padding rows carry no error, fire no pulse
                mask[idx.shape[0] :] = 0.0
                idx = np.concatenate([idx, np.zeros(bs - idx.shape[0], idx.dtype)])
            state, metrics = step(state, x_all, y_all, idx, mask, jax.random.fold_in(k_train, global_step))
            global_step += 1
            pending.append((global_step, metrics))
            if len(pending) == 10 or s == n_steps - 1:
                for step_no, m in jax.device_get(pending):
                    if not np.isfinite(m["loss"]):
                        raise TrainingError(
                            f"epoch {epoch + 1}, step {step_no}: the loss is {m['loss']}"
                            f"{_non_finite_where(state)}; lower --lr (now {config.lr})"
                            + (
                                ""
                                if config.algorithm == "digital"
                                else f" or check the bounds of card {config.device!r}"
                            )
                        )
                    loss_sum += float(m["loss"]) * float(m["count"])
                    correct += int(m["correct"])
                    seen += int(m["count"])
                bar.update(len(pending))
                pending = []
                if progress:
                    spent = energy.price_report(energy.host_counts(state.ledger), prices)["total_j"] if names else 0.0
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", energy=f"{spent:.3g} J")
        jax.block_until_ready(state.analog)
        epoch_rate.append(n / (time.perf_counter() - t0))
        bar.close()
        acc, state = evaluate(graphdef, state, data.x_test, data.y_test, config.eval_batch_size)
        epoch_acc.append(acc)
        report = energy.price_report(energy.host_counts(state.ledger), prices)
        epoch_energy.append(
            {
                "epoch": epoch + 1,
                "total_j": report["total_j"] - prev_report["total_j"],
                "by_kind": {k: report["by_kind"][k] - prev_report["by_kind"][k] for k in report["by_kind"]},
            }
        )
        prev_report = report
        if progress:
            tqdm.write(
                f"epoch {epoch + 1}/{config.epochs}: train loss {loss_sum / seen:.4f}, train acc {correct / seen:.4f}, "
                f"test acc {acc:.4f}, {epoch_rate[-1]:,.0f} samples/s, energy {report['total_j']:.4g} J"
            )

    report = energy.price_report(energy.host_counts(state.ledger), prices)
    sizes = [
        (a, b) for a, b in zip((data.num_features, *config.hidden), (*config.hidden, data.num_classes), strict=True)
    ]
    flops = _flops_per_sample(sizes) * n * config.epochs
    baseline_j = flops * BASELINE_J_PER_FLOP
    report.update(
        {
            "per_epoch": epoch_energy,
            "digital_baseline_j": baseline_j,
            "digital_baseline": {
                "accelerator": BASELINE_ACCELERATOR,
                "flops": flops,
                "j_per_flop": BASELINE_J_PER_FLOP,
            },
            "co2e_kg": report["total_j"] / 3.6e6 * GRID_KG_PER_KWH,
            "digital_baseline_co2e_kg": baseline_j / 3.6e6 * GRID_KG_PER_KWH,
            "grid_intensity": {"kg_co2e_per_kwh": GRID_KG_PER_KWH, "source": GRID_SOURCE},
            "device_card": None if card is None else card.name,
        }
    )
    rates = epoch_rate[1:] if len(epoch_rate) > 1 else epoch_rate
    result = {
        "test_accuracy": epoch_acc[-1],
        "epoch_test_accuracy": epoch_acc,
        "samples_per_s": float(np.median(rates)),
        "epoch_samples_per_s": epoch_rate,
        "energy_j": {"total": report["total_j"], "by_kind": report["by_kind"], "by_layer": report["by_layer"]},
        "energy_report": report,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
    }
    if config.energy_report is not None:
        path = Path(config.energy_report)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)
    return result
