"""Read noise and retention: closed forms, statistics and defaults."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from device_models.retention import Retention, read_weights, retain


def test_defaults_change_nothing():
    w = jnp.linspace(-0.5, 0.5, 11)
    ret = Retention()
    np.testing.assert_array_equal(retain(ret, w, 3.15e7), w)
    np.testing.assert_array_equal(read_weights(ret, w, key=jax.random.key(0)), w)


def test_relaxation_closed_form():
    ret = Retention(tau_s=3600.0, w_rest=-0.1)
    w = jnp.array([0.5, -0.1, -0.6])
    for t in (0.0, 60.0, 3600.0, 86400.0):
        expect = -0.1 + (np.asarray(w) + 0.1) * math.exp(-t / 3600.0)
        np.testing.assert_allclose(retain(ret, w, t), expect, rtol=1e-6, atol=1e-7)


def test_power_law_drift():
    ret = Retention(drift_nu=0.05, drift_t0_s=20.0)
    w = jnp.array([0.4, -0.2])
    np.testing.assert_allclose(retain(ret, w, 10.0), w)  # before t0 nothing happens
    np.testing.assert_allclose(retain(ret, w, 2000.0), np.asarray(w) * 100.0**-0.05, rtol=1e-6)


def test_read_noise_statistics():
    ret = Retention(read_noise_std=0.02)
    w = jnp.full((200_000,), 0.3)
    r = read_weights(ret, w, key=jax.random.key(1))
    assert float(jnp.mean(r)) == pytest.approx(0.3, abs=5 * 0.02 / math.sqrt(2e5))
    assert float(jnp.std(r)) == pytest.approx(0.02, rel=0.01)


def test_gradients_of_retention_are_finite():
    def f(tau, nu):
        return jnp.sum(retain(Retention(tau_s=tau, drift_nu=nu, drift_t0_s=1.0), jnp.array([0.3, -0.2]), 100.0))

    g = jax.grad(f, argnums=(0, 1))(jnp.float32(50.0), jnp.float32(0.1))
    assert all(bool(jnp.isfinite(x)) for x in g)


@pytest.mark.parametrize("field,value", [("read_noise_std", -1.0), ("tau_s", 0.0), ("drift_nu", float("nan"))])
def test_bad_parameters(field, value):
    with pytest.raises(ValueError, match=field):
        Retention(**{field: value})
