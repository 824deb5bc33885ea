"""Any nnx model on the command line and in the trainer: --model cnn, --model module:factory,
and the digital baseline's FLOPs counted from the model itself."""

import json
import textwrap

import pytest
from flax import nnx

from analogsim import MLP, SmallCNN, load_dataset
from analogsim.cli import main
from analogsim.training import MetricsLogger, train_model
from analogsim.training.report import flops_per_sample, training_flops_per_sample


def test_baseline_flops_follow_the_model():
    sizes = [(64, 32), (32, 16), (16, 10)]
    mlp = MLP((64, 32, 16, 10), device="constant-step", rngs=nnx.Rngs(0))
    assert training_flops_per_sample(mlp, 64) == flops_per_sample(sizes)
    digital = MLP((64, 32, 16, 10), device=None, rngs=nnx.Rngs(0))
    assert training_flops_per_sample(digital, 64) == flops_per_sample(sizes)
    # the CNN: conv1 reads the input (forward + weight gradient only), one 9-tap row per pixel
    cnn = SmallCNN(device="constant-step", rngs=nnx.Rngs(0))
    conv1 = 2 * 64 * 9 * 8 * 2
    conv2 = 2 * 16 * (9 * 8) * 16 * 3
    head = 2 * (16 * 2 * 2) * 10 * 3
    assert training_flops_per_sample(cnn, 64) == conv1 + conv2 + head


def test_cli_trains_the_cnn_on_digits(capsys):
    # measured: test accuracy 0.73, 0.88, 0.94 after epochs 1-3 at lr 1.0
    argv = ["train", "--model", "cnn", "--epochs", "3", "--device", "idealized", "--lr", "1.0", "--json"]
    assert main([*argv, "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["config"]["model"] == "cnn"
    assert out["test_accuracy"] > 0.85  # chance 0.1
    assert set(out["energy_j"]["by_layer"]) >= {"conv1", "conv2", "head"}


def test_cli_trains_a_factory_model_and_refuses_bad_ones(tmp_path, monkeypatch, capsys):
    (tmp_path / "my_models.py").write_text(
        textwrap.dedent(
            """
            import jax.numpy as jnp
            from flax import nnx
            from analogsim import AnalogLinear

            class Twice(nnx.Module):
                def __init__(self, n_in, n_out, device, rngs):
                    self.inp = AnalogLinear(n_in, 32, device=device, rngs=rngs)
                    self.mid = AnalogLinear(32, 32, device=device, rngs=rngs)
                    self.out = AnalogLinear(32, n_out, device=device, rngs=rngs)

                def __call__(self, x):
                    h = jnp.tanh(self.inp(x))
                    h = jnp.tanh(self.mid(h))
                    h = jnp.tanh(self.mid(h))  # the same array read twice
                    return self.out(h)

            def twice(*, num_features, num_classes, device, rngs, **_):
                return Twice(num_features, num_classes, device, rngs)

            def not_a_model(**_):
                return 3
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    argv = ["train", "--model", "my_models:twice", "--epochs", "2", "--lr", "0.5", "--device", "idealized", "--json"]
    argv.append("--no-progress")
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["test_accuracy"] > 0.5
    assert main([*argv[:2], "my_models:not_a_model", *argv[3:]]) == 2
    assert "returned int, not an nnx model" in capsys.readouterr().err
    assert main([*argv[:2], "no_such_module:f", *argv[3:]]) == 2
    assert "cannot be imported" in capsys.readouterr().err
    assert main([*argv[:2], "resnet", *argv[3:]]) == 2
    assert "--model: value 'resnet' is not allowed" in capsys.readouterr().err


def test_train_model_logs_metrics_and_hands_back_a_usable_model(tmp_path):
    data = load_dataset("digits")
    model = MLP((64, 16, 10), device="constant-step", rngs=nnx.Rngs(0))
    log = tmp_path / "metrics.csv"
    run = train_model(model, data, epochs=2, batch_size=64, callback=MetricsLogger(log), progress=False)
    lines = log.read_text().splitlines()
    assert lines[0].startswith("epoch,train_loss,train_accuracy,test_accuracy") and len(lines) == 3
    assert run.model(data.x_test[:5]).shape == (5, 10)
    assert model(data.x_test[:5]).shape == (5, 10)  # the model handed in is untouched and usable
    with pytest.raises(ValueError, match="exists; pass append=True"):
        MetricsLogger(log)


def test_the_readme_example_runs_as_written(capsys):
    """The README's "your own model" example is a complete loop; run it as a user would."""
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Your own nnx model") :]
    code = section[
        section.index("```python") + len("```python") : section.index("```\n", section.index("```python") + 9)
    ]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["run"].epoch_test_accuracy[-1] > 0.75  # measured 0.80
    assert namespace["trained"](namespace["data"].x_test[:3]).shape == (3, 10)
