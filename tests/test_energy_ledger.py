"""The energy ledger's second round: re-pricing equals training with the card, a card per
layer, old reports, periphery cards without the new fields, the projection, and the
cross-check with DNN+NeuroSim V2.1's read formulas."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from test_energy import IDEAL, IDEAL_CARD

from analogsim import AnalogLinear, IOParameters, UpdateParameters, make_train_step
from analogsim.energy import analog_prices, host_counts, price_report
from analogsim.energy_report import ReportError, load_report, reprice
from analogsim.events import read_counts
from analogsim.periphery_card import load_periphery_card
from analogsim.projection import SHAPES, DenseShape, measured_rates, parse_network, project
from analogsim.training.report import ledger_prices
from device_models import parse_card

PRICED = {  # physical figures that change prices but not the device's dynamics
    "pulse_energy": ("7.0", "fJ"),
    "g_min": ("10.0", "uS"),
    "g_max": ("20.0", "uS"),
    "pulse_voltage": ("1.5", "V"),
    "pulse_width": ("20.0", "ns"),
}


def card_text(name: str, physical: dict | None = None) -> str:
    params = "\n".join(
        f'[parameters.{k}]\nvalue = {v}\nunit = "1"\nprovenance = "assumed"\nsource = "test"' for k, v in IDEAL.items()
    )
    text = IDEAL_CARD.format(params=params).replace('name = "ideal-test"', f'name = "{name}"')
    if physical:
        text = text.split("[physical.g_min]")[0]
        for field, (value, unit) in physical.items():
            text += f'[physical.{field}]\nvalue = {value}\nunit = "{unit}"\nprovenance = "assumed"\nsource = "test"\n'
    return text


class TwoLayers(nnx.Module):
    def __init__(self, first, second, rngs):
        up = UpdateParameters(mode="expected")
        self.a = AnalogLinear(4, 3, device=first, forward_io=IOParameters(out_noise=0.0), update=up, rngs=rngs)
        self.b = AnalogLinear(3, 2, device=second, forward_io=IOParameters(out_noise=0.0), update=up, rngs=rngs)

    def __call__(self, x):
        return self.b(jnp.tanh(self.a(x)))


def _run(first, second, seed=0):
    model = TwoLayers(first, second, nnx.Rngs(seed))
    _, state, step = make_train_step(model, optax.sgd(0.1), lr=0.1)
    x = jax.random.uniform(jax.random.key(5), (8, 4), minval=-1)
    y = jnp.arange(8) % 2
    for i in range(3):
        state, _ = step(state, x, y, np.arange(8), np.ones(8, np.float32), jax.random.key(20 + i))
    counts = host_counts(state.ledger)
    prices = ledger_prices(model, None, load_periphery_card(), list(counts))
    report = price_report(counts, prices)
    report["digital_baseline_j"] = 1.0
    return report


def test_repricing_a_report_equals_training_with_the_card(tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text(card_text("card-a"))
    b.write_text(card_text("card-b", PRICED))
    ra, rb = _run(str(a), str(a)), _run(str(b), str(b))
    assert ra["counts_by_layer"] == rb["counts_by_layer"]  # same dynamics, same seed: the same events
    for kind in ("write", "read", "wire"):  # (the card-independent periphery dominates the totals)
        assert ra["by_kind"][kind] != pytest.approx(rb["by_kind"][kind], rel=1e-2, abs=0)
    what_if = reprice(ra, str(b))
    assert what_if["total_j"] == pytest.approx(rb["total_j"], rel=1e-12, abs=0)
    assert what_if["by_kind"] == pytest.approx(rb["by_kind"], rel=1e-12, abs=0)
    assert what_if["by_layer"] == pytest.approx(rb["by_layer"], rel=1e-12, abs=0)
    assert what_if["time_s"] == pytest.approx(rb["time_s"], rel=1e-12, abs=0)  # the pulse width prices the slots
    # a card per layer: a model mixing devices is priced layer by layer, in training and in re-pricing
    mixed = _run(str(a), str(b))
    assert mixed["by_layer"]["a"] == pytest.approx(ra["by_layer"]["a"], rel=1e-12, abs=0)
    assert mixed["by_layer"]["b"] == pytest.approx(rb["by_layer"]["b"], rel=1e-12, abs=0)
    assert reprice(ra, {"b": str(b)})["by_layer"] == pytest.approx(mixed["by_layer"], rel=1e-12, abs=0)


def test_a_version_1_report_loads_with_the_new_kinds_at_zero(tmp_path):
    counts = {"pulses_up": 4, "pulses_down": 2, "array_reads": 1, "crosspoint_reads": 6}
    counts |= {"dac_conversions": 3, "adc_conversions": 2, "digital_ops": 14}
    old = {
        "total_j": 1.0,
        "by_kind": {},
        "by_layer": {},
        "counts_by_layer": {"layer": counts},
        "prices": {},
        "digital_baseline_j": 2.0,
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    rep = load_report(path)
    assert rep["counts_by_layer"]["layer"]["write_wire_cells"] == 0
    path.write_text(json.dumps(old | {"schema_version": 9}))
    with pytest.raises(ReportError, match=r"old.json: field 'schema_version': value 9"):
        load_report(path)


def test_periphery_card_without_the_new_fields_takes_the_defaults(tmp_path):
    from importlib import resources

    text = (resources.files("analogsim") / "cards" / "periphery-default.toml").read_text()
    path = tmp_path / "old.toml"
    path.write_text(text.split("[wire_capacitance]")[0].replace("value = 0.2\n", "value = 0.3\n", 1))
    card = load_periphery_card(path)
    default = load_periphery_card()
    assert card.cell_pitch_m == default.cell_pitch_m and "from periphery-default" in card.describe("cell_pitch")
    path.write_text(text.replace("[columns_per_adc]\nvalue = 8", "[columns_per_adc]\nvalue = 2.5"))
    with pytest.raises(ValueError, match=r"columns_per_adc.value': value 2.5 is not allowed; must be an integer"):
        load_periphery_card(path)


# --- projection ----------------------------------------------------------------------------


def _measured_report():
    """A small measured report: a 64-16-10 MLP's counts, as ``run_report`` writes them."""
    per = load_periphery_card()
    io = IOParameters()
    layers = {"layers/0": (64, 16, True), "layers/1": (16, 10, False)}
    samples = 1000
    counts, prices = {}, {}
    card = parse_card(card_text("card-a"), source="<test>")
    for name, (n_in, n_out, first) in layers.items():
        c = read_counts(samples, n_in, n_out, (1, 1))
        if not first:
            back = read_counts(samples, n_in, n_out, (1, 1), backward=True)
            c = {k: c[k] + back[k] for k in c}
        c |= {"pulses_up": 3 * n_in * n_out, "pulses_down": 2 * n_in * n_out, "update_slots": samples}
        c |= {"write_wire_cells": 5 * n_in * n_out, "bit_draws": samples * (n_in + n_out)}
        counts[name], prices[name] = c, analog_prices(card, per, io)
    report = price_report(counts, prices)
    report |= {"samples": samples, "device_card": "linear-step", "digital_baseline_j": 1.0}
    report["layers"] = {n: {"in": i, "out": o, "rows_per_sample": 1, "analog": True} for n, (i, o, _) in layers.items()}
    return report, card


