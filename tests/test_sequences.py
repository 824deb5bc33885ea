"""Recurrent and attention layers on analog arrays: the update of a recurrent array is the sum
of its per-step outer products, every step's read is recorded and counted, Flax's cells and
``nnx.RNN`` convert exactly, attention computes what its equations say, and the sequence
models train (the long runs are in the slow set)."""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from analogsim import convert
from analogsim.algorithms import AbstractUpdateRule
from analogsim.algorithms.base import counts_of
from analogsim.attention import AnalogMultiHeadAttention, attention_ops, block_ops
from analogsim.energy import host_counts
from analogsim.models.sequence import RecurrentClassifier, TransformerClassifier, associative_recall
from analogsim.periphery import IOParameters
from analogsim.recurrent import AnalogLSTMCell, AnalogRNN
from analogsim.training import make_train_step, train_model

PERFECT = IOParameters(is_perfect=True)
EXACT = {"forward_io": PERFECT, "backward_io": PERFECT}
DEVICE = "idealized"


class _State(NamedTuple):
    pass


@dataclasses.dataclass(frozen=True)
class OuterProduct(AbstractUpdateRule):
    """A noise-free rule for the test: ``W -= lr sum_rows d x^T``, exactly."""

    name: ClassVar[str] = "outer-product"

    def init(self, model, w, *, key):
        return _State()

    def update(self, model, cp, w, state, x, d, lr, up, *, key):
        return w - lr * d.T @ x, state, counts_of()


def _lstm_reference(w_ih, b, w_hh, w_head, b_head, xs, labels):
    """The LSTM classifier in plain JAX, with a zero perturbation on every step's two reads: the
    gradients at the perturbations are the errors d_t of each read."""

    def loss(p_ih, p_hh):
        h = c = jnp.zeros((xs.shape[0], w_hh.shape[1]))
        for t in range(xs.shape[1]):
            gates = (xs[:, t] @ w_ih.T + b + p_ih[t]) + (h @ w_hh.T + p_hh[t])
            i, f, g, o = jnp.split(gates, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        logits = h @ w_head.T + b_head
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    t, rows, gates = xs.shape[1], xs.shape[0], w_ih.shape[0]
    zeros = jnp.zeros((t, rows, gates))
    return jax.grad(loss, argnums=(0, 1))(zeros, zeros)


def test_recurrent_update_is_the_sum_of_per_step_outer_products():
    """Noise-free reads and a noise-free rule: one training step changes each array of an LSTM by
    exactly ``-lr sum_t d_t x_t^T`` over the T steps, with ``d_t`` from plain-JAX autodiff."""
    steps, feats, hidden, rows, lr = 5, 3, 4, 6, 0.05
    model = RecurrentClassifier(steps, feats, hidden, 3, device=DEVICE, algorithm=OuterProduct(), rngs=nnx.Rngs(0),
                                **EXACT)  # fmt: skip
    cell = model.rnn.cell
    w_ih, b, w_hh = cell.ih.weight.get_value(), cell.ih.bias.get_value(), cell.hh.weight.get_value()
    w_head, b_head = model.head.weight.get_value(), model.head.bias.get_value()
    x = jax.random.uniform(jax.random.key(1), (rows, steps * feats))
    y = jnp.arange(rows) % 3
    graphdef, state, step = make_train_step(model, optax.sgd(0.0), lr)  # digital biases frozen: only arrays move
    state, _ = step(state, x, y, jnp.arange(rows), key=jax.random.key(2))
    trained = nnx.merge(graphdef, state.params, state.analog, state.rest)
    xs = x.reshape(rows, steps, feats)
    d_ih, d_hh = _lstm_reference(w_ih, b, w_hh, w_head, b_head, xs, y)
    # the hidden state each step's recurrent read saw
    h_prev = [jnp.zeros((rows, hidden))]
    carry = cell.initialize_carry((rows, feats))
    for t in range(steps - 1):
        carry, h = AnalogLSTMCell.__call__(cell, carry, xs[:, t])
        h_prev.append(h)
    want_ih = w_ih - lr * sum(d_ih[t].T @ xs[:, t] for t in range(steps))
    want_hh = w_hh - lr * sum(d_hh[t].T @ h_prev[t] for t in range(steps))
    np.testing.assert_allclose(trained.rnn.cell.ih.weight.get_value(), want_ih, atol=2e-6)
    np.testing.assert_allclose(trained.rnn.cell.hh.weight.get_value(), want_hh, atol=2e-6)
    # and the update is not the last step's alone
    last_only = w_ih - lr * d_ih[-1].T @ xs[:, -1]
    assert float(jnp.max(jnp.abs(trained.rnn.cell.ih.weight.get_value() - last_only))) > 1e-4


def test_every_step_is_one_read_and_the_ledger_counts_them():
    """T steps of a batch of B: the input array is read T*B times forward and never backward (its
    input is the network's), the recurrent array T*B times forward and (T-1)*B times backward (the
    first step reads the constant zero state: no error flows back through it)."""
    steps, rows = 4, 8
    model = RecurrentClassifier(steps, 3, 4, 2, cell="simple", device=DEVICE, rngs=nnx.Rngs(0), **EXACT)
    _, state, step = make_train_step(model, optax.sgd(0.1), 0.1)
    x = jax.random.uniform(jax.random.key(1), (rows, steps * 3))
    state, _ = step(state, x, jnp.arange(rows) % 2, jnp.arange(rows), key=jax.random.key(2))
    counts = host_counts(state.ledger)
    assert counts["rnn/cell/ih"]["array_reads"] == steps * rows
    assert counts["rnn/cell/hh"]["array_reads"] == (2 * steps - 1) * rows
    assert counts["head"]["array_reads"] == 2 * rows
    # cell arithmetic and the loss in the activations entry: 2 x 2 ops per unit and step, 5 per class
    assert counts["activations"]["digital_ops"] == rows * (steps * 2 * 2 * 4 + 5 * 2)


@pytest.mark.parametrize("cell_cls", [nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell])
def test_convert_turns_flax_cells_and_rnn_into_analog_twins_that_compute_the_same(cell_cls):
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.rnn = nnx.RNN(cell_cls(4, 6, rngs=rngs))
            self.head = nnx.Linear(6, 3, rngs=rngs)

        def __call__(self, x):
            return self.head(self.rnn(x)[:, -1])

    digital = Net(nnx.Rngs(0))
    analog = convert(digital, device=DEVICE, rngs=nnx.Rngs(2), weight_scale=20.0, **EXACT)  # no clipping
    assert type(analog.rnn) is AnalogRNN and type(digital.rnn) is nnx.RNN
    x = jax.random.normal(jax.random.key(1), (2, 5, 4))
    np.testing.assert_allclose(analog(x), digital(x), atol=1e-5)


def test_nnx_rnn_runs_analog_cells_for_inference_but_training_says_why_not():
    cell = AnalogLSTMCell(3, 4, device=DEVICE, rngs=nnx.Rngs(0), **EXACT)
    x = jax.random.normal(jax.random.key(1), (2, 5, 3))
    np.testing.assert_allclose(nnx.RNN(cell)(x), AnalogRNN(cell)(x), atol=1e-6)

    class Scanned(nnx.Module):
        def __init__(self):
            self.rnn = nnx.RNN(AnalogLSTMCell(3, 4, device=DEVICE, rngs=nnx.Rngs(0)))

        def __call__(self, x):
            return self.rnn(x.reshape(x.shape[0], 5, 3))[:, -1]

    _, state, step = make_train_step(Scanned(), optax.sgd(0.1), 0.1)
    with pytest.raises(ValueError, match="nnx.scan.*unroll|AnalogRNN"):
        step(state, jnp.ones((2, 15)), jnp.zeros(2, jnp.int32), jnp.arange(2), key=jax.random.key(0))


def test_attention_computes_softmax_of_scaled_scores_and_a_causal_mask_hides_the_future():
    attn = AnalogMultiHeadAttention(2, 8, causal=True, device=DEVICE, rngs=nnx.Rngs(0), **EXACT)
    x = jax.random.normal(jax.random.key(1), (3, 5, 8))

    def lin(layer, v):
        return v @ (layer.weight.get_value() * layer.out_scale.get_value()).T + layer.bias.get_value()

    q, k, v = (lin(m, x).reshape(3, 5, 2, 4) for m in (attn.query, attn.key, attn.value))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(4)
    scores = jnp.where(jnp.tril(jnp.ones((5, 5), bool)), scores, -jnp.inf)
    want = lin(attn.out, jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v).reshape(3, 5, 8))
    np.testing.assert_allclose(attn(x), want, atol=1e-5)
    changed = x.at[:, 3:].set(0.0)  # the first three tokens' outputs do not see tokens 3 and 4
    np.testing.assert_allclose(attn(changed)[:, :3], attn(x)[:, :3], atol=1e-6)
    # the digital work per sample, by hand for T=5, d=8, 2 heads: 3 x 2 T^2 d + 2 x 5 x heads x T^2
    assert attention_ops(5, 8, 2) == 3 * 2 * 25 * 8 + 2 * 5 * 2 * 25
    assert block_ops(5, 8, 2, 16) == attention_ops(5, 8, 2) + 5 * 2 * (2 * 8 * 8 + 2 * 16 + 2 * 8)


