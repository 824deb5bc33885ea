"""The energy report of a run: prices of every ledger entry, the digital baseline, CO2."""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from device_models import DeviceCard, load_card

from .. import energy
from ..events import digital_layers, digital_rows_per_sample, digital_step_terms
from ..layers import AnalogWeight, analog_layers, capture_calls, layer_calls
from ..periphery_card import PeripheryCard
from .config import ConfigError
from .state import TrainState, layer_name
from .step import carries_no_gradient

__all__ = [
    "accelerator_counts",
    "baseline_report",
    "flops_per_sample",
    "ledger_prices",
    "non_finite_where",
    "training_flops_per_sample",
    "training_workload",
    "workload_flops",
]


def non_finite_where(state: TrainState) -> str:
    """Name the layers whose parameters or device states hold NaN/inf (for error messages)."""
    bad = []
    for label, tree in (("digital parameter", state.params), ("analog weights", state.analog)):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if not np.all(np.isfinite(np.asarray(leaf))):
                bad.append(f"{label} {jax.tree_util.keystr(path)}")
    return f" (non-finite: {', '.join(bad)})" if bad else ""


def flops_per_sample(sizes: list[tuple[int, int]]) -> int:
    """Digital FLOPs of one training sample of an MLP: forward 2*in*out per layer, backward
    2*in*out per layer except the first (the error of the input is not needed), and the
    weight gradient 2*in*out per layer."""
    total = 0
    for i, (n_in, n_out) in enumerate(sizes):
        total += 2 * n_in * n_out * (3 if i > 0 else 2)
    return total


