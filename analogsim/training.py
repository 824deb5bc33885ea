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
from .algorithms import ALGORITHMS as UPDATE_RULES
from .algorithms import RuleCounts, make_rule
from .checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint
from .data import Dataset, load_dataset
from .layers import REFERENCES, AnalogWeight, analog_layers
from .models import ACTIVATIONS, MLP
from .periphery_card import PeripheryCard, load_periphery_card
from .pulsed_update import UPDATE_MODES, UpdateParameters
from .tile import tile_grid

__all__ = [
    "ALGORITHMS",
    "ConfigError",
    "TrainConfig",
    "TrainState",
    "TrainingError",
    "auto_steps_per_call",
    "evaluate",
    "make_train_step",
    "split_state",
    "train",
]

ALGORITHMS = (*UPDATE_RULES, "digital")


class ConfigError(ValueError):
    """A training setting that is not allowed; the message names it and the allowed values."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the ``analogsim train`` flags)."""

    dataset: str = "digits"
    data_dir: str | None = None
    device: str = "wo3-psg-onen2022"
    algorithm: str = "sgd"
    algo_options: tuple[tuple[str, str], ...] = ()  # (name, value) hyperparameters of the rule
    reference: str = "zero"  # analog weights read against 0 or the devices' symmetry points
    update_mode: str = "gaussian"  # the fastest rung within 1 point of exact on RT-MNIST (README)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    hidden: tuple[int, ...] = (256, 128)
    activation: str = "tanh"
    seed: int = 0
    energy_report: str | None = None
    force: bool = False
    periphery: str = "periphery-default"
    grid_intensity: float | None = None  # kg CO2e per kWh; None: the periphery card's
    checkpoint_dir: str | None = None  # save the full state here after every epoch
    resume: bool = False  # continue from the checkpoint in checkpoint_dir
    eval_batch_size: int = 500
    # training steps per compiled call (speed only; see train()); None: auto_steps_per_call
    steps_per_call: int | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for the first setting that is not allowed."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"--algorithm: value {self.algorithm!r} is not allowed; allowed: {', '.join(ALGORITHMS)}")
        if self.algo_options:
            if self.algorithm == "digital":
                raise ConfigError("--algo-opt: the digital algorithm has no options")
            try:
                make_rule(self.algorithm, dict(self.algo_options))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.reference not in REFERENCES:
            raise ConfigError(f"--reference: value {self.reference!r} is not allowed; allowed: {', '.join(REFERENCES)}")
        if self.update_mode not in UPDATE_MODES:
            raise ConfigError(
                f"--update-mode: value {self.update_mode!r} is not allowed; allowed: {', '.join(UPDATE_MODES)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"--activation: value {self.activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}"
            )
        for name in ("epochs", "batch_size", "eval_batch_size", "steps_per_call"):
            value = getattr(self, name)
            if name == "steps_per_call" and value is None:  # chosen per run (auto_steps_per_call)
                continue
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
        if self.grid_intensity is not None and not (math.isfinite(self.grid_intensity) and self.grid_intensity >= 0):
            raise ConfigError(
                f"--grid-intensity: value {self.grid_intensity!r} is not allowed; must be a finite number >= 0"
            )
        if self.resume and self.checkpoint_dir is None:
            raise ConfigError("--resume needs --checkpoint-dir DIR (the directory of the run to continue)")
        if self.checkpoint_dir is not None:
            ckpt = Path(self.checkpoint_dir) / CHECKPOINT_FILE
            if self.resume and not ckpt.is_file():
                raise ConfigError(f"--resume: {ckpt} does not exist; nothing to continue")
            if not self.resume and ckpt.is_file() and not self.force:
                raise ConfigError(
                    f"--checkpoint-dir: {ckpt} exists; pass --resume to continue that run or --force to start over"
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


def split_state(model: nnx.Module):
    """``(graphdef, params, analog, rest)``: the split the training state uses."""
    return nnx.split(model, nnx.Param, AnalogWeight, ...)


def _masked_xent(logits, labels, mask):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(ce * mask) / n


class _FlatState:
    """A training state as a few plain arrays between compiled calls, and back.

    Key arrays travel as their raw data. Every leaf of at most ``SMALL`` elements (ledger
    counters, scalars, keys, biases) is packed, by dtype, into one 1-D array: a compiled call
    costs about 1.6 us per argument and result on CPU, and the RT-MNIST analog state has 61
    leaves, 51 of them small (12 arrays after packing). Large leaves (weights, device parameters) pass as they are, so
    donating them updates them in place. ``pack`` and ``unpack`` work inside and outside
    ``jit``; the structure is fixed by the state given at construction.
    """

    SMALL = 4096

    def __init__(self, state: TrainState):
        leaves, self.treedef = jax.tree.flatten(state)
        self.impls = [jax.random.key_impl(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else None for a in leaves]
        raw = self._raw(leaves)
        self.shapes = [(a.shape, a.dtype) for a in raw]
        self.small = [a.size <= self.SMALL for a in raw]
        self.dtypes = sorted({str(a.dtype) for a, small in zip(raw, self.small, strict=True) if small})

    def _raw(self, leaves):
        return [a if impl is None else jax.random.key_data(a) for a, impl in zip(leaves, self.impls, strict=True)]

    def pack(self, state: TrainState) -> list[jax.Array]:
        raw = self._raw(jax.tree.leaves(state))
        big = [a for a, small in zip(raw, self.small, strict=True) if not small]
        packed = [
            jnp.concatenate(
                [jnp.ravel(a) for a, small in zip(raw, self.small, strict=True) if small and str(a.dtype) == dt]
            )
            for dt in self.dtypes
        ]
        return big + packed

    def unpack(self, flat: list[jax.Array]) -> TrainState:
        n_big = len(flat) - len(self.dtypes)
        big = iter(flat[:n_big])
        packed = dict(zip(self.dtypes, flat[n_big:], strict=True))
        offset = dict.fromkeys(self.dtypes, 0)
        leaves = []
        for (shape, dtype), small, impl in zip(self.shapes, self.small, self.impls, strict=True):
            if small:
                dt, size = str(dtype), math.prod(shape)
                a = packed[dt][offset[dt] : offset[dt] + size].reshape(shape)
                offset[dt] += size
            else:
                a = next(big)
            leaves.append(a if impl is None else jax.random.wrap_key_data(a, impl=impl))
        return jax.tree.unflatten(self.treedef, leaves)


def make_train_step(model: nnx.Module, tx: optax.GradientTransformation, lr: float, *, jit: bool = True):
    """Build the jitted training step and the initial state for ``model``.

    Args:
      model: an nnx model whose analog layers are :class:`AnalogLinear` (or subclasses);
        called as ``model(x)``.
      tx: optax transformation for the digital parameters (``nnx.Param``).
      lr: learning rate of the pulsed (analog SGD) update.
      jit: return the step jitted (with the state donated); ``False`` returns the plain
        function, for callers that transform it further (``vmap`` over variants, ``jit`` with
        shardings).

    Returns:
      ``(graphdef, state, step)`` where ``step(state, x_all, y_all, idx, mask, key)`` trains
      on the rows ``idx`` of ``x_all``/``y_all`` (``mask`` zero for padding rows) and returns
      ``(state, metrics)``; ``metrics`` has ``loss``, ``correct`` and ``count``.
    """
    graphdef, params, analog, rest = split_state(model)
    specs = [
        (_layer_name(path), layer.model, layer.update, layer.in_features, layer.out_features)
        for path, layer in analog_layers(model)
    ]
    rows_of = _analog_rows(graphdef, params, analog, rest)
    digital = digital_layers(model)
    act_ops = int(getattr(model, "digital_ops_per_sample", lambda: 0)())
    names = [s[0] for s in specs] + [name for name, _, _ in digital] + (["activations"] if act_ops else [])
    state = TrainState(params, analog, rest, tx.init(params), energy.new_ledger(names))

    def step(state: TrainState, x_all, y_all, idx, mask, key):
        xb = x_all[idx]
        yb = y_all[idx]
        reads_input = []  # trace-time facts: does a layer read the network input directly?
        # (Deriving the step's keys from one Philox key instead, as the bulk draws are, ran no
        # faster and doubled the compile time: XLA fuses a Philox key's derivation into every
        # draw that uses it, where a Threefry derivation, a loop on CPU, is computed once.)
        k_read, k_update = jax.random.split(key)

        def loss_fn(params, probes):
            m = nnx.merge(graphdef, params, state.analog, state.rest, copy=True)
            layers = analog_layers(m)
            for i, ((_, layer), probe) in enumerate(zip(layers, probes, strict=True)):
                layer.tape.set_value({"probe": probe, "key": jax.random.fold_in(k_read, i)})
            logits = m(xb)
            loss = _masked_xent(logits, yb, mask)
            tapes = []
            for _, layer in layers:
                tape = layer.tape.get_value()
                reads_input.append(tape.get("input", tape["x"]) is xb)
                tapes.append({"x": tape["x"], "reads": tape["reads"]})
                layer.tape.set_value({})
            new_rest = split_state(m)[3]
            return loss, (logits, tapes, new_rest)

        rows = rows_of(xb)
        probes = [jnp.zeros((r, s[4]), xb.dtype) for r, s in zip(rows, specs, strict=True)]
        (loss, (logits, tapes, new_rest)), (g_params, g_probes) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True
        )(state.params, probes)
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        m = nnx.merge(graphdef, params, state.analog, new_rest, copy=True)
        ledger = state.ledger
        rows = jnp.sum(mask.astype(jnp.uint32))
        for i, ((name, dev_model, up, n_in, n_out), (_, layer), tape, d) in enumerate(
            zip(specs, analog_layers(m), tapes, g_probes, strict=True)
        ):
            with jax.named_scope("pulsed_update"):  # (the scopes name the step's parts in profiles)
                w_new, rule_state, rule_counts = layer.algorithm.update(
                    dev_model,
                    layer.device.get_value(),
                    layer.weight.get_value(),
                    layer.rule_state.get_value(),
                    tape["x"],
                    d,
                    lr,
                    up,
                    key=jax.random.fold_in(k_update, i),
                )
            layer.weight.set_value(w_new)
            layer.rule_state.set_value(rule_state)
            with jax.named_scope("ledger"):
                counts = analog_step_counts(
                    tape["reads"],
                    d,
                    tape_mask(mask, tape["reads"].shape[0]),
                    rule_counts,
                    n_in,
                    n_out,
                    reads_input=reads_input[i],
                    has_bias=layer.bias is not None,
                    tiles=tuple(len(t) for t in tile_grid(n_out, n_in, layer.forward_io)),
                )
                ledger = energy.add_counts(ledger, name, **counts)
        with jax.named_scope("ledger"):
            for name, n_in, n_out in digital:
                # forward, error and weight-gradient multiply-adds per sample, then the optimizer step
                ledger = energy.add_counts(
                    ledger, name, digital_ops=rows * (3 * n_in * n_out + n_out) + n_in * n_out + n_out
                )
            if act_ops:
                ledger = energy.add_counts(ledger, "activations", digital_ops=rows * act_ops)
        _, params, analog, rest = split_state(m)
        correct = jnp.sum((jnp.argmax(logits, -1) == yb) * mask)
        metrics = {"loss": loss, "correct": correct, "count": jnp.sum(mask)}
        return TrainState(params, analog, rest, opt_state, ledger), metrics

    return graphdef, state, (jax.jit(step, donate_argnums=0) if jit else step)


def tape_mask(mask: jax.Array, rows: int) -> jax.Array:
    """The sample mask (batch,) spread over a layer's ``rows`` vectors (rows = batch * vectors
    per sample, sample-major, as a convolution's patches are)."""
    per = rows // mask.shape[0]
    return jnp.repeat(mask, per) if per > 1 else mask


def _analog_rows(graphdef, params, analog, rest):
    """``rows(xb)``: each analog layer's number of input vectors for a batch ``xb`` (batch for a
    dense layer, batch x positions for a convolution), found by tracing one forward read."""

    def shapes(xb):
        m = nnx.merge(graphdef, params, analog, rest, copy=True)
        layers = analog_layers(m)
        for _, layer in layers:
            layer.tape.set_value({"record": True})
        m(xb)
        return [layer.tape.get_value()["reads"] for _, layer in layers]

    def rows(xb):
        return [r.shape[0] for r in jax.eval_shape(shapes, jax.ShapeDtypeStruct(xb.shape, xb.dtype))]

    return rows


def analog_step_counts(
    reads: jax.Array,
    d: jax.Array,
    mask: jax.Array,
    rule: RuleCounts,
    n_in: int,
    n_out: int,
    *,
    reads_input: bool,
    has_bias: bool,
    tiles: tuple[int, int] = (1, 1),
) -> dict[str, jax.Array]:
    """The events of one training step of one analog layer (uint32 increments).

    Args:
      reads: (rows,) forward reads per vector (bound management may read a vector again).
      d: (rows, out) errors at the layer output; rows of zeros are neither read back nor pulsed.
      mask: (rows,) 1 for real samples, 0 for padding.
      rule: what the update rule did: pulses on all of its arrays, transfer reads (one-hot
        inputs: each drives all ``n_in`` DAC lines and reads ``n_out`` cross-points and ADCs),
        and its digital operations.
      n_in, n_out: array size.
      tiles: ``(R, C)``, the tiles the array is split into along its outputs and inputs
        (:func:`analogsim.tile.tile_grid`): a forward read converts each input once per tile
        row (``R n_in`` DAC) and each partial output once per tile column (``C n_out`` ADC)
        and adds the partial outputs digitally; the backward read the other way round.
      reads_input: the layer reads the network input, so its error is never read back.
      has_bias: the layer has a digital bias.

    Returns:
      Increments for :func:`analogsim.energy.add_counts`.
    """
    u32 = jnp.uint32
    mask_i = mask.astype(u32)
    fwd = jnp.sum(reads.astype(u32) * mask_i)
    with_error = jnp.sum(jnp.any(d != 0, axis=1).astype(u32))
    bwd = jnp.zeros((), u32) if reads_input else with_error
    rows = jnp.sum(mask_i)
    reads_all = fwd + bwd
    transfer = rule.transfer_reads.astype(u32)
    t_rows, t_cols = tiles
    digital = (
        fwd * u32(t_rows * n_in + t_cols * n_out)  # noise management per tile: scale inputs, rescale outputs
        + bwd * u32(t_cols * n_out + t_rows * n_in)
        + fwd * u32((t_cols - 1) * n_out)  # digital sums of the tiles' partial outputs
        + bwd * u32((t_rows - 1) * n_in)
        + with_error * u32(n_in + n_out)  # pulse probabilities of the update
        + ((rows + 1) * u32(n_out) if has_bias else u32(0))  # bias additions and its SGD step
        + rule.digital_ops.astype(u32)
    )
    return {
        "pulses_up": rule.pulses_up.astype(u32),
        "pulses_down": rule.pulses_down.astype(u32),
        "array_reads": reads_all + transfer,
        "crosspoint_reads": reads_all * u32(n_in * n_out) + transfer * u32(n_out),
        "dac_conversions": fwd * u32(t_rows * n_in) + bwd * u32(t_cols * n_out) + transfer * u32(n_in),
        "adc_conversions": fwd * u32(t_cols * n_out) + bwd * u32(t_rows * n_in) + transfer * u32(n_out),
        "digital_ops": digital,
    }


def digital_layers(model: nnx.Module) -> list[tuple[str, int, int]]:
    """``(name, in, out)`` of every ``nnx.Linear`` in ``model`` (digital parts of the ledger)."""
    return [
        (_layer_name(path), m.in_features, m.out_features)
        for path, m in nnx.iter_modules(model)
        if isinstance(m, nnx.Linear)
    ]


def padded_batches(x, y, batch_size: int):
    """``(x, y, mask)`` batches of exactly ``batch_size`` rows for evaluation: the last batch is
    padded with zero rows whose ``mask`` is 0, so one compiled program serves every batch."""
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        yb = y[start : start + batch_size]
        pad = batch_size - xb.shape[0]
        mask = np.concatenate([np.ones(xb.shape[0], np.float32), np.zeros(pad, np.float32)])
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
        yield xb, yb, mask


@functools.partial(jax.jit, static_argnums=0)
def _eval_batch(graphdef, params, analog, rest, x, y, mask):
    m = nnx.merge(graphdef, params, analog, rest, copy=True)
    layers = analog_layers(m)
    for _, layer in layers:
        layer.tape.set_value({"record": True})
    logits = m(x)
    reads = []
    for _, layer in layers:
        layer_reads = layer.tape.get_value()["reads"]
        rows_mask = tape_mask(mask, layer_reads.shape[0]).astype(jnp.int32)
        reads.append((jnp.sum(layer_reads * rows_mask), jnp.sum(rows_mask)))
        layer.tape.set_value({})
    correct = jnp.sum((jnp.argmax(logits, -1) == y) * mask)
    return correct, reads, split_state(m)[3]


def evaluate(
    graphdef, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int = 500
) -> tuple[float, TrainState, dict[str, dict[str, int]]]:
    """Test accuracy of the model in ``state`` (analog reads with their noise).

    Returns:
      The accuracy in [0, 1], the state with its read-noise streams advanced, and the exact
      event counts of the evaluation per analog layer (forward reads only).
    """
    model = nnx.merge(graphdef, state.params, state.analog, state.rest)
    sizes = [
        (
            _layer_name(p),
            layer.in_features,
            layer.out_features,
            layer.bias is not None,
            tuple(len(t) for t in tile_grid(layer.out_features, layer.in_features, layer.forward_io)),
        )
        for p, layer in analog_layers(model)
    ]
    n = x.shape[0]
    rest = state.rest
    correct = 0
    reads = [0] * len(sizes)
    vectors = [0] * len(sizes)  # input vectors per layer (a convolution reads one per patch)
    for xb, yb, mask in padded_batches(x, y, batch_size):
        c, r, rest = _eval_batch(graphdef, state.params, state.analog, rest, xb, yb, mask)
        correct += int(c)
        reads = [a + int(b) for a, (b, _) in zip(reads, r, strict=True)]
        vectors = [a + int(v) for a, (_, v) in zip(vectors, r, strict=True)]
    counts = {}
    for (name, n_in, n_out, has_bias, (t_rows, t_cols)), r, v in zip(sizes, reads, vectors, strict=True):
        counts[name] = {
            "pulses_up": 0,
            "pulses_down": 0,
            "array_reads": r,
            "crosspoint_reads": r * n_in * n_out,
            "dac_conversions": r * t_rows * n_in,
            "adc_conversions": r * t_cols * n_out,
            "digital_ops": r * (t_rows * n_in + t_cols * n_out + (t_cols - 1) * n_out) + (v * n_out if has_bias else 0),
        }
    return correct / n, state._replace(rest=rest), counts


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


def ledger_prices(
    model: nnx.Module, card: DeviceCard | None, periphery: PeripheryCard, names: list[str]
) -> dict[str, energy.Prices]:
    """Prices of every ledger entry of ``model``: its analog arrays, digital layers, activations."""
    prices = {name: energy.digital_prices(periphery) for name in names}
    for path, layer in analog_layers(model):
        fwd, bwd = layer.forward_io, layer.backward_io
        if (bwd.inp_res, bwd.out_res) != (fwd.inp_res, fwd.out_res):
            raise ConfigError(
                f"layer {_layer_name(path)}: the energy ledger prices DAC and ADC conversions at one resolution; "
                "forward and backward periphery must share inp_res and out_res"
            )
        if card is None:
            raise ConfigError(f"layer {_layer_name(path)} is analog but the run has no device card")
        prices[_layer_name(path)] = energy.analog_prices(card, periphery, layer.forward_io)
    return prices


def baseline_report(
    flops: int, total_j: float, periphery: PeripheryCard, grid_kg_per_kwh: float, grid_source: str
) -> dict[str, Any]:
    """The digital baseline for the same training and the CO2-equivalents of both."""
    baseline_j = flops * periphery.baseline_j_per_flop
    return {
        "digital_baseline_j": baseline_j,
        "digital_baseline": {
            "accelerator": (
                f"{periphery.baseline_flops_per_s / 1e12:g} TFLOP/s at {periphery.baseline_power_w:g} W, "
                f"{100 * periphery.baseline_utilisation:g}% utilisation"
            ),
            "sources": {
                k: periphery.describe(k) for k in ("baseline_flops_per_s", "baseline_power", "baseline_utilisation")
            },
            "flops": flops,
            "j_per_flop": periphery.baseline_j_per_flop,
        },
        "digital_over_analog": baseline_j / total_j if total_j > 0 else None,
        "co2e_kg": total_j / 3.6e6 * grid_kg_per_kwh,
        "digital_baseline_co2e_kg": baseline_j / 3.6e6 * grid_kg_per_kwh,
        "grid_intensity": {"kg_co2e_per_kwh": grid_kg_per_kwh, "source": grid_source},
    }


def _config_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


# Settings that may change between a run and its resumption (they do not change the result).
_RESUMABLE = (
    "epochs",
    "energy_report",
    "force",
    "resume",
    "checkpoint_dir",
    "eval_batch_size",
    "steps_per_call",
    "grid_intensity",
    "periphery",
)


def _check_resume(config: TrainConfig, meta: dict[str, Any]) -> None:
    saved = meta["config"]
    now = _config_dict(config)
    for field, value in now.items():
        if field in _RESUMABLE:
            continue
        if saved.get(field) != value:
            raise ConfigError(
                f"--resume: setting {field!r} is {value!r} but the checkpointed run used {saved.get(field)!r}; "
                "a resumed run must keep every setting but --epochs"
            )
    if meta["epoch"] > config.epochs:
        raise ConfigError(
            f"--epochs: value {config.epochs} is not allowed; the checkpoint already has {meta['epoch']} epochs"
        )


def build_model(config: TrainConfig, dataset: Dataset) -> tuple[nnx.Module, DeviceCard | None]:
    """The MLP of ``config`` for ``dataset`` (digital for ``--algorithm digital``)."""
    sizes = (dataset.num_features, *config.hidden, dataset.num_classes)
    card = None if config.algorithm == "digital" else load_card(config.device)
    update = UpdateParameters(mode=config.update_mode)
    rule = None if card is None else make_rule(config.algorithm, dict(config.algo_options))
    model = MLP(
        sizes,
        config.activation,
        device=card,
        update=update,
        algorithm=rule,
        reference=config.reference,
        rngs=nnx.Rngs(config.seed),
    )
    return model, card


AUTO_MAX_STEPS_PER_CALL = 25


def auto_steps_per_call(steps_per_epoch: int) -> int:
    """The default steps per compiled call: the largest divisor of the epoch's steps up to
    ``AUTO_MAX_STEPS_PER_CALL`` (so every call of a run has the same length and compiles once).

    Fewer calls cost less: on CPU (RT-MNIST, one thread, interleaved) 25 steps per call ran the
    default rung 18% and the digital step 22% faster than 1, and compiled no slower; on a GPU,
    where a small network's step is dispatch-bound, 25 ran 5x faster (README, speed section).
    The metrics (loss check, progress bar) come back once per call. A prime number of steps
    gets 1.

    Example:
      >>> auto_steps_per_call(125), auto_steps_per_call(23), auto_steps_per_call(127)
      (25, 23, 1)
    """
    return max(k for k in range(1, min(AUTO_MAX_STEPS_PER_CALL, steps_per_epoch) + 1) if steps_per_epoch % k == 0)


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
    graphdef, state, plain_step = make_train_step(model, tx, config.lr, jit=False)
    names = list(state.ledger)
    periphery = load_periphery_card(config.periphery)
    prices = ledger_prices(model, card, periphery, names)
    eval_counts_total: dict[str, dict[str, int]] = {}

    key = jax.random.key(config.seed)
    k_data, k_train = jax.random.split(key)

    # ``steps_per_call`` training steps run in one compiled call (a scan), each with the key
    # folded in from its global step number: one dispatch per call instead of per step. It does
    # not change the result. See auto_steps_per_call for the default.
    n_steps = math.ceil(data.x_train.shape[0] / config.batch_size)
    spc = config.steps_per_call or auto_steps_per_call(n_steps)

    # Between compiled calls the state travels as a few plain arrays (_FlatState): handing jit
    # the nnx state itself rebuilds every nnx Variable and key array on each call (on CPU the
    # digital RT-MNIST run went from 72,701 to 90,868 samples/s without it).
    flat = _FlatState(state)

    @functools.partial(jax.jit, donate_argnums=0, static_argnums=5)
    def run_steps(raw, x_all, y_all, idx_epoch, mask_epoch, n, c0, first_step):
        state = flat.unpack(raw)
        idx_k = jax.lax.dynamic_slice_in_dim(idx_epoch, c0, n)
        mask_k = jax.lax.dynamic_slice_in_dim(mask_epoch, c0, n)

        def body(state, inputs):
            idx, mask, step_no = inputs
            return plain_step(state, x_all, y_all, idx, mask, jax.random.fold_in(k_train, step_no))

        if n == 1:  # one step: no scan (compiles as fast as the plain step)
            state, metrics = body(state, (idx_k[0], mask_k[0], first_step))
            return flat.pack(state), jax.tree.map(lambda a: a[None], metrics)
        steps = first_step + jnp.arange(n)
        state, metrics = jax.lax.scan(body, state, (idx_k, mask_k, steps))
        return flat.pack(state), metrics

    x_all = jnp.asarray(data.x_train)
    y_all = jnp.asarray(data.y_train)
    n = data.x_train.shape[0]
    bs = config.batch_size

    epoch_acc: list[float] = []
    epoch_rate: list[float] = []
    epoch_energy: list[dict[str, Any]] = []
    global_step = 0
    first_epoch = 0
    if config.resume:
        state, meta = load_checkpoint(config.checkpoint_dir, state)
        _check_resume(config, meta)
        first_epoch = meta["epoch"]
        global_step = meta["global_step"]
        epoch_acc, epoch_rate, epoch_energy = meta["epoch_acc"], meta["epoch_rate"], meta["epoch_energy"]
        eval_counts_total = meta["eval_counts"]
    prev_report = energy.price_report(energy.host_counts(state.ledger), prices)
    for epoch in range(first_epoch, config.epochs):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(k_data, epoch), n))
        bar = tqdm(
            total=n_steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress, leave=False, unit="step"
        )
        seen = correct = 0
        loss_sum = 0.0
        # the epoch's batches as (steps, batch) index and mask arrays; the last batch is padded,
        # and padding rows carry no error and fire no pulse
        idx_all = np.zeros(n_steps * bs, perm.dtype)
        idx_all[:n] = perm
        mask_all = np.zeros(n_steps * bs, np.float32)
        mask_all[:n] = 1.0
        idx_all, mask_all = idx_all.reshape(n_steps, bs), mask_all.reshape(n_steps, bs)
        t0 = last_postfix = time.perf_counter()
        pending: list[tuple[int, dict[str, jax.Array]]] = []
        raw = flat.pack(state)
        idx_dev, mask_dev = jnp.asarray(idx_all), jnp.asarray(mask_all)  # one transfer per epoch
        for c0 in range(0, n_steps, spc):
            c1 = min(c0 + spc, n_steps)
            raw, metrics = run_steps(raw, x_all, y_all, idx_dev, mask_dev, c1 - c0, c0, global_step)
            pending.append((global_step, metrics))
            global_step += c1 - c0
            # metrics come back (and the progress bar moves) about every 10 steps
            if global_step - pending[0][0] >= 10 or c1 == n_steps:
                done = 0
                for first, m in jax.device_get(pending):
                    bad = np.flatnonzero(~np.isfinite(m["loss"]))
                    if bad.size:
                        raise TrainingError(
                            f"epoch {epoch + 1}, step {first + int(bad[0]) + 1}: the loss is {m['loss'][bad[0]]}"
                            f"{_non_finite_where(flat.unpack(raw))}; lower --lr (now {config.lr})"
                            + (
                                ""
                                if config.algorithm == "digital"
                                else f" or check the bounds of card {config.device!r}"
                            )
                        )
                    loss_sum += float(np.sum(m["loss"] * m["count"]))
                    correct += int(np.sum(m["correct"]))
                    seen += int(np.sum(m["count"]))
                    done += m["loss"].shape[0]
                bar.update(done)
                pending = []
                # the postfix (and pricing the ledger for it) at most twice a second: every 10
                # steps it cost up to ~20% of a short step's time
                if progress and (time.perf_counter() - last_postfix > 0.5 or c1 == n_steps):
                    last_postfix = time.perf_counter()
                    ledger = flat.unpack(raw).ledger
                    spent = energy.price_report(energy.host_counts(ledger), prices)["total_j"] if names else 0.0
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", energy=f"{spent:.3g} J")
        jax.block_until_ready(raw)
        state = flat.unpack(raw)
        epoch_rate.append(n / (time.perf_counter() - t0))
        bar.close()
        acc, state, eval_counts = evaluate(graphdef, state, data.x_test, data.y_test, config.eval_batch_size)
        for layer, kinds in eval_counts.items():
            total = eval_counts_total.setdefault(layer, dict.fromkeys(kinds, 0))
            for kind, v in kinds.items():
                total[kind] += v
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
        if config.checkpoint_dir is not None:
            meta = {
                "config": _config_dict(config),
                "epoch": epoch + 1,
                "global_step": global_step,
                "epoch_acc": epoch_acc,
                "epoch_rate": epoch_rate,
                "epoch_energy": epoch_energy,
                "eval_counts": eval_counts_total,
            }
            save_checkpoint(config.checkpoint_dir, state, meta)
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
    if config.grid_intensity is not None:
        grid, grid_src = config.grid_intensity, "set by --grid-intensity"
    else:
        grid, grid_src = periphery.grid_kg_per_kwh, periphery.describe("grid_intensity")
    report.update(baseline_report(flops, report["total_j"], periphery, grid, grid_src))
    report["per_epoch"] = epoch_energy
    report["device_card"] = None if card is None else card.name
    report["periphery_card"] = periphery.name
    if eval_counts_total:
        ev = energy.price_report(eval_counts_total, {k: prices[k] for k in eval_counts_total})
        report["evaluation"] = {k: ev[k] for k in ("total_j", "by_kind", "by_layer", "counts_by_layer")}
    rates = epoch_rate[1:] if len(epoch_rate) > 1 else epoch_rate
    result = {
        "test_accuracy": epoch_acc[-1],
        "epoch_test_accuracy": epoch_acc,
        "samples_per_s": float(np.median(rates)),
        "epoch_samples_per_s": epoch_rate,
        "steps_per_call": spc,
        "energy_j": {"total": report["total_j"], "by_kind": report["by_kind"], "by_layer": report["by_layer"]},
        "energy_report": report,
        "config": _config_dict(config),
    }
    if config.energy_report is not None:
        path = Path(config.energy_report)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2))
        tmp.replace(path)
    return result
