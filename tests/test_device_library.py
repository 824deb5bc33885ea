"""The aihwkit step-model library: linear, exponential, power and piecewise steps, and their cards.

Closed forms are written out here in NumPy (float64), independently of the models' code, from
DESIGN.md's equations (and aihwkit's ``PiecewiseStepDevice`` for the table interpolation).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from device_models import (
    BUILTIN_CARDS,
    MODELS,
    CardError,
    ConstantStep,
    ExpStep,
    LinearStep,
    PiecewiseStep,
    PowStep,
    PulsedParams,
    SoftBounds,
    SoftBoundsReference,
    apply_pulses,
    draw_crosspoints,
    expected_step,
    load_card,
    nominal_crosspoints,
)

SHAPE = (64, 48)
COMMON = dict(dw_min=0.01, dw_min_dtod=0.3, dw_min_std=0.3, up_down=0.2, up_down_dtod=0.05)

# Non-default parameters for each new model (aihwkit preset values where there is one).
CASES = {
    "linear-step": LinearStep(
        PulsedParams(**COMMON, w_max=1.1714, w_min=-0.8286, w_max_dtod=0.05, w_min_dtod=0.05),
        gamma_up=0.4152,
        gamma_down=0.7342,
    ),
    "exp-step": ExpStep(
        PulsedParams(**COMMON, w_max=1.0, w_min=-1.0, w_max_dtod=0.3, w_min_dtod=0.3),
        A_up=-1.18445,
        A_down=-0.081404,
        gamma_up=5.0,
        gamma_down=5.0,
        a=-0.5,
        b=-0.5,
    ),
    "exp-step-defaults": ExpStep(PulsedParams(**COMMON, w_max=0.6, w_min=-0.6)),
    "pow-step": PowStep(PulsedParams(**COMMON, w_max=0.8, w_min=-0.5), gamma_up=2.0, gamma_down=0.5),
    "piecewise-step": PiecewiseStep(
        PulsedParams(**COMMON, w_max=0.7, w_min=-0.9),
        piecewise_up=(1.5, 1.0, 0.5, 0.25),
        piecewise_down=(0.2, 0.6, 1.4),
    ),
}


def closed_form(model, cp, w):
    """(up, down) step magnitudes of DESIGN.md's equations, in float64 NumPy."""
    s_up, s_dn = np.float64(cp.scale_up), np.float64(cp.scale_down)
    b_max, b_min = np.float64(cp.b_max), np.float64(cp.b_min)
    w = np.asarray(w, np.float64)
    if isinstance(model, LinearStep):  # nominal bounds (aihwkit mean_bound_reference), own slopes
        p = model.pulsed
        g_up, g_dn = np.float64(cp.shape_up), np.float64(cp.shape_down)  # |gamma + gamma_dtod xi|
        up = s_up * np.maximum(1 - g_up * w / p.w_max, 0)
        down = s_dn * np.maximum(1 - g_dn * w / p.w_min, 0)
    elif isinstance(model, ExpStep):
        z = 2 * model.a * w / (b_max - b_min) + model.b
        up = s_up * np.maximum(1 - model.A_up * np.exp(model.gamma_up * z), 0)
        down = s_dn * np.maximum(1 - model.A_down * np.exp(-model.gamma_down * z), 0)
    elif isinstance(model, PowStep):
        omega = (b_max - w) / (b_max - b_min)
        g_up, g_dn = np.float64(cp.shape_up), np.float64(cp.shape_down)  # own exponents (pow_gamma_dtod)
        up = s_up * omega**g_up
        down = s_dn * (1 - omega) ** g_dn
    elif isinstance(model, PiecewiseStep):
        x = (w - b_min) / (b_max - b_min)  # nodes equally spaced over each cross-point's [b_min, b_max]

        def interp(table):
            nodes = np.linspace(0.0, 1.0, len(table))
            return np.vectorize(lambda xi: np.interp(xi, nodes, table))(x)

        up = s_up * interp(model.piecewise_up)
        down = s_dn * interp(model.piecewise_down)
    else:
        raise AssertionError(type(model))
    return up, down


def states_inside(cp, key):
    return jax.random.uniform(key, cp.b_max.shape, minval=cp.b_min, maxval=cp.b_max)


