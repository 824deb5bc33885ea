"""The protonic WO3 model: sinh field law, width power law, asymmetry, energy, conductance, cards, gradients."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from device_models import (
    CardError,
    Protonic,
    PulsedParams,
    apply_pulses,
    conductance_s,
    field_voltage_v,
    load_card,
    nominal_crosspoints,
    nominal_step,
    parse_card,
    proton_fraction,
    pulse_energy_j,
    step_size,
)

K_B = 1.380649e-23  # J/K
Q_E = 1.602176634e-19  # C


def v0_by_hand(a_m=0.3e-9, d_m=10e-9, t_k=300.0):
    return 2 * K_B * t_k * d_m / (Q_E * a_m)


def test_field_voltage_matches_hand_value():
    assert float(field_voltage_v(Protonic())) == pytest.approx(v0_by_hand(), rel=1e-12)
    assert v0_by_hand() == pytest.approx(1.7235, rel=1e-4)


@pytest.mark.parametrize("v1, v2", [(10.0, 8.0), (10.0, 2.0), (6.0, 1.0), (0.5, 0.1)])
def test_step_ratio_between_two_voltages_is_the_sinh_ratio(v1, v2):
    model = Protonic()
    v0 = v0_by_hand()
    ratio = float(step_size(model, v1, 5e-9) / step_size(model, v2, 5e-9))
    assert ratio == pytest.approx(math.sinh(v1 / v0) / math.sinh(v2 / v0), rel=1e-5)
    # and relative to the 10 V reference
    assert float(step_size(model, v2, 5e-9)) == pytest.approx(math.sinh(v2 / v0) / math.sinh(10.0 / v0), rel=1e-5)


def test_step_size_is_one_at_the_reference_and_finite_at_extreme_fields():
    model = Protonic()
    assert float(step_size(model, 10.0, 5e-9)) == 1.0
    big = step_size(model, jnp.array([100.0, 150.0]), 5e-9)  # sinh(150/1.72) overflows float32 if done naively
    assert bool(jnp.all(jnp.isfinite(big))) and float(big[0]) == pytest.approx(
        math.exp((100 - 10) / v0_by_hand()), rel=1e-3
    )
    assert float(step_size(model, 0.0, 5e-9)) == 0.0
    assert float(step_size(model, -8.0, 5e-9)) == pytest.approx(-float(step_size(model, 8.0, 5e-9)))  # odd in V


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0, 1.7])
def test_step_follows_the_width_power_law(beta):
    model = Protonic(width_exponent=beta)
    widths = jnp.array([1e-9, 5e-9, 20e-9, 1e-6])
    got = step_size(model, 10.0, widths)
    np.testing.assert_allclose(got, (np.asarray(widths) / 5e-9) ** beta, rtol=1e-5)
    # vectorised over voltage and width together (broadcasting)
    grid = step_size(model, jnp.array([[8.0], [10.0]]), widths)
    assert grid.shape == (2, 4)
    np.testing.assert_allclose(grid[1], got, rtol=1e-6)


def test_operating_pulse_scales_the_step_in_apply_pulses():
    base = Protonic(PulsedParams(dw_min=0.01, dw_min_std=0.0), saturation_up=0.0, saturation_down=0.0)
    slow = dataclasses.replace(base, voltage_up_v=8.0, width_s=10e-9)
    cp = nominal_crosspoints(base, (1,))
    w = jnp.zeros((1,))
    up = jnp.ones((1,), jnp.int8)
    dw_base = float(apply_pulses(base, cp, w, up, key=None)[0])
    dw_slow = float(apply_pulses(slow, cp, w, up, key=None)[0])
    v0 = v0_by_hand()
    assert dw_base == pytest.approx(0.01, rel=1e-6)  # the card's dw_min at the operating point
    assert dw_slow == pytest.approx(0.01 * 2 * math.sinh(8 / v0) / math.sinh(10 / v0), rel=1e-5)
    # the down step keeps its own voltage (10 V) but shares the width
    dw_down = float(apply_pulses(slow, cp, w, -up, key=None)[0])
    assert dw_down == pytest.approx(-0.02, rel=1e-5)


def test_symmetric_by_default_and_asymmetric_as_parameterised():
    sym = Protonic(PulsedParams(dw_min=0.01))
    cp = nominal_crosspoints(sym, (5,))
    w = jnp.array([-0.5, -0.2, 0.0, 0.2, 0.5])
    np.testing.assert_allclose(sym.step_up(cp, w), sym.step_down(cp, -w), rtol=1e-6)

    # prefactor asymmetry through up_down: up 0.01, down 0.01 * (1 - 0.3)
    asym = Protonic(PulsedParams(dw_min=0.01, up_down=0.3))
    assert float(nominal_step(asym, 10.0, 5e-9, up=True)) == pytest.approx(0.01)
    assert float(nominal_step(asym, 10.0, 5e-9, up=False)) == pytest.approx(0.007)
    cpa = nominal_crosspoints(asym, (1,))
    z = jnp.zeros((1,))
    assert float(asym.step_down(cpa, z)[0] / asym.step_up(cpa, z)[0]) == pytest.approx(0.7, rel=1e-6)

    # voltage asymmetry: depress at 9 V with the reference at 10 V
    volt = dataclasses.replace(sym, voltage_down_v=9.0)
    v0 = v0_by_hand()
    ratio = float(volt.step_down(cp, w)[2] / volt.step_up(cp, w)[2])
    assert ratio == pytest.approx(math.sinh(9 / v0) / math.sinh(10 / v0), rel=1e-5)

    # saturation asymmetry: nu_up = 2, nu_down = 0 at w = 0.3 (b = +-0.6)
    sat = dataclasses.replace(sym, saturation_up=2.0, saturation_down=0.0)
    w3 = jnp.full((5,), 0.3)
    assert float(sat.step_up(cp, w3)[0]) == pytest.approx(0.01 * 0.5**2, rel=1e-5)
    assert float(sat.step_down(cp, w3)[0]) == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 2.0])
def test_saturation_factor_and_its_gradient_at_the_bound(nu):
    model = Protonic(PulsedParams(dw_min=0.01), saturation_up=nu)
    cp = nominal_crosspoints(model, (1,))
    w = jnp.array([0.3])
    assert float(model.step_up(cp, w)[0]) == pytest.approx(0.01 * 0.5**nu, rel=1e-5)
    at_bound = float(model.step_up(cp, jnp.array([0.6]))[0])
    assert at_bound == pytest.approx(0.01 if nu == 0 else 0.0, rel=1e-6)
    g = jax.grad(lambda x: model.step_up(cp, x)[0])(jnp.array([0.6]))
    g_nu = jax.grad(lambda n: dataclasses.replace(model, saturation_up=n).step_up(cp, jnp.array([0.6]))[0])(nu)
    assert bool(jnp.all(jnp.isfinite(g))) and bool(jnp.isfinite(g_nu))


def test_pulse_energy_by_hand():
    # |V| |Q| + C V^2, with and without leakage
    assert float(pulse_energy_j(10.0, 5e-9, 3e-18, 3.45e-17)) == pytest.approx(10 * 3e-18 + 3.45e-17 * 100, rel=1e-6)
    assert float(pulse_energy_j(-2.0, 1e-3, -1e-12, 0.0)) == pytest.approx(2e-12, rel=1e-6)  # signs ignored
    e = pulse_energy_j(1.0, 1e-3, 1e-12, 1e-12, leakage_current_a=1e-9)
    assert float(e) == pytest.approx(1e-12 + 1e-9 * 1e-3 + 1e-12, rel=1e-6)
    np.testing.assert_allclose(pulse_energy_j(jnp.array([1.0, 2.0]), 1e-9, 0.0, 1e-15), [1e-15, 4e-15], rtol=1e-6)


def test_card_energies_follow_their_sources():
    onen = load_card("wo3-psg-onen2022")  # the paper's two figures, summed at load
    assert onen.physical["pulse_energy_j"] == pytest.approx(2.5e-15 + 15e-18, rel=1e-12)
    assert onen.provenance["physical.pulse_energy"][0] == "derived"
    assert "2.5 fJ + 15 aJ" in onen.provenance["physical.pulse_energy"][1]
    yao = load_card("wo3-protonic-yao2020")  # the formula in its source
    assert yao.physical["pulse_energy_j"] == pytest.approx(float(pulse_energy_j(1.0, 1e-2, 2.98e-13, 1e-11)), rel=1e-3)


def test_conductance_mapping_endpoints():
    card = load_card("wo3-psg-onen2022")
    p = card.model.pulsed
    g = conductance_s(card, jnp.array([p.w_min, 0.5 * (p.w_min + p.w_max), p.w_max]))
    np.testing.assert_allclose(g, [11.42e-9, 0.5 * (11.42e-9 + 233.6e-9), 233.6e-9], rtol=1e-6)
    np.testing.assert_allclose(proton_fraction(card.model, jnp.array([p.w_min, p.w_max])), [0.0, 1.0])
    model = Protonic()  # w in [-0.6, 0.6]
    np.testing.assert_allclose(
        conductance_s(model, jnp.array([-0.6, 0.6]), g_min_s=0.0, g_max_s=2e-6), [0, 2e-6], atol=1e-12
    )
    with pytest.raises(ValueError, match="g_min_s/g_max_s"):
        conductance_s(model, 0.0)
    with pytest.raises(ValueError, match="0 <= g_min_s < g_max_s"):
        conductance_s(model, 0.0, g_min_s=2e-6, g_max_s=1e-6)


def test_both_cards_load_with_units_converted_to_si():
    onen = load_card("wo3-psg-onen2022")
    m = onen.model
    assert isinstance(m, Protonic)
    assert (m.voltage_up_v, m.voltage_down_v, m.ref_voltage_up_v, m.ref_voltage_down_v) == (10.0, 8.5, 10.0, 8.5)
    assert m.width_s == pytest.approx(5e-9) and m.ref_width_s == pytest.approx(5e-9)
    assert m.hop_distance_m == pytest.approx(0.56e-9) and m.thickness_m == pytest.approx(10e-9)
    assert m.width_exponent == 1.2
    assert m.temperature_k == 300.0
    assert onen.physical["pulse_width_s"] == pytest.approx(m.width_s)
    assert onen.physical["pulse_voltage_v"] == m.voltage_up_v
    assert float(step_size(m, m.voltage_up_v, m.width_s)) == 1.0  # dw_min holds at the card's pulse

    yao = load_card("wo3-protonic-yao2020")
    y = yao.model
    assert y.width_s == pytest.approx(10e-3) and y.thickness_m == pytest.approx(1e-6)
    assert float(field_voltage_v(y)) == pytest.approx(v0_by_hand(d_m=1e-6), rel=1e-9)
    assert yao.physical["pulse_energy_j"] == pytest.approx(10.3e-12)
    for card in (onen, yao):
        hash(card.model)
        assert all(
            prov in ("measured", "fitted", "derived", "assumed") and src.strip()
            for prov, src in card.provenance.values()
        )
        assert {"g_min_s", "g_max_s", "pulse_voltage_v", "pulse_width_s", "pulse_energy_j"} <= set(card.physical)


def test_card_with_a_wrong_unit_names_the_field(tmp_path):
    text = load_card("wo3-psg-onen2022").source_file
    assert text.startswith("<built-in")
    from importlib import resources

    toml = resources.files("device_models").joinpath("cards", "wo3-psg-onen2022.toml").read_text()
    bad = toml.replace(
        '[parameters.thickness_m]\nvalue = 10.0\nunit = "nm"', '[parameters.thickness_m]\nvalue = 10.0\nunit = "V"'
    )
    assert bad != toml
    with pytest.raises(CardError, match=r"parameters\.thickness_m\.unit.*'V'.*allowed: m, um, nm"):
        parse_card(bad, source="bad.toml")
    neg = toml.replace("[parameters.voltage_up_v]\nvalue = 10.0", "[parameters.voltage_up_v]\nvalue = -1.0")
    with pytest.raises(CardError, match=r"parameters\.voltage_up_v.*-1\.0.*> 0"):
        parse_card(neg, source="bad.toml")


def test_step_size_gradients_check_against_finite_differences():
    model = Protonic()
    # voltage in volts, width in nanoseconds (so finite differences are well scaled)
    f_v = jax.jit(lambda v: step_size(model, v, 5e-9))
    f_t = jax.jit(lambda t_ns: step_size(model, 9.0, t_ns * 1e-9))
    f_both = jax.jit(lambda v, t_ns: step_size(model, v, t_ns * 1e-9))
    check_grads(f_v, (jnp.float32(8.0),), order=2, modes=("fwd", "rev"), eps=1e-2, atol=1e-2, rtol=1e-2)
    check_grads(f_t, (jnp.float32(7.0),), order=2, modes=("fwd", "rev"), eps=1e-2, atol=1e-2, rtol=1e-2)
    check_grads(f_both, (jnp.float32(10.0), jnp.float32(3.0)), order=1, modes=("rev",), eps=1e-2, atol=1e-2, rtol=1e-2)
    # analytic derivative: dM/dV = cosh(V/V0) / (V0 sinh(Vref/V0))
    v0 = v0_by_hand()
    assert float(jax.grad(f_v)(8.0)) == pytest.approx(math.cosh(8 / v0) / (v0 * math.sinh(10 / v0)), rel=1e-4)
    # width zero: finite gradient for beta < 1
    half = Protonic(width_exponent=0.5)
    assert bool(jnp.isfinite(jax.grad(lambda t: step_size(half, 10.0, t))(0.0)))
