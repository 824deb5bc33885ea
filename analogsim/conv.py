"""Convolutions on analog crossbars, unrolled onto the array as im2col does.

A convolution with ``C_in`` input channels, ``C_out`` output channels and a kernel of
``k_1 x ... x k_n`` taps is one crossbar of ``C_out`` rows by ``C_in * prod(k)`` columns
(aihwkit's ``AnalogConv1d``/``AnalogConv2d``). Every receptive field of the input (a *patch*)
is flattened into one input vector and read through the array,

.. math::
    y_{b,p,:} = W\\, \\mathrm{patch}_{b,p}(x) + b, \\qquad
    W \\in \\mathbb{R}^{C_{out} \\times C_{in} \\prod_i k_i},

so one image of ``P`` output positions costs ``P`` array reads, and the pulsed update sees
every patch as one sample (``x`` = the patch, ``d`` = the error at that output position), as
aihwkit does. The backward read gives each patch's error through the transposed array; the
transpose of the patch extraction (col2im) then adds the overlapping contributions.

Column order: column ``c * prod(k) + t`` of the array holds input channel ``c`` at kernel tap
``t`` (taps in row-major order), the feature order of
``jax.lax.conv_general_dilated_patches``. ``conv_kernel_to_array`` and
``array_to_conv_kernel`` convert between this order and the ``(*kernel_size, in, out)``
kernel of ``flax.nnx.Conv``.

References:
    IBM aihwkit, ``AnalogConv2d`` (``aihwkit/nn/modules/conv.py``): im2col unrolling, one
    tile of ``out_channels x in_channels * prod(kernel_size)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from .activations import ACTIVATIONS, torch_uniform
from .layers import AbstractAnalogLayer, AnalogLinear
from .pulsed_update import UpdateParameters

__all__ = ["POOLING", "AnalogConv", "SmallCNN", "array_to_conv_kernel", "conv_kernel_to_array"]

_DIMENSION_NUMBERS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}

POOLING = {"avg": nnx.avg_pool, "max": nnx.max_pool}


def _tuple(value: int | Sequence[int], n: int, name: str) -> tuple[int, ...]:
    """``value`` as ``n`` positive ints (an int is repeated)."""
    t = (value,) * n if isinstance(value, int) else tuple(value)
    if len(t) != n or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in t):
        raise ValueError(f"AnalogConv.{name}: value {value!r} is not allowed; must be one int >= 1 or {n} of them")
    return t


def _padding(padding, n: int) -> str | tuple[tuple[int, int], ...]:
    """``'SAME'``, ``'VALID'`` or explicit ``((lo, hi), ...)`` per spatial dimension."""
    if isinstance(padding, str):
        if padding.upper() in ("SAME", "VALID"):
            return padding.upper()
    elif isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        return ((padding, padding),) * n
    elif isinstance(padding, Sequence) and len(padding) == n:
        pads = []
        for p in padding:
            if isinstance(p, int) and not isinstance(p, bool) and p >= 0:
                pads.append((p, p))
            elif (
                isinstance(p, Sequence)
                and len(p) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in p)
            ):
                pads.append((int(p[0]), int(p[1])))
            else:
                break
        else:
            return tuple(pads)
    raise ValueError(
        f"AnalogConv.padding: value {padding!r} is not allowed; allowed: 'SAME', 'VALID', an int >= 0, "
        f"or {n} ints or (low, high) pairs of ints >= 0 (one per spatial dimension)"
    )


def conv_kernel_to_array(kernel: jax.Array) -> jax.Array:
    """The crossbar weights ``(out, in * prod(k))`` of a ``(*k, in, out)`` conv kernel.

    Args:
      kernel: a ``flax.nnx.Conv`` kernel, shape ``(*kernel_size, in_channels, out_channels)``.

    Returns:
      The array in ``AnalogConv``'s column order (channel-major, then taps row-major).
    """
    n = kernel.ndim - 2
    perm = (n + 1, n, *range(n))
    return jnp.transpose(kernel, perm).reshape(kernel.shape[-1], -1)


def array_to_conv_kernel(w: jax.Array, kernel_size: Sequence[int], in_channels: int) -> jax.Array:
    """The ``(*k, in, out)`` conv kernel of crossbar weights ``w`` (inverse of ``conv_kernel_to_array``).

    Args:
      w: ``(out, in_channels * prod(kernel_size))`` array weights.
      kernel_size: the kernel's taps per spatial dimension.
      in_channels: number of input channels.
    """
    n = len(kernel_size)
    k = w.reshape(w.shape[0], in_channels, *kernel_size)
    return jnp.transpose(k, (*range(2, n + 2), 1, 0))


class AnalogConv(AbstractAnalogLayer):
    """A 1-D or 2-D convolution whose kernel lives on one analog crossbar (im2col).

    Channels-last layouts as ``flax.nnx.Conv``: ``(batch, width, in)`` for 1-D and
    ``(batch, height, width, in)`` for 2-D (more leading batch dimensions are flattened and
    restored; none means a single example). Each patch is one read of the
    ``(out_features, in_features * prod(kernel_size))`` array through the forward periphery
    (``AnalogLinear``), so noise management, DAC/ADC and bound management act per patch,
    and the pulsed update treats each patch as one sample. Initialisation as PyTorch's (and
    aihwkit's) convolutions: weights and bias uniform in :math:`\\pm 1/\\sqrt{fan_{in}}` with
    :math:`fan_{in} = in \\prod_i k_i`.

    Attributes, beyond ``AnalogLinear``'s: ``in_channels`` is the number of input channels
    (the ``in_features`` argument), while ``in_features`` is the array's input size,
    ``in_channels * prod(kernel_size)`` (what the trainer and the energy ledger use).

    Args:
      in_features: input channels.
      out_features: output channels (rows of the array).
      kernel_size: taps per spatial dimension, an int (1-D) or a tuple of 1 or 2 ints; its
        length decides 1-D or 2-D.
      strides: step between patches, an int or one per spatial dimension.
      padding: ``'SAME'``, ``'VALID'``, an int, or one int or ``(low, high)`` pair of zero
        rows/columns per spatial dimension (as ``flax.nnx.Conv``).
      kernel_dilation: spacing between kernel taps, an int or one per spatial dimension.
      use_bias: add a digital bias per output channel.
      rngs: ``params`` draws the weights and device-to-device variation; ``read`` seeds the
        read-noise stream.
      **kwargs: every other keyword of ``AnalogLinear`` (``device``, ``forward_io``,
        ``backward_io``, ``update``).

    Example:
      >>> conv = AnalogConv(1, 8, (3, 3), device="constant-step", rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 8, 8, 1))).shape
      (2, 8, 8, 8)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        *,
        padding: str | int | Sequence[int | tuple[int, int]] = "SAME",
        kernel_dilation: int | Sequence[int] = 1,
        use_bias: bool = True,
        rngs: nnx.Rngs,
        **kwargs,
    ):
        n = 1 if isinstance(kernel_size, int) else len(kernel_size)
        if n not in _DIMENSION_NUMBERS:
            raise ValueError(
                f"AnalogConv.kernel_size: value {kernel_size!r} is not allowed; 1 or 2 spatial dimensions are supported"
            )
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"AnalogConv.in_features: value {in_features!r} is not allowed; must be an int >= 1")
        kernel = _tuple(kernel_size, n, "kernel_size")
        super().__init__(in_features * math.prod(kernel), out_features, use_bias=use_bias, rngs=rngs, **kwargs)
        self.in_channels = in_features
        self.kernel_size = kernel
        self.strides = _tuple(strides, n, "strides")
        self.padding = _padding(padding, n)
        self.kernel_dilation = _tuple(kernel_dilation, n, "kernel_dilation")

    def patches(self, x: jax.Array) -> jax.Array:
        """The receptive fields of ``x`` (batch, *spatial, in) as (batch, *out_spatial, in * prod(k)).

        Built from one strided slice of the padded input per kernel tap, stacked channel-major
        (the layout of ``jax.lax.conv_general_dilated_patches``, which computes the same as a
        convolution with an identity kernel: ``(in * prod(k))^2`` multiply-adds per output
        position, forward and again backward, where slices cost none).
        """
        spatial = x.shape[1:-1]
        n = len(spatial)
        span = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, self.kernel_dilation, strict=True)]
        if isinstance(self.padding, str):
            pads = jax.lax.padtype_to_pads(spatial, span, self.strides, self.padding)
        else:
            pads = self.padding
        x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        out = [
            (size + lo + hi - s) // st + 1
            for size, (lo, hi), s, st in zip(spatial, pads, span, self.strides, strict=True)
        ]
        taps = []
        for tap in itertools.product(*(range(k) for k in self.kernel_size)):
            start = [t * d for t, d in zip(tap, self.kernel_dilation, strict=True)]
            limit = [s0 + (o - 1) * st + 1 for s0, o, st in zip(start, out, self.strides, strict=True)]
            taps.append(jax.lax.slice(x, (0, *start, 0), (x.shape[0], *limit, x.shape[-1]), (1, *self.strides, 1)))
        if n == 0 or not taps:
            raise ValueError("AnalogConv.patches: no spatial dimensions")
        return jnp.stack(taps, axis=-1).reshape(x.shape[0], *out, -1)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Forward read of every patch of ``x`` (..., *spatial, in) -> (..., *out_spatial, out).

        Args:
          x: channels-last input; leading dimensions before the spatial ones are the batch.
          key: PRNG key of the read noise; by default the layer's own ``read`` stream.
        """
        n = len(self.kernel_size)
        if x.ndim < n + 1 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"AnalogConv: input of shape {x.shape} is not allowed; expected (..., {n} spatial dims, "
                f"{self.in_channels} channels)"
            )
        lead = x.shape[: x.ndim - n - 1]
        patches = self.patches(x.reshape(-1, *x.shape[x.ndim - n - 1 :]))
        out_spatial = patches.shape[1:-1]
        y = self._read(patches.reshape(-1, self.in_features), x, key)
        return y.reshape(*lead, *out_spatial, self.out_features)

    def kernel_weights(self) -> jax.Array:
        """The present weights as a ``(*kernel_size, in, out)`` kernel (``flax.nnx.Conv`` layout)."""
        return array_to_conv_kernel(self.weight.get_value(), self.kernel_size, self.in_channels)


class SmallCNN(nnx.Module):
    """A small convolutional network for 8x8 one-channel images (the digits set).

    ``conv(3x3, c1) -> activation -> 2x2 pool -> conv(3x3, c2) -> activation -> 2x2 pool ->
    dense(num_classes)``, ``'SAME'`` padding. Every layer is analog (``AnalogConv``,
    ``AnalogLinear``) when ``device`` is given, or all digital (``flax.nnx.Conv``,
    ``flax.nnx.Linear``, same initialisation) when it is ``None``.

    Args:
      channels: output channels of the two convolutions.
      num_classes: outputs (logits).
      image_shape: (height, width) of the images; inputs of shape (batch, height * width) or
        (batch, height, width, 1) are accepted.
      activation: ``tanh``, ``relu`` or ``sigmoid`` after each convolution.
      pooling: ``max`` or ``avg``, 2x2 with stride 2 (max pooling trains better on the
        constant-step card: about 0.96 against 0.92 test accuracy on digits).
      device: card name/path, ``DeviceCard`` or model for the analog
        layers; ``None`` builds digital layers.
      update: pulsed-update settings of the analog layers.
      algorithm: update rule of the analog layers; ``None``: analog SGD.
      reference: what analog weights are read against (``AnalogLinear``).
      analog_layers: ``all`` or ``inner`` (the first convolution and the dense layer digital).
      rngs: random streams.

    Example:
      >>> model = SmallCNN(device="constant-step", rngs=nnx.Rngs(0))
      >>> model(jnp.ones((4, 64))).shape
      (4, 10)
    """

    def __init__(
        self,
        channels: tuple[int, int] = (8, 16),
        num_classes: int = 10,
        image_shape: tuple[int, int] = (8, 8),
        activation: str = "tanh",
        pooling: str = "max",
        *,
        device=None,
        update: UpdateParameters = UpdateParameters(),
        algorithm=None,
        reference: str = "zero",
        analog_layers: str = "all",
        rngs: nnx.Rngs,
    ):
        if analog_layers not in ("all", "inner"):
            raise ValueError(f"analog_layers: value {analog_layers!r} is not allowed; allowed: all, inner")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: value {activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}")
        if pooling not in POOLING:
            raise ValueError(f"pooling: value {pooling!r} is not allowed; allowed: {', '.join(POOLING)}")
        h, w = image_shape
        if h % 4 or w % 4:
            raise ValueError(f"image_shape: value {image_shape!r} is not allowed; both sizes must be multiples of 4")
        c1, c2 = channels
        self.image_shape = (h, w)
        self.channels = (c1, c2)
        self.activation = activation
        self.pooling = pooling
        flat = c2 * (h // 4) * (w // 4)
        kw = {"device": device, "update": update, "reference": reference, "rngs": rngs}
        if algorithm is not None:
            kw["algorithm"] = algorithm
        edge = device is not None and analog_layers == "all"

        def conv(n_in, n_out, analog):
            if analog:
                return AnalogConv(n_in, n_out, (3, 3), **kw)
            init = torch_uniform(n_in * 9)
            return nnx.Conv(n_in, n_out, (3, 3), padding="SAME", kernel_init=init, bias_init=init, rngs=rngs)

        self.conv1 = conv(1, c1, edge)
        self.conv2 = conv(c1, c2, device is not None)
        if edge:
            self.head = AnalogLinear(flat, num_classes, **kw)
        else:
            init = torch_uniform(flat)
            self.head = nnx.Linear(flat, num_classes, kernel_init=init, bias_init=init, rngs=rngs)

    def digital_ops_per_sample(self) -> int:
        """Digital operations per training sample outside the arrays (the energy ledger's
        ``activations`` entry): per hidden unit one activation forward and one derivative
        backward; per pooled output 4 operations forward (adds or compares over the 2x2 window)
        and 4 backward."""
        h, w = self.image_shape
        c1, c2 = self.channels
        units = c1 * h * w + c2 * (h // 2) * (w // 2)
        pooled = c1 * (h // 2) * (w // 2) + c2 * (h // 4) * (w // 4)
        return 2 * units + 8 * pooled

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        pool = POOLING[self.pooling]
        x = x.reshape(x.shape[0], *self.image_shape, 1)
        x = pool(act(self.conv1(x)), (2, 2), (2, 2))
        x = pool(act(self.conv2(x)), (2, 2), (2, 2))
        return self.head(x.reshape(x.shape[0], -1))