@pytest.mark.parametrize("case", sorted(CASES))
def test_noise_free_step_equals_closed_form_at_random_states(case):
    """Per cross-point (own scales and bounds), all over the range: rtol 1e-5 (float32)."""
    model = CASES[case]
    k_dev, k_w = jax.random.split(jax.random.key(11))
    cp = draw_crosspoints(model, SHAPE, key=k_dev)
    w = states_inside(cp, k_w)
    up = expected_step(model, cp, w, jnp.ones(SHAPE, jnp.int8))
    down = -expected_step(model, cp, w, -jnp.ones(SHAPE, jnp.int8))
    want_up, want_down = closed_form(model, cp, w)
    # atol 1e-5 of dw_min: float32 cancellation in 1 - A exp(gamma z) where the exp-step factor vanishes
    np.testing.assert_allclose(np.asarray(up), want_up, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(down), want_down, rtol=1e-5, atol=1e-7)
    assert bool(jnp.all(up >= 0)) and bool(jnp.all(down >= 0))
    # The closed forms are not all the constant step: the state matters.
    moving = np.asarray(cp.scale_up) > 0
    assert float(np.std(want_up[moving] / np.asarray(cp.scale_up)[moving])) > 1e-3


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("up", [True, False])
def test_noisy_step_mean_and_spread(case, up):
    """One pulse on 100,000 identical cross-points at w = 0.1: mean within 5 standard errors of
    the closed form, std = dw_min_std * |mean| within 2%."""
    n = 100_000
    model = CASES[case]
    cp = nominal_crosspoints(model, (n,))
    w0 = jnp.full((n,), 0.1)
    pulses = jnp.full((n,), 1 if up else -1, jnp.int8)
    dw = np.asarray(apply_pulses(model, cp, w0, pulses, key=jax.random.key(12)) - w0, np.float64)
    want_up, want_down = closed_form(model, cp, w0)
    expect = want_up[0] if up else -want_down[0]
    se = 0.3 * abs(expect) / math.sqrt(n)
    assert dw.mean() == pytest.approx(expect, abs=5 * se)
    assert dw.std() == pytest.approx(0.3 * abs(expect), rel=0.02)


@pytest.mark.parametrize("case", sorted(CASES))
def test_pulse_train_follows_the_iterated_closed_form(case):
    """60 up then 40 down noise-free pulses from w = -0.2 on drawn cross-points: the whole
    trajectory equals the float64 iteration of the closed form (with clipping), to 1e-4 relative."""
    model = CASES[case]
    cp = draw_crosspoints(model, (8, 8), key=jax.random.key(13))
    w = jnp.clip(jnp.full((8, 8), -0.2), cp.b_min, cp.b_max)
    ref = np.asarray(w, np.float64)
    lo, hi = np.float64(cp.b_min), np.float64(cp.b_max)
    pulse = jax.jit(lambda w, sign: apply_pulses(model, cp, w, jnp.full((8, 8), sign, jnp.int8), key=None))
    for sign in [1] * 60 + [-1] * 40:
        w = pulse(w, sign)
        up, down = closed_form(model, cp, ref)
        ref = np.clip(ref + (up if sign > 0 else -down), lo, hi)
        np.testing.assert_allclose(np.asarray(w), ref, rtol=1e-4, atol=1e-6)


