"""Device cards: built-ins load with aihwkit's numbers; every bad field gives a one-line error."""

import dataclasses
import subprocess
import sys

import pytest

from device_models import BUILTIN_CARDS, CardError, ConstantStep, PulsedParams, SoftBounds, load_card

GOOD = """
name = "mine"
model = "soft-bounds"
description = "test card"
{params}
[physical.g_min]
value = 1.0
unit = "uS"
provenance = "assumed"
source = "test"

[physical.g_max]
value = 10.0
unit = "uS"
provenance = "assumed"
source = "test"

[physical.pulse_energy]
value = 2.0
unit = "fJ"
provenance = "measured"
source = "test"
"""
PARAMS = dataclasses.asdict(PulsedParams())  # aihwkit's PulsedDevice defaults


def params_toml(values=PARAMS, unit='"1"', skip=()):
    out = []
    for k, v in values.items():
        if k in skip:
            continue
        out += [f"[parameters.{k}]", f"value = {v}", f"unit = {unit}", 'provenance = "assumed"', 'source = "test"', ""]
    return "\n".join(out)


def write(tmp_path, text, name="card.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_builtin_cards_carry_aihwkit_defaults():
    for name in BUILTIN_CARDS:
        card = load_card(name)
        assert card.name == name
    cs = load_card("constant-step")
    sb = load_card("soft-bounds")
    assert isinstance(cs.model, ConstantStep) and isinstance(sb.model, SoftBounds)
    for card in (cs, sb):
        p = card.model.pulsed
        assert (p.dw_min, p.dw_min_dtod, p.dw_min_std, p.up_down, p.up_down_dtod) == (0.001, 0.3, 0.3, 0.0, 0.01)
        assert (p.w_max, p.w_min, p.w_max_dtod, p.w_min_dtod) == (0.6, -0.6, 0.3, 0.3)
    assert all(
        prov in ("measured", "fitted", "derived", "assumed")
        for prov, _ in load_card("wo3-psg-onen2022").provenance.values()
    )


def test_good_card_converts_units_to_si(tmp_path):
    card = load_card(write(tmp_path, GOOD.format(params=params_toml())))
    assert card.physical["g_min_s"] == pytest.approx(1e-6)
    assert card.physical["g_max_s"] == pytest.approx(1e-5)
    assert card.physical["pulse_energy_j"] == pytest.approx(2e-15)
    assert card.provenance["physical.pulse_energy"] == ("measured", "test")


BAD = {
    "missing field": (GOOD.format(params=params_toml(skip=("dw_min",))), "parameters.dw_min"),
    "negative step": (GOOD.format(params=params_toml({**PARAMS, "dw_min": -0.1})), "parameters.dw_min"),
    "nan": (GOOD.format(params=params_toml({**PARAMS, "dw_min_std": "nan"})), "parameters.dw_min_std.value"),
    "string value": (GOOD.format(params=params_toml({**PARAMS, "w_max": '"big"'})), "parameters.w_max.value"),
    "wrong unit": (GOOD.format(params=params_toml(unit='"uS"')), "unit"),
    "unknown model": (GOOD.format(params=params_toml()).replace('model = "soft-bounds"', 'model = "magic"'), "model"),
    "unknown parameter": (GOOD.format(params=params_toml({**PARAMS, "gamma": 1.0})), "gamma"),
    "g_min >= g_max": (GOOD.format(params=params_toml()).replace("value = 10.0", "value = 0.5"), "physical.g_min"),
    "negative energy": (
        GOOD.format(params=params_toml()).replace("value = 2.0", "value = -2.0"),
        "physical.pulse_energy",
    ),
    "bad provenance": (GOOD.format(params=params_toml()).replace('"measured"', '"guessed"'), "provenance"),
    "not toml": ("name = [", "not valid TOML"),
    "w_min positive": (GOOD.format(params=params_toml({**PARAMS, "w_min": 0.2})), "parameters.w_min"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_cards_name_file_field_and_value(tmp_path, case):
    text, field = BAD[case]
    path = write(tmp_path, text)
    with pytest.raises(CardError) as err:
        load_card(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and field in msg


def test_unknown_card_name_lists_builtins():
    with pytest.raises(CardError, match="built-in cards: constant-step"):
        load_card("no-such-card")


def test_cli_bad_card_exits_2_with_one_line(tmp_path):
    path = write(tmp_path, GOOD.format(params=params_toml({**PARAMS, "dw_min": -1})))
    proc = subprocess.run(
        [sys.executable, "-m", "analogsim.cli", "train", "--device", str(path), "--epochs", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "parameters.dw_min" in lines[0] and "-1" in lines[0]
    assert "Traceback" not in proc.stderr


def test_device_models_imports_no_training_stack():
    code = (
        "import sys, device_models; bad = [m for m in ('analogsim', 'flax', 'optax') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_retention_section(tmp_path):
    ret = """
[retention.tau]
value = 2.0
unit = "ms"
provenance = "assumed"
source = "test"
[retention.read_noise_std]
value = 0.01
unit = "1"
provenance = "assumed"
source = "test"
"""
    card = load_card(write(tmp_path, GOOD.format(params=params_toml()) + ret))
    assert card.retention.tau_s == pytest.approx(2e-3) and card.retention.read_noise_std == 0.01
    assert card.provenance["retention.tau"] == ("assumed", "test")
    with pytest.raises(CardError, match=r"field 'retention.tau': value -2.0"):
        load_card(
            write(tmp_path, GOOD.format(params=params_toml()) + ret.replace("value = 2.0", "value = -2.0"), "b.toml")
        )
    with pytest.raises(CardError, match="unknown retention field"):
        load_card(write(tmp_path, GOOD.format(params=params_toml()) + "[retention.halflife]\nvalue = 1\n", "c.toml"))
    assert load_card("constant-step").retention.tau_s == float("inf")  # no section: weights are kept


def test_card_variant_round_trips_every_builtin_card_and_changes_only_what_is_asked(tmp_path):
    from device_models import card_variant

    for name in BUILTIN_CARDS:
        same = load_card(card_variant(name, f"{name}-copy", {}, source="test", folder=tmp_path))
        orig = load_card(name)
        assert (same.model, same.physical, same.retention) == (orig.model, orig.physical, orig.retention), name
    path = card_variant("soft-bounds", "sb-asym", {"up_down": 0.4}, source="test sweep", folder=tmp_path)
    card = load_card(path)
    assert card.model.pulsed.up_down == 0.4 and card.name == "sb-asym"
    assert card.provenance["parameters.up_down"] == ("assumed", "test sweep")
    with pytest.raises(CardError, match="exists; it is not overwritten"):
        card_variant("soft-bounds", "sb-asym", {"up_down": 0.1}, source="x", folder=tmp_path)
    with pytest.raises(CardError, match="has no parameters.gamma_up"):
        card_variant("soft-bounds", "sb-bad", {"gamma_up": 0.1}, source="x", folder=tmp_path)
