"""One training step of any nnx model with analog layers, as one pure function of explicit state.

The step reads every analog layer forward under ``nnx.capture`` (``analogsim.layers.capture_calls``:
each call adds a zero error probe to its output and sows its input vectors), differentiates the
loss with respect to the digital parameters and the probes (the gradient at a probe is the
per-sample error ``d`` the hardware sees), applies the optax update to the digital parameters,
then the pulsed update of every analog array from all of its calls' ``x`` and ``d``, and adds
the energy ledger's counts. Nothing loops over samples, pulses or cross-points in Python.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from .. import energy
from ..events import (
    analog_step_counts,
    digital_layers,
    digital_step_terms,
    exact_counts,
    split_rows_per_sample,
    spread_mask,
)
from ..layers import analog_layers, capture_calls, layer_calls
from ..tile import pulsed_training, tile_grid
from .state import TrainState, layer_name, split_state

__all__ = ["carries_no_gradient", "copy_state", "make_train_step", "masked_xent", "prepare_forward"]


def masked_xent(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy over the rows with ``mask`` 1."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(ce * mask) / n


def copy_state(tree):
    """A copy of every array of ``tree`` (own buffers: a donating step leaves the original usable)."""
    return jax.tree.map(lambda a: a.copy() if isinstance(a, jax.Array) else a, tree)


def prepare_forward(model: nnx.Module, key: jax.Array, *, training: bool) -> None:
    """Ready a merged model for one forward pass: train or eval mode (BatchNorm, Dropout), and
    each analog layer's read stream reseeded from ``key`` (layer ``i`` gets ``fold_in(key, i)``)."""
    if training:
        model.train()
    else:
        model.eval()
    for i, (_, layer) in enumerate(analog_layers(model)):
        stream = layer.rngs.read
        stream.key.set_value(jax.random.fold_in(key, i))
        stream.count.set_value(jnp.zeros_like(stream.count.get_value()))


def _schedule(lr: float | Callable) -> Callable:
    if callable(lr):
        return lr
    if not (isinstance(lr, int | float) and lr > 0):
        raise ValueError(f"make_train_step: lr {lr!r} is not allowed; a number > 0 or a schedule (step -> rate)")
    return lambda step: lr


def _value(leaf):
    return leaf.get_value() if isinstance(leaf, nnx.Variable) else leaf


def _probe_zeros(graphdef, params, analog, rest, xb, k_read):
    """Zero error probes for every call of every analog layer, as ``nnx.capture`` creates them
    (found by tracing one forward pass, which costs no run time)."""

    def create(params):
        m = nnx.merge(graphdef, params, analog, rest, copy=True)
        prepare_forward(m, k_read, training=True)
        return capture_calls(m, xb)[2]

    try:
        shapes = jax.eval_shape(create, params)
    except TypeError as e:  # a scan whose carry changed: an analog layer sowed inside nnx.scan
        if "carry" in str(e):
            raise ValueError(f"training step: {SCAN_UNSUPPORTED}") from None
        raise
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def carries_no_gradient(source, xb) -> bool:
    """Whether a call's input, traced inside the differentiated loss, depends on nothing that is
    differentiated (the network input, reshaped or sliced, unlike a hidden activation): then
    its error is never read back through the array. Traced values that depend on the
    differentiated parameters are tracers of another kind than the network input's."""
    return type(source) is type(xb)


