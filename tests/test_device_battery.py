"""The device battery (STYLE.md 13): every registered model through the same checks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from device_models import MODELS, CrossPoints, PulsedParams, apply_pulses, draw_crosspoints, nominal_crosspoints

ALL_MODELS = sorted(MODELS)
SHAPE = (16, 24)


def make(name, **overrides):
    return MODELS[name](pulsed=PulsedParams(**overrides))


def random_pulses(key, shape):
    return jax.random.randint(key, shape, -1, 2).astype(jnp.int8)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_jit_and_no_recompile(name):
    model = make(name)
    cp = draw_crosspoints(model, SHAPE, key=jax.random.key(0))
    traces = []

    @jax.jit
    def f(cp, w, p, key):
        traces.append(1)
        return apply_pulses(model, cp, w, p, key=key)

    w = jnp.zeros(SHAPE)
    k1, k2, k3, k4 = jax.random.split(jax.random.key(1), 4)
    a = f(cp, w, random_pulses(k1, SHAPE), k2)
    b = f(cp, a, random_pulses(k3, SHAPE), k4)
    assert len(traces) == 1
    assert a.shape == b.shape == SHAPE


@pytest.mark.parametrize("name", ALL_MODELS)
def test_vmap_over_device_parameter_sets(name):
    dw = jnp.array([0.001, 0.01, 0.1])
    models = make(name, dw_min=dw, dw_min_std=0.0)
    models = jax.tree.map(lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (3,)), models)

    def one(model):
        cp = nominal_crosspoints(model, SHAPE)
        return apply_pulses(model, cp, jnp.zeros(SHAPE), jnp.ones(SHAPE, jnp.int8), key=None)

    out = jax.vmap(one)(models)
    assert out.shape == (3, *SHAPE)
    # At w = 0 each parameter set steps by its own closed-form step (dw_min for most models).
    expect = [float(closed_form_step(name, nominal_crosspoints(make(name, dw_min=d), (1,)), 0.0, True)[0]) for d in dw]
    np.testing.assert_allclose(out[:, 0, 0], expect, rtol=1e-6)


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_bounds_and_dtype(name, dtype):
    model = make(name, dw_min=0.2)  # big steps: the bounds are hit within a few pulses
    cp = draw_crosspoints(model, SHAPE, key=jax.random.key(2), dtype=dtype)
    w = jnp.zeros(SHAPE, dtype)
    key = jax.random.key(3)
    for i in range(40):
        kp, kn = jax.random.split(jax.random.fold_in(key, i))
        w = apply_pulses(model, cp, w, random_pulses(kp, SHAPE) if i % 2 else jnp.ones(SHAPE, jnp.int8), key=kn)
        assert w.dtype == dtype
        assert bool(jnp.all(w <= cp.b_max)) and bool(jnp.all(w >= cp.b_min))
        assert bool(jnp.all(jnp.isfinite(w)))


@pytest.mark.parametrize("name", ALL_MODELS)
def test_no_pulse_leaves_state_bit_identical(name):
    model = make(name)
    cp = draw_crosspoints(model, SHAPE, key=jax.random.key(4))
    w = jax.random.uniform(jax.random.key(5), SHAPE, minval=-0.3, maxval=0.3)
    out = apply_pulses(model, cp, w, jnp.zeros(SHAPE, jnp.int8), key=jax.random.key(6))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(w))


def closed_form_step(name, cp: CrossPoints, w, up: bool):
    """DESIGN.md's step at ``w`` for the model's default parameters (signed: down is negative)."""
    if name in ("constant-step", "linear-step", "piecewise-step", "lookup-table"):
        # linear-step defaults gamma_up = gamma_down = 0; piecewise-step and lookup-table default to tables of 1
        return cp.scale_up if up else -cp.scale_down
    if name in ("soft-bounds", "soft-bounds-reference", "protonic"):
        # protonic defaults: operating pulse = reference pulse (multiplier 1), saturation exponents 1
        return cp.scale_up * (1 - w / cp.b_max) if up else -cp.scale_down * (1 - w / cp.b_min)
    if name == "exp-step":  # aihwkit ExpStepDevice defaults
        z = 2 * 0.244 * w / (cp.b_max - cp.b_min) + 0.2425
        if up:
            return cp.scale_up * jnp.maximum(1 - 0.00081 * jnp.exp(12.44625 * z), 0)
        return -cp.scale_down * jnp.maximum(1 - 0.36833 * jnp.exp(-12.78785 * z), 0)
    if name == "pow-step":  # gamma_up = gamma_down = 1
        omega = (cp.b_max - w) / (cp.b_max - cp.b_min)
        return cp.scale_up * omega if up else -cp.scale_down * (1 - omega)
    raise AssertionError(f"add the closed form of {name} to the battery")


@pytest.mark.parametrize("name", ALL_MODELS)
@pytest.mark.parametrize("up", [True, False])
def test_step_mean_and_spread_match_closed_form(name, up):
    """One pulse on many identical cross-points: mean = closed form, std = dw_min_std * mean."""
    n = 200_000
    model = make(name, dw_min=0.01, up_down=0.2, dw_min_std=0.3, w_max=1.0, w_min=-1.0)
    cp = nominal_crosspoints(model, (n,))
    w0 = jnp.full((n,), 0.25)
    pulses = jnp.full((n,), 1 if up else -1, jnp.int8)
    dw = apply_pulses(model, cp, w0, pulses, key=jax.random.key(7)) - w0
    expect = float(closed_form_step(name, cp, w0, up)[0])
    # up_down = 0.2 > 0: up step = dw_min, down step = dw_min * (1 - 0.2)
    nominal = 0.01 if up else -0.008
    if name in (
        "soft-bounds",
        "soft-bounds-reference",
        "protonic",
    ):  # protonic defaults saturate like soft bounds (nu = 1)
        nominal *= (1 - 0.25 / 1.0) if up else (1 - 0.25 / -1.0)
    if name == "pow-step":  # omega = (1 - 0.25) / 2
        nominal *= 0.375 if up else 0.625
    if name == "exp-step":  # z = 2 * 0.244 * 0.25 / 2 + 0.2425 = 0.3035
        nominal *= 0.964599857566234 if up else 0.9924021386948781
    assert expect == pytest.approx(nominal, rel=1e-6)
    se = 0.3 * abs(expect) / np.sqrt(n)
    assert float(jnp.mean(dw)) == pytest.approx(expect, abs=5 * se)
    assert float(jnp.std(dw)) == pytest.approx(0.3 * abs(expect), rel=0.01)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_device_to_device_draws_follow_the_card(name):
    p = dict(dw_min=0.001, dw_min_dtod=0.3, up_down=0.0, up_down_dtod=0.0, w_max=0.6, w_max_dtod=0.1)
    model = make(name, **p)
    cp = draw_crosspoints(model, (400, 500), key=jax.random.key(8))
    assert float(jnp.mean(cp.scale_up)) == pytest.approx(0.001, rel=0.01)
    assert float(jnp.std(cp.scale_up) / jnp.mean(cp.scale_up)) == pytest.approx(0.3, rel=0.02)
    assert float(jnp.std(cp.b_max)) == pytest.approx(0.06, rel=0.02)
    # up_down_dtod = 0: up and down scales are identical per cross-point
    np.testing.assert_allclose(cp.scale_up, cp.scale_down)


def test_soft_bounds_saturates_at_its_bound():
    model = make("soft-bounds", dw_min=0.05, dw_min_std=0.0)
    cp = nominal_crosspoints(model, (1,))
    w = jnp.zeros((1,))
    for _ in range(400):
        w = apply_pulses(model, cp, w, jnp.ones((1,), jnp.int8), key=None)
    # The noise-free soft-bounds approach w_max geometrically: (1 - dw/w_max)^n.
    expect = 0.6 * (1 - (1 - 0.05 / 0.6) ** 400)
    assert float(w[0]) == pytest.approx(expect, rel=1e-4)


def test_models_are_frozen_pytrees():
    for name in ALL_MODELS:
        model = make(name)
        leaves = jax.tree_util.tree_leaves(model)
        # the common parameters plus the leaves of the model-specific ones (tables: one per entry)
        own = sum(len(jax.tree_util.tree_leaves(getattr(model, f))) for f in type(model).parameter_rules)
        assert len(leaves) == len(dataclasses.fields(PulsedParams)) + own
        with pytest.raises(dataclasses.FrozenInstanceError):
            model.pulsed = PulsedParams()  # type: ignore[misc]