def test_associative_recall_labels_are_the_queried_values_and_need_the_pairs():
    data = associative_recall(200, 50, pairs=3, keys=5, values=7, seed=3)
    tokens = data.x_train.astype(int)
    assert tokens.shape == (200, 4) and data.num_classes == 7
    query = tokens[:, -1] - 5 * 7
    keys, values = tokens[:, :3] // 7, tokens[:, :3] % 7
    assert all(len(set(row)) == 3 for row in keys)  # distinct keys
    match = keys == query[:, None]
    assert np.all(match.sum(1) == 1)
    np.testing.assert_array_equal(values[match], data.y_train)
    # the query alone does not tell the answer: labels are spread over all values for every key
    assert len(set(data.y_train[query == 0])) >= 5


@pytest.mark.slow  # (about 60 s)
def test_sequence_models_train_beside_their_digital_twins():
    """Sequential digits by rows (8 steps of 8) with an LSTM, and associative recall with a
    one-block transformer: the analog networks learn (chance: 0.1)."""
    from analogsim.data import load_dataset

    digits = load_dataset("digits")
    lstm = RecurrentClassifier(8, 8, 32, 10, device="constant-step", rngs=nnx.Rngs(0))
    run = train_model(lstm, digits, lr=0.1, epochs=4, batch_size=32, progress=False)
    assert run.epoch_test_accuracy[-1] > 0.35, run.epoch_test_accuracy
    recall = associative_recall(4000, 500)
    tf = TransformerClassifier(88, 5, 10, d_model=32, num_heads=2, d_ff=64, depth=1, device="constant-step",
                               rngs=nnx.Rngs(0))  # fmt: skip
    run = train_model(tf, recall, lr=0.1, epochs=3, batch_size=32, progress=False)
    assert run.epoch_test_accuracy[-1] > 0.8, run.epoch_test_accuracy
