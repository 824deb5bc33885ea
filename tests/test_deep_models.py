"""The deep CNNs (ResNet-20/32/56, VGG-8), the analog-layer choice, the CIFAR-10 loader and the
in-step augmentation (issue 18)."""

import dataclasses
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from analogsim import AnalogLinear, IOParameters, analog_layers
from analogsim.augment import crop_flip, make_augment
from analogsim.conv import AnalogConv, conv_kernel_to_array
from analogsim.data import CIFAR10_FILES, DataError, load_dataset
from analogsim.events import digital_layers, digital_rows_per_sample
from analogsim.models import VGG8, ResNet, deep_model
from analogsim.training import ConfigError, TrainConfig, build_model
from device_models import load_card

PERFECT = IOParameters(is_perfect=True)


@pytest.fixture(scope="module")
def small_digits():
    ds = load_dataset("digits")
    return dataclasses.replace(ds, x_train=ds.x_train[:256], y_train=ds.y_train[:256])


_IDEAL = load_card("idealized").model
IDEAL = dataclasses.replace(_IDEAL, pulsed=dataclasses.replace(_IDEAL.pulsed, w_max_dtod=0.0, w_min_dtod=0.0))


def _program_twin(digital: nnx.Module, analog: nnx.Module) -> None:
    """Put the digital model's weights, biases and normalisation state into its analog twin."""
    analog_modules = dict(nnx.iter_modules(analog))
    for path, m in nnx.iter_modules(digital):
        target = analog_modules[path]
        if isinstance(target, nnx.Linear | nnx.Conv | nnx.BatchNorm):  # digital in both
            nnx.update(target, nnx.state(m))
        elif isinstance(target, AnalogConv | AnalogLinear):
            w = m.kernel.get_value()
            target.weight.set_value(w.T if isinstance(m, nnx.Linear) else conv_kernel_to_array(w))
            if target.bias is not None:
                target.bias.set_value(m.bias.get_value())


@nnx.jit
def forward(model, x):
    return model(x)


