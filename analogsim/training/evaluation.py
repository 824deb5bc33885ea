"""Evaluation: test accuracy of a training state, in eval mode, with the reads' exact event counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..events import read_counts, spread_mask
from ..layers import analog_layers, capture_calls, layer_calls
from ..tile import tile_grid
from .state import TrainState, layer_name, split_state
from .step import prepare_forward

__all__ = ["eval_batch", "evaluate", "evaluation_key", "padded_batches"]


def padded_batches(x, y, batch_size: int):
    """``(x, y, mask)`` batches of exactly ``batch_size`` rows for evaluation: the last batch is
    padded with zero rows whose ``mask`` is 0, so one compiled program serves every batch."""
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        yb = y[start : start + batch_size]
        pad = batch_size - xb.shape[0]
        mask = np.concatenate([np.ones(xb.shape[0], np.float32), np.zeros(pad, np.float32)])
        if pad:
            xb = np.concatenate([xb, np.zeros((pad, *xb.shape[1:]), xb.dtype)])
            yb = np.concatenate([yb, np.zeros(pad, yb.dtype)])
        yield xb, yb, mask


def eval_batch(graphdef, params, analog, rest, x, y, mask, key):
    """One evaluation batch (pure; ``evaluate`` jits it, sweeps vmap it): the number of
    correct rows, per analog layer ``(reads, vectors)`` of the real rows, and the rest state."""
    m = nnx.merge(graphdef, params, analog, rest, copy=True)
    prepare_forward(m, key, training=False)
    # captured (the zero probes change nothing) to count every call's reads
    logits, recorded, _ = capture_calls(m, x)
    reads = []
    for path, _ in analog_layers(m):
        calls = layer_calls(recorded, path)
        r = sum(jnp.sum(c["reads"] * spread_mask(mask, c["reads"].shape[0]).astype(jnp.int32)) for c in calls)
        v = sum(jnp.sum(spread_mask(mask, c["reads"].shape[0]).astype(jnp.int32)) for c in calls)
        reads.append((r, v))
    correct = jnp.sum((jnp.argmax(logits, -1) == y) * mask)
    return correct, reads, split_state(m)[3]


_eval_batch = jax.jit(eval_batch, static_argnums=0)


def evaluation_key(step) -> jax.Array:
    """The read-noise key of an evaluation after ``step`` training steps (batch ``b`` folds in ``b``)."""
    return jax.random.fold_in(jax.random.key(0x5EED), step)


def evaluate(
    graphdef, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int = 500, *, key: jax.Array | None = None
) -> tuple[float, TrainState, dict[str, dict[str, int]]]:
    """Test accuracy of the model in ``state`` (analog reads with their noise), in eval mode
    (BatchNorm on its running statistics, no Dropout).

    Args:
      graphdef: the model's graph definition, from ``make_train_step``.
      state: the ``TrainState``, from ``make_train_step``.
      x: test inputs.
      y: integer test labels.
      batch_size: rows per compiled call (the last batch is padded).
      key: PRNG key of the read noise; by default one derived from the state's training step.

    Returns:
      The accuracy in [0, 1], the state (unchanged but for the read streams), and the exact
      event counts of the evaluation per analog layer (forward reads only).
    """
    model = nnx.merge(graphdef, state.params, state.analog, state.rest)
    sizes = [
        (
            layer_name(p),
            layer.in_features,
            layer.out_features,
            layer.bias is not None,
            tuple(len(t) for t in tile_grid(layer.out_features, layer.in_features, layer.forward_io)),
        )
        for p, layer in analog_layers(model)
    ]
    if key is None:
        key = evaluation_key(0 if state.step is None else int(state.step))
    n = x.shape[0]
    rest = state.rest
    correct = 0
    reads = [0] * len(sizes)
    vectors = [0] * len(sizes)  # input vectors per layer (a convolution reads one per patch)
    for b, (xb, yb, mask) in enumerate(padded_batches(x, y, batch_size)):
        c, r, rest = _eval_batch(graphdef, state.params, state.analog, rest, xb, yb, mask, jax.random.fold_in(key, b))
        correct += int(c)
        reads = [a + int(r_) for a, (r_, _) in zip(reads, r, strict=True)]
        vectors = [a + int(v) for a, (_, v) in zip(vectors, r, strict=True)]
    counts = {}
    for (name, n_in, n_out, has_bias, tiles), r, v in zip(sizes, reads, vectors, strict=True):
        c = read_counts(r, n_in, n_out, tiles)
        c["digital_ops"] += v * n_out if has_bias else 0
        counts[name] = {"pulses_up": 0, "pulses_down": 0, **c}
    return correct / n, state._replace(rest=rest), counts
