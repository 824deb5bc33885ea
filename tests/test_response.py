"""Pulse response of a device population (device_models.response, analogsim response).

Tolerances: noise-free runs equal the closed forms to float32 rounding (rtol 1e-5). Noisy
means are compared with 5 standard errors of the mean over K = 2000 devices, the standard
error taken from the simulated spread (or, where the spread is mostly device-to-device, from
a bound on the cycle-to-cycle part alone).
"""

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import device_models
from analogsim.response_cli import add_response_parser, run_response
from device_models import (
    ConstantStep,
    PulsedParams,
    SoftBounds,
    apply_pulses,
    draw_crosspoints,
    expected_response,
    load_card,
    parse_pulse_spec,
    pulse_polarities,
    simulate_response,
)

K = 2000


def constant_closed_form(w0, dw, n_up, n_down):
    n = np.arange(1, n_up + n_down + 1)
    return np.where(n <= n_up, w0 + n * dw, w0 + n_up * dw - (n - n_up) * dw)


def soft_bounds_closed_form(w0, s, b_max, b_min, n_up, n_down):
    """w_n = b - (b - w0)(1 - s/|b|)^n toward b = b_max, then toward b = b_min."""
    up = b_max - (b_max - w0) * (1 - s / abs(b_max)) ** np.arange(1, n_up + 1)
    top = up[-1]
    down = b_min - (b_min - top) * (1 - s / abs(b_min)) ** np.arange(1, n_down + 1)
    return np.concatenate([up, down])


def test_pulse_specs():
    assert parse_pulse_spec("+200,-200") == [200, -200]
    assert parse_pulse_spec(" +3 , -1 ,+2") == [3, -1, 2]
    np.testing.assert_array_equal(pulse_polarities([2, -1, 1]), [1, 1, -1, 1])
    for bad in ("200", "+200,", "+0", "+2.5", "up", "", "+1,-x"):
        with pytest.raises(ValueError, match="--pulses"):
            parse_pulse_spec(bad)
    for bad in ([], [0], [1.5], [True]):
        with pytest.raises(ValueError, match="pulses"):
            pulse_polarities(bad)
    with pytest.raises(ValueError, match="at most"):
        pulse_polarities([10**7])