def _forward_backward(graphdef, state: TrainState, xb, yb, mask, k_read):
    """Loss, logits, gradients of the digital parameters and of every probe, the calls each
    layer recorded, and the state the forward pass left (BatchNorm statistics)."""
    probes = _probe_zeros(graphdef, state.params, state.analog, state.rest, xb, k_read)
    sources_are_input = []  # trace-time facts: does a call read the network input (no gradient to read back)?

    def loss_fn(params, probes):
        m = nnx.merge(graphdef, params, state.analog, state.rest, copy=True)
        prepare_forward(m, k_read, training=True)
        logits, recorded, _ = capture_calls(m, xb, probes)
        loss = masked_xent(logits, yb, mask)
        calls = []
        for path, _ in analog_layers(m):
            rec = layer_calls(recorded, path)
            sources_are_input.append([carries_no_gradient(c["source"], xb) for c in rec])
            calls.append([{"inputs": c["inputs"], "reads": c["reads"]} for c in rec])
        return loss, (logits, calls, split_state(m)[3])

    with pulsed_training():
        (loss, (logits, calls, rest)), (g_params, g_probes) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
            state.params, probes
        )
    return loss, logits, g_params, g_probes, calls, sources_are_input, rest


def _layer_batch(layer, path, calls, reads_input, g_probes, mask):
    """All calls of one layer as one batch: inputs (rows, in), errors (rows, out), reads, the
    sample mask and whether each row's error is read back."""
    if not calls:
        raise ValueError(f"analog layer {layer_name(path)} was not called in the forward pass; it cannot be trained")
    errors = g_probes
    for p in path:
        errors = errors[p]
    xs, ds, reads, masks, back = [], [], [], [], []
    for k, (call, from_input) in enumerate(zip(calls, reads_input, strict=True)):
        d = _value(errors[f"error_probe_{k}"])
        rows = call["inputs"].shape[0]
        xs.append(call["inputs"])
        ds.append(d)
        reads.append(call["reads"])
        masks.append(spread_mask(mask, rows))
        back.append(jnp.full((rows,), not from_input))
    cat = lambda a: a[0] if len(a) == 1 else jnp.concatenate(a)  # noqa: E731
    return cat(xs), cat(ds), cat(reads), cat(masks), cat(back)


def _update_layers(m, specs, calls, reads_input, g_probes, mask, lr, ledger, k_update):
    """The pulsed update of every analog layer of ``m`` (in place) and its ledger counts."""
    for i, ((path, layer), (name, n_in, n_out)) in enumerate(zip(analog_layers(m), specs, strict=True)):
        x, d, reads, row_mask, back = _layer_batch(layer, path, calls[i], reads_input[i], g_probes, mask)
        with jax.named_scope("pulsed_update"):  # (the scopes name the step's parts in profiles)
            cp = layer.crosspoints()
            w_old = layer.weight.get_value()
            w_new, rule_state, rule_counts = layer.algorithm.update(
                layer.model, cp, w_old, layer.rule_state.get_value(), x, d, lr, layer.update,
                key=jax.random.fold_in(k_update, i),
            )  # fmt: skip
            layer.settle(cp, w_old, w_new, rule_counts.touched, key=jax.random.fold_in(k_update, 10_000 + i))
            layer.tally_wear(rule_counts.wear)
        rule_counts = rule_counts._replace(touched=None, wear=None)
        layer.rule_state.set_value(rule_state)
        with jax.named_scope("ledger"):
            tiles = tuple(len(t) for t in tile_grid(n_out, n_in, layer.forward_io))
            counts = analog_step_counts(
                reads, d, row_mask, back, rule_counts, n_in, n_out, has_bias=layer.bias is not None, tiles=tiles
            )
            ledger = energy.add_counts(ledger, name, **counts)
    return ledger


LOSS_OPS_PER_CLASS = 5  # softmax cross-entropy: exp, sum, divide, log forward; p - y backward
AUGMENT_STREAM = 0x61  # the step key's fold-in of the augmentation (the read and update keys are its split)

SCAN_UNSUPPORTED = (
    "analog layers called inside nnx.scan (nnx.RNN) cannot be trained yet: the calls of a scanned layer "
    "are not recorded per time step; unroll the time loop in Python (a for loop over the steps calling the "
    "cell), which records every call"
)


