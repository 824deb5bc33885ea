"""The published protonic device (Onen et al., Science 2022): its card, its limits, the read
condition and the energy parts in the ledger, and the endurance tally of a training run."""

import warnings
from importlib import resources

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim import IOParameters, UpdateParameters, pulsed_update
from analogsim.energy import analog_prices
from analogsim.periphery_card import load_periphery_card
from analogsim.training import TrainConfig, train
from device_models import CardError, load_card, nominal_crosspoints, parse_card, pulses_across
from device_models.card_physical import physical_summary

TOML = resources.files("device_models").joinpath("cards", "wo3-psg-onen2022.toml").read_text()


def _with(old: str, new: str) -> str:
    assert old in TOML, old
    return TOML.replace(old, new)


def test_card_holds_the_papers_figures():
    card = load_card("wo3-psg-onen2022")
    phys, m = card.physical, card.model
    assert phys["g_min_s"] == pytest.approx(1 / 87.6e6, rel=1e-3)  # Fig. 2A, 87.6 MOhm
    assert phys["g_max_s"] == pytest.approx(1 / 4.28e6, rel=1e-3)  # Fig. 2A, 4.28 MOhm
    assert phys["g_max_s"] / phys["g_min_s"] == pytest.approx(20.5, rel=0.01)
    assert phys["gate_charging_energy_j"] == pytest.approx(2.5e-15) and phys["ion_transfer_energy_j"] == pytest.approx(
        15e-18
    )
    assert phys["pulse_energy_j"] == pytest.approx(2.515e-15)
    assert phys["read_voltage_v"] == 0.1 and phys["endurance_pulses"] == 1e5
    assert (float(m.voltage_up_v), float(m.voltage_down_v)) == (10.0, 8.5)
    assert float(m.hop_distance_m) == pytest.approx(5.6e-10) and float(m.width_exponent) == 1.2
    assert float(m.saturation_down) > float(m.saturation_up)  # Fig. 2A: depression more curved
    # 1000 noise-free pulses cross the window each way, as in Fig. 2A
    assert pulses_across(m) == (1000, 1000)
    for field in ("physical.g_min", "parameters.voltage_down_v", "parameters.hop_distance_m"):
        prov, src = card.provenance[field]
        assert prov in ("measured", "fitted", "derived") and "Onen et al., Science 377, 539 (2022)" in src
    for field in ("parameters.dw_min_std", "parameters.dw_min_dtod", "parameters.saturation_up"):
        assert card.provenance[field][0] == "assumed"
    line = physical_summary(card)
    assert "11.4 nS to 234 nS (20.5x)" in line and "1000 up / 1000 down" in line
    assert "2.5 fJ gate + 15 aJ ion transfer" in line and "read at 0.1 V" in line


def test_yao_card_says_its_figures_are_assumed():
    yao = load_card("wo3-protonic-yao2020")
    assert "every figure assumed" in yao.description
    assert all(prov == "assumed" for field, (prov, _) in yao.provenance.items() if field.startswith("parameters."))


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        (
            '[parameters.width_s]\nvalue = 5.0\nunit = "ns"',
            '[parameters.width_s]\nvalue = 90.0\nunit = "ns"',
            "width_s",
        ),
        ("[parameters.voltage_up_v]\nvalue = 10.0", "[parameters.voltage_up_v]\nvalue = 16.0", "voltage_up_v"),
        ("[parameters.thickness_m]\nvalue = 10.0", "[parameters.thickness_m]\nvalue = 5.0", "voltage_up_v"),
    ],
)
def test_limits_past_failure_or_breakdown_are_refused(old, new, field):
    with pytest.raises(CardError, match=rf"^bad\.toml: field 'parameters\.{field}': value .* is not allowed") as err:
        parse_card(_with(old, new), source="bad.toml")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        (
            '[parameters.width_s]\nvalue = 5.0\nunit = "ns"',
            '[parameters.width_s]\nvalue = 50.0\nunit = "ns"',
            "stable_pulse_width",
        ),
        ("[parameters.voltage_up_v]\nvalue = 10.0", "[parameters.voltage_up_v]\nvalue = 12.0", "12 MV/cm"),
    ],
)
def test_limits_past_what_was_shown_are_warned_about(old, new, needle):
    with pytest.warns(UserWarning, match=needle) as caught:
        parse_card(_with(old, new), source="edge.toml")
    assert all("\n" not in str(w.message) for w in caught)


def test_the_papers_operating_point_loads_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parse_card(TOML, source="onen.toml")


