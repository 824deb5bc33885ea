"""The experiment scripts run end to end (their ``--tiny`` mode) and write sane results.

``--tiny`` is a test-suite size below ``--quick``: the fewest points and epochs (a single analog
layer) that still run every step of the script. Each script is imported from its file and its
``main(argv)`` called in this process.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

# Each runs a whole (tiny) experiment: ~20-40 s apiece; run with `python -m pytest -m slow`.
pytestmark = pytest.mark.slow

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiment_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, out: Path, *extra: str) -> dict:
    rc = _script(name).main(["--tiny", "--out", str(out), *extra])
    assert rc == 0
    png = out / f"{name}.png"
    assert png.is_file() and 0 < png.stat().st_size < 300_000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "results.json").read_text())
    assert result["experiment"] == name and result["mode"] == "tiny"
    return result


def _is_accuracy(x) -> bool:
    return isinstance(x, float) and 0.0 <= x <= 1.0


def test_cnn_accuracy(tmp_path):
    result = _run("cnn_accuracy", tmp_path / "cnn", "--rules", "digital,sgd")
    assert [r["rule"] for r in result["rows"]] == ["digital", "sgd"]
    assert all(_is_accuracy(r["test_accuracy"]) and r["images_per_s"] > 0 for r in result["rows"])
    assert result["image_shape"] == [8, 8, 1] and result["train_images"] == 128


def test_protonic_operating_point(tmp_path):
    r = _run("protonic_operating_point", tmp_path / "opoint")
    assert r["card"] == "wo3-psg-onen2022" and r["controller"] == "operating"
    points = r["points"]
    assert len(points) == 2
    for p in points:
        assert _is_accuracy(p["test_accuracy"])
        assert p["energy_per_epoch_j"] > p["write_energy_per_epoch_j"] > 0
        assert p["pulses_per_epoch"] > 0 and p["pulse_energy_j"] > 0
    by_v = {p["voltage_v"]: p for p in points}
    # the sinh law: 10 V is the card's reference pulse (x1); 9 V steps are smaller and cheaper
    assert by_v[10.0]["step_multiplier"] == pytest.approx(1.0)
    assert 0 < by_v[9.0]["step_multiplier"] < 1 and by_v[9.0]["pulse_energy_j"] < by_v[10.0]["pulse_energy_j"]
    assert by_v[10.0]["pulse_energy_j"] == pytest.approx(2.515e-15, rel=0.01)  # the card's 2.5 fJ + 15 aJ
    assert max(p["test_accuracy"] for p in points) > 0.5
    assert r["frontier_total"] and set(r["frontier_total"]) <= {p["label"] for p in points}


def test_protonic_operating_point_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "opoint"
    out.mkdir()
    (out / "results.json").write_text("{}")
    assert _script("protonic_operating_point").main(["--tiny", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "results.json").read_text() == "{}"


def test_retention(tmp_path):
    r = _run("retention", tmp_path / "retention")
    assert r["time_labels"] == ["0", "1 min", "1 h", "1 d", "1 w", "1 y"]
    assert r["times_s"][0] == 0.0 and r["times_s"][-1] == pytest.approx(3.15576e7)
    (row,) = r["cards"]
    assert row["card"] == "wo3-psg-onen2022" and row["retention"]["tau_s"] == 1e6
    for key in ("uncompensated", "compensated"):
        assert len(row[key]) == 6 and all(_is_accuracy(a) for a in row[key])
    assert row["uncompensated"][0] > 0.5  # right after programming the network works
    # tau = 1e6 s, relaxing to the lower bound: after a year every weight sits there (chance level)
    assert row["uncompensated"][-1] < 0.3
    assert row["uncompensated"][0] == row["compensated"][0]  # nothing to compensate at t = 0


def test_device_requirements(tmp_path):
    r = _run("device_requirements", tmp_path / "requirements")
    assert set(r["factors"]) == {"dw_min", "up_down", "dw_min_dtod", "dw_min_std"}
    assert _is_accuracy(r["digital_test_accuracy"]) and _is_accuracy(r["baseline"]["test_accuracy"])
    assert r["baseline"]["states"] == pytest.approx(1200)
    for factor, f in r["factors"].items():
        assert len(f["points"]) == 2
        assert all(_is_accuracy(p["test_accuracy"]) for p in f["points"])
        assert f["paper"] == r["paper"][factor] and f["tolerated"] in [p["value"] for p in f["points"]]
    # 12 states (dw_min = 0.1) is far worse than 1200
    dw = {p["value"]: p["test_accuracy"] for p in r["factors"]["dw_min"]["points"]}
    assert dw[0.001] > dw[0.1]
    assert r["best_test_accuracy"] > 0.5
    assert r["paper"]["verified"] is False and "Gokmen" in r["paper"]["source"]
    assert all(math.isfinite(p["value"]) for f in r["factors"].values() for p in f["points"])


def test_asymmetry_and_algorithms(tmp_path):
    r = _run("asymmetry_and_algorithms", tmp_path / "asym")
    assert [(row["device"], row["algorithm"]) for row in r["table"]] == [
        ("soft-bounds", "sgd"),
        ("soft-bounds", "chopped-ttv2"),
    ]
    rows = [r["digital"], *r["table"], *r["asymmetry"]]
    assert all(_is_accuracy(row["test_accuracy"]) and row["samples_per_s"] > 0 for row in rows)
    assert all(row["energy_j"] > 0 for row in r["table"])
    (point,) = r["asymmetry"]
    assert point["up_down"] == 0.5 and point["symmetry_point"] == pytest.approx(0.2)
    assert point["variant"] == "sgd, SP reference" and point["reference"] == "symmetry-point"
    assert max(row["test_accuracy"] for row in rows) > 0.25  # one epoch of a 16-wide net; chance is 0.1


def test_device_zoo(tmp_path):
    r = _run("device_zoo", tmp_path / "zoo")
    assert [row["card"] for row in r["cards"]] == ["soft-bounds", "wo3-psg-onen2022", "pcm-nandakumar2020"]
    assert r["config"]["update_mode"] == "auto"  # the trainer's default, recorded
    by_card = {row["card"]: row for row in r["cards"]}
    # the one-directional PCM card trains as a differential pair at a tenth of the learning rate
    assert by_card["pcm-nandakumar2020"]["algorithm"] == "sgd-pair"
    assert by_card["pcm-nandakumar2020"]["lr"] == pytest.approx(0.1 * by_card["soft-bounds"]["lr"])
    assert r["digital"]["write_energy_per_epoch_j"] == 0.0 and r["digital"]["pulses_per_epoch"] == 0
    for row in r["cards"]:
        assert _is_accuracy(row["test_accuracy"]) and row["samples_per_s"] > 0 and row["train_wall_s"] > 0
        assert row["energy_per_epoch_j"] > row["write_energy_per_epoch_j"] > 0
        # the write energy is the ledger's pulses times the card's price per pulse
        assert row["write_energy_per_epoch_j"] == pytest.approx(
            row["pulses_per_epoch"] * row["pulse_energy_j"], rel=1e-6
        )
    # the protonic card prices its pulses with the paper's figures (2.5 fJ + 15 aJ at 10 V, 5 ns)
    assert by_card["wo3-psg-onen2022"]["pulse_energy_j"] == pytest.approx(2.515e-15, rel=0.01)
    assert max(row["test_accuracy"] for row in r["cards"]) > 0.25


def test_device_zoo_rejects_an_unknown_card(tmp_path, capsys):
    rc = _script("device_zoo").main(["--tiny", "--cards", "soft-bounds,no-such-card", "--out", str(tmp_path / "zoo")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --cards:") and "no-such-card" in err and "\n" not in err
    assert not (tmp_path / "zoo").exists()


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", EXPERIMENTS / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rt_mnist_benchmark_rows_and_baselines(tmp_path):
    """The benchmark runs the digital baseline around each analog configuration and states each
    ratio against the mean of the two baselines around it (digits set, one epoch)."""
    out = tmp_path / "bench.json"
    rc = _benchmark("rt_mnist").main(
        ["--devices", "constant-step", "--modes", "gaussian", "--seeds", "0,1", "--epochs", "2", "--json", str(out)]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert len(doc["baselines"]) == 2  # before and after the one analog configuration
    digital, *analog = doc["rows"]
    assert digital["algorithm"] == "digital" and digital["ratio_to_digital"] == 1.0
    assert [r["seed"] for r in analog] == [0, 1]
    base = sum(b["samples_per_s"] for b in doc["baselines"]) / 2
    for r in analog:
        assert r["baseline_samples_per_s"] == pytest.approx(base)
        assert r["ratio_to_digital"] == pytest.approx(r["samples_per_s"] / base)
        assert 0.3 < r["test_accuracy"] <= 1.0
    assert doc["machine"]["peak_rss_mib"] > 0


def test_update_profile_breaks_the_step_down(tmp_path):
    """The profile times the step beside the digital one with parts switched off, and its traced
    shares of the step add up to one."""
    out = tmp_path / "profile.json"
    rc = _benchmark("update_profile").main(
        ["--modes", "gaussian", "--reps", "3", "--record-steps", "2", "--trace", "--json", str(out)]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert set(doc["step_ms"]) >= {
        "digital",
        "gaussian",
        "no update",
        "gaussian, no read noise",
        "gaussian, no update noise",
        "gaussian, jax.random draws",
    }
    shares = doc["step_shares"]["gaussian"]
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(v > 0 for k, v in shares.items() if not k.startswith("energy"))  # every part shows up
    top = doc["costliest_ops"]["gaussian"]
    assert len(top) == 8 and all(0 < op["share"] <= 1 and op["hlo"] for op in top)
    assert [op["share"] for op in top] == sorted((op["share"] for op in top), reverse=True)
    assert sum(op["share"] for op in top) <= 1.0 + 1e-9


def test_protonic_onen2022(tmp_path):
    r = _run("protonic_onen2022", tmp_path / "onen")
    # the card's steps are the calibration the script recomputes (1000 pulses across each way)
    for branch in ("up", "down"):
        assert r["calibration"]["card"][branch] == pytest.approx(r["calibration"]["computed"][branch], rel=1e-4)
    rows = {row["quantity"]: row for row in r["table"]}
    nominal = rows["R after 1000 pulses of +10 V (nominal)"]
    assert nominal["reproduced"] == pytest.approx(4.28e6, rel=0.01)
    # the laws the paper fitted come back from the simulated devices (64 devices: a few percent)
    assert rows["beta fitted to step vs width"]["reproduced"] == pytest.approx(1.2, rel=0.05)
    assert rows["a fitted to step vs V, d = 10 nm"]["reproduced"] == pytest.approx(5.6e-10, rel=0.05)
    assert rows["proton transfer energy from the paper's basis"]["reproduced"] == pytest.approx(15e-18, rel=1e-6)
    assert rows["gate charging energy from geometry"]["reproduced"] == pytest.approx(2.59e-15, rel=0.01)
    runs = r["training"]["runs"]
    assert {"digital", "sgd", "chopped-ttv2", "chopped-ttv2, SP fast reference"} <= set(runs)
    assert all(_is_accuracy(run["test_accuracy"]) for run in runs.values())
    assert runs["sgd"]["endurance"]["busiest_pulses"] > 0 and runs["digital"]["endurance"] is None
    assert r["sensitivity"]["most_sensitive"] in ("dw_min_std", "dw_min_dtod", "states")
    assert "| quantity | paper |" in (tmp_path / "onen" / "README.md").read_text()


def test_sequences(tmp_path):
    r = _run("sequences", tmp_path / "seq", "--cards", "idealized")
    assert [(row["task"].split()[0], row["network"]) for row in r["rows"]] == [
        ("digits", "digital"), ("associative", "digital"), ("digits", "idealized"), ("associative", "idealized")
    ]  # fmt: skip
    for row in r["rows"]:
        assert len(row["test_accuracy"]) == 1 and _is_accuracy(row["test_accuracy"][0])
        assert row["s_per_epoch"] > 0
    assert r["config"]["recall"]["chance"] == 0.1


def test_deployment(tmp_path):
    r = _run("deployment", tmp_path / "dep")
    pcm, ret = r["pcm"], r["retention"]
    assert [n["network"] for n in pcm["networks"]] == ["standard", "hardware-aware"]
    assert pcm["networks"][1]["weight_modifier"] == "add_normal:0.1" and pcm["draws"] == 2
    for n in pcm["networks"]:
        assert len(n["test_accuracy"]) == len(pcm["times_s"]) == 4
        assert all(len(a) == 2 and all(map(_is_accuracy, a)) for a in n["accuracies"])
    assert [row["compensation"] for row in ret["rows"]] == ["none", "global", "affine"]
    # 1 s after programming, every compensation reads the network as trained (within read noise)
    first = [row["test_accuracy"][0] for row in ret["rows"]]
    assert max(first) - min(first) < 0.05
