"""analogsim assess: the figures against closed forms (cards) and model-free sums (CSVs), the
recommendation, and the CLI's one-line errors. The training runs are in the slow set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analogsim.assess import (
    StepTable,
    assess_card,
    assess_measurement,
    assess_steps,
    neurosim_a,
    noise_free_sweep,
)
from analogsim.assess_training import recommend
from analogsim.cli import main
from device_models import ConstantStep, DeviceCard, PulsedParams, SoftBounds, load_measurement


def _card(model, physical=None, name="test-card") -> DeviceCard:
    return DeviceCard(name, model, "test", "<test>", dict(physical or {}), {})


def _pulsed(**kw) -> PulsedParams:
    return PulsedParams(**{"dw_min_dtod": 0.1, "dw_min_std": 0.2, "up_down_dtod": 0.0, **kw})


def test_soft_bounds_card_matches_the_closed_forms():
    # soft bounds, up_down 0.4: s+ = dw_min, s- = dw_min (1 - 0.4); steps s+ (1 - w/0.6), s- (1 + w/0.6)
    s_up, s_dn, b = 0.001, 0.0006, 0.6
    model = SoftBounds(_pulsed(dw_min=s_up, up_down=0.4, w_min=-b, w_max=b))
    f = assess_card(_card(model)).figures
    assert f["g_min"] == pytest.approx(-b) and f["g_max"] == pytest.approx(b) and f["on_off"] is None
    assert f["dg_up_low"] == pytest.approx(2 * s_up, rel=1e-5) and f["dg_up_high"] == pytest.approx(0, abs=1e-9)
    assert f["dg_down_low"] == pytest.approx(0, abs=1e-9) and f["dg_down_high"] == pytest.approx(2 * s_dn, rel=1e-5)
    assert f["states"] == pytest.approx(2 * b / ((s_up + s_dn) / 2), rel=1e-4)  # 1500
    assert f["asymmetry"] == pytest.approx((s_up - s_dn) / (s_up + s_dn), rel=1e-4)  # 0.25
    w_sym = (s_up - s_dn) / (s_up / b + s_dn / b)  # s+ (1 - w/b) = s- (1 + w/b): 0.15
    assert f["symmetry_point"] == pytest.approx(w_sym, abs=1e-4)
    assert f["symmetry_fraction"] == pytest.approx((w_sym + b) / (2 * b), abs=1e-4)
    # the sweep from an end is geometric: NeuroSim's curve with A = -1 / ln(1 - s/b), any P_max
    assert f["a_up"] == pytest.approx(-1 / math.log(1 - s_up / b), rel=1e-3)
    assert f["a_down"] == pytest.approx(-1 / math.log(1 - s_dn / b), rel=1e-3)
    assert f["p_max_up"] == round(f["states"]) and f["a_up_norm"] == pytest.approx(f["a_up"] / f["p_max_up"])
    assert f["c2c"] == pytest.approx(0.2) and f["d2d"] == pytest.approx(0.1)


def test_constant_step_card_in_siemens():
    # up_down 0.5: up step 0.002, down step 0.001 (weight units); 1 uS .. 5 uS over w in [-1, 1]
    model = ConstantStep(_pulsed(dw_min=0.002, up_down=0.5, w_min=-1.0, w_max=1.0))
    a = assess_card(_card(model, {"g_min_s": 1e-6, "g_max_s": 5e-6}))
    f, k = a.figures, 4e-6 / 2.0  # siemens per weight unit
    assert a.unit == "S" and f["g_min"] == pytest.approx(1e-6) and f["g_max"] == pytest.approx(5e-6)
    assert f["on_off"] == pytest.approx(5.0)
    for name, step in (("up_low", 0.002), ("up_high", 0.002), ("down_low", 0.001), ("down_high", 0.001)):
        assert f[f"dg_{name}"] == pytest.approx(step * k, rel=1e-5), name
    assert f["states"] == pytest.approx(2.0 / 0.0015, rel=1e-4)
    assert f["asymmetry"] == pytest.approx(1 / 3, rel=1e-4)
    assert f["symmetry_point"] is None  # constant steps never cross
    assert math.isinf(f["a_up"]) and math.isinf(f["a_down"])  # straight lines


def test_neurosim_a_recovers_the_curve_it_was_drawn_from():
    p_max, a_true = 100, 35.0
    p = np.arange(p_max + 1)
    b = 4e-6 / (1 - np.exp(-p_max / a_true))
    g = b * (1 - np.exp(-p / a_true)) + 1e-6  # NeuroSim LTP, Gmin 1 uS, Gmax 5 uS
    a, pm = neurosim_a(g)
    assert pm == p_max and a == pytest.approx(a_true, rel=1e-4)
    a_down, _ = neurosim_a(5e-6 - (g - 1e-6))  # the mirrored LTD branch has the same A
    assert a_down == pytest.approx(a_true, rel=1e-4)
    a_convex, _ = neurosim_a(1e-6 + 5e-6 - g[::-1])  # steps growing along the sweep: A < 0
    assert a_convex == pytest.approx(-a_true, rel=1e-4)
    with pytest.raises(ValueError, match="sweep"):
        neurosim_a(np.ones(5))


def test_sweep_and_symmetry_of_a_step_table():
    state = np.linspace(0.0, 1.0, 11)
    table = StepTable(state, 0.02 * (1 - state), 0.01 * state + 0.005, 0.0, 1.0, "1")
    f, sweeps = assess_steps(table)
    assert f["symmetry_point"] == pytest.approx(0.015 / 0.03, abs=1e-12)  # 0.02 - 0.02 w = 0.005 + 0.01 w
    s = noise_free_sweep(table, True, 5)
    np.testing.assert_allclose(np.diff(s), 0.02 * (1 - s[:-1]), rtol=1e-12)
    assert sweeps["up"].size == round(f["states"]) + 1


def _soft_bounds_csv(path, a_ups=(0.010,), a_dn=0.006, cycles=2, pulses=600, first=0):
    """Noise-free soft-bounds sweeps in conductance: G += a+ (5 uS - G) up, G -= a- (G - 1 uS) down;
    extra instrument columns, pulse numbers from ``first``."""
    top, bottom = 5e-6, 1e-6
    lines = ["time_s,device,cycle,pulse_number,polarity,conductance_s,temperature_k"]
    t = 0.0
    for d, a_up in enumerate(a_ups):
        for c in range(cycles):
            g, n = bottom, first
            lines.append(f"{t},D{d},{c},{n},1,{g!r},300")
            for pol in (1, -1):
                for _ in range(pulses if pol > 0 else 2 * pulses):
                    g = g + a_up * (top - g) if pol > 0 else g - a_dn * (g - bottom)
                    n, t = n + 1, t + 1e-3
                    lines.append(f"{t},D{d},{c},{n},{pol},{g!r},300")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_csv_figures_are_model_free_and_exact_for_linear_steps(tmp_path):
    a_up, a_dn, top, bottom = 0.010, 0.006, 5e-6, 1e-6
    m = load_measurement(_soft_bounds_csv(tmp_path / "sb.csv"))
    assert m.ignored_columns == ("time_s", "temperature_k") and m.pulse_number[0] == 0
    a = assess_measurement(m, bins=10)
    f = a.figures
    lo, hi = f["g_min"], f["g_max"]
    assert lo == pytest.approx(bottom, rel=0.01) and hi == pytest.approx(top, rel=0.01)
    assert f["on_off"] == pytest.approx(hi / lo)
    c_lo, c_hi = lo + (hi - lo) / 20, hi - (hi - lo) / 20  # the outer bins' centres
    assert f["dg_up_low"] == pytest.approx(a_up * (top - c_lo), rel=1e-6)
    assert f["dg_up_high"] == pytest.approx(a_up * (top - c_hi), rel=1e-6)
    assert f["dg_down_low"] == pytest.approx(a_dn * (c_lo - bottom), rel=1e-6)
    assert f["dg_down_high"] == pytest.approx(a_dn * (c_hi - bottom), rel=1e-6)
    mid = 0.5 * (lo + hi)
    up_mid, dn_mid = a_up * (top - mid), a_dn * (mid - bottom)
    assert f["states"] == pytest.approx((hi - lo) / (0.5 * (up_mid + dn_mid)), rel=1e-6)
    assert f["asymmetry"] == pytest.approx((up_mid - dn_mid) / (up_mid + dn_mid), rel=1e-6)
    g_sym = (a_up * top + a_dn * bottom) / (a_up + a_dn)  # a+ (top - G) = a- (G - bottom)
    assert f["symmetry_point"] == pytest.approx(g_sym, rel=1e-6)
    assert f["c2c"] == pytest.approx(0.0, abs=1e-6)  # noise-free data
    assert f["a_up"] == pytest.approx(-1 / math.log(1 - a_up), rel=5e-3)  # geometric, cut at g_max


def test_csv_device_to_device_spread(tmp_path):
    m = load_measurement(_soft_bounds_csv(tmp_path / "two.csv", a_ups=(0.010, 0.012), cycles=1))
    f = assess_measurement(m).figures
    assert f["d2d"] == pytest.approx(0.001 / 0.011, rel=0.15)  # std/mean of the two up rates


def test_recommendation_reads_the_symmetry_point():
    model = SoftBounds(_pulsed(dw_min=0.001, up_down=0.8, w_min=-1.0, w_max=1.0))  # s- = 0.2 s+
    a = assess_card(_card(model))
    w_sym = (0.001 - 0.0002) / (0.001 + 0.0002)  # 0.667
    assert a.figures["symmetry_point"] == pytest.approx(w_sym, abs=1e-3)
    advice = recommend(a)
    assert advice["basis"] == "figures" and "symmetry-point" in advice["use"]
    assert any("w = 0.67" in r for r in advice["reasons"])
    training = [
        {"label": "sgd", "algorithm": "sgd", "reference": "zero", "flags": "--algorithm sgd",
         "test_accuracy": 0.106, "epoch_test_accuracy": [0.1, 0.106]},
        {"label": "sgd, symmetry-point reference", "algorithm": "sgd", "reference": "symmetry-point",
         "flags": "--algorithm sgd --reference symmetry-point", "test_accuracy": 0.628, "epoch_test_accuracy": [0.5, 0.628]},
    ]  # fmt: skip
    advice = recommend(a, training)
    assert advice["use"] == "--algorithm sgd --reference symmetry-point" and advice["basis"] == "training"
    assert any("plain SGD reached only 0.106" in r for r in advice["reasons"])
    failed = {**training[1], "test_accuracy": math.nan, "epoch_test_accuracy": [], "error": "loss is NaN at step 3"}
    advice = recommend(a, [training[0], failed])  # a failed run is reported, never recommended
    assert advice["use"] == "--algorithm sgd" and any("stopped: loss is NaN" in r for r in advice["reasons"])


def test_assess_cli_no_train_json_and_text(tmp_path, capsys):
    rc = main(["assess", "soft-bounds", "--no-train", "--json"])
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and obj["kind"] == "card" and obj["training"] is None
    assert obj["figures"]["states"] == pytest.approx(1200, rel=1e-4)
    csv = _soft_bounds_csv(tmp_path / "m.csv", cycles=1)
    rc = main(["assess", str(csv)])  # a CSV trains only with --train (the fit can take minutes)
    out = capsys.readouterr().out
    assert rc == 0 and "uS" in out and "ignored column(s) time_s, temperature_k" in out
    assert "no training runs on a CSV without --train" in out and "recommendation: " in out


@pytest.mark.parametrize(
    "argv, where",
    [
        (["assess", "no-such-card", "--no-train"], "no-such-card"),
        (["assess", "soft-bounds", "--no-train", "--epochs", "0"], "--epochs"),
        (["assess", "soft-bounds", "--no-train", "--bins", "1"], "--bins"),
        (["assess", "soft-bounds", "--no-train", "--read-voltage", "0.1"], "--read-voltage"),
        (["assess", "soft-bounds", "--no-train", "--plot", "/no/such/dir/a.png"], "--plot"),
        (["assess", "missing.csv", "--no-train"], "no such file"),
    ],
)
def test_assess_cli_bad_input_is_one_line_and_status_2(argv, where, capsys):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0]


def test_assess_cli_current_needs_a_read_voltage(tmp_path, capsys):
    path = tmp_path / "iv.csv"
    rows = ["pulse_number,polarity,current_ua"] + [
        f"{i},{1 if i < 20 else -1},{10 + (i if i < 20 else 40 - i)}" for i in range(40)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["assess", str(path), "--no-train"]) == 2
    assert "read_voltage_v" in capsys.readouterr().err
    assert main(["assess", str(path), "--no-train", "--read-voltage", "100mV", "--json"]) == 0
    f = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["figures"]
    assert f["dg_up_low"] == pytest.approx(1e-6 / 0.1, rel=1e-6)  # 1 uA per pulse at 0.1 V: 10 uS


@pytest.mark.slow
def test_training_diagnosis_of_an_asymmetric_card(tmp_path, capsys):
    rc = main(["assess", "reram-es-gong2018", "--epochs", "1", "--json", "--plot", str(tmp_path / "a.png")])
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    labels = [r["label"] for r in obj["training"]]
    assert labels == ["sgd", "sgd, symmetry-point reference", "chopped-ttv2", "mixed-precision"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in obj["training"])
    best = max(obj["training"], key=lambda r: r["test_accuracy"])
    assert obj["recommendation"]["use"] == best["flags"]


def test_assess_reads_neurosim_and_crosssim_inputs(tmp_path, capsys):
    ns = tmp_path / "device.neurosim"
    ns.write_text("A_LTP = 40\nA_LTD = 25\nGmin = 1 uS\nGmax = 5 uS\npulses = 100\n", encoding="utf-8")
    assert main(["assess", str(ns), "--no-train", "--json"]) == 0
    f = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["figures"]
    assert f["a_up"] == pytest.approx(40, rel=2e-3) and f["a_down"] == pytest.approx(25, rel=2e-3)  # NeuroSim's A back
    assert f["g_min"] == pytest.approx(1e-6) and f["on_off"] == pytest.approx(5.0)
    folder = tmp_path / "lut"
    folder.mkdir()
    head = "1st Row = Gbins, 2nd Row = CDF Points"
    (folder / "dG_increasing.txt").write_text(f"{head}\n1e-4, 2e-4, 3e-4\n0, 1\n2e-6, 2e-6, 2e-6\n2e-6, 2e-6, 2e-6\n")
    (folder / "dG_decreasing.txt").write_text(
        f"{head}\n1e-4, 2e-4, 3e-4\n0, 1\n-1e-6, -1e-6, -1e-6\n-1e-6, -1e-6, -1e-6\n"
    )
    saved = tmp_path / "lut.toml"
    assert main(["assess", str(folder), "--no-train", "--json", "--save-card", str(saved)]) == 0
    f = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["figures"]
    assert f["dg_up_low"] == pytest.approx(2e-6, rel=1e-5) and f["dg_down_high"] == pytest.approx(1e-6, rel=1e-5)
    assert f["states"] == pytest.approx(200e-6 / 1.5e-6, rel=1e-4) and f["asymmetry"] == pytest.approx(1 / 3, rel=1e-4)
    assert saved.is_file() and 'model = "lookup-table"' in saved.read_text()
    assert main(["assess", str(folder), "--no-train", "--save-card", str(saved)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err
    assert main(["assess", "soft-bounds", "--no-train", "--save-card", str(tmp_path / "x.toml")]) == 2
    assert "is a card already" in capsys.readouterr().err


def test_csv_with_one_direction_only_is_refused_in_one_line(tmp_path, capsys):
    path = tmp_path / "up.csv"
    path.write_text("pulse_number,polarity,conductance_us\n" + "".join(f"{i},1,{1 + 0.1 * i}\n" for i in range(10)))
    with pytest.raises(ValueError, match="no down"):
        assess_measurement(load_measurement(path))
    assert main(["assess", str(path), "--no-train"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "polarity" in err[0]
