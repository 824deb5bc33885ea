"""aihwkit's device semantics beyond the step shape (issue 16), each against its closed form:
noise laws, device-to-device draws, decay, diffusion, reset, write noise, reference devices."""

import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from device_models import (
    CardError,
    LinearStep,
    PulsedParams,
    SoftBounds,
    SoftBoundsReference,
    apply_pulses,
    crosspoints,
    decay_and_diffuse,
    draw_crosspoints,
    load_card,
    needed_draws,
    nominal_crosspoints,
    reset_states,
    standard_draws,
)
from device_models.cards import parse_card

N = 200_000


def one_pulse_change(model, w0, up=True, key=7):
    cp = nominal_crosspoints(model, (N,))
    w = jnp.full((N,), w0)
    pulses = jnp.full((N,), 1 if up else -1, jnp.int8)
    return cp, apply_pulses(model, cp, w, pulses, key=jax.random.key(key)) - w


def test_additive_noise_does_not_shrink_with_the_step():
    """mult_noise = false: std = dw_min_std * s whatever the state (aihwkit update_once_add)."""
    model = SoftBounds(PulsedParams(dw_min=0.01, dw_min_std=0.5, mult_noise=0.0, w_max=1.0, w_min=-1.0))
    cp, dw = one_pulse_change(model, 0.6)  # the step is 0.4 of its scale here
    assert float(jnp.mean(dw)) == pytest.approx(0.01 * 0.4, abs=5 * 0.005 / np.sqrt(N))
    assert float(jnp.std(dw)) == pytest.approx(0.5 * 0.01, rel=0.01)
    mult = dataclasses.replace(model, pulsed=dataclasses.replace(model.pulsed, mult_noise=1.0))
    _, dw_mult = one_pulse_change(mult, 0.6)
    assert float(jnp.std(dw_mult)) == pytest.approx(0.5 * 0.01 * 0.4, rel=0.01)


def test_exp_step_complex_noise():
    """dw_min_std_add/slope: std = dw_min_std (|dw| + add + slope |w|) (aihwkit update_once_complex_noise)."""
    model = load_card("pcm-nandakumar2020").model
    model = dataclasses.replace(model, pulsed=dataclasses.replace(model.pulsed, w_max=100.0))  # no clipping
    w0 = 0.8
    cp, dw = one_pulse_change(model, w0)
    step = float(model.step_up(cp, jnp.full((1,), w0))[0])
    want = 0.6 * (step + 0.042 + 0.108 * w0)
    assert float(jnp.std(dw)) == pytest.approx(want, rel=0.01)
    assert float(jnp.mean(dw)) == pytest.approx(step, abs=5 * want / np.sqrt(N))


def test_log_normal_step_spread():
    p = PulsedParams(dw_min=0.01, dw_min_dtod=0.7, dw_min_dtod_log_normal=1.0, up_down_dtod=0.0)
    cp = draw_crosspoints(SoftBounds(p), (N,), key=jax.random.key(1))
    log_gain = np.log(np.asarray(cp.scale_up) / 0.01)
    assert log_gain.std() == pytest.approx(0.7, rel=0.01)
    assert abs(log_gain.mean()) < 5 * 0.7 / np.sqrt(N)


def test_enforce_consistency_and_its_absence():
    """Crossed bounds: swapped and ordered around 0 with the flag, turned off at the midpoint without."""
    base = dict(dw_min=0.01, w_max=0.1, w_min=-0.1, w_max_dtod=3.0, w_min_dtod=3.0, dw_min_dtod=3.0)
    on = draw_crosspoints(SoftBounds(PulsedParams(**base)), (N,), key=jax.random.key(2))
    assert bool(jnp.all(on.b_min <= 0)) and bool(jnp.all(on.b_max >= 0)) and bool(jnp.all(on.scale_up >= 0))
    off = draw_crosspoints(SoftBounds(PulsedParams(**base, enforce_consistency=0.0)), (N,), key=jax.random.key(2))
    assert bool(jnp.all(off.b_min <= off.b_max))
    p_negative = 0.5 * (1 + float(jax.scipy.special.erf(-1 / 3 / 2**0.5)))  # P(1 + 3 xi < 0)
    assert float(jnp.mean(off.scale_up < 0)) == pytest.approx(p_negative, abs=0.005)


