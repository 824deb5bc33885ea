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
from ..events import digital_layers, digital_rows_per_sample
from ..layers import AnalogWeight, analog_layers, capture_calls, layer_calls
from ..periphery_card import PeripheryCard
from .config import ConfigError
from .state import TrainState, layer_name
from .step import carries_no_gradient

__all__ = [
    "baseline_report",
    "flops_per_sample",
    "ledger_prices",
    "non_finite_where",
    "training_flops_per_sample",
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


def training_flops_per_sample(model: nnx.Module, num_features: int) -> int:
    """Digital FLOPs of training one sample of ``model``'s network on a digital accelerator (the
    baseline of the energy report), from one traced forward pass: per call of an analog layer
    with ``rows`` input vectors per sample (a convolution's patches), forward ``2 rows in out``,
    backward the same unless the call reads the network input, weight gradient the same; per
    ``nnx.Linear`` and ``nnx.Conv`` the same with its rows per sample
    (``analogsim.events.digital_rows_per_sample``, which also tells whether it reads the
    input). Other digital layers (normalisation, pooling, activations) are not counted. For an MLP this
    equals ``flops_per_sample`` of its widths."""
    # differentiated as in a training step: parameters and (straight through) the analog weights
    graphdef, params, rest = nnx.split(model, nnx.Any(nnx.Param, AnalogWeight), ...)
    facts = []

    def trace(params, x):
        m = nnx.merge(graphdef, params, rest)
        m.eval()  # (BatchNorm: no statistics to update in a trace of shapes)
        y, recorded, _ = capture_calls(m, x)
        for path, layer in analog_layers(m):
            for call in layer_calls(recorded, path):
                rows = call["inputs"].shape[0]
                facts.append((rows, layer.in_features, layer.out_features, carries_no_gradient(call["source"], x)))
        return jnp.sum(y)

    with warnings.catch_warnings():  # a trace of the gradient, not a training loop
        warnings.simplefilter("ignore")
        jax.eval_shape(jax.grad(trace), params, jax.ShapeDtypeStruct((1, num_features), jnp.float32))
    total = sum(2 * rows * n_in * n_out * (2 if reads_input else 3) for rows, n_in, n_out, reads_input in facts)
    calls = digital_rows_per_sample(model, (num_features,))
    for name, n_in, n_out in digital_layers(model):
        rows, reads_input = calls.get(name, (0, False))
        total += 2 * rows * n_in * n_out * (2 if reads_input else 3)
    return total


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
