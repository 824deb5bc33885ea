"""Projecting the energy and time of training a large network on the chip, from a measured run.

``analogsim energy project`` (``project``) takes a network (a named transformer shape, a list
of dense layers, or a parameter count), a training length (samples or tokens) and a measured
energy report, and gives the energy, time on chip and CO2e of training the network on the chip
against the three digital baselines of the report (``analogsim.training.report.baseline_report``).

How the measured run scales. Each event count of the run's analog layers is divided by the
samples it trained and by the quantity it grows with, per layer and per input vector (a dense
layer reads one vector per sample, a convolution one per patch): cross-points (``in * out``)
for pulses, cross-point reads and wire; lines (``R in + C out`` on ``R`` x ``C`` tiles of the
periphery's tile size) for conversions, bit draws, memory words and digital operations; one
per vector for array reads and pulse slots. The projection multiplies these rates by the
target's samples and its layers' cross-points, lines and vectors. So it keeps the run's update
rule, learning rate, pulse statistics and error sparsity per weight; whether a network a
thousand times wider trains with the same pulses per weight is the projection's main
assumption, and it is printed with the result.

A transformer block (``TransformerShape``) has six analog matrices per layer (Q, K, V and the
output projection, ``d x d``; the MLP, ``d x 4d`` and ``4d x d``) read once per token forward
and once backward, and an analog output head (``d x vocab``). Attention scores and their
weighted sums are digital: ``2 n_ctx d`` multiply-adds per token and layer forward, three times
that in training (Kaplan et al., arXiv:2001.08361, 2020, Table 1). Element-wise work (layer
norms, softmax, GELU) and the embedding lookup are counted as ``ELEMENTWISE_PER_TOKEN``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from device_models import load_card

from .energy import COUNT_KINDS, ENERGY_KIND_OF, ENERGY_KINDS, analog_prices
from .events import digital_step_terms
from .periphery import IOParameters
from .periphery_card import PeripheryCard
from .tile import tile_grid

__all__ = ["SHAPES", "REFERENCE_RUNS", "DenseShape", "TransformerShape", "measured_rates", "parse_network", "project"]

# the quantity each count kind grows with (module docstring)
BASIS = {
    "pulses_up": "weights",
    "pulses_down": "weights",
    "crosspoint_reads": "weights",
    "read_wire_cells": "weights",
    "write_wire_cells": "weights",
    "dac_conversions": "lines",
    "adc_conversions": "lines",
    "bit_draws": "lines",
    "memory_words": "lines",
    "digital_ops": "lines",
    "array_reads": "vectors",
    "update_slots": "vectors",
}
assert set(BASIS) == set(COUNT_KINDS)


@dataclasses.dataclass(frozen=True)
class TransformerShape:
    """A decoder-only transformer (GPT): ``n_layers`` blocks of width ``d_model``."""

    name: str
    d_model: int
    n_layers: int
    context: int
    vocab: int
    tokens: float  # its published training length
    source: str

    def matrices(self) -> list[tuple[str, int, int]]:
        d = self.d_model
        block = [("q", d, d), ("k", d, d), ("v", d, d), ("o", d, d), ("mlp_in", d, 4 * d), ("mlp_out", 4 * d, d)]
        return [(f"block/{n}", i, o) for n, i, o in block] * self.n_layers + [("head", d, self.vocab)]

    @property
    def parameters(self) -> int:
        return sum(i * o for _, i, o in self.matrices()) + self.vocab * self.d_model + self.context * self.d_model

    first_reads_input = False  # the first matrices read the embeddings, which are trained

    def digital_macs_per_token(self) -> int:
        """Attention scores and weighted sums, forward and backward (3x forward)."""
        return 3 * 2 * self.n_layers * self.context * self.d_model // 2  # 2 n_ctx d per layer forward, in MACs

    def elementwise_per_token(self) -> int:
        """Layer norms (2 per block, 8 operations per element forward and backward), softmax over
        the causal scores (5 per score, half the context on average, per head of 128), GELU
        (2 per MLP element), the loss (5 per vocabulary entry)."""
        d, heads = self.d_model, max(1, self.d_model // 128)
        per_layer = 2 * 8 * d + 5 * heads * self.context // 2 + 2 * 4 * d
        return self.n_layers * per_layer + 5 * self.vocab


@dataclasses.dataclass(frozen=True)
class DenseShape:
    """A stack of dense layers, ``784x256,256x128,128x10``."""

    name: str
    layers: tuple[tuple[int, int], ...]
    tokens: float | None = None
    source: str = "given on the command line"

    def matrices(self) -> list[tuple[str, int, int]]:
        return [(f"layers/{k}", i, o) for k, (i, o) in enumerate(self.layers)]

    @property
    def parameters(self) -> int:
        return sum(i * o + o for i, o in self.layers)

    first_reads_input = True  # the first layer reads the data: no error goes back through it

    def digital_macs_per_token(self) -> int:
        return 0

    def elementwise_per_token(self) -> int:
        return 2 * sum(o for _, o in self.layers[:-1]) + 5 * self.layers[-1][1]


SHAPES = {
    "gpt3-175b": TransformerShape(
        "gpt3-175b", 12288, 96, 2048, 50257, 300e9, "Brown et al., NeurIPS 2020, Table 2.1 (GPT-3 175B) and sec. 2.2"
    ),
    "gpt2-124m": TransformerShape("gpt2-124m", 768, 12, 1024, 50257, 9e9, "Radford et al. 2019 (GPT-2 small)"),
}
REFERENCE_RUNS = {
    "gpt3-175b": {
        "energy_j": 1287e6 * 3600,
        "co2e_kg": 552e3,
        "source": "Patterson et al., arXiv:2104.10350, 2021, Table 4: GPT-3 trained on 10,000 V100 GPUs, 1,287 MWh, "
        "552 t CO2e",
    }
}


def parse_network(text: str) -> TransformerShape | DenseShape:
    """A named shape (``SHAPES``), dense layers ``784x256,256x128,128x10``, or a parameter count
    (``1e9``: one square dense layer of that many weights); ``ValueError`` otherwise."""
    if text in SHAPES:
        return SHAPES[text]
    if re.fullmatch(r"\d+x\d+(,\d+x\d+)*", text):
        layers = tuple(tuple(int(v) for v in part.split("x")) for part in text.split(","))
        if any(v < 1 for pair in layers for v in pair):
            raise ValueError(f"--network: value {text!r} is not allowed; layer sizes must be >= 1")
        return DenseShape(text, layers)
    try:
        n = float(text)
    except ValueError:
        n = -1.0
    if not (math.isfinite(n) and n >= 1):
        raise ValueError(
            f"--network: value {text!r} is not allowed; allowed: {', '.join(SHAPES)}, dense layers as 784x256,256x10, "
            "or a parameter count such as 1e9"
        )
    side = max(1, round(math.sqrt(n)))
    return DenseShape(f"{n:g} weights", ((side, side),), source=f"one {side} x {side} layer")


def _basis(n_in: int, n_out: int, io: IOParameters) -> dict[str, int]:
    t_rows, t_cols = (len(t) for t in tile_grid(n_out, n_in, io))
    return {"weights": n_in * n_out, "lines": t_rows * n_in + t_cols * n_out, "vectors": 1}


def measured_rates(report: dict[str, Any], io: IOParameters | None = None) -> dict[str, float]:
    """Events per sample per unit of each kind's basis (``BASIS``), over the analog layers of a
    report that has ``layers`` and ``samples`` (written by ``analogsim train`` since schema 2)."""
    io = io or IOParameters()
    for field in ("layers", "samples"):
        if field not in report:
            raise ValueError(
                f"energy report: field {field!r} missing; the projection needs a report written by analogsim train "
                "0.3 or later (schema_version 2)"
            )
    totals = {"weights": 0, "lines": 0, "vectors": 0}
    counts = {kind: 0 for kind in COUNT_KINDS}
    for name, layer in report["layers"].items():
        if not layer["analog"] or name not in report["counts_by_layer"]:
            continue
        for k, v in _basis(layer["in"], layer["out"], io).items():
            totals[k] += v * layer["rows_per_sample"]
        for kind in COUNT_KINDS:
            counts[kind] += report["counts_by_layer"][name].get(kind, 0)
    if totals["weights"] == 0:
        raise ValueError("energy report: no analog layer to measure event rates from")
    return {kind: counts[kind] / (report["samples"] * totals[BASIS[kind]]) for kind in COUNT_KINDS}


def project(
    shape: TransformerShape | DenseShape,
    samples: float,
    report: dict[str, Any],
    periphery: PeripheryCard,
    *,
    device: str | None = None,
    batch: int = 64,
    grid_kg_per_kwh: float | None = None,
) -> dict[str, Any]:
    """Energy, time on chip and CO2e of training ``shape`` on ``samples`` samples (tokens).

    Args:
      shape: the network.
      samples: training samples (tokens for a transformer).
      report: the measured run's energy report (its rates, ``measured_rates``).
      periphery: prices of the chip's periphery and digital work, and the GPU baselines.
      device: device card pricing the analog events (default: the report's ``device_card``).
      batch: samples per optimizer step (the accelerator baseline reads its weights once per step).
      grid_kg_per_kwh: CO2e per kWh (default: the periphery card's).

    Returns:
      A dict: ``total_j``, ``by_kind``, ``time_s``, ``counts``, ``baselines`` (``accelerator``,
      ``gpu-bf16``, ``gpu-fp32``: joules), ``co2e_kg``, ``reference`` (a published run of this
      shape, if known) and ``assumptions`` (lines to print with the figures).
    """
    card_name = device or report.get("device_card")
    if not card_name:
        raise ValueError("energy project: the report names no device card (a digital run); pass --device CARD")
    io = IOParameters()
    prices = analog_prices(load_card(card_name), periphery, io)
    rates = measured_rates(report, io)
    grid = periphery.grid_kg_per_kwh if grid_kg_per_kwh is None else grid_kg_per_kwh
    basis = {"weights": 0, "lines": 0, "vectors": 0}
    for _, n_in, n_out in shape.matrices():
        for k, v in _basis(n_in, n_out, io).items():
            basis[k] += v
    counts = {kind: rates[kind] * samples * basis[BASIS[kind]] for kind in COUNT_KINDS}
    digital_ops = samples * (shape.digital_macs_per_token() + shape.elementwise_per_token())
    by_kind = {kind: 0.0 for kind in ENERGY_KINDS}
    time_by_part = {"arrays": 0.0, "digital": digital_ops / periphery.digital_ops_per_s}
    for kind, n in counts.items():
        time_by_part["arrays" if kind != "digital_ops" else "digital"] += n * prices[kind].seconds
        if ENERGY_KIND_OF[kind] is not None:
            by_kind[ENERGY_KIND_OF[kind]] += n * prices[kind].joules
    by_kind["digital"] += digital_ops * periphery.digital_op_j
    total = sum(by_kind.values())
    steps = samples / batch
    acc = {"digital_ops": digital_ops, "memory_words": 0.0}
    flops = 2 * samples * shape.digital_macs_per_token()
    for k, (_, n_in, n_out) in enumerate(shape.matrices()):
        first = k == 0 and shape.first_reads_input
        for kind, pairs in digital_step_terms(samples, steps, n_in, n_out, reads_input=first).items():
            acc[kind] += sum(a * b for a, b in pairs)
        flops += (4 if first else 6) * samples * n_in * n_out
    baselines = {
        "accelerator": acc["digital_ops"] * periphery.digital_op_j + acc["memory_words"] * periphery.sram_access_j,
        "gpu-bf16": flops * periphery.tensor_j_per_flop,
        "gpu-fp32": flops * periphery.baseline_j_per_flop,
    }
    kwh = 1 / 3.6e6
    result = {
        "network": shape.name,
        "parameters": shape.parameters,
        "samples": samples,
        "device_card": card_name,
        "total_j": total,
        "by_kind": by_kind,
        "time_s": sum(time_by_part.values()),
        "time_by_part": time_by_part,
        "counts": counts,
        "flops": flops,
        "baselines": baselines,
        "co2e_kg": total * kwh * grid,
        "baselines_co2e_kg": {k: v * kwh * grid for k, v in baselines.items()},
        "reference": REFERENCE_RUNS.get(shape.name),
        "rates": rates,
    }
    result["assumptions"] = _assumptions(shape, samples, report, card_name, periphery, batch, grid)
    return result


def _assumptions(shape, samples, report, card_name, periphery, batch, grid) -> list[str]:
    io = IOParameters()
    run = report.get("run") or {}
    measured = (
        f"{report['samples']:,} samples of the measured run ({run.get('description', 'its report')}, device card "
        f"{report.get('device_card')})"
    )
    return [
        f"network: {shape.name}, {shape.parameters:,.0f} parameters ({shape.source}); {samples:,.0f} training samples/tokens",
        f"event rates per weight, per line and per vector as in {measured}: the same update rule, learning rate, "
        "pulse statistics and error sparsity per weight at this size (the projection's main assumption)",
        f"analog events priced with device card {card_name} and periphery card {periphery.name}; tiles of "
        f"{io.max_input_size} x {io.max_output_size}, every weight matrix on its own tiles of one chip",
        "attention scores, softmax, layer norms, GELU and the loss digital, at the periphery card's price per operation "
        f"({periphery.digital_op_j * 1e12:g} pJ); embedding and position tables not counted on the chip",
        "time on chip: layers one after another, tiles of a layer in parallel, no pipelining, no data parallelism "
        f"(one chip); digital work at {periphery.digital_ops_per_s:.3g} operations/s",
        f"accelerator baseline: the same multiply-adds at {periphery.digital_op_j * 1e12:g} pJ and SRAM words at "
        f"{periphery.sram_access_j * 1e12:g} pJ, weights read once per pass and step of {batch} samples; GPU baselines: "
        "6 FLOPs per weight and sample plus attention, at the periphery card's GPU figures",
        f"CO2e at {grid:g} kg/kWh",
    ]