def _response(model, w0, n_up, n_down):
    """Noise-free state after ``n_up`` up then ``n_down`` down pulses on a nominal cross-point."""
    cp = nominal_crosspoints(model, (1,), dtype=jnp.float64)
    signs = jnp.array([1] * n_up + [-1] * n_down, jnp.int8)[:, None]
    one = lambda w, sign: (apply_pulses(model, cp, w, sign, key=None), None)
    w, _ = jax.lax.scan(one, jnp.full((1,), w0, jnp.float64), signs)
    return w[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_pulse_response_gradients_wrt_parameters(case):
    """``check_grads`` (forward and reverse, first order, float64) of the noise-free response
    with respect to every parameter of the model (common and model-specific), away from the
    bounds and the max(., 0) kinks."""
    with jax.enable_x64(True):
        model = jax.tree.map(lambda v: jnp.asarray(v, jnp.float64), CASES[case])
        model = dataclasses.replace(model, pulsed=dataclasses.replace(model.pulsed, dw_min=0.02))
        f = jax.jit(lambda m: _response(m, 0.05, 6, 3))  # stays well inside the bounds
        final = float(f(model))
        assert -0.4 < final < 0.5
        check_grads(f, (model,), order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6, rtol=1e-5)
        grads = jax.grad(f)(model)
        specific = [getattr(grads, k) for k in type(model).parameter_rules]
        # the model-specific parameters do move the response
        assert any(float(jnp.max(jnp.abs(jnp.asarray(g)))) > 1e-6 for g in jax.tree_util.tree_leaves(specific))


def test_pow_step_is_safe_where_omega_is_zero():
    """At w = b_max the up step is 0 and its gradients (w.r.t. gamma and w) are finite."""
    model = PowStep(PulsedParams(dw_min=0.01), gamma_up=0.5, gamma_down=0.0)
    cp = nominal_crosspoints(model, (1,))

    def up_at(gamma, w):
        return dataclasses.replace(model, gamma_up=gamma).step_up(cp, w)[0]

    w = jnp.full((1,), 0.6)
    assert float(up_at(0.5, w)) == 0.0
    g_gamma, g_w = jax.grad(up_at, argnums=(0, 1))(0.5, w)
    assert np.isfinite(float(g_gamma)) and bool(jnp.all(jnp.isfinite(g_w)))
    # gamma = 0: 0 ** 0 = 1 (the down step at w = b_min is then the full step)
    down = model.step_down(cp, jnp.full((1,), -0.6))
    assert float(down[0]) == pytest.approx(0.01)


def test_edge_cases_stay_finite():
    """Collapsed bounds, huge exponents, zero nominal bounds: finite steps and gradients."""
    cp = nominal_crosspoints(ConstantStep(), (3,))
    collapsed = dataclasses.replace(cp, b_max=jnp.zeros(3), b_min=jnp.zeros(3))
    w = jnp.array([-0.5, 0.0, 0.5])
    models = [
        ExpStep(gamma_up=500.0, gamma_down=500.0, A_up=-1.0),
        PowStep(gamma_up=0.3, gamma_down=0.3),
        PiecewiseStep(piecewise_up=(1.0, 2.0), piecewise_down=(2.0, 1.0)),
        LinearStep(PulsedParams(w_max=0.0, w_min=0.0), gamma_up=0.5, gamma_down=0.5),
    ]
    for model in models:
        for points in (cp, collapsed):
            for step in (model.step_up, model.step_down):
                value = step(points, w)
                grad = jax.grad(lambda m, s=step.__name__, c=points: jnp.sum(getattr(m, s)(c, w)))(model)
                assert bool(jnp.all(jnp.isfinite(value))) and bool(jnp.all(value >= 0))
                assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grad))
    # collapsed bounds: exp and pow steps do not move (aihwkit skips the update), piecewise uses v_0
    assert float(jnp.max(ExpStep().step_up(collapsed, w))) == 0.0
    assert float(jnp.max(PowStep().step_down(collapsed, w))) == 0.0
    np.testing.assert_allclose(models[2].step_up(collapsed, w), 0.001 * 1.0)


def test_vmap_over_model_specific_parameters():
    gammas = jnp.array([0.0, 1.0, 2.0])
    models = PowStep(PulsedParams(dw_min=0.01, w_max=1.0, w_min=-1.0), gamma_up=gammas, gamma_down=gammas)
    models = jax.tree.map(lambda v: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (3,)), models)
    w = jnp.full((4,), 0.5)  # omega = 0.25
    out = jax.vmap(lambda m: m.step_up(nominal_crosspoints(m, (4,)), w))(models)
    np.testing.assert_allclose(out[:, 0], 0.01 * 0.25 ** np.array([0.0, 1.0, 2.0]), rtol=1e-6)
    pulsed = jax.tree.map(lambda v: jnp.full((2,), v, jnp.float32), PulsedParams())
    tables = PiecewiseStep(pulsed, piecewise_up=jnp.array([[1.0, 3.0], [2.0, 2.0]]), piecewise_down=jnp.ones((2, 1)))
    out = jax.vmap(lambda m: m.step_up(nominal_crosspoints(m, (1,)), jnp.zeros((1,))))(tables)
    np.testing.assert_allclose(out[:, 0], [0.002, 0.002], rtol=1e-6)  # mid-range: (1 + 3) / 2 and 2


def test_parameter_rules_name_every_model_specific_field():
    for name, cls in MODELS.items():
        fields = {f.name for f in dataclasses.fields(cls)} - {"pulsed"}
        assert set(cls.parameter_rules) == fields, name
        default = cls()
        for field, rule in cls.parameter_rules.items():
            value = getattr(default, field)
            values = value if rule.table else (value,)
            assert all(rule.check(float(v)) for v in values), (name, field)


# --- cards -------------------------------------------------------------------------------