def test_energy_parts_must_add_up():
    both = _with(
        "[physical.pulse_width]",
        '[physical.pulse_energy]\nvalue = 3.0\nunit = "fJ"\nprovenance = "assumed"\nsource = "x"\n\n[physical.pulse_width]',
    )
    with pytest.raises(CardError, match=r"physical\.pulse_energy.*gate_charging_energy \+ ion_transfer_energy"):
        parse_card(both, source="bad.toml")
    start = TOML.index("[physical.ion_transfer_energy]")
    one = TOML[:start] + TOML[TOML.index("[physical.pulse_voltage]") :]
    with pytest.raises(CardError, match="gate_charging_energy and ion_transfer_energy must be given together"):
        parse_card(one, source="bad.toml")


def test_read_energy_uses_the_cards_read_condition():
    card, per = load_card("wo3-psg-onen2022"), load_periphery_card()
    read = analog_prices(card, per, IOParameters())["crosspoint_reads"]
    g_mid = 0.5 * (card.physical["g_min_s"] + card.physical["g_max_s"])
    assert read.joules == pytest.approx(0.1**2 * g_mid * per.read_time_s, rel=1e-12)
    assert "0.1 V" in read.source and "VDS" in read.source
    assert per.read_voltage_v != 0.1  # the periphery's own read voltage is not used for this card


def test_endurance_tally_counts_every_pulse_of_the_expected_rung():
    res = train(TrainConfig(update_mode="expected", epochs=1, hidden=(8,)), progress=False)
    end, counts = res["endurance"], res["energy_report"]["counts_by_layer"]
    sizes = {"layers/0": 64 * 8, "layers/1": 8 * 10}
    for name, layer in end["layers"].items():
        fired = counts[name]["pulses_up"] + counts[name]["pulses_down"]
        assert layer["mean_pulses"] * sizes[name] == pytest.approx(fired, rel=1e-6)  # every pulse, on some device
        assert layer["max_pulses"] >= layer["mean_pulses"] > 0
    busiest = max(end["layers"].values(), key=lambda v: v["max_pulses"])
    assert end["busiest_pulses"] == busiest["max_pulses"]
    assert end["ratio"] == pytest.approx(end["busiest_pulses"] / 1e5)


def test_no_endurance_tally_without_a_card_figure():
    res = train(TrainConfig(device="soft-bounds", epochs=1, hidden=(8,)), progress=False)
    assert res["endurance"] is None
    np.testing.assert_array_less(0, res["energy_j"]["total"])


@pytest.mark.parametrize("mode", ["exact", "expected", "gaussian"])
def test_pulses_per_device_add_up_to_the_pulses_fired(mode):
    """Every rung reports each device's pulses (``exact``: the expectation of its draw), and they
    add up to the pulses the ledger counts."""
    model = load_card("wo3-psg-onen2022").model
    cp = nominal_crosspoints(model, (24, 32))
    kx, kd = jax.random.split(jax.random.key(1))
    x = jax.random.uniform(kx, (64, 32), minval=-1, maxval=1)
    d = jax.random.normal(kd, (64, 24)) * 0.05
    _, counts = pulsed_update(
        model, cp, jnp.zeros((24, 32)), x, d, 0.1, UpdateParameters(mode=mode), key=jax.random.key(2)
    )
    fired, tallied = int(counts.up + counts.down), float(jnp.sum(counts.per_device))
    assert counts.per_device.shape == (24, 32) and float(jnp.min(counts.per_device)) >= 0
    assert fired > 2000
    # exact: realised against expected (Poisson-like: 3 sd of 2000+ pulses is under 7%)
    assert tallied == pytest.approx(fired, rel=1e-6 if mode == "expected" else 0.07)


def test_wear_keeps_whole_pulses_apart_from_the_fraction():
    """Fractional expectations add up exactly: whole pulses in int32, the rest in [0, 1)."""
    from flax import nnx

    from analogsim import AnalogLinear

    layer = AnalogLinear(3, 2, device="wo3-psg-onen2022", rngs=nnx.Rngs(0))
    for _ in range(400):
        layer.tally_wear(jnp.full((2, 3), 0.375))
    assert layer.wear.get_value().dtype == jnp.int32
    np.testing.assert_array_equal(layer.wear.get_value(), 150)
    np.testing.assert_array_equal(layer.wear_fraction.get_value(), 0.0)
    plain = AnalogLinear(3, 2, device="soft-bounds", rngs=nnx.Rngs(0))  # no endurance: nothing kept
    plain.tally_wear(jnp.ones((2, 3)))
    assert plain.wear.get_value().shape == ()
