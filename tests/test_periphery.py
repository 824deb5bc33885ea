"""Periphery: DAC/ADC steps, clipping, noise and bound management, with exact expectations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim import IOParameters, analog_matmul, analog_mvm, quantize

QUIET = IOParameters(out_noise=0.0)


def test_default_steps_match_aihwkit():
    io = IOParameters()
    assert io.inp_step == pytest.approx(2 / 126)  # 7-bit DAC over [-1, 1]
    assert io.out_step == pytest.approx(24 / 510)  # 9-bit ADC over [-12, 12]
    assert io.max_bm_reduction == pytest.approx(0.25 / (2 / 126))


def test_quantize_rounds_to_steps_and_clips():
    x = jnp.array([0.0, 0.004, 0.008, -0.02, 0.3, 1.7, -3.0])
    step = 2 / 126
    out = quantize(x, step, 1.0)
    np.testing.assert_allclose(out, [0.0, 0.0, step, -step, 19 * step, 1.0, -1.0], atol=1e-7)


def test_forward_read_is_quantised_product():
    w = jnp.array([[0.3, -0.2, 0.1], [0.05, 0.4, -0.5]])
    x = jnp.array([[0.5, -1.0, 0.25]])
    res = analog_mvm(w, x, QUIET, key=None)
    # Noise management divides by max|x| = 1; inputs are on the DAC grid already within rounding.
    xq = quantize(x, QUIET.inp_step, 1.0)
    expect = quantize(xq @ w.T, QUIET.out_step, 12.0)
    np.testing.assert_allclose(res.y, expect, atol=1e-6)
    assert int(res.reads[0]) == 1


def test_noise_management_rescales_small_inputs():
    w = jnp.eye(3) * 0.5
    x = jnp.array([[0.001, 0.002, -0.0005]])
    res = analog_mvm(w, x, IOParameters(out_noise=0.0, out_res=0.0), key=None)
    # Without noise management these inputs would round to 0 on a 7-bit DAC.
    np.testing.assert_allclose(res.y, 0.5 * x, rtol=0.05)
    no_nm = analog_mvm(w, x, IOParameters(out_noise=0.0, out_res=0.0, noise_management="none"), key=None)
    np.testing.assert_allclose(no_nm.y, 0.0)


def test_bound_management_halves_until_outputs_fit():
    w = jnp.ones((2, 20))  # output 20 for an all-ones input: over the bound of 12
    x = jnp.ones((1, 20))
    res = analog_mvm(w, x, QUIET, key=None)
    assert int(res.reads[0]) == 2  # read at 1, clipped; read at 1/2 gives about 10, fits
    x_dac = quantize(jnp.asarray(0.5), QUIET.inp_step, 1.0)  # 0.5 rounds to 32/63
    expect = 2 * quantize(20 * x_dac, QUIET.out_step, 12.0)
    np.testing.assert_allclose(res.y, expect, rtol=1e-6)
    no_bm = analog_mvm(w, x, IOParameters(out_noise=0.0, bound_management="none"), key=None)
    np.testing.assert_allclose(no_bm.y, 12.0)


def test_bound_management_stops_at_its_limit():
    w = jnp.ones((1, 400))  # 400 / 16 = 25 still clips at the largest reduction, 16
    x = jnp.ones((1, 400))
    res = analog_mvm(w, x, QUIET, key=None)
    assert int(res.reads[0]) == 5  # reductions 1, 2, 4, 8, 16
    np.testing.assert_allclose(res.y, 12.0 * 16)


def test_output_noise_has_the_set_std():
    w = jnp.zeros((4000, 8))
    x = jnp.ones((1, 8))
    res = analog_mvm(w, x, IOParameters(out_res=0.0), key=jax.random.key(0))
    assert float(jnp.std(res.y)) == pytest.approx(0.06, rel=0.05)


def test_zero_vector_is_not_read():
    res = analog_mvm(jnp.ones((3, 4)), jnp.zeros((2, 4)), IOParameters(), key=jax.random.key(1))
    np.testing.assert_array_equal(res.y, 0.0)
    np.testing.assert_array_equal(res.reads, 0)


def test_perfect_read_and_backward_gradient():
    io = IOParameters(is_perfect=True)
    w = jax.random.normal(jax.random.key(2), (3, 5))
    x = jax.random.normal(jax.random.key(3), (4, 5))

    def f(x):
        y, _ = analog_matmul(w, x, jax.random.key(4), io, io)
        return jnp.sum(y**2)

    np.testing.assert_allclose(jax.grad(f)(x), 2 * (x @ w.T) @ w, rtol=1e-5)


def test_backward_read_goes_through_the_backward_periphery():
    w = jnp.eye(2)
    x = jnp.ones((1, 2))
    bwd = IOParameters(out_noise=0.0, out_bound=0.5, out_res=0.0, bound_management="none")

    def f(x):
        y, _ = analog_matmul(w, x, jax.random.key(5), QUIET, bwd)
        return jnp.sum(y * jnp.array([[3.0, -1.0]]))

    # d = (3, -1), noise-managed to (1, -1/3), clipped at 0.5 in the backward ADC, rescaled by 3.
    np.testing.assert_allclose(jax.grad(f)(x), [[1.5, -1.0]], atol=1e-2)


def test_weight_read_noise_is_output_referred():
    w = jnp.zeros((20000, 4))
    x = jnp.array([[1.0, -1.0, 0.0, 1.0]])  # |x|_2 = sqrt(3) after noise management
    io = IOParameters(out_noise=0.0, out_res=0.0, w_noise=0.1, bound_management="none")
    res = analog_mvm(w, x, io, key=jax.random.key(3))
    assert float(jnp.std(res.y)) == pytest.approx(0.1 * np.sqrt(3), rel=0.03)
    both = analog_mvm(w, x, IOParameters(out_noise=0.06, out_res=0.0, w_noise=0.1), key=jax.random.key(4))
    assert float(jnp.std(both.y)) == pytest.approx(np.sqrt(0.06**2 + 0.03), rel=0.03)
    with pytest.raises(ValueError, match="w_noise"):
        IOParameters(w_noise=-0.1)
