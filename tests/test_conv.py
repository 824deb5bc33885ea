"""AnalogConv: equal to nnx.Conv with a perfect periphery (values and input gradients), the
trainer's tape contract, the im2col layout, and SmallCNN training on the digits set."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from analogsim import (
    AbstractAnalogLayer,
    AnalogConv,
    IOParameters,
    SmallCNN,
    analog_layers,
    evaluate,
    load_dataset,
    make_train_step,
)
from analogsim.conv import array_to_conv_kernel, conv_kernel_to_array
from analogsim.layers import capture_calls, layer_calls
from device_models import load_card

PERFECT = IOParameters(is_perfect=True)
_IDEAL = load_card("idealized").model
# the idealized card without device-to-device spread of its bounds: every cross-point holds [-1, 1]
IDEAL = dataclasses.replace(_IDEAL, pulsed=dataclasses.replace(_IDEAL.pulsed, w_max_dtod=0.0, w_min_dtod=0.0))

# (kernel_size, input shape (batch, *spatial, channels)): 1-D and 2-D
GEOMETRIES = [(3, (2, 11, 3)), ((3, 2), (2, 7, 6, 3))]


def twins(kernel_size, strides, padding, in_ch=3, out_ch=5, use_bias=True, **kw):
    """An nnx.Conv and an AnalogConv (perfect periphery) holding the same kernel and bias."""
    digital = nnx.Conv(
        in_ch,
        out_ch,
        kernel_size,
        strides,
        padding=padding,
        use_bias=use_bias,
        kernel_init=nnx.initializers.truncated_normal(0.3),  # within +-0.6, inside the bounds
        bias_init=nnx.initializers.normal(0.5),
        rngs=nnx.Rngs(0),
        **kw,
    )
    analog = AnalogConv(
        in_ch,
        out_ch,
        kernel_size,
        strides,
        padding=padding,
        use_bias=use_bias,
        device=IDEAL,
        forward_io=PERFECT,
        backward_io=PERFECT,
        rngs=nnx.Rngs(1),
        **kw,
    )
    w = conv_kernel_to_array(digital.kernel.get_value())
    assert float(jnp.max(jnp.abs(w))) < 1.0  # within the bounds: nothing is clipped
    analog.weight.set_value(w)
    if use_bias:
        analog.bias.set_value(digital.bias.get_value())
    return digital, analog


@pytest.mark.parametrize("kernel_size, shape", GEOMETRIES)
@pytest.mark.parametrize("padding", ["SAME", "VALID"])
@pytest.mark.parametrize("strides", [1, 2])
def test_equals_nnx_conv_with_perfect_periphery(kernel_size, shape, padding, strides):
    digital, analog = twins(kernel_size, strides, padding)
    x = jax.random.normal(jax.random.key(2), shape)
    want = digital(x)
    got = analog(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(want))) > 0.5  # not a comparison of near-zeros


@pytest.mark.parametrize(
    "kernel_size, shape, padding, extra",
    [
        ((3, 3), (2, 8, 9, 3), ((2, 0), 1), {"kernel_dilation": (1, 2)}),  # explicit pads, dilation
        (2, (8, 3), 1, {"use_bias": False}),  # unbatched input, as nnx.Conv allows
        ((3, 3), (2, 2, 6, 6, 3), "SAME", {}),  # two batch dimensions
    ],
)
def test_equals_nnx_conv_other_settings(kernel_size, shape, padding, extra):
    digital, analog = twins(kernel_size, 1, padding, **extra)
    x = jax.random.normal(jax.random.key(3), shape)
    want = digital(x)
    got = analog(x)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.filterwarnings("ignore::analogsim.tile.AnalogGradientWarning")  # input gradients, on purpose
@pytest.mark.parametrize("kernel_size, shape", GEOMETRIES)
@pytest.mark.parametrize("padding, strides", [("SAME", 1), ("VALID", 2)])
def test_input_gradient_equals_nnx_conv(kernel_size, shape, padding, strides):
    digital, analog = twins(kernel_size, strides, padding)
    x = jax.random.normal(jax.random.key(4), shape)
    out_shape = digital(x).shape
    cot = jax.random.normal(jax.random.key(5), out_shape)

    want = jax.grad(lambda x: jnp.sum(jnp.sin(digital(x)) * cot))(x)
    got = jax.grad(lambda x: jnp.sum(jnp.sin(analog(x, key=jax.random.key(6))) * cot))(x)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert float(jnp.max(jnp.abs(want))) > 0.1


def test_kernel_layout_round_trip_and_column_order():
    kernel = jax.random.normal(jax.random.key(6), (3, 2, 4, 5))  # (kh, kw, in, out)
    w = conv_kernel_to_array(kernel)
    assert w.shape == (5, 4 * 3 * 2)
    # column c * prod(k) + t holds channel c at tap t (taps row-major)
    c, i, j, o = 2, 1, 1, 3
    assert w[o, c * 6 + i * 2 + j] == kernel[i, j, c, o]
    np.testing.assert_array_equal(array_to_conv_kernel(w, (3, 2), 4), kernel)


def test_array_size_and_pytorch_initialisation():
    layer = AnalogConv(4, 6, (3, 3), device="idealized", rngs=nnx.Rngs(0))
    assert isinstance(layer, AbstractAnalogLayer)
    assert (layer.in_channels, layer.in_features, layer.out_features) == (4, 36, 6)
    w = np.asarray(layer.weight.get_value())
    assert w.shape == (6, 36)
    bound = 1 / math.sqrt(36)  # fan_in = in * prod(kernel), as PyTorch and aihwkit
    assert np.max(np.abs(w)) <= bound
    assert np.max(np.abs(w)) > 0.9 * bound
    assert np.std(w) == pytest.approx(bound / math.sqrt(3), rel=0.2)  # uniform in +-bound


def test_recording_contract_rows_probe_and_input():
    """What the trainer relies on: under capture_calls, a call reads once per patch, sows the
    patches and the un-unrolled input, and the gradient at its error probe is each patch's error."""
    layer = AnalogConv(2, 3, (3, 3), strides=2, device="idealized", rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(7), (4, 6, 6, 2))
    rows = 4 * 3 * 3
    y, recorded, probes = capture_calls(layer, x)
    assert y.shape == (4, 3, 3, 3)
    (call,) = layer_calls(recorded, ())
    assert call["reads"].shape == (rows,) and call["source"] is x
    np.testing.assert_array_equal(call["inputs"], layer.patches(x).reshape(rows, 18))
    assert probes["error_probe_0"].get_value().shape == (rows, 3)
    assert not hasattr(layer, "error_probe_0") and not hasattr(layer, "inputs")  # nothing stored on the layer

    cot = jax.random.normal(jax.random.key(8), y.shape)
    graphdef, state = nnx.split(layer)

    def loss(probe):  # as the trainer does it: merge inside the differentiated function
        m = nnx.merge(graphdef, state, copy=True)
        init = jax.tree.map(lambda _: probe, probes)
        y, recorded, _ = capture_calls(m, x, init)
        return jnp.sum(y * cot), layer_calls(recorded, ())

    (_, calls), d = jax.value_and_grad(loss, has_aux=True)(jnp.zeros((rows, 3)))
    np.testing.assert_allclose(d, cot.reshape(rows, 3), atol=1e-6)
    assert len(calls) == 1 and calls[0]["inputs"].shape == (rows, 2 * 9)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="kernel_size"):
        AnalogConv(1, 2, (3, 3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="padding"):
        AnalogConv(1, 2, 3, padding="CIRCULAR", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="strides"):
        AnalogConv(1, 2, (3, 3), strides=(1, 0), rngs=nnx.Rngs(0))
    layer = AnalogConv(3, 2, (3, 3), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="3 channels"):
        layer(jnp.ones((1, 5, 5, 2)))


@pytest.mark.slow  # (about 20 s; test_small_cnn_trains_on_digits runs the same network in the default set)
def test_small_cnn_layers_and_rows():
    model = SmallCNN(device="constant-step", rngs=nnx.Rngs(0))
    layers = analog_layers(model)
    assert [type(m).__name__ for _, m in layers] == ["AnalogConv", "AnalogConv", "AnalogLinear"]
    y, recorded, _ = capture_calls(model, jnp.ones((5, 64)))
    assert y.shape == (5, 10)
    # one read per patch: 8x8 positions in the first conv, 4x4 in the second, 1 per image in the head
    assert [layer_calls(recorded, p)[0]["reads"].shape[0] for p, _ in layers] == [5 * 64, 5 * 16, 5]
    digital = SmallCNN(device=None, rngs=nnx.Rngs(0))
    assert analog_layers(digital) == []
    assert isinstance(digital.conv1, nnx.Conv) and isinstance(digital.head, nnx.Linear)
    assert digital(jnp.ones((5, 8, 8, 1))).shape == (5, 10)


@pytest.mark.slow  # 25 s; the CNN's training is in the default set through the CLI (test_any_model)
def test_small_cnn_trains_on_digits():
    """The whole CNN analog on the constant-step card, trained by pulses (10 epochs of 1437
    images: a few seconds of compilation, well under a second per epoch)."""
    ds = load_dataset("digits")
    model = SmallCNN(device="constant-step", rngs=nnx.Rngs(0))
    lr, bs, epochs = 0.5, 32, 10
    graphdef, state, step = make_train_step(model, optax.sgd(lr), lr)
    x = jnp.asarray(ds.x_train)
    y = jnp.asarray(ds.y_train)
    n = x.shape[0]
    for epoch in range(epochs):
        perm = np.asarray(jax.random.permutation(jax.random.key(100 + epoch), n))
        for s in range(n // bs):  # the remainder of each epoch is left out (a new one next epoch)
            idx = perm[s * bs : (s + 1) * bs]
            state, metrics = step(state, x, y, idx, np.ones(bs, np.float32), jax.random.key(1000 * epoch + s))
    assert np.isfinite(float(metrics["loss"]))
    acc, state, counts = evaluate(graphdef, state, ds.x_test, ds.y_test, batch_size=360)
    assert acc >= 0.90
    # evaluation: one array read per non-zero patch (all-zero patches are not read; the first layer
    # never re-reads, as |y| <= 9 taps * max|w| < 12, the ADC bound)
    assert 0 < counts["conv1"]["array_reads"] <= ds.x_test.shape[0] * 64
