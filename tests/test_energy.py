"""The energy ledger: hand-computed counts and joules, zero pulses, re-pricing, periphery cards."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from analogsim import AnalogLinear, IOParameters, UpdateParameters, counters, make_train_step
from analogsim.algorithms import RuleCounts
from analogsim.energy import analog_prices, converter_bits, host_counts, price_report
from analogsim.energy_report import plot_report
from analogsim.events import analog_step_counts
from analogsim.periphery_card import PeripheryCardError, load_periphery_card
from device_models import parse_card

IDEAL_CARD = """
name = "ideal-test"
model = "constant-step"
{params}
[physical.g_min]
value = 2.0
unit = "uS"
provenance = "assumed"
source = "test"
[physical.g_max]
value = 4.0
unit = "uS"
provenance = "assumed"
source = "test"
[physical.pulse_energy]
value = 3.0
unit = "fJ"
provenance = "assumed"
source = "test"
"""
IDEAL = dict(
    dw_min=0.01,
    dw_min_dtod=0.0,
    dw_min_std=0.0,
    up_down=0.0,
    up_down_dtod=0.0,
    w_max=10.0,
    w_min=-10.0,
    w_max_dtod=0.0,
    w_min_dtod=0.0,
)


def ideal_card():
    params = "\n".join(
        f'[parameters.{k}]\nvalue = {v}\nunit = "1"\nprovenance = "assumed"\nsource = "test"' for k, v in IDEAL.items()
    )
    return parse_card(IDEAL_CARD.format(params=params), source="<test>")


def test_converter_bits_match_aihwkit_resolutions():
    assert converter_bits(1 / 126) == pytest.approx(7.0)
    assert converter_bits(1 / 510) == pytest.approx(9.0)


def _rule(up, down, transfer_reads=0, ops=0):
    return RuleCounts(*(jnp.int32(v) for v in (up, down, transfer_reads, ops)))


def _ints(counts):
    return {k: int(counters.to_int(v)) for k, v in counts.items()}


def test_step_counts_of_a_2x3_array_by_hand():
    # batch of 3: two real samples (one re-read by bound management), one padding row
    reads = jnp.array([1, 2, 1], jnp.int32)
    d = jnp.array([[0.1, 0.0], [0.0, 0.0], [0.0, 0.0]])  # only the first sample carries an error
    mask = jnp.array([1.0, 1.0, 0.0])
    c = _ints(analog_step_counts(reads, d, mask, jnp.full(3, True), _rule(7, 4), 3, 2, has_bias=True))
    # forward reads 1 + 2 = 3, backward reads 1 (one row with an error)
    assert c["array_reads"] == 4
    assert c["crosspoint_reads"] == 4 * 6
    assert c["dac_conversions"] == 3 * 3 + 1 * 2  # forward drives 3 inputs, backward 2
    assert c["adc_conversions"] == 3 * 2 + 1 * 3
    # scaling in+out per read (4 * 5) + pulse probabilities (1 * 5) + bias adds (2 rows * 2) + bias SGD (2)
    assert c["digital_ops"] == 20 + 5 + 4 + 2
    assert (c["pulses_up"], c["pulses_down"]) == (7, 4)
    # every read charges 3 input lines of 2 cells and 2 output lines of 3 cells
    assert c["read_wire_cells"] == 4 * (3 * 2 + 2 * 3)
    # each read: its input and output vectors (3 + 2 words); the update re-reads x and d of the one row with an error
    assert c["memory_words"] == 4 * 5 + 1 * 5
    assert c["update_slots"] == c["write_wire_cells"] == c["bit_draws"] == 0
    c = _ints(analog_step_counts(reads, d, mask, jnp.full(3, False), _rule(0, 0), 3, 2, has_bias=False))
    assert c["array_reads"] == 3 and c["dac_conversions"] == 9 and c["digital_ops"] == 15 + 5
    # a transfer rule that read 2 columns (one-hot inputs) and did 10 buffer operations
    t = _ints(analog_step_counts(reads, d, mask, jnp.full(3, False), _rule(7, 4, 2, 10), 3, 2, has_bias=False))
    assert t["array_reads"] == 3 + 2
    assert t["crosspoint_reads"] == 3 * 6 + 2 * 2  # a one-hot read touches one column of 2
    assert t["dac_conversions"] == 9 + 2 * 3 and t["adc_conversions"] == 6 + 2 * 2
    assert t["digital_ops"] == 15 + 5 + 10
    assert t["read_wire_cells"] == 3 * 12 + 2 * (1 * 2 + 2 * 3)  # one-hot: one input line, both output lines
    # pulse slots: 4 of bit streams (a random bit per line each) and 1 of a direct write;
    # 2.6 expected pulses on input lines (2 cells each, rounded: 3), 3 on output lines (3 cells each)
    wired = _rule(7, 4)._replace(
        slots=jnp.int32(4),
        direct_slots=jnp.int32(1),
        row_pulses=jnp.float32(2.6),
        column_pulses=jnp.float32(3.0),
        memory_words=jnp.int32(10),
    )
    w = _ints(analog_step_counts(reads, d, mask, jnp.full(3, False), wired, 3, 2, has_bias=False))
    assert w["update_slots"] == 5 and w["bit_draws"] == 4 * (3 + 2)
    assert w["write_wire_cells"] == 3 * 2 + 3 * 3
    assert w["memory_words"] == 3 * 5 + 1 * 5 + 10
    # split over 2 tile rows x 3 tile columns: inputs converted once per tile row, partial
    # outputs once per tile column, then summed digitally (3 forward reads, 1 backward)
    g = _ints(analog_step_counts(reads, d, mask, jnp.full(3, True), _rule(0, 0), 3, 2, has_bias=False, tiles=(2, 3)))
    assert g["dac_conversions"] == 3 * (2 * 3) + 1 * (3 * 2)
    assert g["adc_conversions"] == 3 * (3 * 2) + 1 * (2 * 3)
    scaling = 3 * (2 * 3 + 3 * 2) + 1 * (3 * 2 + 2 * 3)
    sums = 3 * (2 * 2) + 1 * (1 * 3)
    assert g["digital_ops"] == scaling + sums + 1 * 5
    assert g["read_wire_cells"] == 4 * 12  # tiling splits the lines, not their total length


def test_step_counts_stay_exact_beyond_2_to_the_32():
    """A VGG-8-sized convolution read by a batch of 128 (131,072 patches of 147,456
    cross-points each: 1.9e10 cross-point reads, over 2**32) is counted exactly."""
    rows, n_in, n_out = 131_072, 1152, 128
    reads = jnp.ones(rows, jnp.int32)
    d = jnp.zeros((rows, n_out))
    c = _ints(
        analog_step_counts(reads, d, jnp.ones(rows), jnp.full(rows, False), _rule(0, 0), n_in, n_out, has_bias=False)
    )
    assert c["crosspoint_reads"] == rows * n_in * n_out > 2**32
    assert c["read_wire_cells"] == 2 * rows * n_in * n_out


class OneLayer(nnx.Module):
    def __init__(self, card, rngs):
        # a rung that applies whole pulses, so that the weight change shows each pulse counted
        self.layer = AnalogLinear(
            3,
            2,
            device=card,
            forward_io=IOParameters(out_noise=0.0),
            update=UpdateParameters(mode="expected"),
            rngs=rngs,
        )

    def __call__(self, x):
        return self.layer(x)


def test_one_step_ledger_every_count_and_joule_by_hand():
    card = ideal_card()
    per = load_periphery_card()
    model = OneLayer(card, nnx.Rngs(0))
    graphdef, state, step = make_train_step(model, optax.sgd(0.1), lr=0.1)
    w0 = np.asarray(state.analog["layer"]["weight"].get_value())
    x = jnp.array([[0.5, -1.0, 0.25]])
    y = jnp.array([1])
    state, _ = step(state, x, y, np.array([0]), np.ones(1, np.float32), jax.random.key(0))
    w1 = np.asarray(state.analog["layer"]["weight"].get_value())
    dw = np.round((w1 - w0) / 0.01).astype(int)  # ideal device: exactly dw_min per pulse
    # the bit streams by hand (aihwkit's formulas, module docstring of analogsim.pulsed_update):
    # d is the loss gradient at the output (no output noise: the forward read is deterministic)
    logits = np.asarray(model(x))[0]
    d = np.exp(logits) / np.exp(logits).sum() - np.eye(2)[1]
    xs = np.abs(np.asarray(x[0]))
    bl = int(np.clip(np.ceil(0.1 * xs.max() * np.abs(d).max() / 0.01), 1, 31))
    a = b = np.sqrt(0.1 / (0.01 * bl))
    ratio = np.sqrt(np.abs(d).max() / xs.max())
    p, q = np.clip(b * ratio * xs, 0, 1), np.clip(a / ratio * np.abs(d), 0, 1)
    counts = host_counts(state.ledger)["layer"]
    assert counts == {
        "pulses_up": int(dw[dw > 0].sum()),
        "pulses_down": int(-dw[dw < 0].sum()),
        "array_reads": 1,  # one forward read; the input layer's error is not read back
        "crosspoint_reads": 6,
        "read_wire_cells": 3 * 2 + 2 * 3,  # 3 input lines of 2 cells, 2 output lines of 3
        "dac_conversions": 3,
        "adc_conversions": 2,
        "update_slots": bl,
        "write_wire_cells": round(bl * p.sum()) * 2 + round(bl * q.sum()) * 3,
        "bit_draws": bl * (3 + 2),
        "memory_words": 5 + 5,  # the read's input and output; the update re-reads x and d
        "digital_ops": 5 + 5 + 2 + 2,  # scaling, pulse probabilities, bias add, bias SGD step
    }
    assert counts["pulses_up"] + counts["pulses_down"] > 0
    assert host_counts(state.ledger)["activations"]["digital_ops"] == 5 * 2  # softmax cross-entropy, 2 classes
    rep = price_report({"layer": counts}, {"layer": analog_prices(card, per, IOParameters())})
    pulses = counts["pulses_up"] + counts["pulses_down"]
    c_cell = per.wire_capacitance_f_per_m * per.cell_pitch_m
    expect = {
        "write": pulses * 3e-15,
        "read": 6 * 0.2**2 * 3e-6 * 10e-9,  # V^2 * mean G (3 uS) * t_read per cross-point
        # read lines at V_read, pulsed lines at the periphery's write voltage (the card gives none)
        "wire": c_cell * (12 * 0.2**2 + counts["write_wire_cells"] * per.write_voltage_v**2),
        "dac": 3 * 0.5e-15 * 2**7,
        "adc": 2 * 14.4e-15 * 2**9,
        "update": bl * 5 * per.bit_draw_j,
        "memory": 10 * per.sram_access_j,
        "digital": 14 * 4.6e-12,
    }
    assert rep["by_kind"] == pytest.approx(expect, rel=1e-9, abs=0)
    assert rep["total_j"] == pytest.approx(sum(expect.values()), rel=1e-9, abs=0)
    # time on chip: one read cycle, bl pulse slots (the card gives no pulse width), 14 digital operations
    t = 10e-9 + per.columns_per_adc * per.adc_time_s + bl * per.pulse_slot_time_s + 14 / per.digital_ops_per_s
    assert rep["time_s"] == pytest.approx(t, rel=1e-9, abs=0)


def test_zero_inputs_fire_no_pulse_and_cost_no_write_energy():
    card = ideal_card()
    model = OneLayer(card, nnx.Rngs(1))
    _, state, step = make_train_step(model, optax.sgd(0.1), lr=0.1)
    state, _ = step(
        state, jnp.zeros((4, 3)), jnp.array([0, 1, 0, 1]), np.arange(4), np.ones(4, np.float32), jax.random.key(1)
    )
    counts = host_counts(state.ledger)["layer"]
    assert counts["pulses_up"] == counts["pulses_down"] == 0 and counts["array_reads"] == 0
    rep = price_report({"layer": counts}, {"layer": analog_prices(card, load_periphery_card(), IOParameters())})
    assert rep["by_kind"]["write"] == 0.0


def test_ledgers_add_across_steps():
    card = ideal_card()
    model = OneLayer(card, nnx.Rngs(2))
    _, state, step = make_train_step(model, optax.sgd(0.1), lr=0.1)
    x = jax.random.uniform(jax.random.key(3), (8, 3))
    y = jnp.arange(8) % 2
    seen = []
    for i in range(3):
        state, _ = step(state, x, y, np.arange(8), np.ones(8, np.float32), jax.random.key(10 + i))
        seen.append(host_counts(state.ledger)["layer"])
    # forward reads and conversions grow by the same amount each step (8 samples, no bound management)
    assert [s["array_reads"] for s in seen] == [8, 16, 24]
    assert [s["adc_conversions"] for s in seen] == [16, 32, 48]
    assert all(b["pulses_up"] >= a["pulses_up"] for a, b in zip(seen, seen[1:], strict=False))


def test_bad_periphery_card(tmp_path):
    path = tmp_path / "p.toml"
    text = (
        load_periphery_card.__globals__["resources"].files("analogsim") / "cards" / "periphery-default.toml"
    ).read_text()
    path.write_text(text.replace('value = 14.4\nunit = "fJ"', 'value = -1\nunit = "fJ"'))
    with pytest.raises(PeripheryCardError, match=r"p.toml: field 'adc_fom.value': value -1"):
        load_periphery_card(path)
    path.write_text(text.replace('unit = "W"', 'unit = "hp"'))
    with pytest.raises(PeripheryCardError, match="baseline_power.unit"):
        load_periphery_card(path)
    with pytest.raises(PeripheryCardError, match="built-in"):
        load_periphery_card(tmp_path / "missing.toml")


def test_plot_report_returns_the_figure_and_keeps_the_backend(tmp_path, svg_backend):
    import matplotlib

    counts = {"pulses_up": 4, "pulses_down": 2, "array_reads": 1, "crosspoint_reads": 6}
    counts |= {"dac_conversions": 3, "adc_conversions": 2, "digital_ops": 14}
    rep = price_report({"layer": counts}, {"layer": analog_prices(ideal_card(), load_periphery_card(), IOParameters())})
    rep["digital_baseline_j"] = 1e-9
    fig = plot_report({"run": rep}, tmp_path / "energy.png")
    assert (tmp_path / "energy.png").read_bytes()[:4] == b"\x89PNG"
    assert len(fig.axes) == 3 and matplotlib.get_backend() == "svg"
    by_kind = sum(patch.get_width() for patch in fig.axes[0].patches if np.isfinite(patch.get_width()))
    assert by_kind == pytest.approx(rep["total_j"], rel=1e-9, abs=0)
    stacked = sum(patch.get_height() for patch in fig.axes[1].patches)
    assert stacked == pytest.approx(rep["total_j"], rel=1e-9, abs=0)  # the bars add up to the ledger's total
    assert plot_report({"run": rep}) is not None  # no path: nothing written, the figure returned