def make_train_step(
    model: nnx.Module,
    tx: optax.GradientTransformation,
    lr: float | Callable,
    *,
    jit: bool = True,
    augment: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
):
    """Build the training step and the initial state for ``model``.

    Args:
      model: an nnx model with analog layers (``AbstractAnalogLayer``),
        called as ``model(x)``; a layer may be called several times per pass. The model is not
        changed and stays usable (the state holds copies of its arrays).
      tx: optax transformation for the digital parameters (``nnx.Param``).
      lr: learning rate of the pulsed update: a number, or a schedule (an optax schedule, any
        callable of the int32 step count).
      jit: return the step jitted (with the state donated); ``False`` returns the plain
        function, for callers that transform it further (``vmap`` over variants, ``jit`` with
        shardings, ``jax.grad``).
      augment: ``f(x, key) -> x`` applied to each batch inside the step (``analogsim.augment``),
        keyed by ``fold_in(key, AUGMENT_STREAM)``; ``None``: none.

    Returns:
      ``(graphdef, state, step)`` where ``step(state, x_all, y_all, idx, mask=None, key=...)``
      trains on the rows ``idx`` of ``x_all``/``y_all`` (``mask`` zero for padding rows;
      ``None``: all rows are real) and returns ``(state, metrics)``; ``metrics`` has ``loss``,
      ``correct`` and ``count``.
    """
    schedule = _schedule(lr)
    graphdef, params, analog, rest = split_state(model)
    specs = [(layer_name(path), layer.in_features, layer.out_features) for path, layer in analog_layers(model)]
    digital = digital_layers(model)
    act_ops = int(getattr(model, "digital_ops_per_sample", lambda: 0)())
    names = [s[0] for s in specs] + [name for name, _, _ in digital] + ["activations"]
    state = TrainState(
        *copy_state((params, analog, rest)),
        tx.init(params),
        energy.new_ledger(names),
        jnp.zeros((), jnp.int32),
    )

    def step(state: TrainState, x_all, y_all, idx, mask=None, key=None):
        if key is None:
            raise TypeError("step: key= (a PRNG key) is required")
        xb, yb = x_all[idx], y_all[idx]
        if augment is not None:
            xb = augment(xb, jax.random.fold_in(key, AUGMENT_STREAM))
        mask = jnp.ones(idx.shape[0], jnp.float32) if mask is None else mask
        k_read, k_update = jax.random.split(key)
        loss, logits, g_params, g_probes, calls, reads_input, new_rest = _forward_backward(
            graphdef, state, xb, yb, mask, k_read
        )
        updates, opt_state = tx.update(g_params, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        m = nnx.merge(graphdef, params, state.analog, new_rest, copy=True)
        lr_now = schedule(state.step)
        ledger = _update_layers(m, specs, calls, reads_input, g_probes, mask, lr_now, state.ledger, k_update)
        with jax.named_scope("ledger"):
            rows = jnp.sum(mask.astype(jnp.uint32))
            # (a trace of shapes at compile time, and only when there are digital layers to count)
            per_sample = (
                split_rows_per_sample(xb.shape[1:], graphdef, state.params, state.analog, state.rest) if digital else {}
            )
            for name, n_in, n_out in digital:
                per, reads_input = per_sample.get(name, (0, False))
                terms = digital_step_terms(rows * jnp.uint32(per), jnp.uint32(1), n_in, n_out, reads_input=reads_input)
                ledger = energy.add_counts(ledger, name, **exact_counts(terms))
            # activations, normalisation, pooling (the model's convention) and the softmax cross-entropy
            elementwise = act_ops + LOSS_OPS_PER_CLASS * logits.shape[-1]
            ledger = energy.add_counts(ledger, "activations", **exact_counts({"digital_ops": [(rows, elementwise)]}))
        _, params, analog, rest = split_state(m)
        correct = jnp.sum((jnp.argmax(logits, -1) == yb) * mask)
        metrics = {"loss": loss, "correct": correct, "count": jnp.sum(mask)}
        return TrainState(params, analog, rest, opt_state, ledger, state.step + 1), metrics

    return graphdef, state, (jax.jit(step, donate_argnums=0) if jit else step)
