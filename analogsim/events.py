"""The energy ledger's event formulas: what one training step, or one evaluation read, of one
layer counts. Training (``analogsim.training.step``) and evaluation
(``analogsim.training.evaluation``) both count through these functions.

A forward read of an analog layer on ``R`` x ``C`` tiles (``analogsim.tile.tile_grid``)
converts each input once per tile row (``R n_in`` DAC conversions) and each partial output once
per tile column (``C n_out`` ADC conversions), reads ``n_in n_out`` cross-points, and adds the
partial outputs digitally (``(C - 1) n_out`` additions); noise management scales the inputs and
rescales the outputs of every tile (``R n_in + C n_out`` digital operations). It charges every
input line (``n_out`` cells long over its tiles) and every output line (``n_in`` cells), and
reads its input vector from SRAM and writes its output (``n_in + n_out`` words). The backward
read is the same with inputs and outputs exchanged. The update's slots, line pulses and random
bits come from the rule (``RuleCounts``). Counts are formed as ``(count, factor)`` terms and
multiplied exactly (``analogsim.counters.mul``), since a product can pass 2**32 in one step.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from . import counters
from .algorithms import RuleCounts
from .energy import COUNT_KINDS

__all__ = [
    "analog_step_counts",
    "digital_layers",
    "digital_rows_per_sample",
    "digital_step_terms",
    "exact_counts",
    "read_counts",
    "read_terms",
    "spread_mask",
]


def spread_mask(mask: jax.Array, rows: int) -> jax.Array:
    """The sample mask (batch,) spread over ``rows`` input vectors of one call (rows = batch *
    vectors per sample, sample-major, as a convolution's patches are)."""
    per = rows // mask.shape[0]
    return jnp.repeat(mask, per) if per > 1 else mask


def read_terms(reads, n_in: int, n_out: int, tiles: tuple[int, int], *, backward=False, one_hot=False):
    """The events of ``reads`` reads of a layer as ``{kind: [(count, factor), ...]}``: each
    kind's total is the sum of ``count * factor`` (kept apart so that a jitted step can form the
    products exactly, ``analogsim.counters.mul``). ``backward``: the transposed read (the
    error's inputs are the layer's outputs); ``one_hot``: a transfer read of one column (one
    input line driven, nothing read from or written to the SRAM buffers: the rule counts its
    buffer)."""
    t_rows, t_cols = tiles
    if backward:
        n_in, n_out, t_rows, t_cols = n_out, n_in, t_cols, t_rows
    if one_hot:
        return {
            "array_reads": [(reads, 1)],
            "crosspoint_reads": [(reads, n_out)],
            "read_wire_cells": [(reads, n_out + n_out * n_in)],  # one row line, every column line
            "dac_conversions": [(reads, n_in)],
            "adc_conversions": [(reads, n_out)],
        }
    return {
        "array_reads": [(reads, 1)],
        "crosspoint_reads": [(reads, n_in * n_out)],
        # every input line (n_out cells long over its tiles) and every output line (n_in cells)
        "read_wire_cells": [(reads, 2 * n_in * n_out)],
        "dac_conversions": [(reads, t_rows * n_in)],
        "adc_conversions": [(reads, t_cols * n_out)],
        "memory_words": [(reads, n_in + n_out)],  # the input vector read, the output written
        "digital_ops": [(reads, t_rows * n_in + t_cols * n_out + (t_cols - 1) * n_out)],
    }


def read_counts(reads: int, n_in: int, n_out: int, tiles: tuple[int, int], *, backward=False) -> dict[str, int]:
    """``read_terms`` summed on the host (Python ints, exact), every count kind present."""
    terms = read_terms(reads, n_in, n_out, tiles, backward=backward)
    return {kind: sum(a * b for a, b in terms.get(kind, [])) for kind in COUNT_KINDS}


def exact_counts(*term_dicts: dict) -> dict[str, jax.Array]:
    """Counters (``analogsim.counters``) of the summed terms of ``term_dicts`` (``read_terms``
    form), formed exactly inside jitted code; every kind of ``COUNT_KINDS`` present."""
    out = {kind: counters.zeros() for kind in COUNT_KINDS}
    for terms in term_dicts:
        for kind, pairs in terms.items():
            for a, b in pairs:
                out[kind] = counters.add(out[kind], counters.mul(a, b))
    return out


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
    """The events of one training step of one analog layer (exact counters, one per kind).

    Args:
      reads: (rows,) forward reads per vector (bound management may read a vector again), all
        calls of the layer in the step one after another.
      d: (rows, out) errors at the layer output; rows of zeros are neither read back nor pulsed.
      mask: (rows,) 1 for real samples, 0 for padding.
      back: (rows,) whether the row's error is read back through the array (not for a call
        that reads the network input, whose error nothing needs).
      rule: what the update rule did: pulses on all of its arrays, its pulse slots, the wire
        its pulses charged and the random bits it drew, transfer reads (one-hot inputs), its
        digital operations and its digital matrices' memory words.
      n_in, n_out: array size.
      has_bias: the layer has a digital bias.
      tiles: ``(R, C)``, the tiles the array is split into along its outputs and inputs.

    Returns:
      Counters for ``analogsim.energy.add_counts``.
    """
    u32 = jnp.uint32
    mask_i = mask.astype(u32)
    fwd = jnp.sum(reads.astype(u32) * mask_i)
    has_error = jnp.any(d != 0, axis=1)
    with_error = jnp.sum(has_error.astype(u32))
    bwd = jnp.sum((has_error & back).astype(u32))
    rows = jnp.sum(mask_i)
    slots, direct, words = (_uint(getattr(rule, k)) for k in ("slots", "direct_slots", "memory_words"))
    own = {
        "pulses_up": [(rule.pulses_up, 1)],
        "pulses_down": [(rule.pulses_down, 1)],
        "update_slots": [(slots, 1), (direct, 1)],
        "write_wire_cells": [*_float_terms(rule.row_pulses, n_out), *_float_terms(rule.column_pulses, n_in)],
        "bit_draws": [(slots, n_in + n_out)],  # one random bit per line and slot
        # the update re-reads the stored input and error of each row with an error
        "memory_words": [(with_error, n_in + n_out), (words, 1)],
        "digital_ops": [
            (with_error, n_in + n_out),  # pulse probabilities of the update
            (rule.digital_ops, 1),
            *([(rows, n_out), (u32(n_out), 1)] if has_bias else []),  # bias additions and its SGD step
        ],
    }
    return exact_counts(
        read_terms(fwd, n_in, n_out, tiles),
        read_terms(bwd, n_in, n_out, tiles, backward=True),
        read_terms(rule.transfer_reads.astype(u32), n_in, n_out, (1, 1), one_hot=True),
        own,
    )


def _uint(v) -> jax.Array:
    return jnp.zeros((), jnp.uint32) if v is None else jnp.asarray(v).astype(jnp.uint32)


def _float_terms(v, factor: int) -> list[tuple[jax.Array, int]]:
    """``round(v) * factor`` for a float32 count ``v`` (up to 2**48) as exact uint32 terms: its
    high and low 16-bit parts."""
    if v is None:
        return []
    n = jnp.round(jnp.asarray(v, jnp.float32))
    high = jnp.floor(n / 65536.0)
    return [(high.astype(jnp.uint32), factor * 65536), ((n - high * 65536.0).astype(jnp.uint32), factor)]


def digital_step_terms(rows, steps, n_in: int, n_out: int, *, reads_input: bool = False) -> dict[str, list]:
    """Digital operations and memory words of training ``nnx.Linear``-like weights (``n_in`` x
    ``n_out``) on ``rows`` input vectors in ``steps`` optimizer steps: per vector the forward,
    the error (unless the layer reads the network input) and the weight-gradient multiply-adds,
    the bias; per step the optimizer update. Memory: each vector's input and output read or
    written by each pass (forward 1 + 1, error 1 + 1, gradient 1 + 1); per step the weights read
    by the forward and the error pass and read and written by the update (batch-stationary
    weights)."""
    passes = 2 if reads_input else 3
    return {
        "digital_ops": [(rows, passes * n_in * n_out + n_out), (steps, n_in * n_out + n_out)],
        "memory_words": [(rows, passes * (n_in + n_out)), (steps, (passes + 1) * n_in * n_out)],
    }


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
