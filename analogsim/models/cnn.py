"""Deep convolutional networks: the CIFAR ResNets of He et al. (2016) and NeuroSim's VGG-8.

Convolutions and dense layers are analog (``AnalogConv``, ``AnalogLinear``) when a ``device`` is
given, digital (``flax.nnx.Conv``, ``flax.nnx.Linear``) when it is ``None``; batch
normalisation, pooling, activations and shortcuts are always digital. ``analog_layers="inner"``
keeps the first convolution and the last dense layer digital (the usual choice in aihwkit's
examples and in the analog-AI literature: the input layer sees raw pixels at full precision and
the output layer's few weights decide the logits). Initialisation as PyTorch's layers (uniform in
:math:`\\pm 1/\\sqrt{fan_{in}}`), so a digital network and its analog twin start from the same
distribution.

References:
    K. He, X. Zhang, S. Ren, J. Sun, "Deep residual learning for image recognition", CVPR 2016,
    section 4.2 (CIFAR-10): 3x3 convolutions, 16/32/64 channels in three stages of ``n`` basic
    blocks each (depth ``6n + 2``), stride 2 at the first block of stages 2 and 3, identity
    shortcuts with zero-padded channels (option A), global average pooling, one dense layer;
    0.27 M / 0.46 M / 0.85 M parameters for ResNet-20 / 32 / 56.

    X. Peng, S. Huang, H. Jiang, A. Lu, S. Yu, "DNN+NeuroSim V2.0", IEEE TCAD 2021, and the
    ``VGG8`` of its training code (github.com/neurosim/DNN_NeuroSim_V2.1,
    ``Training_pytorch/models/VGG.py``): conv 128, 128, max-pool, 256, 256, max-pool, 512, 512,
    max-pool (3x3, same padding, ReLU), dense 8192 -> 1024 -> 10.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from ..activations import ACTIVATIONS, torch_uniform
from ..conv import AnalogConv
from ..layers import AnalogLinear

__all__ = ["ANALOG_LAYERS", "DEEP_MODELS", "VGG8", "ResNet", "deep_model"]

ANALOG_LAYERS = ("all", "inner")

_PAD1 = ((1, 1), (1, 1))  # PyTorch's padding=1 (JAX's 'SAME' pads a stride-2 conv asymmetrically)


def _check_choice(name: str, value, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name}: value {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _check_image_shape(name: str, image_shape) -> tuple[int, int, int]:
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in shape):
        raise ValueError(
            f"{name}.image_shape: value {image_shape!r} is not allowed; must be (height, width, channels) ints >= 1"
        )
    return shape


class _Maker:
    """Builds each convolution or dense layer analog or digital, with PyTorch's initialisation."""

    def __init__(self, device, analog_kwargs: dict, rngs: nnx.Rngs):
        self.device = device
        self.kwargs = {k: v for k, v in analog_kwargs.items() if v is not None}
        self.rngs = rngs

    def conv(self, c_in: int, c_out: int, strides: int = 1, *, analog: bool, use_bias: bool = False):
        if self.device is None or not analog:
            init = torch_uniform(c_in * 9)
            return nnx.Conv(
                c_in, c_out, (3, 3), strides, padding=_PAD1, use_bias=use_bias,
                kernel_init=init, bias_init=init, rngs=self.rngs,
            )  # fmt: skip
        return AnalogConv(
            c_in, c_out, (3, 3), strides, padding=_PAD1, use_bias=use_bias, device=self.device, rngs=self.rngs,
            **self.kwargs,
        )  # fmt: skip

    def dense(self, n_in: int, n_out: int, *, analog: bool):
        if self.device is None or not analog:
            init = torch_uniform(n_in)
            return nnx.Linear(n_in, n_out, kernel_init=init, bias_init=init, rngs=self.rngs)
        return AnalogLinear(n_in, n_out, device=self.device, rngs=self.rngs, **self.kwargs)

    def norm(self, channels: int) -> nnx.BatchNorm:
        # PyTorch's BatchNorm2d defaults (momentum 0.1 there is 0.9 here: the weight of the old statistics)
        return nnx.BatchNorm(channels, momentum=0.9, epsilon=1e-5, rngs=self.rngs)


