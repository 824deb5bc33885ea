"""Fits that say when not to trust them: known-parameter recovery, no warning on a clean fit, each warning
where it should fire, start states inside the range, device spread, units, curve CSV and plot legend."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from analogsim.fit_cli import add_fit_parser, plot_fit, run_fit
from device_models import ConstantStep, PulsedParams, SoftBounds
from device_models.fitting import fit_model, make_problem
from device_models.fitting.checks import _at_bounds, _noise_bounds, fit_warnings
from device_models.fitting.noise import _Noise
from device_models.fitting.synthetic import synthetic_csv
from device_models.measurements import load_measurement

GONG = Path("/work/shared/data/measured/gong2018_hfo2_rram_pulses.csv")
G_MIN, G_MAX = 2e-9, 90e-9  # an nS device, as in the 53-device data set
TRUTH = SoftBounds(PulsedParams(dw_min=0.02, up_down=0.1, w_max=1.0, w_min=-1.0))


@pytest.fixture(scope="module")
def four_devices(tmp_path_factory):
    """4 soft-bounds devices in nS (10% dw_min spread, read noise 0.5 nS), odd ones start with depression."""
    path = tmp_path_factory.mktemp("syn") / "four.csv"
    truth = synthetic_csv(
        path,
        TRUTH,
        key=jax.random.key(0),
        n_devices=4,
        dw_min_dtod=0.1,
        read_noise_s=0.5e-9,
        g_min_s=G_MIN,
        g_max_s=G_MAX,
    )
    return load_measurement(path), truth


def test_single_device_recovered_within_3_sigma_and_no_warnings(four_devices):
    m, truth = four_devices
    dev = m.select_device("D1")  # starts with depression
    assert dev.polarity[1] == -1
    r = fit_model(dev, "soft-bounds")
    expect = {"dw_min": truth["dw_min"][1], "up_down": 0.1}
    for key, value in expect.items():
        p = r.parameters[key]
        assert abs(p.value - value) < 3 * p.stderr, (key, p.value, p.stderr, value)
    for key, value in (("g_min", G_MIN), ("g_max", G_MAX)):
        p = r.physical[key]
        assert p.unit == "S" and abs(p.value - value) < 3 * p.stderr, (key, p.value, p.stderr, value)
    assert r.warnings == ()
    # one device: no invented population spread
    for key in ("dw_min_dtod", "up_down_dtod", "w_max_dtod", "w_min_dtod"):
        assert r.parameters[key].value == 0.0 and r.parameters[key].provenance == "assumed"
        assert "one device" in r.parameters[key].reason
    assert np.all(r.start_states >= r.physical["g_min"].value)
    assert np.all(r.start_states <= r.physical["g_max"].value)


def test_several_devices_spread_fitted(four_devices):
    m, truth = four_devices
    r = fit_model(m, "soft-bounds")
    sample = float(np.std(truth["dw_min"], ddof=1) / np.mean(truth["dw_min"]))
    assert r.parameters["dw_min_dtod"].provenance == "fitted"
    assert r.parameters["dw_min_dtod"].value == pytest.approx(sample, rel=0.15)
    assert r.warnings == ()
    summary = r.summary()
    assert summary["g_min_s"] == r.physical["g_min"].value and summary["physical"]["g_max"]["unit"] == "S"
    assert summary["warnings"] == []


def _problem_at(m, name, **values):
    with jax.enable_x64(True):
        problem = make_problem(m, name)
    theta = problem.starts[0].copy()
    for key, v in values.items():
        theta[problem.spec.names.index(key)] = v
    return problem, theta, np.ones(theta.size, bool)


def test_at_bound_and_degenerate_shape_fire(four_devices):
    m = four_devices[0].select_device("D0")
    problem, theta, free = _problem_at(m, "linear-step", gamma_up=50.0)
    (w,) = _at_bounds(problem, theta, free)
    assert w.startswith("gamma_up = 50 is at its upper bound 50") and "\n" not in w
    problem, theta, free = _problem_at(m, "pow-step", gamma_up=0.0, gamma_down=1e-6)
    se = np.full(theta.size, 0.01)
    warns = fit_warnings(problem, theta, free, se, np.zeros(m.n_rows), _Noise(0.1, 0.0, 0.1, 0.2))
    assert any("degenerated to a constant step" in w for w in warns), warns
    assert not any(w.startswith("gamma_up = 0 is at") for w in warns)  # said once, as the shape
    problem, theta, free = _problem_at(m, "pow-step", gamma_up=0.5)
    se[problem.spec.names.index("gamma_up")] = 0.8
    warns = fit_warnings(problem, theta, free, se, np.zeros(m.n_rows), _Noise(0.1, 0.0, 0.1, 0.2))
    assert any(w.startswith("gamma_up = 0.5 +- 0.8") for w in warns), warns


def test_noise_above_its_bound_fires():
    (w,) = _noise_bounds(_Noise(c2c=1.2, read_var=0.0, c2c_lag1=0.5, c2c_all=1.0))
    assert "exceeds its upper bound" in w and "1.2" in w
    assert _noise_bounds(_Noise(c2c=1.04, read_var=0.0, c2c_lag1=0.5, c2c_all=1.0)) == []  # within 5 %


def test_extrapolated_range_and_residual_structure_fire(tmp_path):
    # a device that never saturates, fitted with soft bounds: the bounds are a guess
    path = tmp_path / "linear.csv"
    synthetic_csv(path, ConstantStep(PulsedParams(dw_min=0.002, w_max=1.0, w_min=-1.0)), key=jax.random.key(1),
                  n_devices=1, blocks=(200, -200), read_noise_s=0.05e-6)  # fmt: skip
    r = fit_model(load_measurement(path), "soft-bounds")
    assert any("measured ranges beyond the data" in w for w in r.warnings), r.warnings
    # soft-bounds data fitted with a constant step: consecutive residual changes alike
    path = tmp_path / "sb.csv"
    synthetic_csv(path, TRUTH, key=jax.random.key(2), n_devices=1, read_noise_s=0.05e-6)
    r = fit_model(load_measurement(path), "constant-step")
    assert r.r2 > 0.95  # R^2 alone looks fine
    assert any("residual changes are correlated" in w for w in r.warnings), r.warnings


def _run(argv):
    parser = argparse.ArgumentParser()
    add_fit_parser(parser.add_subparsers(dest="command"))
    return run_fit(parser.parse_args(["fit", *argv]))


def test_cli_units_warnings_curve_and_plot_legend(four_devices, tmp_path, capsys, svg_backend):
    m, _ = four_devices
    curve = tmp_path / "curve.csv"
    rc = _run([m.source, "--model", "soft-bounds", "--curve-out", str(curve), "--no-progress", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result["warnings"] == [] and result["g_max_s"] == pytest.approx(G_MAX, rel=0.05)
    rows = curve.read_text().splitlines()
    assert rows[0] == "pattern,pulse,sweeps,observed_mean_s,observed_std_s,fitted_mean_s"
    assert len(rows) == 1 + 2 * 450  # two pulse patterns (up first, down first) of 450 readings
    rc = _run([m.source, "--model", "soft-bounds", "--no-progress"])
    text = capsys.readouterr().out
    assert rc == 0 and " nS" in text and "warnings: none" in text
    assert "0.0000" not in text  # no nS device shown as a tiny number of uS


def test_plot_legend_per_pulse_pattern(four_devices, svg_backend):
    r = fit_model(four_devices[0], "soft-bounds", device_spread=False)
    fig = plot_fit(r)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert len(labels) == 3, labels  # up-first mean, down-first mean, the fit
    assert math.isfinite(r.r2)


@pytest.mark.skipif(not GONG.exists(), reason="Gong 2018 data not present (/work/shared is not in CI)")
def test_gong_soft_bounds_range_is_flagged():
    """Gong et al. 2018 HfO2 RRAM (2 cycles, 1000 pulses): soft bounds far beyond the data are flagged."""
    r = fit_model(load_measurement(GONG), "soft-bounds")
    assert r.r2 > 0.9  # looks good...
    assert any("measured ranges beyond the data" in w for w in r.warnings), r.warnings  # ... and is not
