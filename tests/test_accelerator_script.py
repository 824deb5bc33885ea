"""The GPU benchmark path (experiments/benchmarks/accelerator.sh) runs end to end on any machine."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "benchmarks" / "accelerator.sh"


@pytest.mark.slow
def test_accelerator_script_quick_on_digits(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(
        ["bash", str(SCRIPT), "--quick", "digits", str(tmp_path)], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    environment = (tmp_path / "environment.txt").read_text()
    assert environment.startswith("jax ") and " backend " in environment, environment
    for name in ("rt_mnist", "rt_mnist_transfer", "rt_mnist_steps_per_call"):
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert doc["rows"], name
        assert all(row["samples_per_s"] > 0 for row in doc["rows"]), name
    sweep = json.loads((tmp_path / "sweep_vmap.json").read_text())
    assert sweep  # written by sweep_vmap.py
    cnn = json.loads((tmp_path / "cnn" / "results.json").read_text())
    assert [(r["net"], r["rule"]) for r in cnn["rows"]] == [("resnet20", "sgd")]
    assert all(r["images_per_s"] > 0 and r["digital_images_per_s"] > 0 for r in cnn["rows"])
