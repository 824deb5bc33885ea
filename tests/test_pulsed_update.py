"""Statistics and exactness of the stochastic pulse-train update."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim import UpdateParameters, pulse_probabilities, pulsed_update
from analogsim.pulsed_update import UPDATE_MODES
from device_models import ConstantStep, PulsedParams, SoftBounds, draw_crosspoints, nominal_crosspoints
from device_models.lookup_table import LookupTable

# the module (``analogsim.pulsed_update`` as an attribute is the function of the same name)
pulsed_update_module = sys.modules["analogsim.pulsed_update"]


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


@pytest.mark.parametrize("mode", UPDATE_MODES)
def test_zero_inputs_fire_no_pulse_and_keep_weights(mode):
    model = SoftBounds(PulsedParams())
    cp = nominal_crosspoints(model, (3, 4))
    w0 = jnp.full((3, 4), 0.1)
    w, counts = pulsed_update(
        model, cp, w0, jnp.zeros((2, 4)), jnp.ones((2, 3)), 0.1, UpdateParameters(mode=mode), key=jax.random.key(4)
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
    for mode in UPDATE_MODES:
        np.testing.assert_allclose(mean_dw(mode), expect, atol=0.1 * float(jnp.max(jnp.abs(expect))))


def test_poisson_sampler_moments():
    from analogsim.pulsed_update import _poisson

    lam = jnp.array([0.01, 0.5, 2.9, 3.5, 20.0])
    n = jax.vmap(lambda k: _poisson(k, lam))(jax.random.split(jax.random.key(9), 100_000))
    np.testing.assert_allclose(jnp.mean(n, axis=0), lam, rtol=0.03, atol=2e-3)
    np.testing.assert_allclose(jnp.var(n, axis=0), lam, rtol=0.05, atol=2e-3)


# --- ``exact`` against the literal slot-by-slot algorithm ---------------------------------


def _noisy(model_cls, dw_min=0.04):
    """A device whose bounds and nonlinearity matter within a few pulses, with cycle-to-cycle
    noise and device-to-device variation."""
    pulsed = PulsedParams(dw_min=dw_min, dw_min_std=0.3, dw_min_dtod=0.3, w_max=0.3, w_min=-0.3)
    if model_cls is LookupTable:  # a model with its own noise law (steps drawn from a table)
        return LookupTable(
            pulsed,
            cdf=(0.0, 0.5, 1.0),
            nodes=(-0.3, 0.3),
            table_up=(0.5, 0.0, 1.5, 0.5, 2.0, 1.0),
            table_down=(-2.0, -1.0, -1.5, -0.5, 0.0, 0.0),
        )
    return model_cls(pulsed)


def _moments_agree(a, b, what, z=5.0):
    """Per-element means and variances of two (draws, ...) samples agree within ``z`` standard
    errors (each estimated from its own sample)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n_a, n_b = a.shape[0], b.shape[0]
    se_mean = np.sqrt(a.var(0) / n_a + b.var(0) / n_b)
    assert np.all(np.abs(a.mean(0) - b.mean(0)) <= z * se_mean + 1e-7), f"{what}: means differ"
    dev_a, dev_b = (a - a.mean(0)) ** 2, (b - b.mean(0)) ** 2
    se_var = np.sqrt(dev_a.var(0) / n_a + dev_b.var(0) / n_b)
    assert np.all(np.abs(a.var(0) - b.var(0)) <= z * se_var + 1e-9), f"{what}: variances differ"


# (lr, scale of x and d): "one slot" gives BL = 1 (at most one pulse per cross-point and
# sample, the lean paths); "many slots" gives BL up to 31 with several coincidences per
# cross-point and sample (the general paths).
_REGIMES = {"one slot": (0.1, 0.6), "many slots": (1.0, 1.0)}


@pytest.mark.parametrize("regime", list(_REGIMES))
@pytest.mark.parametrize("path", ["dense", "sparse"])
# soft bounds in the default run; the other models (4,000 draws each) with `pytest -m slow`
@pytest.mark.parametrize(
    "model_cls",
    [SoftBounds, pytest.param(ConstantStep, marks=pytest.mark.slow), pytest.param(LookupTable, marks=pytest.mark.slow)],
)
def test_exact_equals_slot_by_slot_in_distribution(model_cls, path, regime, monkeypatch):
    """Counting coincidences and applying each cross-point's pulses one after another is the
    slot-by-slot algorithm in distribution: per cross-point means and variances of the final
    weights, a covariance of two cross-points that share a row, and the pulse counts."""
    if path == "sparse":  # force the sparse path, with chunks small enough to need several
        monkeypatch.setattr(pulsed_update_module.exact, "_DENSE_MAX", 0)
        monkeypatch.setattr(pulsed_update_module.exact, "_CHUNKS", (4, 8))
    lr, scale = _REGIMES[regime]
    model = _noisy(model_cls)
    shape = (4, 6)
    cp = draw_crosspoints(model, shape, key=jax.random.key(10))
    kx, kd, kw = jax.random.split(jax.random.key(11), 3)
    x = scale * jax.random.uniform(kx, (3, 6), minval=-1.0, maxval=1.0)
    d = scale * jax.random.uniform(kd, (3, 4), minval=-1.0, maxval=1.0)
    # some cross-points start at or near a bound, so clipping matters
    w0 = jnp.clip(jax.random.uniform(kw, shape, minval=-0.35, maxval=0.35), cp.b_min, cp.b_max)
    up = UpdateParameters(mode="exact")
    bl = jax.vmap(pulse_probabilities, in_axes=(0, 0, None, None, None))(x, d, lr, model.pulsed.dw_min, up)[2]
    assert (int(jnp.max(bl)) == 1) == (regime == "one slot")
    draws = 4000

    def run(update):
        @jax.jit
        def many(keys):
            return jax.vmap(lambda k: update(model, cp, w0, x, d, lr, up, k))(keys)

        return many(jax.random.split(jax.random.key(12), draws))

    def new(model, cp, w, x, d, lr, up, key):
        return pulsed_update(model, cp, w, x, d, lr, up, key=key)

    w_new, c_new = run(new)
    w_ref, c_ref = run(pulsed_update_module._slot_by_slot)
    _moments_agree(w_new, w_ref, "weights")
    pair = lambda w: (w[:, 1, 2] - w0[1, 2]) * (w[:, 1, 4] - w0[1, 4])  # noqa: E731
    _moments_agree(pair(w_new)[:, None], pair(w_ref)[:, None], "product of two cross-points in a row")
    _moments_agree(jnp.stack([c_new.up, c_new.down], 1), jnp.stack([c_ref.up, c_ref.down], 1), "pulse counts")
    moved = jnp.mean(jnp.abs(w_ref - w0) > 0)
    assert moved > 0.2  # the test exercises pulses, not unchanged weights


