"""Periphery: DAC/ADC steps, clipping, noise and bound management, with exact expectations."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from analogsim import IOParameters, analog_matmul, analog_mvm, quantize

# these tests take gradients through bare analog reads on purpose (the backward periphery)
pytestmark = pytest.mark.filterwarnings("ignore::analogsim.tile.AnalogGradientWarning")

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


# --- every field is checked where it enters -------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("noise_management", "abs-max"),
        ("noise_management", "average_abs_max"),
        ("bound_management", "shift"),
        ("inp_bound", 0.0),
        ("inp_bound", float("nan")),
        ("out_bound", -12.0),
        ("inp_res", 126.0),  # aihwkit's number-of-steps form is refused, not reinterpreted
        ("out_res", float("nan")),
        ("out_noise", -0.06),
        ("out_noise", "0.06"),
        ("w_noise", float("inf")),
        ("nm_thres", -1.0),
        ("max_bm_factor", 0.5),
        ("max_bm_res", 0.0),
        ("is_perfect", 1),
        ("max_input_size", -1),
        ("max_input_size", 2.5),
        ("max_output_size", True),
    ],
)
def test_bad_fields_raise_one_line_errors(field, value):
    with pytest.raises(ValueError) as err:
        IOParameters(**{field: value})
    msg = str(err.value)
    assert f"IOParameters.{field}: value {value!r} is not allowed" in msg
    assert "\n" not in msg


def test_infinite_bound_needs_no_quantisation():
    with pytest.raises(ValueError, match=r"IOParameters\.out_res: .* when out_bound is infinite"):
        IOParameters(out_bound=float("inf"))
    io = IOParameters(out_bound=float("inf"), out_res=0.0, out_noise=0.0)
    res = analog_mvm(jnp.array([[100.0]]), jnp.array([[1.0]]), io, key=None)
    np.testing.assert_array_equal(res.y, [[100.0]])  # no clipping, so no re-read
    assert int(res.reads[0]) == 1


def test_good_fields_are_accepted():
    IOParameters(noise_management="constant", nm_thres=2.0, max_input_size=0, max_output_size=3)
    IOParameters(inp_res=0.0, out_res=-1.0, max_bm_factor=1, max_bm_res=float("inf"))
    hash(IOParameters())  # a static (nondiff) argument of jitted functions: must be hashable


# --- DAC ----------------------------------------------------------------------------------

# Reads that show one converter at a time: identity weights, no noise, no other quantisation.
DAC_ONLY = IOParameters(out_res=0.0, out_noise=0.0, noise_management="none", bound_management="none")


def test_dac_rounds_to_steps_of_2_over_126():
    # step 2/126 = 1/63 = 0.015873: 0.007 = 0.44 steps, 0.008 = 0.50 steps, 0.023 = 1.45 steps,
    # 0.024 = 1.51 steps, -0.4 = -25.2 steps
    x = jnp.array([[0.007, 0.008, 0.023, 0.024, -0.4]])
    res = analog_mvm(jnp.eye(5), x, DAC_ONLY, key=None)
    np.testing.assert_allclose(res.y, [[0.0, 1 / 63, 1 / 63, 2 / 63, -25 / 63]], rtol=1e-6, atol=1e-7)


def test_dac_ties_round_to_even():
    # inp_res 1/8 over [-1, 1]: step 0.25, so these inputs sit exactly on half steps
    io = dataclasses.replace(DAC_ONLY, inp_res=1 / 8)
    x = jnp.array([[0.125, 0.375, -0.125, 0.625, -0.375]])  # 0.5, 1.5, -0.5, 2.5, -1.5 steps
    res = analog_mvm(jnp.eye(5), x, io, key=None)
    np.testing.assert_array_equal(res.y, [[0.0, 0.5, 0.0, 0.5, -0.5]])


def test_dac_clips_at_inp_bound():
    io = dataclasses.replace(DAC_ONLY, inp_bound=0.5)  # step 2 * 0.5 / 126 = 1/126
    x = jnp.array([[0.3, 0.7, -2.0]])  # 0.3 = 37.8 steps -> 38/126; the others clip
    res = analog_mvm(jnp.eye(3), x, io, key=None)
    np.testing.assert_allclose(res.y, [[38 / 126, 0.5, -0.5]], rtol=1e-6)


# --- ADC ----------------------------------------------------------------------------------


def test_adc_rounds_to_steps_of_24_over_510_and_clips_at_12():
    io = IOParameters(inp_res=0.0, out_noise=0.0, noise_management="none", bound_management="none")
    # outputs 0.02, 0.03, 1, -0.5, 20, -20 in ADC steps of 24/510 = 0.0470588:
    # 0.425, 0.6375, 21.25, -10.625 steps, then two beyond the bound of 12
    w = jnp.diag(jnp.array([0.02, 0.03, 1.0, -0.5, 20.0, -20.0]))
    res = analog_mvm(w, jnp.ones((1, 6)), io, key=None)
    expect = [[0.0, 24 / 510, 21 * 24 / 510, -11 * 24 / 510, 12.0, -12.0]]
    np.testing.assert_allclose(res.y, expect, rtol=1e-6, atol=1e-7)


def test_output_on_the_bound_passes_bound_management():
    # aihwkit's test is strict: an output of exactly out_bound is not clipped, so no re-read
    io = IOParameters(inp_res=0.0, out_res=0.0, out_noise=0.0)
    on = analog_mvm(jnp.array([[12.0]]), jnp.array([[1.0]]), io, key=None)
    assert int(on.reads[0]) == 1
    np.testing.assert_array_equal(on.y, [[12.0]])
    over = analog_mvm(jnp.array([[12.5]]), jnp.array([[1.0]]), io, key=None)
    assert int(over.reads[0]) == 2  # 12.5 clips; 6.25 fits
    np.testing.assert_array_equal(over.y, [[12.5]])


# --- noise management -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nm", "expect"),
    [
        # alpha = max|x| = 2: x/2 = (0.3, -1, 0.55) = (18.9, -63, 34.65) DAC steps of 1/63
        ({"noise_management": "abs_max"}, [38 / 63, -2.0, 70 / 63]),
        # alpha = 1: 0.6 = 37.8 steps -> 38/63; -2 and 1.1 clip at the DAC bound of 1
        ({"noise_management": "none"}, [38 / 63, -1.0, 1.0]),
        # alpha = 5 whatever the input: x/5 = (0.12, -0.4, 0.22) = (7.56, -25.2, 13.86) steps
        ({"noise_management": "constant", "nm_thres": 5.0}, [40 / 63, -125 / 63, 70 / 63]),
        # constant without nm_thres is alpha = 1 (aihwkit)
        ({"noise_management": "constant"}, [38 / 63, -1.0, 1.0]),
        # abs_max capped by nm_thres = 1: alpha = min(2, 1) = 1
        ({"noise_management": "abs_max", "nm_thres": 1.0}, [38 / 63, -1.0, 1.0]),
    ],
)
def test_noise_management_scales_by_the_chosen_alpha(nm, expect):
    io = IOParameters(out_res=0.0, out_noise=0.0, bound_management="none", **nm)
    res = analog_mvm(jnp.eye(3), jnp.array([[0.6, -2.0, 1.1]]), io, key=None)
    np.testing.assert_allclose(res.y, [expect], rtol=1e-6)


def test_constant_noise_management_reads_every_vector():
    io = IOParameters(noise_management="constant", nm_thres=1.0, out_res=0.0)
    x = jnp.array([[0.0, 0.0, 0.0], [0.001, 0.002, -0.0005]])
    res = analog_mvm(jnp.eye(3), x, io, key=jax.random.key(6))
    np.testing.assert_array_equal(res.reads, [1, 1])  # no zero-vector short cut
    assert float(jnp.max(jnp.abs(res.y[0]))) > 0  # the zero vector's read carries output noise
    quiet = dataclasses.replace(io, out_noise=0.0)
    # not rescaled: the small inputs are below half a DAC step (1/126) and read as zero
    np.testing.assert_array_equal(analog_mvm(jnp.eye(3), x, quiet, key=None).y, 0.0)


# --- bound management -----------------------------------------------------------------------


def test_bound_management_halves_until_the_output_fits():
    w = jnp.full((1, 100), 0.9)
    x = jnp.stack([jnp.ones(100), jnp.zeros(100).at[0].set(1.0)])
    io = IOParameters(inp_res=0.0, out_noise=0.0)
    res = analog_mvm(w, x, io, key=None)
    # vector 0: 90 clips, read at 1/2 (45) and 1/4 (22.5) clips, at 1/8 (11.25) fits:
    # 3 halvings + 1 reads. Vector 1: 0.9 fits at once.
    np.testing.assert_array_equal(res.reads, [4, 1])
    # the accepted read is taken at 1/8: 11.25 = 239.06 ADC steps of 24/510 -> 239, times 8;
    # 0.9 = 19.125 steps -> 19
    np.testing.assert_allclose(res.y, [[8 * 239 * 24 / 510], [19 * 24 / 510]], rtol=1e-6)
    exact = analog_mvm(w, x, dataclasses.replace(io, out_res=0.0), key=None)
    np.testing.assert_array_equal(exact.reads, [4, 1])
    np.testing.assert_allclose(exact.y, [[90.0], [0.9]], rtol=1e-6)  # exact once it fits


# --- perfect reads --------------------------------------------------------------------------


def test_perfect_read_is_the_exact_product():
    io = IOParameters(is_perfect=True, out_bound=0.1, inp_res=0.5)  # every other setting ignored
    w = jax.random.normal(jax.random.key(7), (6, 9))
    x = jax.random.normal(jax.random.key(8), (4, 9)).at[3].set(0.0)
    res = analog_mvm(w, x, io, key=jax.random.key(9))
    np.testing.assert_array_equal(res.y, x @ w.T)
    np.testing.assert_array_equal(res.reads, [1, 1, 1, 1])
