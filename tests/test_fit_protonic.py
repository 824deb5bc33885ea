"""Fitting the protonic model to pulse trains at several voltages and widths (voltage_v/width_s columns)."""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim.fit_cli import add_fit_parser, run_fit
from device_models import Protonic, PulsedParams, apply_pulses, load_card, nominal_crosspoints
from device_models.fitting import fit_model, replay_measurement
from device_models.measurements import load_measurement
from device_models.protonic import field_voltage_v

VOLTAGES = (8.0, 9.0, 10.0)  # V
WIDTHS = (5e-9, 10e-9)  # s
BLOCKS = (+100, -100, +100)
# the reference pulse the fit picks: the lower median of the applied pulses (9 V, 5 ns)
TRUTH = Protonic(
    PulsedParams(dw_min=0.01, up_down=0.1, w_max=0.9, w_min=-0.8),
    voltage_up_v=9.0,
    voltage_down_v=9.0,
    width_s=5e-9,
    ref_voltage_up_v=9.0,
    ref_voltage_down_v=9.0,
    ref_width_s=5e-9,
    hop_distance_m=0.3e-9,  # V0 = 1.72 V with d = 10 nm, T = 300 K
    thickness_m=10e-9,
    temperature_k=300.0,
    width_exponent=0.8,
    saturation_up=0.6,
    saturation_down=1.2,
)


def _sweep(voltage_v: float, width_s: float, *, c2c: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Polarity and noisy states of one sweep driven at (voltage_v, width_s)."""
    pulses = np.concatenate([np.full(abs(b), np.sign(b), np.int8) for b in BLOCKS])
    with jax.enable_x64(True):
        model = dataclasses.replace(TRUTH, voltage_up_v=voltage_v, voltage_down_v=voltage_v, width_s=width_s)
        model = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), model)
        cp = nominal_crosspoints(model, (), dtype=jnp.float64)
        cp = dataclasses.replace(cp, dw_min_std=jnp.asarray(c2c, jnp.float64))
        keys = jax.random.split(jax.random.key(seed), len(pulses))

        def body(w, inp):
            p, k = inp
            w = apply_pulses(model, cp, w, p, key=k if c2c > 0 else None)
            return w, w

        _, ws = jax.lax.scan(body, jnp.asarray(-0.3, jnp.float64), (jnp.asarray(pulses[1:]), keys[1:]))
    return pulses, np.concatenate([[-0.3], np.asarray(ws)])


def _write(path, *, c2c: float, signed: bool = True):
    lines = ["cycle,pulse_number,polarity,weight,voltage_v,width_s"]
    seed = 0
    for v in VOLTAGES:
        for t in WIDTHS:
            seed += 1
            pulses, w = _sweep(v, t, c2c=c2c, seed=seed)
            for i, (p, x) in enumerate(zip(pulses, w, strict=True)):
                volt = float(v * p) if signed else v  # depressing pulses written with a negative voltage
                lines.append(f"V{v:g}-t{t:g},{i + 1},{int(p)},{float(x)!r},{volt!r},{t!r}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("c2c, tol", [(0.0, 0.05), (0.1, 0.10)], ids=["noise-free", "c2c-noise"])
def test_protonic_recovers_voltage_and_width_law(tmp_path, c2c, tol):
    m = load_measurement(_write(tmp_path / "protonic.csv", c2c=c2c))
    r = fit_model(m, "protonic")
    v0_true = float(field_voltage_v(TRUTH))
    assert r.derived["v0_v"]["value"] == pytest.approx(v0_true, rel=tol)
    assert r.derived["a_over_d"]["value"] == pytest.approx(0.3e-9 / 10e-9, rel=tol)
    assert r.derived["reference_pulse"] == {"voltage_up_v": 9.0, "voltage_down_v": 9.0, "width_s": 5e-9}
    p = r.parameters
    assert p["hop_distance_m"].value == pytest.approx(0.3e-9, rel=tol) and p["hop_distance_m"].unit == "m"
    for key, value in (("dw_min", 0.01), ("width_exponent", 0.8), ("w_max", 0.9), ("w_min", -0.8)):
        assert p[key].provenance == "fitted", (key, p[key])
        assert p[key].value == pytest.approx(value, rel=tol), (key, p[key].value)
    assert p["saturation_up"].value == pytest.approx(0.6, rel=2 * tol)
    assert p["saturation_down"].value == pytest.approx(1.2, rel=2 * tol)
    assert p["up_down"].value == pytest.approx(0.1, abs=0.02)
    assert p["voltage_up_v"].provenance == "measured" and p["voltage_up_v"].unit == "V"
    assert p["thickness_m"].provenance == "assumed" and p["temperature_k"].unit == "K"
    if c2c == 0.0:
        assert r.residual_std < 1e-6
    else:
        assert 0.06 < r.dw_min_std < 0.14, r.dw_min_std

    card_path = tmp_path / "protonic.toml"
    card_path.write_text(r.to_card_toml("protonic-fitted"), encoding="utf-8")
    card = load_card(card_path)
    assert card.model_name == "protonic"
    assert float(card.model.ref_voltage_up_v) == 9.0 and float(card.model.ref_width_s) == pytest.approx(5e-9)
    assert float(field_voltage_v(card.model)) == pytest.approx(r.derived["v0_v"]["value"], rel=1e-9)
    # the card replays the fitted curve, pulse by pulse at the measured voltages and widths
    np.testing.assert_allclose(replay_measurement(card.model, m, r.start_states), r.predicted, atol=1e-9)


def test_protonic_without_voltage_columns_is_a_fixed_operating_point(tmp_path):
    pulses, w = _sweep(9.0, 5e-9, c2c=0.0, seed=0)
    path = tmp_path / "plain.csv"
    rows = [f"{i + 1},{int(p)},{float(x)!r}" for i, (p, x) in enumerate(zip(pulses, w, strict=True))]
    path.write_text("pulse_number,polarity,weight\n" + "\n".join(rows) + "\n", encoding="utf-8")
    r = fit_model(load_measurement(path), "protonic")
    p = r.parameters
    assert p["dw_min"].value == pytest.approx(0.01, rel=0.02)
    assert p["saturation_down"].value == pytest.approx(1.2, rel=0.05)
    for key in ("hop_distance_m", "width_exponent", "voltage_up_v", "width_s"):
        assert p[key].provenance == "assumed", (key, p[key])
    assert "no voltage_v column" in p["hop_distance_m"].reason
    assert load_card_text(tmp_path, r).model_name == "protonic"


def load_card_text(tmp_path, r):
    path = tmp_path / "c.toml"
    path.write_text(r.to_card_toml("c"), encoding="utf-8")
    return load_card(path)


def test_cli_protonic_json_and_card(tmp_path, capsys):
    csv_path = _write(tmp_path / "cli.csv", c2c=0.05, signed=False)
    out = tmp_path / "card.toml"
    parser = argparse.ArgumentParser()
    add_fit_parser(parser.add_subparsers(dest="command"))
    rc = run_fit(parser.parse_args(["fit", str(csv_path), "--model", "protonic", "--out", str(out), "--json"]))
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["model"] == "protonic"
    assert result["derived"]["v0_v"]["value"] == pytest.approx(float(field_voltage_v(TRUTH)), rel=0.1)
    assert result["parameters"]["width_exponent"]["value"] == pytest.approx(0.8, rel=0.1)
    assert result["parameters"]["hop_distance_m"]["unit"] == "m"
    card = load_card(out)
    assert card.model_name == "protonic" and card.provenance["parameters.hop_distance_m"][0] == "fitted"
