"""convert(): digital nnx models onto analog arrays, outputs kept, the rest left alone."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from analogsim import MLP, AnalogConv, AnalogLinear, IOParameters, SmallCNN, analog_layers, convert
from device_models import load_card

PERFECT = IOParameters(is_perfect=True)
_IDEAL = load_card("idealized").model
# the idealized card without device-to-device spread of its bounds: every cross-point holds [-1, 1]
IDEAL = dataclasses.replace(_IDEAL, pulsed=dataclasses.replace(_IDEAL.pulsed, w_max_dtod=0.0, w_min_dtod=0.0))


def perfect(model, **kw):
    return convert(model, device=IDEAL, rngs=nnx.Rngs(7), forward_io=PERFECT, backward_io=PERFECT, **kw)


def array_weights(layer):
    """The digital weights of an nnx layer as (out, in) in the analog array's layout."""
    from analogsim.conv import conv_kernel_to_array

    k = layer.kernel.get_value()
    return k.T if isinstance(layer, nnx.Linear) else conv_kernel_to_array(k)


def conv_net():
    """Conv -> LayerNorm -> Conv (VALID, stride 2) -> Dropout -> Linear, in an nnx.Sequential."""
    r = nnx.Rngs(0)
    return nnx.Sequential(
        nnx.Conv(1, 4, (3, 3), padding="SAME", rngs=r),
        nnx.relu,
        nnx.LayerNorm(4, rngs=r),
        nnx.Conv(4, 6, (3, 3), strides=2, padding="VALID", rngs=r),
        nnx.tanh,
        lambda x: x.reshape(x.shape[0], -1),
        nnx.Dropout(0.5, deterministic=True, rngs=r),
        nnx.Linear(6 * 3 * 3, 10, bias_init=nnx.initializers.normal(0.3), rngs=r),
    )


def test_mlp_outputs_kept_and_weights_mapped():
    digital = MLP((64, 32, 16, 10), device=None, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(1), (20, 64))
    want = digital(x)
    analog = perfect(digital)
    np.testing.assert_allclose(analog(x), want, atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(want))) > 0.2
    layers = analog_layers(analog)
    assert [type(m) for _, m in layers] == [AnalogLinear] * 3
    for (_, a), d in zip(layers, digital.layers, strict=True):
        w = array_weights(d)
        s = float(jnp.max(jnp.abs(w))) / 0.9  # "auto": the largest weight at 0.9 of the bound 1
        assert float(a.out_scale.get_value()) == pytest.approx(s, rel=1e-6)
        np.testing.assert_allclose(a.weight.get_value(), w / s, rtol=1e-6, atol=0)
        assert float(jnp.max(jnp.abs(a.weight.get_value()))) == pytest.approx(0.9, rel=1e-6)
        np.testing.assert_array_equal(a.bias.get_value(), d.bias.get_value())


@pytest.mark.parametrize("which", ["small_cnn", "sequential"])
def test_cnn_outputs_kept_other_layers_untouched_input_unchanged(which):
    digital = SmallCNN(device=None, rngs=nnx.Rngs(0)) if which == "small_cnn" else conv_net()
    x = jax.random.uniform(jax.random.key(2), (6, 8, 8, 1))
    want = digital(x)
    before = jax.tree.map(np.array, nnx.state(digital, nnx.Param))
    analog = perfect(digital)
    np.testing.assert_allclose(analog(x), want, atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(want))) > 0.1
    # the input model is unchanged: same layer types, same values, same outputs
    assert not any(isinstance(m, AnalogLinear) for _, m in nnx.iter_modules(digital))
    after = jax.tree.map(np.array, nnx.state(digital, nnx.Param))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    np.testing.assert_array_equal(digital(x), want)
    kinds = [type(m).__name__ for _, m in analog_layers(analog)]
    assert kinds == ["AnalogConv", "AnalogConv", "AnalogLinear"]
    assert not any(isinstance(m, nnx.Linear | nnx.Conv) for _, m in nnx.iter_modules(analog))
    if which == "sequential":
        d_layers, a_layers = list(digital.layers), list(analog.layers)
        conv2 = a_layers[3]
        assert (conv2.strides, conv2.padding, conv2.in_channels) == ((2, 2), "VALID", 4)
        # every non-linear layer is kept as it was, with its values
        for i in (1, 4, 5):
            assert a_layers[i] is d_layers[i]  # the same functions
        for i in (2, 6):
            assert type(a_layers[i]) is type(d_layers[i])
            assert a_layers[i] is not d_layers[i]  # copied, not shared with the input model
        jax.tree.map(
            np.testing.assert_array_equal, nnx.state(a_layers[2], nnx.Param), nnx.state(d_layers[2], nnx.Param)
        )