def test_projection_scales_each_kind_by_its_basis(tmp_path):
    report, card = _measured_report()
    card_path = tmp_path / "a.toml"
    card_path.write_text(card_text("card-a"))
    per = load_periphery_card()
    rates = measured_rates(report)
    assert rates["pulses_up"] == pytest.approx(3 / 1000)  # per cross-point and sample
    small = project(DenseShape("same", ((64, 16), (16, 10))), 1000, report, per, device=str(card_path))
    # the measured network itself: the measured counts back (digital element-wise work aside)
    for kind in ("pulses_up", "crosspoint_reads", "dac_conversions", "array_reads", "write_wire_cells"):
        assert small["counts"][kind] == pytest.approx(report["counts"][kind], rel=1e-12, abs=0)
    wide = project(DenseShape("wide", ((128, 32), (32, 20))), 3000, report, per, device=str(card_path))
    # twice the width, three times the samples: cross-point kinds x 4 x 3, line kinds x 2 x 3, vectors x 3
    assert wide["counts"]["pulses_up"] == pytest.approx(12 * small["counts"]["pulses_up"], rel=1e-12, abs=0)
    assert wide["counts"]["adc_conversions"] == pytest.approx(6 * small["counts"]["adc_conversions"], rel=1e-12, abs=0)
    assert wide["counts"]["update_slots"] == pytest.approx(3 * small["counts"]["update_slots"], rel=1e-12, abs=0)
    assert wide["total_j"] > small["total_j"] and wide["assumptions"]


def test_gpt3_flops_match_the_published_training_compute():
    """6 FLOPs per weight and token plus attention (Kaplan et al. 2020) for GPT-3 175B on 300 B
    tokens: Brown et al. 2020 (Table D.1) and Patterson et al. 2021 give 3.14e23 FLOPs."""
    shape = SHAPES["gpt3-175b"]
    assert shape.parameters == pytest.approx(175e9, rel=0.01)
    report, _ = _measured_report()
    r = project(shape, shape.tokens, report, load_periphery_card(), device="linear-step")
    assert r["flops"] == pytest.approx(3.14e23, rel=0.03)
    assert r["reference"]["energy_j"] == pytest.approx(1287e6 * 3600)
    assert r["baselines"]["gpu-fp32"] > r["baselines"]["gpu-bf16"]


@pytest.mark.parametrize("text", ["0", "1x", "gpt5", "-3", "nan"])
def test_projection_refuses_bad_networks(text):
    with pytest.raises(ValueError, match=f"--network: value '{text}' is not allowed"):
        parse_network(text)


# --- cross-check with DNN+NeuroSim V2.1 -------------------------------------------------------


def test_neurosim_crosscheck_agrees_where_the_models_are_the_same():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "crosscheck" / "neurosim_energy.py"
    spec = importlib.util.spec_from_file_location("neurosim_energy", path)
    ns = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ns)
    result = ns.crosscheck()
    # the transcribed formulas reproduce what NeuroSim's C++ printed
    for name, (formula, printed) in result["neurosim_formulas_vs_printed"].items():
        assert formula == pytest.approx(printed, rel=1e-3, abs=0), name
    rows = {r["term"]: r for r in result["rows"]}
    # the same model: output-line wires of a read, a write's cells and its selected input lines
    for term in ("column wires (read)", "cells (write, 2 pulses each)", "selected input lines (write)"):
        assert rows[term]["ratio"] == pytest.approx(1.0, rel=1e-9, abs=0), term
    # input lines: NeuroSim charges them to vdd once per ADC step, the ledger to V_read once
    assert 1 / rows["row wires (read)"]["ratio"] == pytest.approx(result["row_wire_factor"], rel=1e-9, abs=0)
    # the cells: V^2 G t_read over the read pulse is what NeuroSim's harness sums as its reference
    assert rows["cells (read)"]["ledger_j"] == pytest.approx(8.61619e-11, rel=2e-3, abs=0)
