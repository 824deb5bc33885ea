"""Readers of what physicists already have: CrossSim lookup-table sources and NeuroSim descriptions,
each turned into a card whose noise-free behaviour is checked against the source."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from device_models import (
    CardError,
    crosssim_lut_card,
    expected_response,
    load_card,
    neurosim_card,
    parse_card,
    read_crosssim_table,
    read_neurosim,
)

ENODE = Path("/work/shared/data/measured/enode_lut")


def _write_table(path: Path, g_us, cdf, rows_us, header="1st Row = Gbins, 2nd Row = CDF Points, ...") -> Path:
    fmt = lambda xs, k: ", ".join(f"{x * k:.10g}" for x in xs)  # noqa: E731
    lines = [header, fmt(g_us, 1e-6), fmt(cdf, 1.0)] + [fmt(r, 1e-6) for r in rows_us]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _small_tables(tmp_path):
    # 3 bins (100, 200, 300 uS), 3 probabilities; up: 1, 2, 3 uS at P = 0, 0.5, 1 (mean 2 uS) in
    # every bin; down: -4 uS always
    g, cdf = [100, 200, 300], [0.0, 0.5, 1.0]
    up = _write_table(tmp_path / "dG_increasing.txt", g, cdf, [[1, 1, 1], [2, 2, 2], [3, 3, 3]])
    down = _write_table(tmp_path / "dG_decreasing.txt", g, cdf, [[-4, -4, -4]] * 3)
    return up, down


def test_crosssim_table_card_reproduces_the_mean_steps(tmp_path):
    up, down = _small_tables(tmp_path)
    t = read_crosssim_table(up)
    np.testing.assert_allclose(t.g_s, [100e-6, 200e-6, 300e-6])
    np.testing.assert_allclose(t.mean_change_s(), [2e-6] * 3)
    card = parse_card(crosssim_lut_card(up, down, name="tiny", stride=1))
    assert card.model_name == "lookup-table" and card.name == "tiny"
    assert card.physical["g_min_s"] == pytest.approx(100e-6) and card.physical["g_max_s"] == pytest.approx(300e-6)
    # weights [-1, 1] over 200 uS: a 2 uS mean up step is 0.02, a 4 uS down step 0.04
    w = expected_response(card.model, [+10, -5], start=0.0)
    np.testing.assert_allclose(w[:10], 0.02 * np.arange(1, 11), atol=1e-6)
    np.testing.assert_allclose(w[10:], 0.2 - 0.04 * np.arange(1, 6), atol=1e-6)


def test_crosssim_reader_refuses_bad_tables_in_one_line(tmp_path):
    up, down = _small_tables(tmp_path)
    with pytest.raises(CardError, match="swapped"):
        crosssim_lut_card(down, up)
    other = _write_table(tmp_path / "other.txt", [100, 250, 300], [0.0, 0.5, 1.0], [[-4, -4, -4]] * 3)
    with pytest.raises(CardError, match="conductance bins differ"):
        crosssim_lut_card(up, other)
    short = _write_table(tmp_path / "short.txt", [100, 200, 300], [0.0, 0.5, 1.0], [[1, 1], [2, 2, 2], [3, 3, 3]])
    with pytest.raises(CardError, match="line 4: 2 values"):
        read_crosssim_table(short)
    bad_cdf = _write_table(tmp_path / "cdf.txt", [100, 200, 300], [0.0, 0.7, 0.5], [[1, 1, 1]] * 3)
    with pytest.raises(CardError, match="probability points") as info:
        read_crosssim_table(bad_cdf)
    assert "\n" not in str(info.value)
    with pytest.raises(CardError, match="no such file"):
        read_crosssim_table(tmp_path / "missing.txt")


@pytest.mark.skipif(not ENODE.is_dir(), reason="the shared measured ENODe tables are not on this machine")
def test_crosssim_reader_rebuilds_the_builtin_enode_card():
    card = parse_card(crosssim_lut_card(ENODE / "dG_increasing.txt", ENODE / "dG_decreasing.txt", name="enode-lut"))
    builtin = load_card("enode-lut")  # written by experiments/cards/make_enode_lut_card.py (6 digits)
    for field in ("cdf", "nodes", "table_up", "table_down"):
        np.testing.assert_allclose(getattr(card.model, field), getattr(builtin.model, field), atol=1e-5, err_msg=field)
    assert card.model.pulsed.dw_min == pytest.approx(builtin.model.pulsed.dw_min, rel=1e-5)


NEUROSIM = """# a NeuroSim device
A_LTP = 40
A_LTD = 25
Gmin = 1 uS
Gmax = 5uS
pulses = 100
pulses_LTD = 80
c2c = 0.01
d2d = 0.05
"""


@pytest.mark.parametrize("as_toml", [False, True])
def test_neurosim_card_reproduces_the_neurosim_curves(tmp_path, as_toml):
    text = NEUROSIM if not as_toml else NEUROSIM.replace("1 uS", '"1 uS"').replace("5uS", '"5uS"')
    path = tmp_path / ("ns.toml" if as_toml else "ns.txt")
    path.write_text(text, encoding="utf-8")
    d = read_neurosim(path)
    assert d["Gmin"] == pytest.approx(1e-6) and d["pulses_LTD"] == 80
    card = parse_card(neurosim_card(path))
    assert card.model_name == "linear-step"
    g = lambda w: 1e-6 + (np.asarray(w) + 1) / 2 * 4e-6  # noqa: E731  (the card's map, Gmin..Gmax on [-1, 1])
    for pulses, a, p_max in ((+100, 40.0, 100), (-80, 25.0, 80)):
        p = np.arange(1, p_max + 1)
        b = 4e-6 / (1 - np.exp(-p_max / a))
        ref = b * (1 - np.exp(-p / a)) + 1e-6 if pulses > 0 else 5e-6 - b * (1 - np.exp(-p / a))
        got = g(expected_response(card.model, [pulses], start=-1.0 if pulses > 0 else 1.0))
        np.testing.assert_allclose(got, ref, atol=4e-6 * 1e-6)  # float32 trajectory, 1e-6 of the range
    # additive c2c of 1% of the range: 0.02 weight units per pulse = dw_min_std * dw_min
    p = card.model.pulsed
    assert float(p.mult_noise) == 0.0 and p.dw_min_std * p.dw_min == pytest.approx(0.02)
    assert p.dw_min_dtod == pytest.approx(0.05)


def test_neurosim_linear_branch_and_bad_descriptions(tmp_path):
    path = tmp_path / "lin.txt"
    path.write_text("A_LTP = inf\nA_LTD = inf\nGmin = 0\nGmax = 2e-6\npulses = 50\n", encoding="utf-8")
    card = parse_card(neurosim_card(path))
    w = expected_response(card.model, [+50], start=-1.0)
    np.testing.assert_allclose(w, -1 + 0.04 * np.arange(1, 51), atol=1e-5)  # 50 equal steps across [-1, 1]
    for text, where in [
        ("A_LTP = -3\nA_LTD = 2\nGmin = 0\nGmax = 1e-6\npulses = 10\n", "'A_LTP'"),
        ("A_LTP = 3\nA_LTD = 2\nGmin = 2e-6\nGmax = 1e-6\npulses = 10\n", "Gmin < Gmax"),
        ("A_LTP = 3\nA_LTD = 2\nGmin = 0\nGmax = 1e-6\n", "missing key(s) pulses"),
        ("A_LTP = 3\nA_LTD = 2\nGmin = 0\nGmax = 1e-6\npulses = 10\nNL = 2\n", "unknown key(s) ['NL']"),
        ("A_LTP = 3\nA_LTD = 2\nGmin = 0\nGmax = 1 kOhm\npulses = 10\n", "'Gmax'"),
        ("A_LTP 3\n", "line 1"),
    ]:
        path.write_text(text, encoding="utf-8")
        with pytest.raises(CardError) as info:
            read_neurosim(path)
        assert where in str(info.value) and "\n" not in str(info.value), str(info.value)
    path.write_text("A_LTP = inf\nA_LTD = 4\nGmin = 0\nGmax = 2e-6\npulses = 50\n", encoding="utf-8")
    assert math.isinf(read_neurosim(path)["A_LTP"]) and read_neurosim(path)["A_LTD"] == 4.0