def test_bounds_of_each_crosspoint_clip_the_programmed_weights():
    """With the real idealized card (30 % spread of the bounds) the states are the targets
    clipped to each cross-point's own bounds, exactly."""
    digital = nnx.Linear(40, 30, kernel_init=nnx.initializers.normal(1.0), rngs=nnx.Rngs(0))
    analog = convert(digital, device="idealized", rngs=nnx.Rngs(1))
    w = array_weights(digital)
    s = float(jnp.max(jnp.abs(w))) / 0.9
    cp = analog.crosspoints()
    want = jnp.clip(w / s, cp.b_min, cp.b_max)
    np.testing.assert_array_equal(analog.weight.get_value(), want)
    assert int(jnp.sum(want != w / s)) > 0  # some were clipped: the check is not vacuous


def test_weight_scale_float_and_none():
    digital = nnx.Linear(8, 4, kernel_init=nnx.initializers.normal(0.3), rngs=nnx.Rngs(0))
    w = array_weights(digital)
    a = perfect(digital, weight_scale=2.0)
    assert float(a.out_scale.get_value()) == 2.0
    np.testing.assert_allclose(a.weight.get_value(), w / 2.0, rtol=1e-7)
    b = perfect(digital, weight_scale=None)
    assert float(b.out_scale.get_value()) == 1.0
    np.testing.assert_array_equal(b.weight.get_value(), jnp.clip(w, -1.0, 1.0))
    for bad in (0.0, -1.0, float("nan"), "max"):
        with pytest.raises(ValueError, match="weight_scale"):
            perfect(digital, weight_scale=bad)


def test_programming_noise_changes_outputs_with_the_stated_spread():
    digital = MLP((64, 64, 10), device=None, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(3), (50, 64))
    sigma = 0.05
    a = perfect(digital, programming_noise=sigma, key=jax.random.key(4))
    b = perfect(digital, programming_noise=sigma, key=jax.random.key(4))
    clean = perfect(digital)
    assert float(jnp.max(jnp.abs(a(x) - digital(x)))) > 0.05
    np.testing.assert_array_equal(a(x), b(x))  # the same key programs the same states
    # the deviation from the clean targets has std sigma (4096 draws: standard error of the std 1.1 %)
    dev = a.layers[0].weight.get_value() - clean.layers[0].weight.get_value()
    assert float(jnp.std(dev)) == pytest.approx(sigma, rel=0.05)
    assert abs(float(jnp.mean(dev))) < 3 * sigma / 64
    with pytest.raises(ValueError, match="key"):
        perfect(digital, programming_noise=sigma)
    with pytest.raises(ValueError, match="programming_noise"):
        perfect(digital, programming_noise=-0.1, key=jax.random.key(5))


def test_shared_layer_stays_shared():
    class Twice(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(4, 4, rngs=rngs)
            self.b = self.a

        def __call__(self, x):
            return self.b(jnp.tanh(self.a(x)))

    digital = Twice(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(6), (3, 4))
    analog = perfect(digital)
    assert isinstance(analog.a, AnalogLinear) and analog.a is analog.b
    np.testing.assert_allclose(analog(x), digital(x), atol=1e-5, rtol=0)


def test_unsupported_conv_is_refused_naming_the_layer():
    model = nnx.Sequential(nnx.Conv(4, 4, (3, 3), feature_group_count=2, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"layers/0 has feature_group_count=2"):
        perfect(model)
    model = nnx.Sequential(nnx.Conv(4, 4, (3, 3), padding="CIRCULAR", rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"layers/0.*padding"):
        perfect(model)


def test_converted_layers_read_through_the_default_periphery():
    """With the default (noisy, quantised) periphery the outputs stay close but not equal."""
    digital = MLP((64, 32, 10), device=None, rngs=nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(8), (100, 64))
    analog = convert(digital, device=IDEAL, rngs=nnx.Rngs(1))
    assert isinstance(analog.layers[0], AnalogLinear) and not isinstance(analog.layers[0], AnalogConv)
    err = analog(x) - digital(x)
    scale = float(jnp.std(digital(x)))
    assert 0 < float(jnp.sqrt(jnp.mean(err**2))) < 0.1 * scale