@pytest.mark.parametrize("card", ["constant-step", "soft-bounds"])
def test_noise_free_equals_the_closed_form(card):
    model = load_card(card).model
    p = model.pulsed
    res = simulate_response(model, [200, -200], devices=3, noise_free=True, key=jax.random.key(0))
    if card == "constant-step":
        expect = constant_closed_form(p.w_min, p.dw_min, 200, 200)
    else:
        expect = soft_bounds_closed_form(p.w_min, p.dw_min, p.w_max, p.w_min, 200, 200)
    np.testing.assert_allclose(res.state_mean, expect, rtol=1e-5, atol=2e-5)  # float32 sums of 400 steps
    assert np.max(res.state_std) < 1e-6  # identical devices (float32 rounding of the mean only)
    np.testing.assert_allclose(res.fraction_mean, (expect - p.w_min) / (p.w_max - p.w_min), rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(expected_response(model, [200, -200]), res.state_mean, rtol=1e-6, atol=1e-7)
    # from a given start
    start = expected_response(model, [+50], start=0.1)
    assert start[0] > 0.1 and start.shape == (50,)


@pytest.mark.parametrize("cls", [ConstantStep, SoftBounds])
def test_cycle_to_cycle_mean_matches_the_closed_form(cls):
    """No device-to-device spread: the mean of the noisy devices is the closed form (affine steps).

    Constant step: +200 then -150 (the bound is 50 steps away, so clipping cannot bias the mean).
    """
    p = PulsedParams(dw_min=0.001, dw_min_std=0.3, dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
    model = cls(pulsed=p)
    n_down = 150 if cls is ConstantStep else 200
    res = simulate_response(model, [200, -n_down], devices=K, key=jax.random.key(1))
    if cls is ConstantStep:
        expect = constant_closed_form(-0.6, 0.001, 200, n_down)
    else:
        expect = soft_bounds_closed_form(-0.6, 0.001, 0.6, -0.6, 200, n_down)
    se = np.maximum(res.state_std, 1e-9) / np.sqrt(K)
    z = (res.state_mean - expect) / se
    assert np.max(np.abs(z[10:])) < 5, np.max(np.abs(z))
    # the spread grows like sqrt(n) sigma dw for the constant step: std after 200 pulses
    if cls is ConstantStep:
        assert res.state_std[199] == pytest.approx(np.sqrt(200) * 0.3 * 0.001, rel=0.1)


def test_constant_step_population_mean_is_the_nominal_closed_form():
    """Full aihwkit spreads (card constant-step): before any device clips, E[w_n] = w_min + n dw_min."""
    card = load_card("constant-step")
    res = simulate_response(card.model, [200, -200], devices=K, key=jax.random.key(2))
    expect = constant_closed_form(-0.6, 0.001, 200, 200)
    se = res.state_std / np.sqrt(K)
    z = (res.state_mean[:200] - expect[:200]) / se[:200]
    assert np.max(np.abs(z)) < 5
    # after 200 pulses: fraction 200 * 0.001 / 1.2 = 1/6, spread from the bounds' and steps' spreads
    assert res.fraction_mean[199] == pytest.approx(1 / 6, abs=5 * res.fraction_std[199] / np.sqrt(K))
    sd_expected = np.sqrt((0.3 * 0.6) ** 2 + (200 * 0.001 * 0.3) ** 2 + 200 * (0.3 * 0.001) ** 2) / 1.2
    assert res.fraction_std[199] == pytest.approx(sd_expected, rel=0.1)


def test_soft_bounds_population_mean_matches_per_device_closed_forms():
    """Card soft-bounds with full spreads: the mean over devices equals the average of each device's
    closed form (exact given the device); the c2c standard error is bounded by the sum of step variances."""
    card = load_card("soft-bounds")
    res = simulate_response(card.model, [200, -200], devices=K, key=jax.random.key(3))
    cp = res.crosspoints
    s_up, s_dn = np.asarray(cp.scale_up, np.float64), np.asarray(cp.scale_down, np.float64)
    b_max, b_min = np.asarray(cp.b_max, np.float64), np.asarray(cp.b_min, np.float64)
    ok = (b_max > 0) & (b_min < 0)
    assert ok.all()
    w0 = b_min
    n = np.arange(1, 201)[:, None]
    up = b_max - (b_max - w0) * (1 - s_up / b_max) ** n
    down = b_min - (b_min - up[-1]) * (1 + s_dn / b_min) ** n  # b_min < 0: factor 1 - s/|b_min|
    per_device = np.concatenate([up, down])  # (400, K)
    np.testing.assert_allclose(
        expected_response(card.model, [200, -200], crosspoints=cp), per_device, rtol=1e-4, atol=1e-5
    )
    factor_max = 1 - b_min / b_max  # largest saturation factor of each device
    step_sd = 0.3 * np.maximum(s_up, s_dn) * factor_max
    se_bound = np.sqrt(np.arange(1, 401)[:, None] * step_sd[None, :] ** 2).mean(axis=1) / np.sqrt(K)
    assert np.all(np.abs(res.state_mean - per_device.mean(axis=1)) < 5 * se_bound)
    # and the population mean stays close to the nominal curve (Jensen bias of the spreads, < 0.01 fraction)
    nominal = soft_bounds_closed_form(-0.6, 0.001, 0.6, -0.6, 200, 200)
    assert np.max(np.abs(res.fraction_mean - (nominal + 0.6) / 1.2)) < 0.01


def test_simulation_is_the_pulse_by_pulse_loop():
    """The scan equals a Python loop of apply_pulses with the documented key use."""
    model = load_card("wo3-psg-onen2022").model
    key = jax.random.key(4)
    key_again = jax.random.clone(key)
    res = simulate_response(model, [5, -3], devices=7, key=key)
    k_dev, k_noise = jax.random.split(key_again)
    cp = draw_crosspoints(model, (7,), key=k_dev)
    w = cp.b_min
    keys = jax.random.split(k_noise, 8)
    means = []
    for i, pol in enumerate([1] * 5 + [-1] * 3):
        k_pulse, _ = jax.random.split(keys[i])  # the second key draws the write noise (none on this card)
        w = apply_pulses(model, cp, w, jnp.full((7,), pol, jnp.int8), key=k_pulse)
        means.append(float(jnp.mean(w)))
    np.testing.assert_allclose(res.state_mean, means, rtol=1e-5)


def test_start_and_devices_are_checked():
    model = load_card("soft-bounds").model
    with pytest.raises(ValueError, match="start"):
        simulate_response(model, [1], devices=2, start=0.9, key=jax.random.key(5))
    with pytest.raises(ValueError, match="devices"):
        simulate_response(model, [1], devices=0, key=jax.random.key(6))
    res = simulate_response(model, [1], devices=50, start=0.0, key=jax.random.key(7))
    assert res.start.shape == (50,) and np.all(res.start == 0.0)


def _parser():
    p = argparse.ArgumentParser(prog="analogsim")
    add_response_parser(p.add_subparsers(dest="command"))
    return p


def _run(argv, capsys):
    rc = run_response(_parser().parse_args(["response", *argv]))
    out, err = capsys.readouterr()
    return rc, out, err


def test_json_layout(capsys):
    rc, out, err = _run(["--device", "soft-bounds", "--pulses", "+3,-2", "--devices", "50", "--json"], capsys)
    assert rc == 0 and err == ""
    obj = json.loads(out.strip().splitlines()[-1])
    assert set(obj["fraction"]) == {"mean", "std"}
    assert set(obj["state"]) == {"mean", "std", "unit"} and obj["state"]["unit"] == "1"
    for part in ("fraction", "state"):
        for stat in ("mean", "std"):
            assert len(obj[part][stat]) == 5 and all(isinstance(v, float) for v in obj[part][stat])
    assert obj["polarity"] == [1, 1, 1, -1, -1] and obj["devices"] == 50
    f = np.asarray(obj["fraction"]["mean"])
    s = np.asarray(obj["state"]["mean"])
    np.testing.assert_allclose(f, (s + 0.6) / 1.2, atol=1e-6)  # float32


def test_defaults_and_noise_free(capsys):
    ns = _parser().parse_args(["response", "--device", "constant-step"])
    assert (ns.pulses, int(ns.devices), ns.start, ns.noise_free) == ("+200,-200", 2000, None, False)
    rc, out, _ = _run(["--device", "constant-step", "--noise-free", "--json"], capsys)
    obj = json.loads(out)
    assert rc == 0 and len(obj["fraction"]["mean"]) == 400
    assert obj["fraction"]["mean"][199] == pytest.approx(200 * 0.001 / 1.2, abs=2e-5)
    assert max(obj["fraction"]["std"]) < 1e-6
    rc, out, _ = _run(["--device", "constant-step", "--pulses", "+10", "--devices", "5"], capsys)
    assert rc == 0 and "after pulse 10: fraction" in out


@pytest.mark.parametrize(
    "argv, where",
    [
        (["--device", "no-such-card"], "no-such-card"),
        (["--device", "soft-bounds", "--pulses", "+200,x"], "--pulses"),
        (["--device", "soft-bounds", "--start", "2467uS"], "has no [physical] g_min/g_max"),
        (["--device", "soft-bounds", "--start", "2467 kOhm"], "--start"),
        (["--device", "soft-bounds", "--pulses", "+200;-200"], "--pulses"),
        (["--device", "soft-bounds", "--pulses", "+0"], "--pulses"),
        (["--device", "soft-bounds", "--devices", "0"], "--devices"),
        (["--device", "soft-bounds", "--devices", "-3"], "--devices"),
        (["--device", "soft-bounds", "--devices", "many"], "--devices"),
        (["--device", "soft-bounds", "--start", "0.9"], "--start"),
        (["--device", "soft-bounds", "--start", "nan"], "--start"),
        (["--device", "soft-bounds", "--seed", "x"], "--seed"),
        (["--device", "soft-bounds", "--plot", "/no/such/dir/f.png"], "--plot"),
    ],
)
def test_bad_input_gives_one_line_and_status_2(argv, where, capsys):
    rc, out, err = _run(argv, capsys)
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0]


def test_plot_is_never_overwritten_without_force(tmp_path, capsys, svg_backend):
    plot = tmp_path / "r.png"
    argv = ["--device", "soft-bounds", "--pulses", "+20,-20", "--devices", "20", "--plot", str(plot)]
    rc, _, _ = _run(argv, capsys)
    assert rc == 0 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == "svg"  # plotting did not switch the backend
    plot.write_bytes(b"mine")
    rc, _, err = _run(argv, capsys)
    assert rc == 2 and "--force" in err and plot.read_bytes() == b"mine"
    rc, _, _ = _run([*argv, "--force"], capsys)
    assert rc == 0 and plot.read_bytes()[:4] == b"\x89PNG"


def test_response_result_is_frozen():
    res = simulate_response(load_card("soft-bounds").model, [2], devices=2, noise_free=True, key=jax.random.key(8))
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.w_min = 0.0  # type: ignore[misc]


def test_models_with_the_same_fields_have_different_tree_structures():
    """ConstantStep and SoftBounds both hold one ``pulsed`` field; their pytree structures must
    still differ, or a jitted function given one and then the other may reuse the first one's
    program (JAX compares register_dataclass structures without their class)."""
    a, b = load_card("constant-step").model, load_card("soft-bounds").model
    assert jax.tree.structure(a) != jax.tree.structure(b)
    assert type(jax.tree.map(lambda v: v, b)) is type(b)

    @jax.jit
    def up_step(model, w):
        return model.step_up(device_models.nominal_crosspoints(model, w.shape), w)

    w = jnp.full((3,), 0.3)
    np.testing.assert_allclose(up_step(a, w), 0.001)  # constant step
    np.testing.assert_allclose(up_step(b, w), 0.001 * (1 - 0.3 / 0.6), rtol=1e-6)  # soft bounds


def _card_with_window(tmp_path, g_min: str, g_max: str):
    """soft-bounds (w in [-0.6, 0.6], dw_min 0.001) with a [physical] conductance window."""
    text = load_card_text("soft-bounds")
    for name, value in (("g_min", g_min), ("g_max", g_max)):
        number, unit = value.split()
        text += f'\n[physical.{name}]\nvalue = {number}\nunit = "{unit}"\nprovenance = "assumed"\nsource = "test"\n'
    path = tmp_path / f"sb-{g_max.replace(' ', '')}.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_card_text(name: str) -> str:
    from importlib import resources

    return resources.files("device_models").joinpath("cards", f"{name}.toml").read_text(encoding="utf-8")


def test_start_as_a_conductance_and_results_in_siemens(tmp_path, capsys):
    card = _card_with_window(tmp_path, "1000 uS", "3000 uS")  # 2 mS over 1.2 weight units
    rc, out, err = _run(["--device", card, "--start", "2467uS", "--pulses", "+5", "--noise-free", "--json"], capsys)
    assert rc == 0 and err == "", err
    obj = json.loads(out)
    w0 = -0.6 + (2467e-6 - 1e-3) / 2e-3 * 1.2  # the linear map of the card
    assert obj["start"] == pytest.approx(w0, rel=1e-12)
    assert obj["start_s"] == pytest.approx(2467e-6, rel=1e-12)
    # soft bounds from w0: w1 = w0 + dw_min (1 - w0 / 0.6); G = g_min + (w + 0.6) / 1.2 * 2 mS
    w1 = w0 + 0.001 * (1 - w0 / 0.6)
    assert obj["state"]["mean"][0] == pytest.approx(w1, abs=2e-6)
    assert obj["conductance"]["unit"] == "S"
    assert obj["conductance"]["mean"][0] == pytest.approx(1e-3 + (w1 + 0.6) / 1.2 * 2e-3, rel=2e-6)
    assert obj["expected"]["conductance"][0] == pytest.approx(obj["conductance"]["mean"][0], rel=1e-6)
    assert obj["g_range_s"] == [pytest.approx(1e-3), pytest.approx(3e-3)]
    rc, _, err = _run(["--device", card, "--start", "5mS"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "conductance window" in err


def test_nanosiemens_device_is_shown_in_ns(tmp_path, capsys):
    card = _card_with_window(tmp_path, "0.5 nS", "2 nS")
    rc, out, _ = _run(["--device", card, "--pulses", "+10", "--devices", "5", "--noise-free"], capsys)
    assert rc == 0
    assert "uS" not in out and "0.5 nS .. 2 nS" in out
    w10 = expected_response(load_card("soft-bounds").model, [10])[-1]
    g10 = 0.5 + (w10 + 0.6) / 1.2 * 1.5  # nS
    assert f"G {g10:.4g} nS" in out


def test_depression_first_through_the_cli(capsys):
    from analogsim.cli import main

    rc = main(
        ["response", "--device", "constant-step", "--pulses", "-150,+185", "--start", "0.5", "--noise-free", "--json"]
    )
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and obj["pulses"] == [-150, 185] and obj["polarity"][:150] == [-1] * 150
    # constant step 0.001: 0.5 - 0.150 + 0.185
    assert obj["state"]["mean"][-1] == pytest.approx(0.535, abs=1e-5)
    rc = main(["response", "--device", "constant-step", "--pulses", "200, -20", "--devices", "3", "--json"])
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["pulses"] == [200, -20]
