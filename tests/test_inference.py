"""Inference after training: retention times, read noise and drift compensation."""

import dataclasses
import json
import subprocess
import sys

import pytest

from analogsim import TrainConfig, load_dataset, train
from analogsim.inference import evaluate_after, parse_durations
from analogsim.training import ConfigError
from device_models.retention import Retention


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    ds = load_dataset("digits")
    ds = dataclasses.replace(ds, x_train=ds.x_train[:512], y_train=ds.y_train[:512])
    d = tmp_path_factory.mktemp("ck") / "run"
    res = train(
        TrainConfig(epochs=3, batch_size=32, hidden=(24,), lr=0.5, device="constant-step", checkpoint_dir=str(d)),
        progress=False,
        dataset=ds,
    )
    return d, res, ds


def test_parse_durations():
    assert parse_durations("0,30s,2m,1h,1d,1y") == [0.0, 30.0, 120.0, 3600.0, 86400.0, 365.25 * 86400]
    with pytest.raises(ConfigError, match="--after"):
        parse_durations("1 fortnight")


def test_no_retention_keeps_the_trained_accuracy(trained):
    d, res, ds = trained
    rows = evaluate_after(d, [0.0, 3.15e7], dataset=ds)
    # only the output noise of the periphery differs: within a few points of the final evaluation
    for row in rows:
        assert row["test_accuracy"] == pytest.approx(res["test_accuracy"], abs=0.05)


def test_relaxation_erases_the_network_and_compensation_cannot_fully_help(trained):
    d, res, ds = trained
    ret = Retention(tau_s=3600.0)
    rows = evaluate_after(d, [0.0, 3600.0, 10 * 86400.0], dataset=ds, retention=ret)
    accs = [r["test_accuracy"] for r in rows]
    assert accs[0] == pytest.approx(res["test_accuracy"], abs=0.05)
    assert accs[2] < 0.3  # after 240 time constants the weights are gone
    # a uniform relaxation toward 0 only scales the weights: compensation restores the ranking
    comp = evaluate_after(d, [3600.0], dataset=ds, retention=ret, drift_compensation=True)
    assert comp[0]["test_accuracy"] >= accs[1] - 0.02


def test_read_noise_lowers_accuracy(trained):
    d, res, ds = trained
    noisy = evaluate_after(d, [0.0], dataset=ds, retention=Retention(read_noise_std=0.5))
    assert noisy[0]["test_accuracy"] < res["test_accuracy"] - 0.1


def test_cli_evaluate(trained):
    d, _, _ = trained
    proc = subprocess.run(
        [sys.executable, "-m", "analogsim.cli", "evaluate", "--checkpoint", str(d), "--after", "0,1d", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # the checkpointed run used a 512-sample subset through the API; the CLI evaluates on the full digits test set
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [r["t_s"] for r in out["results"]] == [0.0, 86400.0]
    bad = subprocess.run(
        [sys.executable, "-m", "analogsim.cli", "evaluate", "--checkpoint", str(d), "--after", "soon"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_a_python_checkpoint_is_refused_in_one_line(tmp_path):
    """``analogsim.train(model, ...)`` records no config to rebuild the network from."""
    from flax import nnx

    from analogsim import MLP
    from analogsim.checkpoint import CheckpointError

    ds = load_dataset("digits")
    ds = dataclasses.replace(ds, x_train=ds.x_train[:64], y_train=ds.y_train[:64])
    model = MLP([64, 10], device="constant-step", rngs=nnx.Rngs(0))
    train(model, ds, epochs=1, batch_size=32, progress=False, checkpoint_dir=str(tmp_path / "py"))
    with pytest.raises(CheckpointError, match="field 'config' is missing"):
        evaluate_after(tmp_path / "py", [0.0], dataset=ds)
    proc = subprocess.run(
        [sys.executable, "-m", "analogsim.cli", "evaluate", "--checkpoint", str(tmp_path / "py"), "--after", "0"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_each_time_starts_from_the_programmed_weights(trained):
    """Several times in one call do not compound (each is measured from programming)."""
    d, _, ds = trained
    year = 365.25 * 86400.0
    ret = Retention(drift_nu=0.05)
    rows = evaluate_after(d, [year, year, 0.0], dataset=ds, retention=ret, drift_compensation=True)
    alone = evaluate_after(d, [0.0], dataset=ds, retention=ret)
    assert rows[0]["test_accuracy"] == rows[1]["test_accuracy"]
    assert rows[2]["test_accuracy"] == alone[0]["test_accuracy"]