EXPECTED_BUILTINS = {
    "constant-step": (ConstantStep, {}),
    "soft-bounds": (SoftBounds, {}),
    "linear-step": (LinearStep, {"gamma_up": 0.0, "gamma_down": 0.0}),
    "exp-step": (
        ExpStep,
        {"A_up": 0.00081, "A_down": 0.36833, "gamma_up": 12.44625, "gamma_down": 12.78785, "a": 0.244, "b": 0.2425},
    ),
    "pow-step": (PowStep, {"gamma_up": 1.0, "gamma_down": 1.0}),
    "ecram-tang2018": (
        LinearStep,
        {"dw_min": 0.002, "w_max": 1.1724, "w_min": -0.8276, "gamma_up": 0.1153, "gamma_down": 0.5085},
    ),
    "ecram-mo-kim2019": (
        LinearStep,
        {"dw_min": 2.8214e-4, "dw_min_std": 2.0, "w_max": 1.1714, "w_min": -0.8286, "gamma_up": 0.4152},
    ),
    "reram-es-gong2018": (
        ExpStep,
        {"dw_min": 0.00135, "up_down": 0.259359, "dw_min_std": 5.0, "A_up": -1.18445, "A_down": -0.081404, "a": -0.5},
    ),
    "reram-sb": (
        SoftBoundsReference,
        {
            "dw_min": 0.002,
            "w_max": 1.25,
            "w_min": -0.75,
            "w_max_dtod": 0.3 / 1.25,
            "w_min_dtod": 0.3 / 0.75,
            "mult_noise": 0.0,
            "write_noise_std": 56.0,
            "dw_min_std": 3.75,
        },
    ),
    "capacitor-li2018": (LinearStep, {"dw_min": 0.005, "up_down_dtod": 0.06, "w_max_dtod": 0.07, "gamma_up": 0.05}),
    "idealized": (ConstantStep, {"dw_min": 0.0002, "up_down_dtod": 0.0, "w_max": 1.0}),
    "gokmen-vlasov-2016": (ConstantStep, {"dw_min": 0.0016, "up_down_dtod": 0.01, "w_min": -1.0}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_BUILTINS))
def test_builtin_card_loads_with_aihwkit_numbers(name):
    assert name in BUILTIN_CARDS
    card = load_card(name)
    cls, values = EXPECTED_BUILTINS[name]
    assert card.name == name and type(card.model) is cls
    for field, value in values.items():
        got = getattr(card.model, field) if field in cls.parameter_rules else getattr(card.model.pulsed, field)
        assert got == value, field
    for key, (prov, src) in card.provenance.items():
        assert prov in ("measured", "fitted", "assumed") and src.strip(), key
        if name not in ("wo3-psg-onen2022", "wo3-protonic-yao2020", "enode-lut"):
            assert "aihwkit" in src, key
    hash(card.model)  # analogsim keeps models as static (hashable) module attributes


def test_every_builtin_card_loads():
    for name in BUILTIN_CARDS:
        assert load_card(name).name == name


COMMON_TOML = dataclasses.asdict(PulsedParams())  # aihwkit's PulsedDevice defaults
SPECIFIC_TOML = {
    "linear-step": dict(gamma_up="0.1", gamma_down="0.5"),
    "exp-step": dict(A_up="-1.18", A_down="0.37", gamma_up="5.0", gamma_down="5.0", a="-0.5", b="0.25"),
    "pow-step": dict(gamma_up="2.0", gamma_down="0.5"),
    "piecewise-step": dict(piecewise_up="[1.5, 1.0, 0.5]", piecewise_down="[0.5, 1, 1.5, 2]"),
}


def card_text(model, specific=None, skip=(), unit='"1"'):
    specific = {**SPECIFIC_TOML[model], **(specific or {})}
    lines = [f'name = "mine"\nmodel = "{model}"\n']
    for k, v in {**COMMON_TOML, **specific}.items():
        if k in skip:
            continue
        lines += [
            f"[parameters.{k}]",
            f"value = {v}",
            f"unit = {unit}",
            'provenance = "assumed"',
            'source = "test"',
            "",
        ]
    return "\n".join(lines)


def write(tmp_path, text):
    path = tmp_path / "card.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("model", sorted(SPECIFIC_TOML))
