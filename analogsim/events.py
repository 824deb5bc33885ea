"""The energy ledger's event formulas: what one training step, or one evaluation read, of one
layer counts. Training (``analogsim.training.step``) and evaluation
(``analogsim.training.evaluation``) both count through these functions.

A forward read of an analog layer on ``R`` x ``C`` tiles (``analogsim.tile.tile_grid``)
converts each input once per tile row (``R n_in`` DAC conversions) and each partial output once
per tile column (``C n_out`` ADC conversions), reads ``n_in n_out`` cross-points, and adds the
partial outputs digitally (``(C - 1) n_out`` additions); noise management scales the inputs and
rescales the outputs of every tile (``R n_in + C n_out`` digital operations). The backward read
is the same with inputs and outputs exchanged.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .algorithms import RuleCounts

__all__ = [
    "analog_step_counts",
    "digital_layers",
    "digital_rows_per_sample",
    "digital_step_ops",
    "read_counts",
    "spread_mask",
]


def spread_mask(mask: jax.Array, rows: int) -> jax.Array:
    """The sample mask (batch,) spread over ``rows`` input vectors of one call (rows = batch *
    vectors per sample, sample-major, as a convolution's patches are)."""
    per = rows // mask.shape[0]
    return jnp.repeat(mask, per) if per > 1 else mask


def read_counts(reads, n_in: int, n_out: int, tiles: tuple[int, int], *, backward=False):
    """Conversions, cross-point reads and periphery operations of ``reads`` reads of a layer
    (forward; ``backward=True``: the transposed read, no digital bias). Works on Python ints
    and on uint32 arrays alike."""
    t_rows, t_cols = tiles
    if backward:
        n_in, n_out, t_rows, t_cols = n_out, n_in, t_cols, t_rows
    return {
        "array_reads": reads,
        "crosspoint_reads": reads * (n_in * n_out),
        "dac_conversions": reads * (t_rows * n_in),
        "adc_conversions": reads * (t_cols * n_out),
        "digital_ops": reads * (t_rows * n_in + t_cols * n_out + (t_cols - 1) * n_out),
    }


def analog_step_counts(
    reads: jax.Array,
    d: jax.Array,
    mask: jax.Array,
    back: jax.Array,
    rule: RuleCounts,
    n_in: int,
    n_out: int,
    *,
    has_bias: bool,
    tiles: tuple[int, int] = (1, 1),
) -> dict[str, jax.Array]:
    """The events of one training step of one analog layer (uint32 increments).

    Args:
      reads: (rows,) forward reads per vector (bound management may read a vector again), all
        calls of the layer in the step one after another.
      d: (rows, out) errors at the layer output; rows of zeros are neither read back nor pulsed.
      mask: (rows,) 1 for real samples, 0 for padding.
      back: (rows,) whether the row's error is read back through the array (not for a call
        that reads the network input, whose error nothing needs).
      rule: what the update rule did: pulses on all of its arrays, transfer reads (one-hot
        inputs: each drives all ``n_in`` DAC lines and reads ``n_out`` cross-points and ADCs),
        and its digital operations.
      n_in, n_out: array size.
      has_bias: the layer has a digital bias.
      tiles: ``(R, C)``, the tiles the array is split into along its outputs and inputs.

    Returns:
      Increments for ``analogsim.energy.add_counts``.
    """
    u32 = jnp.uint32
    mask_i = mask.astype(u32)
    fwd = jnp.sum(reads.astype(u32) * mask_i)
    has_error = jnp.any(d != 0, axis=1)
    with_error = jnp.sum(has_error.astype(u32))
    bwd = jnp.sum((has_error & back).astype(u32))
    rows = jnp.sum(mask_i)
    transfer = rule.transfer_reads.astype(u32)
    f = read_counts(fwd, n_in, n_out, tiles)
    b = read_counts(bwd, n_in, n_out, tiles, backward=True)
    t = read_counts(transfer, n_in, n_out, (1, 1))  # a one-hot vector per read
    digital = (
        f["digital_ops"]
        + b["digital_ops"]
        + with_error * u32(n_in + n_out)  # pulse probabilities of the update
        + ((rows + 1) * u32(n_out) if has_bias else u32(0))  # bias additions and its SGD step
        + rule.digital_ops.astype(u32)
    )
    return {
        "pulses_up": rule.pulses_up.astype(u32),
        "pulses_down": rule.pulses_down.astype(u32),
        "array_reads": fwd + bwd + transfer,
        "crosspoint_reads": f["crosspoint_reads"] + b["crosspoint_reads"] + transfer * u32(n_out),
        "dac_conversions": f["dac_conversions"] + b["dac_conversions"] + transfer * u32(n_in),
        "adc_conversions": f["adc_conversions"] + b["adc_conversions"] + t["adc_conversions"],
        "digital_ops": digital,
    }


def digital_step_ops(rows, n_in: int, n_out: int):
    """Digital operations of one training step of an ``nnx.Linear`` on ``rows`` samples:
    forward, error and weight-gradient multiply-adds per sample, then the optimizer step."""
    return rows * (3 * n_in * n_out + n_out) + n_in * n_out + n_out


def digital_layers(model: nnx.Module) -> list[tuple[str, int, int]]:
    """``(name, in, out)`` of every ``nnx.Linear`` and ``nnx.Conv`` in ``model`` (digital parts
    of the ledger); a convolution's ``in`` is its weights per output channel, ``in_channels
    * prod(kernel_size)``, as an unrolled array's."""
    out = []
    for path, m in nnx.iter_modules(model):
        if isinstance(m, nnx.Linear):
            out.append(("/".join(str(p) for p in path), m.in_features, m.out_features))
        elif isinstance(m, nnx.Conv):
            taps = m.in_features * int(np.prod(m.kernel_size)) // m.feature_group_count
            out.append(("/".join(str(p) for p in path), taps, m.out_features))
    return out


def digital_rows_per_sample(model: nnx.Module, sample_shape: tuple[int, ...]) -> dict[str, tuple[int, bool]]:
    """Per digital layer (``digital_layers``) that the forward pass calls: the input vectors it
    multiplies per sample (1 for a dense layer on one vector, the output positions for a
    convolution) and whether its input is the network's input (then no error is propagated
    back through it). Found by tracing the gradient of one eval-mode forward pass of a
    one-sample batch, which runs nothing; a layer never called is absent."""
    return split_rows_per_sample(sample_shape, *nnx.split(model))


def split_rows_per_sample(sample_shape: tuple[int, ...], graphdef, *states) -> dict[str, tuple[int, bool]]:
    """``digital_rows_per_sample`` of the model ``nnx.merge(graphdef, *states)`` (the states
    may be tracers: only their shapes are used)."""
    rows: dict[str, tuple[int, bool]] = {}

    def counting(name, fn, out_features, x):
        def call(lhs, *args, **kwargs):
            y = fn(lhs, *args, **kwargs)
            # traced values that depend on the differentiated parameters are another kind of tracer
            reads_input = type(lhs) is type(x)
            n, flag = rows.get(name, (0, True))
            rows[name] = (n + int(np.prod(y.shape)) // out_features, flag and reads_input)
            return y

        return call

    def forward(states, x):
        g, params, others = nnx.split(nnx.merge(graphdef, *states, copy=True), nnx.Param, ...)

        def loss(params):
            m = nnx.merge(g, params, others, copy=True)
            m.eval()
            for path, layer in nnx.iter_modules(m):
                name = "/".join(str(p) for p in path)
                if isinstance(layer, nnx.Conv):
                    layer.conv_general_dilated = counting(name, layer.conv_general_dilated, layer.out_features, x)
                elif isinstance(layer, nnx.Linear):
                    layer.dot_general = counting(name, layer.dot_general, layer.out_features, x)
            return jnp.sum(m(x))

        return jax.grad(loss)(params)

    with warnings.catch_warnings():  # (an analog layer's read stream and gradient inside a trace of shapes)
        warnings.simplefilter("ignore")
        jax.eval_shape(forward, states, jax.ShapeDtypeStruct((1, *sample_shape), jnp.float32))
    return rows