@pytest.mark.parametrize(
    "build",
    [
        # (ResNet-20, 32 and 56 differ from ResNet-8 only in the number of blocks per stage)
        lambda **kw: ResNet(8, image_shape=(8, 8, 3), width=4, **kw),
        pytest.param(  # (25 s: to the slow set; the default set has the all-analog ResNet and VGG-8)
            lambda **kw: ResNet(8, image_shape=(12, 12, 1), width=3, analog_layers="inner", **kw),
            marks=pytest.mark.slow,
        ),
        lambda **kw: VGG8(image_shape=(8, 8, 3), width=4, hidden=16, **kw),
        pytest.param(
            lambda **kw: VGG8(image_shape=(16, 16, 1), width=2, hidden=8, batch_norm=False, **kw),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["resnet8", "resnet8-inner", "vgg8", "vgg8-no-bn"],
)
def test_analog_forward_equals_digital_twin_when_ideal(build):
    digital = build(rngs=nnx.Rngs(0))
    analog = build(device=IDEAL, forward_io=PERFECT, backward_io=PERFECT, rngs=nnx.Rngs(1))
    # non-trivial normalisation parameters, so that copying them matters
    for _, m in nnx.iter_modules(digital):
        if isinstance(m, nnx.BatchNorm):
            n = m.scale.get_value().shape[0]
            m.scale.set_value(1.0 + 0.1 * jnp.arange(n) / n)
            m.bias.set_value(0.05 * jnp.arange(n) / n)
            m.mean.set_value(0.01 * jnp.arange(n))
            m.var.set_value(1.0 + 0.2 * jnp.arange(n) / n)
    _program_twin(digital, analog)
    h, w, c = digital.image_shape
    x = jax.random.normal(jax.random.key(0), (3, h * w * c))
    for mode in ("eval", "train"):
        getattr(digital, mode)()
        getattr(analog, mode)()
        y_d, y_a = forward(digital, x), forward(analog, x)
        assert y_d.shape == (3, 10)
        np.testing.assert_allclose(np.asarray(y_a), np.asarray(y_d), rtol=2e-4, atol=2e-5, err_msg=mode)
    assert analog_layers(analog) and not analog_layers(digital)


def test_parameter_counts_match_the_papers():
    """He et al. 2016 table 6: 0.27 M, 0.46 M, 0.85 M; NeuroSim's VGG-8: 12.97 M (all with
    normalisation parameters)."""
    counts = {}
    for name in ("resnet20", "resnet32", "resnet56", "vgg8"):
        model = nnx.eval_shape(lambda name=name: deep_model(name, rngs=nnx.Rngs(0)))
        counts[name] = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert round(counts["resnet20"] / 1e6, 2) == 0.27
    assert round(counts["resnet32"] / 1e6, 2) == 0.46
    assert round(counts["resnet56"] / 1e6, 2) == 0.85
    assert round(counts["vgg8"] / 1e6, 2) == 12.98  # 12.97 M weights and biases + 3,584 normalisation parameters


def test_analog_layer_choice():
    all_analog = ResNet(20, image_shape=(8, 8, 1), width=2, device="constant-step", rngs=nnx.Rngs(0))
    inner = ResNet(20, image_shape=(8, 8, 1), width=2, device="constant-step", analog_layers="inner", rngs=nnx.Rngs(0))
    assert len(analog_layers(all_analog)) == 20  # 19 convolutions and the dense layer
    names = [p for p, _ in analog_layers(inner)]
    assert len(names) == 18 and ("stem",) not in names and ("head",) not in names
    assert isinstance(inner.stem, nnx.Conv) and isinstance(inner.head, nnx.Linear)
    assert isinstance(inner.blocks[0].conv1, AnalogConv)
    vgg = VGG8(
        image_shape=(8, 8, 1), width=2, hidden=4, device="constant-step", analog_layers="inner", rngs=nnx.Rngs(0)
    )
    assert isinstance(vgg.convs[0], nnx.Conv) and isinstance(vgg.fc2, nnx.Linear)
    assert len(analog_layers(vgg)) == 6  # five convolutions and the first dense layer
    with pytest.raises(ValueError, match="analog_layers: value 'first' is not allowed; allowed: all, inner"):
        ResNet(20, analog_layers="first", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"ResNet.depth: value 21 is not allowed"):
        ResNet(21, rngs=nnx.Rngs(0))


def test_config_builds_the_deep_models(small_digits):
    config = TrainConfig(model="resnet20", analog_layers="inner", device="constant-step")
    assert config.activation == "relu" and TrainConfig().activation == "tanh"
    model, _ = build_model(config, small_digits)
    assert isinstance(model, ResNet) and model.image_shape == (8, 8, 1) and isinstance(model.stem, nnx.Conv)
    model, _ = build_model(TrainConfig(model="mlp", analog_layers="inner", hidden=(8, 8)), small_digits)
    assert [type(m).__name__ for m in model.layers] == ["Linear", "AnalogLinear", "Linear"]
    with pytest.raises(ConfigError, match="--analog-layers: value 'inner' is not allowed with --model 'pkg:f'"):
        TrainConfig(model="pkg:f", analog_layers="inner").validate()
    with pytest.raises(ConfigError, match="--augment: value 'rotate' is not allowed; allowed: auto, none, crop-flip"):
        TrainConfig(augment="rotate").validate()
    assert TrainConfig(dataset="cifar10").resolved_augment() == "crop-flip"
    assert TrainConfig().resolved_augment() == "none"


def test_digital_conv_rows_are_its_output_positions():
    model = ResNet(8, image_shape=(8, 8, 1), width=2, device="constant-step", analog_layers="inner", rngs=nnx.Rngs(0))
    assert dict((n, (i, o)) for n, i, o in digital_layers(model)) == {"head": (8, 10), "stem": (9, 2)}
    # the stem reads the (reshaped) input: no error goes back through it; the head reads activations
    assert digital_rows_per_sample(model, (64,)) == {"stem": (64, True), "head": (1, False)}
    strided = nnx.Conv(1, 2, (3, 3), strides=2, padding="VALID", rngs=nnx.Rngs(0))
    net = nnx.Sequential(lambda x: x.reshape(-1, 9, 9, 1), strided)
    assert digital_rows_per_sample(net, (81,)) == {"layers/1": (16, True)}


def _write_cifar(root, n_per_batch=4, seed=0):
    """CIFAR-10's Python batches in their own format: pickled dicts of bytes keys, ``data``
    (n, 3072) uint8 channel-major, ``labels`` a list of ints."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in CIFAR10_FILES:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"x.png"] * n_per_batch,
        }
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh, protocol=2)
        batches[name] = (data, labels)
    return batches


def test_cifar10_loader_reads_the_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = _write_cifar(folder)
    data = load_dataset("cifar10", tmp_path)  # the parent folder works as well as the batches' own
    assert data.name == "cifar10" and data.image_shape == (32, 32, 3) and data.num_classes == 10
    assert data.x_train.shape == (20, 3072) and data.x_test.shape == (4, 3072)
    assert list(data.y_test) == batches["test_batch"][1]
    # channel-major storage to channels last: pixel (row 1, col 2) of channel c sits at c * 1024 + 32 + 2
    raw = np.concatenate([batches[n][0] for n in CIFAR10_FILES[:-1]]).astype(np.float64) / 255
    images = data.x_train.reshape(20, 32, 32, 3)
    channels = raw.reshape(20, 3, 1024)
    mean, std = channels.mean(axis=(0, 2)), channels.std(axis=(0, 2))
    for c in range(3):
        np.testing.assert_allclose(images[5, 1, 2, c], (raw[5, c * 1024 + 34] - mean[c]) / std[c], rtol=1e-5)
    np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(images.std(axis=(0, 1, 2)), 1, atol=1e-4)
    assert load_dataset("cifar10", folder).x_test.shape == (4, 3072)


def test_cifar10_loader_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(DataError, match="--dataset cifar10 needs --data-dir"):
        load_dataset("cifar10")
    _write_cifar(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DataError, match="field 'data_batch_3': missing file data_batch_3"):
        load_dataset("cifar10", tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"data_batch_3: not a readable CIFAR-10 batch .*refused class builtins.print"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(
        DataError, match=r"field 'data': shape \(2, 5\) dtype uint8 is not allowed; expected \(n, 3072\)"
    ):
        load_dataset("cifar10", tmp_path)


def test_crop_flip_keeps_shapes_and_each_image_in_its_row():
    n, h, w, c = 16, 6, 5, 2
    x = jax.random.uniform(jax.random.key(0), (n, h, w, c)) + 1.0  # no zeros: padding shows as 0
    out = crop_flip(x.reshape(n, -1), jax.random.key(1), (h, w, c), pad=2)
    assert out.shape == (n, h * w * c)
    out = np.asarray(out).reshape(n, h, w, c)
    padded = np.pad(np.asarray(x), ((0, 0), (2, 2), (2, 2), (0, 0)))
    flips = 0
    for i in range(n):  # row i is a crop (or its mirror) of image i, so the labels still match
        found = [
            (dy, dx, f)
            for dy in range(5)
            for dx in range(5)
            for f in (False, True)
            if np.array_equal(
                out[i], padded[i, dy : dy + h, dx : dx + w][:, ::-1] if f else padded[i, dy : dy + h, dx : dx + w]
            )
        ]
        assert found, f"row {i} is not a crop of image {i}"
        flips += found[0][2]
    assert 2 <= flips <= 14  # flipped with probability 1/2
    assert make_augment("none", None) is None
    with pytest.raises(ValueError, match="needs images"):
        make_augment("crop-flip", None)


@pytest.mark.slow  # (25 s, most of it compiling the step)
def test_resnet_trains_with_augmentation_and_prices_its_digital_layers(small_digits):
    """A ResNet with digital first and last layers trains with crop-flip inside the step
    (learning itself: the accuracy table of experiments/cnn_accuracy.py), and the ledger counts the digital convolution once per output position."""
    from analogsim import train_model
    from analogsim.energy import host_counts

    data = dataclasses.replace(small_digits, x_train=small_digits.x_train[:64], y_train=small_digits.y_train[:64])
    model = ResNet(8, image_shape=(8, 8, 1), width=4, device="constant-step", analog_layers="inner", rngs=nnx.Rngs(0))
    run = train_model(
        model, data, lr=0.1, epochs=1, batch_size=32, progress=False, augment=make_augment("crop-flip", (8, 8, 1))
    )
    assert np.isfinite(run.epoch_test_accuracy[-1])
    assert not np.allclose(run.model.blocks[0].conv1.weight.get_value(), model.blocks[0].conv1.weight.get_value())
    ops = host_counts(run.state.ledger)["stem"]["digital_ops"]
    # per sample 64 positions x (3 x 9 x 4 + 4), per step the optimizer's 9 x 4 + 4; 2 steps of 32
    assert ops == 64 * 64 * (3 * 9 * 4 + 4) + 2 * (9 * 4 + 4)


def test_the_step_trains_on_the_augmented_batch(small_digits):
    """``augment`` replaces the batch inside the step: an augmentation that blanks the images
    leaves the first layer without pulses (its inputs are all zero), unlike no augmentation."""
    from analogsim import MLP, make_train_step

    x, y = jnp.asarray(small_digits.x_train[:32]), jnp.asarray(small_digits.y_train[:32])
    idx = jnp.arange(32)
    firsts = []
    for augment in (None, lambda xb, key: jnp.zeros_like(xb)):
        model = MLP((64, 8, 10), device="constant-step", rngs=nnx.Rngs(0))
        graphdef, state, step = make_train_step(model, optax.sgd(0.1), 0.5, augment=augment)
        w0 = state.analog["layers"][0]["weight"].get_value().copy()
        state, _ = step(state, x, y, idx, key=jax.random.key(1))
        firsts.append(bool(jnp.any(state.analog["layers"][0]["weight"].get_value() != w0)))
    assert firsts == [True, False]