def test_model_specific_fields_load(tmp_path, model):
    card = load_card(write(tmp_path, card_text(model)))
    assert card.model_name == model
    for field, rule in MODELS[model].parameter_rules.items():
        if not rule.optional:  # optional fields the card leaves out take the class default
            assert card.provenance[f"parameters.{field}"] == ("assumed", "test")
    if model == "piecewise-step":
        assert card.model.piecewise_up == (1.5, 1.0, 0.5)
        assert card.model.piecewise_down == (0.5, 1.0, 1.5, 2.0)
    if model == "exp-step":
        assert (card.model.A_up, card.model.b) == (-1.18, 0.25)
    hash(card.model)


BAD_SPECIFIC = {
    "missing gamma": ("linear-step", {}, ("gamma_down",), "parameters.gamma_down", "needs it"),
    "negative gamma": ("linear-step", {"gamma_up": "-0.1"}, (), "parameters.gamma_up", "-0.1"),
    "negative pow exponent": ("pow-step", {"gamma_down": "-2.0"}, (), "parameters.gamma_down", "-2.0"),
    "nan amplitude": ("exp-step", {"A_up": "nan"}, (), "parameters.A_up.value", "nan"),
    "infinite offset": ("exp-step", {"b": "inf"}, (), "parameters.b.value", "inf"),
    "string slope": ("exp-step", {"a": '"steep"'}, (), "parameters.a.value", "steep"),
    "array for a scalar": ("pow-step", {"gamma_up": "[1.0]"}, (), "parameters.gamma_up.value", "[1.0]"),
    "missing exp rate": ("exp-step", {}, ("gamma_up",), "parameters.gamma_up", "needs it"),
    "empty table": ("piecewise-step", {"piecewise_up": "[]"}, (), "parameters.piecewise_up.value", "[]"),
    "negative table entry": (
        "piecewise-step",
        {"piecewise_down": "[1.0, -0.5]"},
        (),
        "parameters.piecewise_down.value",
        "-0.5",
    ),
    "nan table entry": ("piecewise-step", {"piecewise_up": "[1.0, nan]"}, (), "parameters.piecewise_up.value", "nan"),
    "string table entry": ("piecewise-step", {"piecewise_up": '[1.0, "x"]'}, (), "parameters.piecewise_up.value", "x"),
    "scalar for a table": ("piecewise-step", {"piecewise_up": "1.0"}, (), "parameters.piecewise_up.value", "1.0"),
    "missing table": ("piecewise-step", {}, ("piecewise_down",), "parameters.piecewise_down", "needs it"),
    "parameter of another model": ("linear-step", {"A_up": "0.1"}, (), "A_up", "allowed"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECIFIC))
def test_bad_model_specific_fields_give_one_line_errors(tmp_path, case):
    model, specific, skip, field, value = BAD_SPECIFIC[case]
    path = write(tmp_path, card_text(model, specific, skip))
    with pytest.raises(CardError) as err:
        load_card(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert str(path) in msg and field in msg and value in msg


def test_model_specific_fields_need_unit_1(tmp_path):
    text = card_text("pow-step").replace(
        '[parameters.gamma_up]\nvalue = 2.0\nunit = "1"', '[parameters.gamma_up]\nvalue = 2.0\nunit = "uS"'
    )
    path = write(tmp_path, text)
    with pytest.raises(CardError, match=r"parameters\.gamma_up\.unit.*'uS'.*allowed: 1") as err:
        load_card(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_symmetry_point_where_up_and_down_steps_balance():
    import jax.numpy as jnp

    from device_models import ExpStep, PulsedParams, SoftBounds, nominal_crosspoints, symmetry_point

    # soft bounds +-0.6 with the down step (1 - u) times the up step: w* = 0.6 u / (2 - u)
    for u in (0.0, 0.2, 0.5):
        model = SoftBounds(PulsedParams(up_down=u))
        sp = symmetry_point(model, nominal_crosspoints(model, (3,)))
        np.testing.assert_allclose(sp, 0.6 * u / (2 - u), atol=1e-6)
    # a constant step has no single symmetry point: 0
    model = ConstantStep(PulsedParams(up_down=0.3))
    np.testing.assert_array_equal(symmetry_point(model, nominal_crosspoints(model, (2,))), 0.0)
    # any saturating model: the steps are equal there
    model = ExpStep(PulsedParams(up_down=0.3))
    cp = nominal_crosspoints(model, (1,))
    sp = symmetry_point(model, cp)
    assert float(jnp.abs(sp[0])) > 0.01
    np.testing.assert_allclose(model.step_up(cp, sp), model.step_down(cp, sp), rtol=1e-4)
