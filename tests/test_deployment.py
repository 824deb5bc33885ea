"""Hardware-aware training and deployment: weight modifiers, the PCM-like inference noise model,
drift compensation from reference reads, and the evaluate CLI with draws and plots."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analogsim import TrainConfig, WeightModifier, load_dataset, train
from analogsim.cli import main
from analogsim.compensation import fit_compensation, reference_inputs
from analogsim.inference_noise import (
    PCM_G_MAX_US,
    drift_exponent_moments,
    pcm_program_std_us,
    pcm_read_noise_rel,
    pcm_weights_at,
    program_pcm,
)
from analogsim.layers import AnalogLinear, capture_calls
from analogsim.modifiers import POLY_COEFFS, modified_matmul, modify_weights, parse_modifier
from analogsim.periphery import IOParameters
from analogsim.training import ConfigError

N = 400  # 160,000 samples: a sample std is within 1% (5 sigma: 5 / sqrt(2 * 160,000) = 0.9%)


def _w(omega=0.8):
    w = jax.random.uniform(jax.random.key(1), (N, N), jnp.float32, -omega, omega)
    return w.at[0, 0].set(omega)  # the largest |w| is omega


def test_add_and_mult_normal_scale_with_the_largest_weight():
    w = _w(0.8)
    d = modify_weights(WeightModifier("add_normal", std_dev=0.05), w, key=jax.random.key(2)) - w
    assert float(jnp.std(d)) == pytest.approx(0.05 * 0.8, rel=0.01)
    assert abs(float(jnp.mean(d))) < 5 * 0.04 / N
    d = modify_weights(WeightModifier("mult_normal", std_dev=0.1), w, key=jax.random.key(3)) - w
    # w * sigma * omega * xi: its variance is (sigma omega)^2 E[w^2] = (0.08)^2 * 0.8^2 / 3
    assert float(jnp.std(d)) == pytest.approx(0.08 * 0.8 / math.sqrt(3), rel=0.015)
    fixed = WeightModifier("add_normal", std_dev=0.05, rel_to_actual_wmax=False, assumed_wmax=2.0)
    d = modify_weights(fixed, w, key=jax.random.key(4)) - w
    assert float(jnp.std(d)) == pytest.approx(0.1, rel=0.01)


def test_discretize_drop_connect_and_poly():
    w = _w(0.8)
    q = modify_weights(WeightModifier("discretize", res=0.1), w, key=jax.random.key(0))
    steps = np.asarray(q) / (0.8 * 0.1)
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-4)  # on the grid of omega * res
    assert float(jnp.max(jnp.abs(q - w))) <= 0.8 * 0.1 / 2 + 1e-6
    assert len(np.unique(np.round(steps))) == 21  # -10 .. 10
    dropped = modify_weights(WeightModifier("drop_connect", pdrop=0.3), w, key=jax.random.key(1))
    frac = float(jnp.mean(dropped == 0))
    assert frac == pytest.approx(0.3, abs=5 * math.sqrt(0.3 * 0.7 / N**2))
    kept = dropped != 0
    np.testing.assert_array_equal(np.asarray(dropped)[np.asarray(kept)], np.asarray(w)[np.asarray(kept)])
    full = jnp.full((N, N), 0.5)  # every |w| = omega: sigma (c0 + c1 + c2) omega
    d = modify_weights(WeightModifier("poly", std_dev=2.0), full, key=jax.random.key(2)) - full
    assert float(jnp.std(d)) == pytest.approx(2.0 * sum(POLY_COEFFS) * 0.5, rel=0.01)


def test_bad_modifiers_are_refused_in_one_line():
    with pytest.raises(ValueError, match=r"WeightModifier.kind: value 'gauss'.*allowed: add_normal"):
        WeightModifier("gauss", std_dev=0.1)
    with pytest.raises(ValueError, match=r"WeightModifier.std_dev: value -0.1 .*>= 0"):
        WeightModifier("add_normal", std_dev=-0.1)
    with pytest.raises(ValueError, match="pdrop"):
        WeightModifier("drop_connect", pdrop=1.0)
    assert parse_modifier("add_normal:0.05") == WeightModifier("add_normal", std_dev=0.05)
    assert parse_modifier("discretize_add_normal:0.02:0.05") == WeightModifier(
        "discretize_add_normal", res=0.02, std_dev=0.05
    )
    assert parse_modifier("none") is None
    for bad in ("gauss:0.1", "add_normal", "add_normal:x", "add_normal:-0.1"):
        with pytest.raises(ValueError, match="weight.modifier|WeightModifier"):
            parse_modifier(bad)
    with pytest.raises(ConfigError, match="--weight-modifier"):
        TrainConfig(weight_modifier="gauss:0.1").validate()


def test_the_backward_read_does_not_see_the_modifier():
    io = IOParameters(is_perfect=True)
    w = jax.random.normal(jax.random.key(0), (3, 5))
    w_read = w + 1.0
    x = jax.random.normal(jax.random.key(1), (4, 5))
    g = jax.random.normal(jax.random.key(2), (4, 3))

    def f(x):
        y, _ = modified_matmul(w, w_read, x, jax.random.key(3), io, io)
        return jnp.sum(y * g)

    np.testing.assert_allclose(f(x), jnp.sum((x @ w_read.T) * g), rtol=1e-5)  # forward: modified
    np.testing.assert_allclose(jax.grad(f)(x), g @ w, rtol=1e-5)  # backward: the stored weights


def test_the_modifier_acts_in_a_training_pass_only():
    mod = WeightModifier("add_normal", std_dev=0.5)
    layer = AnalogLinear(6, 4, device="idealized", forward_io=IOParameters(is_perfect=True), rngs=nnx.Rngs(0))
    x = jnp.ones((2, 6))
    plain = layer(x, key=jax.random.key(5))
    layer.modifier = mod
    np.testing.assert_array_equal(layer(x, key=jax.random.key(5)), plain)  # evaluation: untouched
    y_train, _, _ = capture_calls(layer, x)  # a training pass (calls recorded)
    assert float(jnp.max(jnp.abs(y_train - plain))) > 0.05
    assert layer.weight.get_value().shape == (4, 6)


def test_pcm_programming_noise_and_drift_exponents():
    w = jnp.full((N, N), 0.5).at[0, 0].set(1.0)  # g_T = 12.5 uS on the plus device
    st = program_pcm(w, key=jax.random.key(0))
    g = np.asarray(st.g_plus)[1:]
    gt = 12.5
    assert float(pcm_program_std_us(jnp.asarray(gt))) == pytest.approx(0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25)
    assert g.std() == pytest.approx(float(pcm_program_std_us(jnp.asarray(gt))), rel=0.01)
    assert g.mean() == pytest.approx(gt, abs=0.01)
    mu, sig = drift_exponent_moments(jnp.asarray(gt))
    assert float(mu) == pytest.approx(min(max(-0.0155 * math.log(0.5) + 0.0244, 0.049), 0.1))
    assert float(sig) == pytest.approx(min(max(-0.0125 * math.log(0.5) - 0.0059, 0.008), 0.045))
    nu = np.asarray(st.nu_plus)[1:]  # mu / sigma = 14: the absolute value changes nothing
    assert nu.mean() == pytest.approx(float(mu), rel=0.005)
    assert nu.std() == pytest.approx(float(sig), rel=0.01)
    # drift only (no read noise): g (1 + t / t0)^-nu per device
    st0 = st._replace(g_minus=jnp.zeros_like(st.g_minus))
    t = 86400.0
    wt = pcm_weights_at(st0, t, key=None)
    expect = st0.g_plus * (1 + t / 20.0) ** (-st0.nu_plus) * st0.omega / PCM_G_MAX_US
    np.testing.assert_allclose(wt, expect, rtol=1e-5)


def test_pcm_read_noise():
    w = jnp.full((N, N), 0.5).at[0, 0].set(1.0)
    st = program_pcm(w, key=jax.random.key(0))
    st = st._replace(g_minus=jnp.zeros_like(st.g_minus))
    t = 3600.0
    drift = pcm_weights_at(st, t, key=None)
    noisy = pcm_weights_at(st, t, key=jax.random.key(9))
    z = (noisy - drift) / jnp.abs(drift) / pcm_read_noise_rel(st.g_plus, t)
    assert float(jnp.std(z)) == pytest.approx(1.0, rel=0.01)
    # Q_s at g = g_max / 2: 0.0088 / 0.5^0.65, times sqrt(ln((t + t0 + t_r) / (2 t_r)))
    q = 0.0088 / 0.5**0.65 * math.sqrt(math.log((t + 20.0 + 250e-9) / 500e-9))
    assert float(pcm_read_noise_rel(jnp.asarray(12.5), t)) == pytest.approx(q, rel=1e-5)


def test_affine_compensation_undoes_a_relaxation_global_does_not():
    w0 = jax.random.normal(jax.random.key(0), (8, 30)) * 0.3
    e, rest = math.exp(-1.5), 0.4
    wt = rest + (w0 - rest) * e
    x_ref = reference_inputs(30, 16)
    x = jax.random.uniform(jax.random.key(1), (50, 30))
    want = x @ w0.T
    errs = {}
    for kind in ("none", "global", "column", "affine"):
        scale, offset = fit_compensation(kind, x_ref, x_ref @ w0.T, x_ref @ wt.T)
        got = (x @ wt.T - offset * jnp.sum(x, axis=1, keepdims=True)) * scale
        errs[kind] = float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))
    assert errs["affine"] < 1e-4
    assert min(errs["none"], errs["global"], errs["column"]) > 0.3
    # a pure scale (relaxation to 0): all three undo it
    wt = w0 * e
    for kind in ("global", "column", "affine"):
        scale, offset = fit_compensation(kind, x_ref, x_ref @ w0.T, x_ref @ wt.T)
        got = (x @ wt.T - offset * jnp.sum(x, axis=1, keepdims=True)) * scale
        np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    ds = load_dataset("digits")
    ds = dataclasses.replace(ds, x_train=ds.x_train[:256], y_train=ds.y_train[:256])
    d = tmp_path_factory.mktemp("ck") / "run"
    cfg = TrainConfig(epochs=1, batch_size=32, hidden=(16,), lr=0.5, device="idealized", checkpoint_dir=str(d))
    res = train(dataclasses.replace(cfg, weight_modifier="add_normal:0.05"), progress=False, dataset=ds)
    return d, res


def test_cli_evaluate_with_draws_compensation_and_plot(tiny, tmp_path, capsys):
    d, res = tiny
    assert res["test_accuracy"] > 0.3  # trained with the modifier (8 steps; digits: chance is 0.1)
    png = tmp_path / "acc.png"
    argv = ["evaluate", "--checkpoint", str(d), "--after", "1s,1d", "--noise-model", "pcm", "--draws", "2"]
    rc = main([*argv, "--compensation", "affine", "--plot", str(png), "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "+-" in out and "over 2 draws" in out
    assert png.stat().st_size > 5000
    rows = json.loads(out.strip().splitlines()[-1])
    assert rows["compensation"] == "affine" and rows["draws"] == 2
    for row in rows["results"]:
        assert len(row["accuracies"]) == 2
        assert row["test_accuracy"] == pytest.approx(np.mean(row["accuracies"]))
        assert row["test_accuracy_std"] == pytest.approx(np.std(row["accuracies"]))
        assert row["test_accuracy"] > res["test_accuracy"] - 0.15


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        (["--draws", "0"], "--draws"),
        (["--draws", "two"], "--draws"),
        (["--compensation", "scale"], "--compensation"),
        (["--noise-model", "rram"], "--noise-model"),
    ],
)
def test_cli_evaluate_bad_input_is_one_line(tmp_path, capsys, extra, field):
    # the options are checked before the checkpoint is read: an empty folder does
    assert main(["evaluate", "--checkpoint", str(tmp_path), "--after", "1s", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and field in err


def test_cli_train_bad_weight_modifier_is_one_line(capsys):
    for bad in ("gauss:0.1", "add_normal:-0.05"):
        assert main(["train", "--epochs", "1", "--weight-modifier", bad, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--weight-modifier" in err
