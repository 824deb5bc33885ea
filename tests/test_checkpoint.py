"""Checkpoints: atomic saves every epoch, exact resume, refusal to overwrite or to mix settings."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from analogsim import TrainConfig, TrainingError, load_dataset, train
from analogsim.training import ConfigError


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("digits")
    return dataclasses.replace(ds, x_train=ds.x_train[:192], y_train=ds.y_train[:192])


def cfg(tmp_path, name, **kw):
    base = dict(
        epochs=3, batch_size=32, hidden=(12,), device="soft-bounds", lr=0.5, seed=5, checkpoint_dir=str(tmp_path / name)
    )
    base.update(kw)
    return TrainConfig(**base)


def arrays(path):
    with np.load(path / "checkpoint.npz") as f:
        return {k: f[k] for k in f.files if k != "meta"}


@pytest.mark.slow  # (tests/test_crash_safety.py resumes killed and interrupted runs in the default run)
def test_interrupted_and_resumed_run_is_bit_identical(tmp_path, small):
    full = train(cfg(tmp_path, "full"), progress=False, dataset=small)
    train(cfg(tmp_path, "split", epochs=1), progress=False, dataset=small)  # "interrupted" after epoch 1
    resumed = train(cfg(tmp_path, "split", resume=True), progress=False, dataset=small)
    assert resumed["epoch_test_accuracy"] == full["epoch_test_accuracy"]
    assert resumed["energy_report"]["counts_by_layer"] == full["energy_report"]["counts_by_layer"]
    a, b = arrays(tmp_path / "full"), arrays(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_existing_checkpoint_is_not_overwritten_without_force(tmp_path, small):
    train(cfg(tmp_path, "run", epochs=1), progress=False, dataset=small)
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    with pytest.raises(ConfigError, match="--resume .* --force"):
        train(cfg(tmp_path, "run", epochs=1), progress=False, dataset=small)
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    with pytest.raises(ConfigError, match="'lr'"):
        train(cfg(tmp_path, "run", epochs=2, lr=0.1, resume=True), progress=False, dataset=small)


def test_nan_keeps_the_last_good_checkpoint(tmp_path, small):
    train(cfg(tmp_path, "run", epochs=1, algorithm="digital"), progress=False, dataset=small)
    before = (tmp_path / "run" / "checkpoint.npz").read_bytes()
    x_bad = small.x_train.copy()
    x_bad[:, 0] = np.nan  # a dataset passed in directly skips the loader's checks
    bad = dataclasses.replace(small, x_train=x_bad)
    with pytest.raises(TrainingError, match="epoch 2"):
        train(cfg(tmp_path, "run", epochs=2, algorithm="digital", resume=True), progress=False, dataset=bad)
    assert (tmp_path / "run" / "checkpoint.npz").read_bytes() == before
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_corrupt_checkpoint_one_line_error(tmp_path):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "checkpoint.npz").write_text("not a checkpoint")
    proc = subprocess.run(
        [sys.executable, "-m", "analogsim.cli", "train", "--epochs", "2", "--checkpoint-dir", str(d), "--resume"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint.npz" in lines[0], proc.stderr