def test_decay_toward_the_reset_state():
    """One mini-batch: w' = (w - r)(1 - 1/t) + r per device, t drawn with lifetime_dtod."""
    p = PulsedParams(lifetime=50.0, lifetime_dtod=0.2, reset=0.1, reset_dtod=0.05, w_max=1.0, w_min=-1.0)
    model = SoftBounds(p)
    draws = standard_draws((N,), key=jax.random.key(3), extra=needed_draws(model))
    cp = crosspoints(model, draws)
    t = 50.0 * (1 + 0.2 * np.asarray(draws.extra["lifetime"]))
    r = 0.1 + 0.05 * np.asarray(draws.extra["reset"])
    w = jnp.full((N,), 0.5)
    out = decay_and_diffuse(model, cp, w, key=jax.random.key(4))
    want = np.clip((0.5 - r) * np.where(t > 1, 1 - 1 / np.where(t > 1, t, 2), 0) + r, cp.b_min, cp.b_max)
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-7)


def test_no_decay_means_no_extra_work():
    cp = draw_crosspoints(SoftBounds(PulsedParams()), (4, 4), key=jax.random.key(0))
    assert cp.decay_scale is None and cp.diffusion_rate is None and cp.reset_bias is None


def test_diffusion_random_walk():
    model = SoftBounds(PulsedParams(diffusion=0.01, w_max=10.0, w_min=-10.0, w_max_dtod=0.0, w_min_dtod=0.0))
    cp = draw_crosspoints(model, (N,), key=jax.random.key(5))
    out = decay_and_diffuse(model, cp, jnp.zeros((N,)), key=jax.random.key(6))
    assert float(jnp.std(out)) == pytest.approx(0.01, rel=0.01)


def test_reset_goes_to_the_reset_state_with_its_spread():
    model = SoftBounds(PulsedParams(reset=0.2, reset_std=0.03, w_max=1.0, w_min=-1.0, w_max_dtod=0.0, w_min_dtod=0.0))
    cp = draw_crosspoints(model, (N,), key=jax.random.key(7))
    where = jnp.arange(N) % 2 == 0
    out = reset_states(model, cp, jnp.full((N,), -0.5), where, key=jax.random.key(8))
    assert float(jnp.mean(out[::2])) == pytest.approx(0.2, abs=5 * 0.03 / np.sqrt(N / 2))
    assert float(jnp.std(out[::2])) == pytest.approx(0.03, rel=0.02)
    assert bool(jnp.all(out[1::2] == -0.5))


def test_linear_step_slopes_spread_per_device():
    model = LinearStep(PulsedParams(), gamma_up=0.3, gamma_down=0.2, gamma_up_dtod=0.05, gamma_down_dtod=0.1)
    cp = draw_crosspoints(model, (N,), key=jax.random.key(9))
    assert float(jnp.std(cp.shape_up)) == pytest.approx(0.05, rel=0.02)
    # the magnitude of N(0.2, 0.1): a folded normal, mean mu (1 - 2 Phi(-mu/s)) + 2 s phi(mu/s)
    mu, s = 0.2, 0.1
    folded = mu * (1 - 2 * 0.5 * (1 + float(jax.scipy.special.erf(-mu / s / 2**0.5)))) + 2 * s * np.exp(-2) / np.sqrt(
        2 * np.pi
    )
    assert float(jnp.mean(cp.shape_down)) == pytest.approx(folded, abs=5 * s / np.sqrt(N))