def training_workload(model: nnx.Module, sample_shape: int | tuple[int, ...]) -> list[tuple[str, int, int, int, bool]]:
    """The weight layers a digital accelerator would train in ``model``'s place, from one traced
    forward pass: ``(name, rows, in, out, reads_input)`` per layer, ``rows`` the input vectors it
    multiplies per sample (a convolution's patches), ``reads_input`` whether its input is the
    network's (then no error goes back through it). Analog layers per call (from the recorded
    calls), ``nnx.Linear`` and ``nnx.Conv`` per layer (``analogsim.events.digital_rows_per_sample``)."""
    shape = (sample_shape,) if isinstance(sample_shape, int) else tuple(sample_shape)
    # differentiated as in a training step: parameters and (straight through) the analog weights
    graphdef, params, rest = nnx.split(model, nnx.Any(nnx.Param, AnalogWeight), ...)
    facts = []

    def trace(params, x):
        m = nnx.merge(graphdef, params, rest)
        m.eval()  # (BatchNorm: no statistics to update in a trace of shapes)
        y, recorded, _ = capture_calls(m, x)
        for path, layer in analog_layers(m):
            for call in layer_calls(recorded, path):
                reads_input = carries_no_gradient(call["source"], x)
                facts.append(
                    (layer_name(path), call["inputs"].shape[0], layer.in_features, layer.out_features, reads_input)
                )
        return jnp.sum(y)

    with warnings.catch_warnings():  # a trace of the gradient, not a training loop
        warnings.simplefilter("ignore")
        jax.eval_shape(jax.grad(trace), params, jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    calls = digital_rows_per_sample(model, shape)
    for name, n_in, n_out in digital_layers(model):
        rows, reads_input = calls.get(name, (0, False))
        facts.append((name, rows, n_in, n_out, reads_input))
    return facts


def training_flops_per_sample(model: nnx.Module, num_features: int | tuple[int, ...]) -> int:
    """Digital FLOPs of training one sample of ``model``'s network on a digital accelerator (the
    GPU baselines of the energy report): per weight layer of ``training_workload``, forward
    ``2 rows in out``, backward the same unless it reads the network input, weight gradient the
    same. Other digital work (normalisation, pooling, activations) is not counted. For an MLP
    this equals ``flops_per_sample`` of its widths."""
    return workload_flops(training_workload(model, num_features))


def workload_flops(workload) -> int:
    """FLOPs of training one sample on ``workload`` (``training_workload``'s rows): forward
    ``2 rows in out``, the error the same unless the layer reads the input, the weight gradient
    the same."""
    return sum(2 * rows * n_in * n_out * (2 if reads_input else 3) for _, rows, n_in, n_out, reads_input in workload)


def accelerator_counts(workload, samples: int, steps: int, elementwise_per_sample: int) -> dict[str, int]:
    """Digital operations and SRAM words of the same training on a digital accelerator in the
    chip's technology: each weight layer of ``workload`` trained on ``samples`` samples in
    ``steps`` optimizer steps (``analogsim.events.digital_step_terms``: weights in SRAM, read
    once per pass and step), plus the element-wise work the chip does digitally too."""
    totals = {"digital_ops": samples * elementwise_per_sample, "memory_words": 0}
    for _, rows, n_in, n_out, reads_input in workload:
        for kind, pairs in digital_step_terms(samples * rows, steps, n_in, n_out, reads_input=reads_input).items():
            totals[kind] += sum(a * b for a, b in pairs)
    return totals


def ledger_prices(
    model: nnx.Module, card: DeviceCard | None, periphery: PeripheryCard, names: list[str]
) -> dict[str, energy.Prices]:
    """Prices of every ledger entry of ``model``: its analog arrays (each with its own card
    where the layer was built from one, else ``card``), digital layers, activations."""
    prices = {name: energy.digital_prices(periphery) for name in names}
    for path, layer in analog_layers(model):
        fwd, bwd = layer.forward_io, layer.backward_io
        if (bwd.inp_res, bwd.out_res) != (fwd.inp_res, fwd.out_res):
            raise ConfigError(
                f"layer {layer_name(path)}: the energy ledger prices DAC and ADC conversions at one resolution; "
                "forward and backward periphery must share inp_res and out_res"
            )
        own = _layer_card(layer)
        if own is None and card is None:
            raise ConfigError(
                f"layer {layer_name(path)} is analog but has no device card to price its events: build it from a "
                "card (name, path or DeviceCard), or pass the run a device card"
            )
        prices[layer_name(path)] = energy.analog_prices(own or card, periphery, layer.forward_io)
    return prices


def _layer_card(layer) -> DeviceCard | None:
    ref = getattr(layer, "card", None)
    if ref is None:
        return None
    try:
        return load_card(ref)
    except (ValueError, OSError):
        return None


def baseline_report(
    flops: int,
    total_j: float,
    periphery: PeripheryCard,
    grid_kg_per_kwh: float,
    grid_source: str,
    accelerator: dict[str, int] | None = None,
) -> dict[str, Any]:
    """The digital baselines of the same training and the CO2-equivalents.

    Three baselines: ``accelerator`` (a digital accelerator in the chip's own technology: its
    ``digital_ops`` at the periphery card's price per multiply-add and its ``memory_words`` at
    its SRAM price; ``accelerator_counts``), a GPU's tensor cores (BF16) and its FP32 units,
    each at ``power / (utilisation * peak)`` per FLOP. The headline (``digital_baseline_j``,
    ``digital_over_analog``) is the accelerator where given, else the FP32 GPU."""
    baselines = {}
    if accelerator is not None:
        j = accelerator["digital_ops"] * periphery.digital_op_j + accelerator["memory_words"] * periphery.sram_access_j
        baselines["accelerator"] = {
            "j": j,
            "description": (
                f"digital accelerator in the chip's technology: {accelerator['digital_ops']:,} multiply-adds at "
                f"{periphery.digital_op_j * 1e12:g} pJ, {accelerator['memory_words']:,} SRAM words at "
                f"{periphery.sram_access_j * 1e12:g} pJ"
            ),
            "sources": {k: periphery.describe(k) for k in ("digital_op", "sram_access")},
            **accelerator,
        }
    for name, what, prefix in (("gpu-bf16", "BF16 tensor cores", "tensor"), ("gpu-fp32", "FP32", "baseline")):
        peak_field, util_field = f"{prefix}_flops_per_s", f"{prefix}_utilisation"
        peak, util = getattr(periphery, peak_field), getattr(periphery, util_field)
        j_per_flop = getattr(periphery, f"{prefix}_j_per_flop")
        baselines[name] = {
            "j": flops * j_per_flop,
            "description": (
                f"GPU {what}: {peak / 1e12:g} TFLOP/s at {periphery.baseline_power_w:g} W, {100 * util:g}% utilisation, "
                f"{j_per_flop * 1e12:.3g} pJ/FLOP"
            ),
            "sources": {k: periphery.describe(k) for k in (peak_field, "baseline_power", util_field)},
            "flops": flops,
            "j_per_flop": j_per_flop,
        }
    headline = "accelerator" if accelerator is not None else "gpu-fp32"
    baseline_j = baselines[headline]["j"]
    return {
        "digital_baseline_j": baseline_j,
        "digital_baseline": {"name": headline, **baselines[headline]},
        "baselines": baselines,
        "digital_over_analog": baseline_j / total_j if total_j > 0 else None,
        "co2e_kg": total_j / 3.6e6 * grid_kg_per_kwh,
        "digital_baseline_co2e_kg": baseline_j / 3.6e6 * grid_kg_per_kwh,
        "grid_intensity": {"kg_co2e_per_kwh": grid_kg_per_kwh, "source": grid_source},
    }
