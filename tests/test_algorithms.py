"""Update rules (analogsim.algorithms): one shared battery over every rule, then each rule's
own arithmetic checked by hand on noise-free devices."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from analogsim import MLP, IOParameters, UpdateParameters, make_train_step, pulsed_update
from analogsim.algorithms import (
    AGAD,
    ALGORITHMS,
    SGD,
    ChoppedTTv2,
    MixedPrecision,
    TikiTaka,
    TTv2,
    apply_counts,
    make_rule,
)
from analogsim.training import ConfigError, TrainConfig
from device_models import ConstantStep, CrossPointDraws, PulsedParams, draw_crosspoints, nominal_crosspoints

PERFECT = IOParameters(is_perfect=True)
# A noise-free constant-step device: every pulse moves the weight by exactly dw_min.
CLEAN = ConstantStep(
    PulsedParams(dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0)
)


def _tiny_problem(key):
    """A linearly separable 3-class problem with 8 features, 48 samples."""
    k_x, k_w = jax.random.split(key)
    x = jax.random.uniform(k_x, (48, 8), minval=-1.0, maxval=1.0)
    y = jnp.argmax(x @ jax.random.normal(k_w, (8, 3)), axis=-1)
    return x, y


def _loss(graphdef, state, x, y):
    m = nnx.merge(graphdef, state.params, state.analog, state.rest)
    return float(optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean())


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_battery_every_rule(name):
    """jit without recompiling, a stable typed state, and a lower loss after a few steps."""
    rule = make_rule(name)
    x, y = _tiny_problem(jax.random.key(0))
    # aihwkit's constant-step defaults but 10x coarser steps, so a few steps show learning
    device = ConstantStep(PulsedParams(dw_min=0.01))
    model = MLP((8, 3), device=device, algorithm=rule, rngs=nnx.Rngs(1))
    # the layer keeps the rule as a static attribute and its state in a RuleState variable
    layer = model.layers[0]
    assert layer.algorithm == rule
    graphdef, state, step = make_train_step(model, optax.sgd(0.5), 0.5)
    structure = jax.tree.structure(state.rest)
    shapes = [(a.shape, a.dtype) for a in jax.tree.leaves(state.rest)]
    before = _loss(graphdef, state, x, y)
    mask = np.ones(16, np.float32)
    for i in range(30):
        idx = np.arange(16) + 16 * (i % 3)
        state, metrics = step(state, x, y, idx, mask, jax.random.key(100 + i))
    assert step._cache_size() == 1, "the step recompiled"
    assert jax.tree.structure(state.rest) == structure
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(state.rest)] == shapes
    for leaf in jax.tree.leaves((state.analog, state.rest)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert bool(jnp.all(jnp.isfinite(leaf)))
    after = _loss(graphdef, state, x, y)
    assert after < 0.9 * before, f"{name}: loss {before:.3f} -> {after:.3f}"
    # every rule fires pulses and the ledger counts them
    assert int(state.ledger["layers/0"]["pulses_up"][1]) + int(state.ledger["layers/0"]["pulses_down"][1]) > 0


def test_sgd_rule_is_the_pulsed_update():
    key = jax.random.key(3)
    k_cp, k_x, k_d, k_u = jax.random.split(key, 4)
    model = ConstantStep(PulsedParams())
    cp = draw_crosspoints(model, (5, 7), key=k_cp)
    w = jnp.zeros((5, 7))
    x = jax.random.normal(k_x, (4, 7))
    d = 0.1 * jax.random.normal(k_d, (4, 5))
    up = UpdateParameters(mode="exact")
    k_a, k_b = jax.random.split(k_u)
    k_b = jax.random.clone(k_a)
    w_rule, st, counts = SGD().update(model, cp, w, SGD().init(model, w, key=None), x, d, 0.1, up, key=k_a)
    w_ref, pulses = pulsed_update(model, cp, w, x, d, 0.1, up, key=k_b)
    np.testing.assert_array_equal(w_rule, w_ref)
    assert (int(counts.pulses_up), int(counts.pulses_down)) == (int(pulses.up), int(pulses.down))
    assert int(counts.transfer_reads) == 0


@pytest.mark.parametrize("mode", ["exact", "expected"])
def test_apply_counts_on_a_clean_device_moves_by_whole_steps(mode):
    cp = nominal_crosspoints(CLEAN, (2, 3))
    w = jnp.array([[0.0, 0.1, -0.2], [0.59, 0.0, 0.0]])
    n = jnp.array([[3, -2, 0], [5, 1, -1]])
    new, counts = apply_counts(CLEAN, cp, w, n, key=jax.random.key(0), mode=mode)
    expected = jnp.array([[0.03, 0.08, -0.2], [0.6, 0.01, -0.01]])  # 0.59 + 5 steps clips at 0.6
    np.testing.assert_allclose(new, expected, atol=1e-6)
    assert (int(counts.pulses_up), int(counts.pulses_down)) == (9, 3)


def _transfer_setup(rule, n_out=2, n_in=4):
    cp = nominal_crosspoints(CLEAN, (n_out, n_in))
    w = jnp.zeros((n_out, n_in))
    state = rule.init(CLEAN, w, key=jax.random.key(0))
    zeros = jnp.zeros((n_out, n_in))  # zero draws: every cross-point nominal, as cp
    return cp, w, state._replace(fast_draws=CrossPointDraws(zeros, zeros, zeros, zeros))


def test_tiki_taka_transfers_columns_in_turn_by_hand():
    # lr = 1, transfer_lr = 1, perfect reads: a transfer writes A's column into C with the
    # pulsed update, E[pulses] = |A| / dw_min (exact mode, BL management on)
    rule = TikiTaka(columns_per_transfer=1, transfer_io=PERFECT)
    cp, w, state = _transfer_setup(rule)
    x = jnp.zeros((1, 4))  # no gradient this step: only the transfer acts
    d = jnp.zeros((1, 2))
    state = state._replace(fast=jnp.array([[0.05, 0.0, 0.0, 0.0], [-0.03, 0.0, 0.0, 0.0]]))
    up = UpdateParameters(mode="exact")
    w1, state1, counts = rule.update(CLEAN, cp, w, state, x, d, 1.0, up, key=jax.random.key(1))
    # column 0 moves toward A's column 0 (pulse trains are stochastic: in the right direction)
    assert float(w1[0, 0]) > 0 and float(w1[1, 0]) < 0
    np.testing.assert_array_equal(w1[:, 1:], 0.0)
    assert int(state1.column) == 1 and int(state1.step) == 1 and int(counts.transfer_reads) == 1
    # the next transfer reads column 1 (all zero): nothing moves
    w2, state2, _ = rule.update(CLEAN, cp, w1, state1, x, d, 1.0, up, key=jax.random.key(2))
    np.testing.assert_array_equal(w2, w1)
    assert int(state2.column) == 2


def test_tiki_taka_transfer_every_and_gamma():
    rule = TikiTaka(columns_per_transfer=2, transfer_every=3, gamma=0.5)
    cp, w, state = _transfer_setup(rule)
    state = state._replace(fast=jnp.full((2, 4), 0.1))
    np.testing.assert_allclose(rule.read_weight(w + 0.2, state), 0.25)
    x, d = jnp.zeros((1, 4)), jnp.zeros((1, 2))
    up = UpdateParameters(mode="gaussian")  # a rung: "auto" is resolved by a layer
    transfers = []
    for i in range(7):
        _, state, counts = rule.update(CLEAN, cp, w, state, x, d, 0.1, up, key=jax.random.key(i))
        transfers.append(int(counts.transfer_reads))
    assert transfers == [2, 0, 0, 2, 0, 0, 2]
    assert int(state.column) == (3 * 2) % 4


def test_ttv2_buffer_threshold_momentum_by_hand():
    # perfect reads, lr 1, transfer_lr 1: H += A[:, k]; threshold = dw_min = 0.01;
    # n = clip(trunc(H / 0.01), -1, 1); after a transfer H keeps momentum * H.
    rule = TTv2(columns_per_transfer=4, transfer_io=PERFECT, momentum=0.1)
    cp, w, state = _transfer_setup(rule)
    fast = jnp.array([[0.004, 0.012, -0.035, 0.0], [0.0099, -0.0101, 0.0, 0.02]])
    state = state._replace(fast=fast)
    x, d = jnp.zeros((1, 4)), jnp.zeros((1, 2))
    up = UpdateParameters(mode="exact")
    w1, state1, counts = rule.update(CLEAN, cp, w, state, x, d, 1.0, up, key=jax.random.key(0))
    n = np.array([[0, 1, -1, 0], [0, -1, 0, 1]])
    np.testing.assert_allclose(w1, 0.01 * n, atol=1e-7)
    h = np.where(n != 0, 0.1 * np.asarray(fast), np.asarray(fast))
    np.testing.assert_allclose(state1.buffer, h, rtol=1e-6)
    assert (int(counts.pulses_up), int(counts.pulses_down)) == (2, 2)
    assert int(counts.transfer_reads) == 4 and int(counts.digital_ops) == 2 * 4 * 2
    # forget_buffer=False subtracts (1 - momentum) * n * threshold instead
    rule2 = dataclasses.replace(rule, buffer=dataclasses.replace(rule.buffer, forget_buffer=False))
    _, state2, _ = rule2.update(CLEAN, cp, w, state, x, d, 1.0, up, key=jax.random.key(0))
    np.testing.assert_allclose(state2.buffer, np.asarray(fast) - 0.9 * 0.01 * n, rtol=1e-5, atol=1e-8)


def test_chopped_ttv2_undoes_the_chopper_and_flips_at_the_rate_asked():
    rule = ChoppedTTv2(columns_per_transfer=4, transfer_io=PERFECT, in_chop_prob=0.0)
    cp, w, state = _transfer_setup(rule)
    # the gradient update of A sees x times the chopper ...
    chop = jnp.array([1.0, -1.0, 1.0, -1.0])
    state = state._replace(signal=state.signal._replace(chopper=chop))
    x = jnp.array([[1.0, 1.0, 1.0, 1.0]])
    d = jnp.array([[-0.02, -0.02]])  # W -= lr d x^T: A rises where the chopper is +1
    up = UpdateParameters(mode="exact")
    w1, state1, _ = rule.update(CLEAN, cp, w, state, x, d, 1.0, up, key=jax.random.key(0))
    np.testing.assert_allclose(state1.fast, 0.02 * chop[None, :] * jnp.ones((2, 1)), atol=1e-6)
    # ... and the read multiplies by it again: H = +0.02 everywhere, one up pulse on C each,
    # then the buffer is forgotten (momentum 0)
    np.testing.assert_allclose(w1, 0.01, atol=1e-7)
    np.testing.assert_array_equal(state1.buffer, 0.0)
    # flips happen per read column with probability in_chop_prob
    rule = ChoppedTTv2(columns_per_transfer=64, in_chop_prob=0.25)
    cp, w, state = _transfer_setup(rule, n_out=2, n_in=64)
    flips = 0
    x, d = jnp.zeros((1, 64)), jnp.zeros((1, 2))
    step = jax.jit(lambda state, key: rule.update(CLEAN, cp, w, state, x, d, 0.1, up, key=key)[1])
    for i in range(50):
        new = step(state, jax.random.key(i))
        flips += int(jnp.sum(new.signal.chopper != state.signal.chopper))
        state = new
    rate = flips / (50 * 64)
    assert abs(rate - 0.25) < 4 * np.sqrt(0.25 * 0.75 / (50 * 64))


@pytest.mark.slow  # (about 16 s)
def test_agad_flips_regularly_and_uses_the_period_mean_as_reference():
    rule = AGAD(columns_per_transfer=1, transfer_io=PERFECT, in_chop_prob=0.25)
    cp, w, state = _transfer_setup(rule, n_out=1, n_in=1)
    state = state._replace(fast=jnp.full((1, 1), 0.004))
    x, d = jnp.zeros((1, 1)), jnp.zeros((1, 1))
    up = UpdateParameters(mode="exact")
    signs = []
    for i in range(9):
        _, state, _ = rule.update(CLEAN, cp, w, state, x, d, 1.0, up, key=jax.random.key(i))
        signs.append(float(state.signal.chopper[0]))
    # a flip after every 4th read of the column
    first = signs[0]
    assert signs == [first] * 3 + [-first] * 4 + [first] * 2
    # A holds still, so its running mean converges to its value and the reference follows it
    assert 0.0 < float(state.signal.reference[0, 0]) <= 0.004


def test_mixed_precision_accumulates_exactly_and_sends_whole_pulses():
    rule = MixedPrecision()
    cp = nominal_crosspoints(CLEAN, (2, 3))
    w = jnp.zeros((2, 3))
    state = rule.init(CLEAN, w, key=None)
    x = jnp.array([[1.0, 0.5, 0.0], [0.2, 0.0, -1.0]])
    d = jnp.array([[0.013, -0.031], [0.0, 0.021]])
    lr = 1.0
    w1, state1, counts = rule.update(
        CLEAN, cp, w, state, x, d, lr, UpdateParameters(mode="exact"), key=jax.random.key(0)
    )
    chi = -lr * np.asarray(d).T @ np.asarray(x)  # [[-0.013, -0.0065, 0], [0.0268, 0.0155, 0.021]]
    n = np.array([[-1, 0, 0], [2, 1, 2]])
    np.testing.assert_array_equal(np.trunc(chi / 0.01), n)
    np.testing.assert_allclose(w1, 0.01 * n, atol=1e-6)
    np.testing.assert_allclose(state1.chi, chi - 0.01 * n, atol=1e-6)
    assert np.all(np.abs(np.asarray(state1.chi)) < 0.01)
    assert int(counts.digital_ops) == 2 * 3 * 2 + 2 * 3 * 2


def test_make_rule_parses_options_and_rejects_bad_ones():
    rule = make_rule("ttv2", {"transfer_every": "2", "momentum": "0.5", "forget_buffer": "false"})
    assert (rule.transfer_every, rule.buffer.momentum, rule.buffer.forget_buffer) == (2, 0.5, False)
    assert make_rule("chopped-ttv2", {"columns_per_transfer": "none"}).columns_per_transfer is None
    with pytest.raises(ValueError, match="option 'thres_scale' is not allowed for tiki-taka"):
        make_rule("tiki-taka", {"thres_scale": "2"})
    with pytest.raises(ValueError, match="transfer_every: value 'x' is not allowed; must be an integer"):
        make_rule("tiki-taka", {"transfer_every": "x"})
    with pytest.raises(ValueError, match=r"TTv2.momentum: value 1.5 is not allowed; must be in \[0, 1\]"):
        make_rule("ttv2", {"momentum": "1.5"})
    with pytest.raises(ValueError, match="--algorithm: value 'adam' is not allowed"):
        make_rule("adam")
    with pytest.raises(ConfigError, match="option 'bogus' is not allowed for agad"):
        TrainConfig(algorithm="agad", algo_options=(("bogus", "1"),)).validate()


def test_the_tiki_taka_family_is_one_rule_composed_of_parts():
    """TTv1, TTv2, chopped TTv2 and AGAD are one Transfer rule with other parts (no subclasses
    switched by flags); a new combination is one constructor call."""
    from analogsim.algorithms import Buffer, Chopper, Plain, RunningReference, Transfer

    rules = {r.name: r for r in (TikiTaka(), TTv2(), ChoppedTTv2(), AGAD())}
    assert all(type(r) is Transfer for r in rules.values())
    assert rules["tiki-taka"].buffer is None and rules["tiki-taka"].signal == Plain()
    assert rules["ttv2"].buffer == Buffer(momentum=0.1) and rules["ttv2"].signal == Plain()
    assert rules["chopped-ttv2"].signal == Chopper(0.1) and rules["agad"].signal == RunningReference(0.1)
    # TTv1 with choppers (no buffer): not a named rule, but it composes and trains a step
    custom = Transfer(name="chopped-ttv1", signal=Chopper(0.5), columns_per_transfer=2, transfer_io=PERFECT)
    cp, w, state = _transfer_setup(custom)
    assert state.signal.chopper.shape == (4,) and state.buffer is None
    w1, state1, counts = custom.update(
        CLEAN,
        cp,
        w,
        state,
        jnp.ones((1, 4)),
        jnp.full((1, 2), -0.02),
        1.0,
        UpdateParameters(mode="gaussian"),
        key=jax.random.key(0),
    )
    assert int(counts.transfer_reads) == 2 and int(state1.column) == 2
    with pytest.raises(ValueError, match=r"Chopper.in_chop_prob: value 2 is not allowed"):
        Chopper(2)


def test_symmetry_point_reference_reads_states_against_each_devices_symmetry_point():
    from analogsim import AnalogLinear
    from device_models import SoftBounds

    device = SoftBounds(PulsedParams(up_down=0.5, dw_min_dtod=0.0, up_down_dtod=0.0, w_max_dtod=0.0, w_min_dtod=0.0))
    # 16 inputs: initial weights within +-0.25, so w + 0.2 stays inside the bound 0.6
    zero = AnalogLinear(16, 3, device=device, forward_io=PERFECT, rngs=nnx.Rngs(0))
    shifted = AnalogLinear(16, 3, device=device, forward_io=PERFECT, reference="symmetry-point", rngs=nnx.Rngs(0))
    np.testing.assert_allclose(shifted.reference.get_value(), 0.2, atol=1e-6)  # 0.6 * 0.5 / 1.5
    # same weights, stored 0.2 higher, read back the same
    np.testing.assert_allclose(shifted.weight.get_value() - 0.2, zero.weight.get_value(), atol=1e-6)
    x = jnp.ones((2, 16))
    np.testing.assert_allclose(shifted(x), zero(x), atol=1e-5)
    # the fast array of a transfer rule starts at its own symmetry point and reads as zero
    rule = TTv2(fast_reference="symmetry-point")
    state = rule.init(device, jnp.zeros((3, 4)), key=jax.random.key(0))
    np.testing.assert_allclose(state.fast, 0.2, atol=1e-6)
    np.testing.assert_allclose(state.fast - state.fast_offset, 0.0, atol=1e-7)
    with pytest.raises(ValueError, match="reference: value 'middle' is not allowed"):
        AnalogLinear(4, 3, device=device, reference="middle", rngs=nnx.Rngs(0))


def test_differential_pair_pulses_one_side_each_way_and_refreshes_saturated_pairs():
    from analogsim.algorithms import DifferentialPair

    # a noise-free one-directional device on [0, 1]: each pulse moves by exactly 0.01
    device = ConstantStep(
        PulsedParams(
            dw_min=0.01, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_min=0.0, w_max=1.0, w_max_dtod=0.0
        )
    )
    rule = DifferentialPair(refresh_threshold=0.75)
    cp = nominal_crosspoints(device, (1, 2))
    target = jnp.array([[0.3, -0.2]])
    plus = rule.program(device, cp, target)
    state = rule.init(device, target, key=jax.random.key(0))
    np.testing.assert_allclose(plus, [[0.3, 0.0]], atol=1e-7)
    np.testing.assert_allclose(state.minus, [[0.0, 0.2]], atol=1e-7)
    np.testing.assert_allclose(rule.read_weight(plus, state), target, atol=1e-7)
    # d < 0 with x > 0 raises w: only G+ is potentiated; the opposite error only G-
    x = jnp.array([[1.0, 1.0]])
    up = UpdateParameters(mode="exact")
    p1, s1, c1 = rule.update(device, cp, plus, state, x, jnp.array([[-0.05]]), 1.0, up, key=jax.random.key(1))
    assert bool(jnp.all(p1 >= plus)) and float(jnp.sum(p1 - plus)) > 0
    np.testing.assert_array_equal(s1.minus, state.minus)
    p2, s2, c2 = rule.update(device, cp, plus, state, x, jnp.array([[0.05]]), 1.0, up, key=jax.random.key(2))
    np.testing.assert_array_equal(p2, plus)
    assert float(jnp.sum(s2.minus - state.minus)) > 0
    assert int(c1.pulses_down) == int(c2.pulses_down) == 0  # no refresh yet, no RESET
    # a pair above 75% of the range is refreshed: both reset, |w| written back into one device
    plus = jnp.array([[0.9, 0.1]])
    state = state._replace(minus=jnp.array([[0.6, 0.85]]))
    zero = jnp.zeros((1, 1))
    p3, s3, c3 = rule.update(device, cp, plus, state, x, zero, 1.0, up, key=jax.random.key(3))
    np.testing.assert_allclose(p3, [[0.3, 0.0]], atol=1e-6)
    np.testing.assert_allclose(s3.minus, [[0.0, 0.75]], atol=1e-6)
    assert int(c3.pulses_down) == 4 and int(c3.pulses_up) == 30 + 75 and int(c3.transfer_reads) == 2