def test_reference_device_reads_zero_at_the_symmetry_point():
    """subtract_symmetry_point: the reference is each device's symmetry point (plus reference_std)."""
    pulsed = PulsedParams(dw_min=0.01, up_down=0.3, up_down_dtod=0.1, mult_noise=0.0)
    model = SoftBoundsReference(pulsed, subtract_symmetry_point=1.0)
    draws = standard_draws((1000,), key=jax.random.key(10), extra=needed_draws(model))
    cp = crosspoints(model, draws)
    ref = model.device_reference(cp, draws)
    np.testing.assert_allclose(model.step_up(cp, ref), model.step_down(cp, ref), rtol=1e-4, atol=1e-9)
    noisy = SoftBoundsReference(pulsed, subtract_symmetry_point=1.0, reference_std=0.05)
    draws = standard_draws((N,), key=jax.random.key(10), extra=needed_draws(noisy))
    cp = crosspoints(noisy, draws)
    sp = SoftBoundsReference(pulsed, subtract_symmetry_point=1.0).device_reference(cp, draws)
    assert float(jnp.std(noisy.device_reference(cp, draws) - sp)) == pytest.approx(0.05, rel=0.01)


def test_layer_reads_the_write_noise_and_redraws_it_where_written():
    from analogsim.layers import AnalogLinear

    card = load_card("reram-sb")  # write_noise_std 56 x dw_min 0.002
    layer = AnalogLinear(300, 400, device=card, rngs=nnx.Rngs(0))
    noise = layer.write_noise.get_value()
    assert noise.shape == (400, 300)
    assert float(jnp.std(noise)) == pytest.approx(56 * 0.002, rel=0.01)
    w = layer.weight.get_value()
    touched = jnp.where(jnp.arange(300) < 150, 1.0, 0.0)[None, :] * jnp.ones((400, 1))
    layer.settle(layer.crosspoints(), w, w, touched, key=jax.random.key(1))
    after = layer.write_noise.get_value()
    assert bool(jnp.all(after[:, 150:] == noise[:, 150:]))
    assert float(jnp.mean(after[:, :150] == noise[:, :150])) < 0.01
    clean = AnalogLinear(30, 40, device="soft-bounds", rngs=nnx.Rngs(0))
    assert clean.write_noise.get_value().shape == ()


CARD = """
name = "t"
model = "soft-bounds"
[parameters]
{entries}
"""


def entry(field, value):
    return f'{field} = {{ value = {value}, unit = "1", provenance = "assumed", source = "test" }}\n'


def card_text(**extra):
    base = dict(dw_min=0.001, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.0, up_down_dtod=0.01, w_max=0.6, w_min=-0.6)
    base |= dict(w_max_dtod=0.3, w_min_dtod=0.3) | extra
    return CARD.format(entries="".join(entry(k, v) for k, v in base.items()))


def test_cards_take_aihwkit_booleans_and_optional_fields():
    model = parse_card(card_text(mult_noise="false", write_noise_std=3.0)).model
    assert float(model.pulsed.mult_noise) == 0.0 and float(model.pulsed.write_noise_std) == 3.0
    assert float(parse_card(card_text()).model.pulsed.mult_noise) == 1.0  # aihwkit's SoftBoundsDevice default
    with pytest.raises(CardError, match=r"parameters.mult_noise.*true or false"):
        parse_card(card_text(mult_noise=2))
    with pytest.raises(CardError, match=r"parameters.lifetime.*>= 0"):
        parse_card(card_text(lifetime=-1))


def test_pulse_responses_match_aihwkit_presets():
    """2,000 devices per aihwkit preset: mean and std of the fraction of the range within 0.02 of
    aihwkit 1.1.0's, at every pulse (results/crosscheck/aihwkit_response.json, made by
    experiments/crosscheck/aihwkit_response.py)."""
    import sys

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "experiments" / "crosscheck"))
    from response_compare import compare

    reference = json.loads((root / "results" / "crosscheck" / "aihwkit_response.json").read_text())
    rows = compare(reference)
    assert set(rows) >= {"ReRamSBPresetDevice", "ReRamESPresetDevice", "PCMPresetDevice", "ReRamArrayOMPresetDevice"}
    off = {k: (r["max_abs_diff_mean"], r["max_abs_diff_std"]) for k, r in rows.items() if not r["within_tolerance"]}
    assert not off, off