class BasicBlock(nnx.Module):
    """Two 3x3 convolutions with batch normalisation and an identity shortcut (option A: the
    shortcut subsamples by the stride and pads the new channels with zeros)."""

    def __init__(self, c_in: int, c_out: int, strides: int, make: _Maker, activation: str):
        self.conv1 = make.conv(c_in, c_out, strides, analog=True)
        self.bn1 = make.norm(c_out)
        self.conv2 = make.conv(c_out, c_out, 1, analog=True)
        self.bn2 = make.norm(c_out)
        self.strides = strides
        self.extra = c_out - c_in
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        y = act(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x[:, :: self.strides, :: self.strides, :] if self.strides > 1 else x
        if self.extra:
            s = jnp.pad(s, ((0, 0), (0, 0), (0, 0), (self.extra // 2, self.extra - self.extra // 2)))
        return act(y + s)


class ResNet(nnx.Module):
    """A ResNet for small images in the CIFAR layout of He et al. (2016), depth ``6n + 2``.

    Args:
      depth: 20, 32, 56 (or any ``6n + 2``).
      num_classes: outputs (logits).
      image_shape: ``(height, width, channels)``; inputs may come flat ``(batch, h * w * c)``.
      width: channels of the first stage (16 in the paper; the stages have ``width``, ``2 width``,
        ``4 width``).
      activation: ``relu`` (the paper's), ``tanh`` or ``sigmoid``.
      analog_layers: ``all`` (every convolution and the dense layer analog) or ``inner`` (the
        first convolution and the dense layer digital).
      device: card name/path, ``DeviceCard`` or model of the analog layers; ``None``: all digital.
      update: pulsed-update settings of every analog layer (``None``: the layer's default).
      algorithm: update rule of every analog layer (``None``: analog SGD).
      reference: what analog weights are read against (``AnalogLinear``; ``None``: zero).
      forward_io: periphery of the forward reads (``None``: the default).
      backward_io: periphery of the backward reads (``None``: the default).
      rngs: random streams.

    Example:
      >>> model = ResNet(20, image_shape=(8, 8, 1), width=4, device="constant-step", rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 64))).shape
      (2, 10)
    """

    def __init__(
        self,
        depth: int = 20,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (32, 32, 3),
        width: int = 16,
        activation: str = "relu",
        *,
        analog_layers: str = "all",
        device=None,
        update=None,
        algorithm=None,
        reference: str | None = None,
        forward_io=None,
        backward_io=None,
        rngs: nnx.Rngs,
    ):
        if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"ResNet.depth: value {depth!r} is not allowed; must be 6n + 2 >= 8 (20, 32, 56, ...)")
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"ResNet.width: value {width!r} is not allowed; must be an int >= 1")
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("analog_layers", analog_layers, ANALOG_LAYERS)
        self.image_shape = _check_image_shape("ResNet", image_shape)
        self.depth, self.width, self.activation, self.analog_layers = depth, width, activation, analog_layers
        analog_kwargs = {"update": update, "algorithm": algorithm, "reference": reference}
        analog_kwargs |= {"forward_io": forward_io, "backward_io": backward_io}
        make = _Maker(device, analog_kwargs, rngs)
        edge = analog_layers == "all"
        self.stem = make.conv(self.image_shape[2], width, 1, analog=edge)
        self.stem_bn = make.norm(width)
        blocks, c_in = [], width
        for stage in range(3):
            c_out = width * 2**stage
            for i in range((depth - 2) // 6):
                strides = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, strides, make, activation))
                c_in = c_out
        self.blocks = nnx.List(blocks)
        self.head = make.dense(c_in, num_classes, analog=edge)

    def digital_ops_per_sample(self) -> int:
        """Digital operations per training sample outside the arrays (the energy ledger's
        ``activations`` entry), by convention: per convolution output element 4 forward and 4
        backward for its batch normalisation (scale, shift and their gradients) and 1 + 1 for its
        activation; per block output element 1 add forward; per pooled input element 1 + 1."""
        h, w, _ = self.image_shape
        total, c = 0, self.width
        sizes = [(h, w)]
        for _ in range(2):  # stages 2 and 3 halve the image (stride 2, padding 1: rounding up)
            sizes.append((math.ceil(sizes[-1][0] / 2), math.ceil(sizes[-1][1] / 2)))
        n = (self.depth - 2) // 6
        total += 10 * c * h * w  # stem: normalisation and activation
        for stage, (sh, sw) in enumerate(sizes):
            per_conv = c * 2**stage * sh * sw
            total += n * (2 * 10 * per_conv + per_conv)  # two convs per block, one add
        sh, sw = sizes[-1]
        return total + 2 * 4 * c * sh * sw  # global average pooling

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], *self.image_shape)
        x = act(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(jnp.mean(x, axis=(1, 2)))


class VGG8(nnx.Module):
    """NeuroSim's VGG-8 for CIFAR-10: six 3x3 convolutions (128, 128, 256, 256, 512, 512
    channels at ``width=128``) with max pooling after every second, then dense 1024 and the
    classes.

    With ``batch_norm=True`` (default) each convolution is followed by a digital batch
    normalisation, which NeuroSim's layer list does not have (it trains with its own
    quantisation scales); ``batch_norm=False`` gives exactly NeuroSim's layers.

    Args:
      num_classes: outputs (logits).
      image_shape: ``(height, width, channels)``; inputs may come flat.
      width: channels of the first two convolutions (128 in NeuroSim; the next are 2x and 4x).
      hidden: width of the first dense layer (1024 in NeuroSim).
      activation: ``relu`` (NeuroSim's), ``tanh`` or ``sigmoid``.
      batch_norm: digital batch normalisation after each convolution.
      analog_layers: ``all`` or ``inner`` (first convolution and last dense layer digital).
      device: card of the analog layers; ``None``: all digital.
      update: pulsed-update settings of every analog layer (``None``: the layer's default).
      algorithm: update rule of every analog layer (``None``: analog SGD).
      reference: what analog weights are read against (``None``: zero).
      forward_io: periphery of the forward reads (``None``: the default).
      backward_io: periphery of the backward reads (``None``: the default).
      rngs: random streams.
    """

    def __init__(
        self,
        num_classes: int = 10,
        image_shape: tuple[int, int, int] = (32, 32, 3),
        width: int = 128,
        hidden: int = 1024,
        activation: str = "relu",
        *,
        batch_norm: bool = True,
        analog_layers: str = "all",
        device=None,
        update=None,
        algorithm=None,
        reference: str | None = None,
        forward_io=None,
        backward_io=None,
        rngs: nnx.Rngs,
    ):
        for name, value in (("width", width), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"VGG8.{name}: value {value!r} is not allowed; must be an int >= 1")
        _check_choice("activation", activation, ACTIVATIONS)
        _check_choice("analog_layers", analog_layers, ANALOG_LAYERS)
        self.image_shape = _check_image_shape("VGG8", image_shape)
        h, w, c = self.image_shape
        if h < 8 or w < 8:
            raise ValueError(f"VGG8.image_shape: value {image_shape!r} is not allowed; needs height and width >= 8")
        self.activation, self.batch_norm, self.analog_layers = activation, batch_norm, analog_layers
        analog_kwargs = {"update": update, "algorithm": algorithm, "reference": reference}
        analog_kwargs |= {"forward_io": forward_io, "backward_io": backward_io}
        make = _Maker(device, analog_kwargs, rngs)
        edge = analog_layers == "all"
        channels = [width, width, 2 * width, 2 * width, 4 * width, 4 * width]
        convs, norms, c_in = [], [], c
        for i, c_out in enumerate(channels):
            convs.append(make.conv(c_in, c_out, 1, analog=edge or i > 0))
            norms.append(make.norm(c_out) if batch_norm else None)
            c_in = c_out
        self.convs = nnx.List(convs)
        self.norms = nnx.List(norms) if batch_norm else None
        self.flat = 4 * width * (h // 8) * (w // 8)
        self.fc1 = make.dense(self.flat, hidden, analog=True)
        self.fc2 = make.dense(hidden, num_classes, analog=edge)
        self.hidden = hidden

    def digital_ops_per_sample(self) -> int:
        """Digital operations per training sample outside the arrays, by the convention of
        ``ResNet.digital_ops_per_sample`` (normalisation 4 + 4, activation 1 + 1 per element,
        max pooling 4 + 4 per pooled output)."""
        h, w, _ = self.image_shape
        per = 10 if self.batch_norm else 2
        total = 0
        for i, c in enumerate(ch.out_features for ch in self.convs):
            scale = 2 ** (i // 2)
            sh, sw = h // scale, w // scale
            total += per * c * sh * sw
            if i % 2:
                total += 8 * c * (sh // 2) * (sw // 2)
        return total + 2 * self.hidden

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        x = x.reshape(x.shape[0], *self.image_shape)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if self.norms is not None:
                x = self.norms[i](x)
            x = act(x)
            if i % 2:
                x = nnx.max_pool(x, (2, 2), (2, 2))
        x = act(self.fc1(x.reshape(x.shape[0], -1)))
        return self.fc2(x)


DEEP_MODELS = ("resnet20", "resnet32", "resnet56", "vgg8")


def deep_model(name: str, **kwargs) -> ResNet | VGG8:
    """The network ``name`` (one of ``DEEP_MODELS``) built with ``kwargs``."""
    _check_choice("model", name, DEEP_MODELS)
    if name == "vgg8":
        return VGG8(**kwargs)
    return ResNet(int(name.removeprefix("resnet")), **kwargs)
