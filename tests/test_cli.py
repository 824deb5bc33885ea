"""The command line: a smoke run with --json, the devices list, and argument errors."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "analogsim.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One training run through the command line, shared by the tests of its output and its report."""
    report = tmp_path_factory.mktemp("smoke") / "energy.json"
    proc = run(
        "train",
        "--epochs",
        "2",
        "--hidden",
        "16",
        "--batch-size",
        "128",
        "--lr",
        "1.0",
        "--json",
        "--no-progress",
        "--energy-report",
        str(report),
    )
    return proc, report


def test_train_json_smoke(smoke):
    proc, report = smoke
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("test_accuracy", "epoch_test_accuracy", "samples_per_s", "energy_j", "config"):
        assert key in out
    assert len(out["epoch_test_accuracy"]) == 2 and 0.0 <= out["test_accuracy"] <= 1.0
    assert out["config"]["device"] == "wo3-psg-onen2022" and out["config"]["dataset"] == "digits"
    rep = json.loads(report.read_text())
    for key in ("total_j", "by_kind", "by_layer", "counts", "prices", "per_epoch", "digital_baseline_j", "co2e_kg"):
        assert key in rep
    assert set(rep["by_kind"]) == {"write", "read", "wire", "dac", "adc", "update", "memory", "digital"}
    assert (
        rep["schema_version"] == 2
        and rep["time_s"] > 0
        and set(rep["baselines"]) == {"accelerator", "gpu-bf16", "gpu-fp32"}
    )
    # an existing report is never overwritten without --force
    before = report.read_text()
    proc = run("train", "--epochs", "1", "--energy-report", str(report))
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert report.read_text() == before


def test_devices_lists_builtin_cards():
    proc = run("devices")
    assert proc.returncode == 0
    for name in ("constant-step", "soft-bounds", "wo3-psg-onen2022", "enode-lut"):
        assert name in proc.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--epochs", "-1"], "--epochs"),
        (["--batch-size", "0"], "--batch-size"),
        (["--lr", "nan"], "--lr"),
        (["--algorithm", "adam"], "--algorithm"),
        (["--hidden", "12,x"], "--hidden"),
        (["--device", "unobtainium"], "built-in cards"),
        (["--update-mode", "fast"], "--update-mode"),
        (["--dataset", "cifar10"], "--dataset cifar10 needs --data-dir"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent"], "not a directory"),
        (["--model", "resnet20", "--analog-layers", "edges"], "--analog-layers"),
        (["--augment", "rotate"], "--augment"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args, needle):
    proc = run("train", *args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_energy_reprice_and_plot(smoke, tmp_path):
    proc, saved = smoke
    assert proc.returncode == 0, proc.stderr
    report = tmp_path / "e.json"
    report.write_text(saved.read_text())  # (a copy: this test overwrites it at the end)
    from analogsim.energy_report import load_report, reprice

    rep = load_report(report)
    same = reprice(rep, "wo3-psg-onen2022")  # re-pricing with the run's own card gives the run's joules
    assert same["total_j"] == pytest.approx(rep["total_j"], rel=1e-12, abs=0)
    assert same["by_kind"] == pytest.approx(rep["by_kind"], rel=1e-12, abs=0)
    assert same["time_s"] == pytest.approx(rep["time_s"], rel=1e-12, abs=0)
    plot = tmp_path / "e.png"
    proc = run("energy", str(report), "--device", "soft-bounds", "--plot", str(plot), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(out) == {"wo3-psg-onen2022", "wo3-psg-onen2022 priced as soft-bounds"}
    out["what-if soft-bounds"] = out.pop("wo3-psg-onen2022 priced as soft-bounds")
    # soft-bounds has no conductance range or read condition: its reads are priced at the periphery's
    # 1 uS and 0.2 V instead of the card's 122.5 nS (middle of its window) and 0.1 V (Onen 2022, methods)
    ratio = out["what-if soft-bounds"]["by_kind"]["read"] / out["wo3-psg-onen2022"]["by_kind"]["read"]
    assert ratio == pytest.approx((0.2**2 * 1e-6) / (0.1**2 * 0.5 * (11.42e-9 + 233.6e-9)), rel=1e-9, abs=0)
    assert out["what-if soft-bounds"]["by_kind"]["adc"] == out["wo3-psg-onen2022"]["by_kind"]["adc"]
    assert plot.stat().st_size > 10_000
    proc = run("energy", str(report), "--plot", str(plot))  # never overwritten without --force
    assert proc.returncode == 2 and "--force" in proc.stderr
    report.write_text('{"total_j": 1}')
    proc = run("energy", str(report))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and str(report) in proc.stderr


def test_version_is_the_installed_distributions():
    from importlib import metadata

    import analogsim

    proc = run("--version")
    assert proc.returncode == 0
    assert (
        proc.stdout.strip() == f"analogsim {metadata.version('analogsim-jax')}" == f"analogsim {analogsim.__version__}"
    )


def test_a_reader_that_goes_away_ends_quietly():
    """`analogsim devices | head -1`: no BrokenPipeError traceback."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "analogsim.cli", "devices"], stdout=write_end, stderr=subprocess.PIPE, timeout=120
        )
    finally:
        os.close(write_end)
    err = proc.stderr.decode()
    assert proc.returncode == 141 and "Traceback" not in err, err


def test_energy_project_prints_assumptions_and_refuses_bad_input(smoke, capsys):
    from analogsim.cli import main

    _, report = smoke
    assert main(["energy", "project", "--network", "gpt3-175b", "--from", str(report), "--json"]) == 0
    out = capsys.readouterr().out
    assert "assumptions:" in out and "Patterson et al." in out and "time on one chip" in out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["samples"] == 300e9 and set(result["baselines"]) == {"accelerator", "gpu-bf16", "gpu-fp32"}
    for argv, needle in (
        (["--network", "gpt5", "--from", str(report)], "--network: value 'gpt5' is not allowed"),
        (["--network", "64x10", "--from", str(report)], "--samples"),  # dense layers have no default length
        (["--network", "gpt2-124m", "--from", str(report) + ".missing"], "no such file"),
    ):
        assert main(["energy", "project", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