def test_exact_with_many_pulses_per_cross_point_reaches_the_bounds_like_slot_by_slot():
    """Long trains on a constant-step device pile up at the bounds: the fraction of draws at a
    bound is the same for both algorithms (clipping after every pulse)."""
    model = _noisy(ConstantStep, dw_min=0.1)
    cp = nominal_crosspoints(model, (2, 3))
    x = jnp.array([[1.0, -1.0, 0.5]] * 2)
    d = jnp.array([[-1.0, 1.0]] * 2)
    up = UpdateParameters(mode="exact")
    w0 = jnp.zeros((2, 3))

    def at_bound(update):
        def one(k):
            w, _ = update(model, cp, w0, x, d, 1.0, up, k)
            return (w >= cp.b_max) | (w <= cp.b_min)

        return jnp.mean(jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(13), 3000)), axis=0)

    new = at_bound(lambda model, cp, w, x, d, lr, up, key: pulsed_update(model, cp, w, x, d, lr, up, key=key))
    ref = at_bound(pulsed_update_module._slot_by_slot)
    assert float(jnp.max(ref)) > 0.2
    np.testing.assert_allclose(new, ref, atol=5 * np.sqrt(0.25 / 3000) * np.sqrt(2))


# --- the ``gaussian`` rung ---------------------------------------------------------------


def test_gaussian_rung_has_the_compound_poisson_mean_and_variance():
    """On a device far from its bounds, one batch moves each weight by
    :math:`\\lambda_+ s_+ - \\lambda_- s_-` on average with variance
    :math:`\\lambda_+ (s_+^2 + v_+) + \\lambda_- (s_-^2 + v_-)`, the expected counts
    :math:`\\lambda_\\pm` those of the bit streams."""
    model = ConstantStep(PulsedParams(dw_min=0.001, dw_min_std=0.3, w_max=100.0, w_min=-100.0))
    cp = draw_crosspoints(model, (4, 5), key=jax.random.key(14))
    kx, kd = jax.random.split(jax.random.key(15))
    x = jax.random.uniform(kx, (8, 5), minval=-1.0, maxval=1.0)
    d = jax.random.normal(kd, (8, 4)) * 0.02
    up = UpdateParameters(mode="gaussian")
    lam_up, lam_down = pulsed_update_module._mean_counts(model, x, d, 0.1, up)
    # the expected counts are those of the bit streams: their difference is the SGD step
    np.testing.assert_allclose((lam_up - lam_down) * 0.001, -0.1 * d.T @ x, rtol=1e-4, atol=1e-7)
    s_up, s_down = cp.scale_up, cp.scale_down
    mean = lam_up * s_up - lam_down * s_down
    var = lam_up * s_up**2 * (1 + 0.3**2) + lam_down * s_down**2 * (1 + 0.3**2)
    draws = 20_000

    def one(k):
        w, c = pulsed_update(model, cp, jnp.zeros((4, 5)), x, d, 0.1, up, key=k)
        return w, c.up, c.down

    w, n_up, n_down = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(16), draws))
    np.testing.assert_allclose(jnp.mean(w, 0), mean, atol=float(5 * jnp.max(jnp.sqrt(var / draws))))
    np.testing.assert_allclose(jnp.var(w, 0), var, rtol=5 * np.sqrt(2 / draws))
    # the ledger gets the expected counts, rounded without bias
    assert abs(float(jnp.mean(n_up)) - float(jnp.sum(lam_up))) < 5 * 0.5 / np.sqrt(draws)
    assert abs(float(jnp.mean(n_down)) - float(jnp.sum(lam_down))) < 5 * 0.5 / np.sqrt(draws)


def test_gaussian_rung_respects_bounds_and_leaves_untouched_cross_points():
    model = SoftBounds(PulsedParams(dw_min=0.05))
    cp = draw_crosspoints(model, (3, 4), key=jax.random.key(17))
    w0 = jnp.clip(jnp.full((3, 4), 0.5), cp.b_min, cp.b_max)
    x = jnp.array([[1.0, 0.0, -1.0, 0.5]] * 16)  # input 1 never fires
    d = jnp.array([[-1.0, 0.5, 1.0]] * 16)
    w, _ = pulsed_update(model, cp, w0, x, d, 1.0, UpdateParameters(mode="gaussian"), key=jax.random.key(18))
    assert bool(jnp.all((w <= cp.b_max) & (w >= cp.b_min)))
    np.testing.assert_array_equal(w[:, 1], w0[:, 1])
