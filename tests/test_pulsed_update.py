"""Statistics and exactness of the stochastic pulse-train update."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim import UpdateParameters, pulse_probabilities, pulsed_update
from device_models import ConstantStep, PulsedParams, SoftBounds, nominal_crosspoints


def ideal_device(dw_min, model=ConstantStep):
    """No noise, no variation, bounds far away: each pulse moves w by exactly dw_min."""
    return model(
        PulsedParams(dw_min=dw_min, dw_min_dtod=0.0, dw_min_std=0.0, up_down_dtod=0.0, w_max=100.0, w_min=-100.0)
    )


def test_ideal_settings_reproduce_the_sgd_step_exactly():
    """With probabilities of exactly 1 the pulse count is deterministic: W <- W - lr d x^T."""
    lr, dw_min = 0.31, 0.01  # BL = ceil(lr * 1 * 1 / dw_min) = 31 and A = B = 1
    model = ideal_device(dw_min)
    x = jnp.array([[1.0, -1.0, 0.0, 1.0]])
    d = jnp.array([[-1.0, 0.0, 1.0]])
    cp = nominal_crosspoints(model, (3, 4))
    w0 = jnp.zeros((3, 4))
    w, counts = pulsed_update(model, cp, w0, x, d, lr, UpdateParameters(mode="exact"), key=jax.random.key(0))
    np.testing.assert_allclose(w, w0 - lr * d.T @ x, atol=1e-6)
    assert int(counts.up) == 31 * 3 and int(counts.down) == 31 * 3  # 3 cross-points each way


@pytest.mark.parametrize("mode", ["exact", "expected"])
@pytest.mark.parametrize("blm,um", [(True, True), (False, True), (True, False), (False, False)])
def test_mean_pulse_count_is_lr_x_d_over_dw_min(blm, um, mode):
    lr, dw_min = 0.05, 0.001
    model = ideal_device(dw_min)
    kx, kd = jax.random.split(jax.random.key(1))
    x = jax.random.uniform(kx, (1, 6), minval=-0.3, maxval=0.3)
    d = jax.random.uniform(kd, (1, 5), minval=-0.3, maxval=0.3)
    d = d * jnp.max(jnp.abs(x)) / jnp.max(jnp.abs(d))  # equal maxima: no probability clips even without UM
    up = UpdateParameters(update_bl_management=blm, update_management=um, mode=mode)
    p, q, bl = pulse_probabilities(x[0], d[0], lr, dw_min, up)
    # The formula holds while no probability clips at 1 (these inputs keep them inside).
    assert bool(jnp.all(p < 1)) and bool(jnp.all(q < 1))
    cp = nominal_crosspoints(model, (5, 6))
    reps = 4000

    def one(key):
        w, _ = pulsed_update(model, cp, jnp.zeros((5, 6)), x, d, lr, up, key=key)
        return jnp.abs(w) / dw_min  # pulses at each cross-point (all of one sign)

    n = jax.vmap(one)(jax.random.split(jax.random.key(2), reps))
    expect = lr * jnp.abs(d[0][:, None] * x[0][None, :]) / dw_min
    mean = jnp.mean(n, axis=0)
    se = jnp.std(n, axis=0) / np.sqrt(reps) + 1e-3
    assert bool(jnp.all(jnp.abs(mean - expect) < 5 * se)), (mean, expect)
    # sign: a positive x_j d_i lowers the weight
    w, _ = pulsed_update(model, cp, jnp.zeros((5, 6)), x, d, lr, up, key=jax.random.key(3))  # sign check
    prod = d[0][:, None] * x[0][None, :]
    assert bool(jnp.all(jnp.where(w != 0, jnp.sign(w) == -jnp.sign(prod), True)))


def test_bl_management_shortens_the_train():
    up = UpdateParameters()
    x = jnp.array([0.5, -1.0])
    d = jnp.array([0.02, 0.01])
    _, _, bl = pulse_probabilities(x, d, 0.1, 0.001, up)
    assert int(bl) == int(np.ceil(0.1 * 1.0 * 0.02 / 0.001)) == 2
    _, _, bl = pulse_probabilities(x, d * 100, 0.1, 0.001, up)
    assert int(bl) == 31  # capped at desired_bl
    _, _, bl = pulse_probabilities(x, d * 0, 0.1, 0.001, up)
    assert int(bl) == 0  # nothing to do
    _, _, bl = pulse_probabilities(x, d, 0.1, 0.001, UpdateParameters(update_bl_management=False))
    assert int(bl) == 31


def test_update_management_balances_probabilities():
    x = jnp.array([1.0, 0.5])
    d = jnp.array([0.01, -0.005])
    p, q, bl = pulse_probabilities(x, d, 0.1, 0.001, UpdateParameters())
    assert float(jnp.max(p)) == pytest.approx(float(jnp.max(q)), rel=1e-5)
    assert float(bl * jnp.max(p) * jnp.max(q)) == pytest.approx(0.1 * 1.0 * 0.01 / 0.001, rel=1e-5)


def test_zero_inputs_fire_no_pulse_and_keep_weights():
    model = SoftBounds(PulsedParams())
    cp = nominal_crosspoints(model, (3, 4))
    w0 = jnp.full((3, 4), 0.1)
    w, counts = pulsed_update(
        model, cp, w0, jnp.zeros((2, 4)), jnp.ones((2, 3)), 0.1, UpdateParameters(), key=jax.random.key(4)
    )
    np.testing.assert_array_equal(w, w0)
    assert int(counts.up) == 0 and int(counts.down) == 0


@pytest.mark.parametrize("mode", ["exact", "expected"])
def test_counts_match_weight_change_on_ideal_device(mode):
    model = ideal_device(0.01)
    cp = nominal_crosspoints(model, (8, 9))
    kx, kd = jax.random.split(jax.random.key(5))
    x = jax.random.normal(kx, (16, 9))
    d = jax.random.normal(kd, (16, 8)) * 0.1
    w, counts = pulsed_update(
        model, cp, jnp.zeros((8, 9)), x, d, 0.05, UpdateParameters(mode=mode), key=jax.random.key(6)
    )
    net = (int(counts.up) - int(counts.down)) * 0.01
    assert float(jnp.sum(w)) == pytest.approx(net, abs=1e-4)


def test_expected_rung_matches_exact_mean_over_a_batch():
    """Over a whole batch the two rungs move each weight by the same amount on average."""
    model = ideal_device(0.001)
    cp = nominal_crosspoints(model, (4, 5))
    kx, kd = jax.random.split(jax.random.key(7))
    x = jax.random.uniform(kx, (16, 5), minval=-1.0, maxval=1.0)
    d = jax.random.normal(kd, (16, 4)) * 0.02

    def mean_dw(mode):
        def one(key):
            return pulsed_update(model, cp, jnp.zeros((4, 5)), x, d, 0.1, UpdateParameters(mode=mode), key=key)[0]

        return jnp.mean(jax.vmap(one)(jax.random.split(jax.random.key(8), 3000)), axis=0)

    expect = -0.1 * d.T @ x  # the SGD step the pulses realise on average
    for mode in ("exact", "expected"):
        np.testing.assert_allclose(mean_dw(mode), expect, atol=0.1 * float(jnp.max(jnp.abs(expect))))


def test_poisson_sampler_moments():
    from analogsim.pulsed_update import _poisson

    lam = jnp.array([0.01, 0.5, 2.9, 3.5, 20.0])
    n = jax.vmap(lambda k: _poisson(k, lam))(jax.random.split(jax.random.key(9), 100_000))
    np.testing.assert_allclose(jnp.mean(n, axis=0), lam, rtol=0.03, atol=2e-3)
    np.testing.assert_allclose(jnp.var(n, axis=0), lam, rtol=0.05, atol=2e-3)
