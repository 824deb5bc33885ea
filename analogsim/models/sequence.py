"""Sequence models on analog arrays: a recurrent classifier (sequential MNIST by rows) and a
small transformer classifier, with the synthetic associative-recall task it is shown on.

Both take the flattened rows of a ``Dataset`` (``(batch, T * features)`` floats, token ids as
floats for the transformer) so that ``analogsim.train_model`` trains them like any other model,
and report their digital work per sample for the energy ledger (``digital_ops_per_sample``).
With ``device=None`` every matrix is a digital ``nnx.Linear`` (the digital twin).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ..attention import AnalogTransformerBlock, block_ops
from ..data import Dataset
from ..layers import AnalogLinear
from ..recurrent import RECURRENT_CELLS, AnalogRNN, cell_ops_per_step

__all__ = ["RecurrentClassifier", "TransformerClassifier", "associative_recall"]

_DIGITAL_CELLS = {"lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell, "simple": nnx.SimpleCell}


def _head(n_in: int, n_out: int, device, analog: dict, rngs: nnx.Rngs):
    if device is None:
        return nnx.Linear(n_in, n_out, rngs=rngs)
    return AnalogLinear(n_in, n_out, device=device, rngs=rngs, **analog)


class RecurrentClassifier(nnx.Module):
    """Read a sequence step by step with a recurrent cell and classify it from the last hidden
    state: :math:`y = W h_T + b`. Sequential MNIST feeds a 28 x 28 image as 28 rows of 28.

    Args:
      steps: time steps ``T``; the input's ``T * features`` columns are cut into ``T`` rows.
      features: inputs per step.
      hidden: hidden state size.
      classes: outputs.
      cell: ``lstm``, ``gru`` or ``simple``.
      device: card of every array; ``None``: the digital twin (Flax's cells, ``nnx.Linear``).
      rngs: random streams.
      **analog: further ``AnalogLinear`` settings (``algorithm``, ``update``, ``forward_io``, ...).
    """

    def __init__(self, steps: int, features: int, hidden: int, classes: int, *, cell: str = "lstm", device=None,
                 rngs: nnx.Rngs, **analog):  # fmt: skip
        if cell not in RECURRENT_CELLS:
            raise ValueError(f"cell: value {cell!r} is not allowed; allowed: {', '.join(RECURRENT_CELLS)}")
        self.steps, self.features = steps, features
        if device is None:
            rnn_cell = _DIGITAL_CELLS[cell](features, hidden, rngs=rngs)
        else:
            rnn_cell = RECURRENT_CELLS[cell](features, hidden, device=device, rngs=rngs, **analog)
        self.rnn = AnalogRNN(rnn_cell, return_carry=True)
        self.head = _head(hidden, classes, device, analog, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        seq = x.reshape(x.shape[0], self.steps, self.features)
        _, outputs = self.rnn(seq)
        return self.head(outputs[:, -1])

    def digital_ops_per_sample(self) -> int:
        """The cell's gate and state arithmetic at every step, forward and backward."""
        return self.steps * cell_ops_per_step(self.rnn.cell)


class TransformerClassifier(nnx.Module):
    """Token and position embeddings (digital), ``depth`` transformer blocks with analog
    matrices (``AnalogTransformerBlock``), a final layer norm and an analog head that reads the
    last token: a classifier of token sequences.

    Args:
      vocab: number of token ids (the input holds ids as floats).
      seq_len: tokens per sequence.
      d_model: width of the token vectors.
      num_heads: attention heads per block.
      d_ff: hidden width of each block's MLP.
      depth: number of blocks.
      classes: outputs.
      device: card of every array; ``None``: the digital twin (``nnx.Linear`` matrices).
      rngs: random streams.
      **analog: further ``AnalogLinear`` settings.
    """

    def __init__(self, vocab: int, seq_len: int, classes: int, *, d_model: int = 64, num_heads: int = 4,
                 d_ff: int = 128, depth: int = 2, device=None, rngs: nnx.Rngs, **analog):  # fmt: skip
        self.seq_len, self.num_heads = seq_len, num_heads
        self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
        self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq_len, d_model)))
        if device is None:
            blocks = [_DigitalBlock(d_model, num_heads, d_ff, rngs=rngs) for _ in range(depth)]
        else:
            blocks = [AnalogTransformerBlock(d_model, num_heads, d_ff, device=device, rngs=rngs, **analog)
                      for _ in range(depth)]  # fmt: skip
        self.blocks = nnx.List(blocks)
        self.norm = nnx.LayerNorm(d_model, rngs=rngs)
        self.head = _head(d_model, classes, device, analog, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        h = self.embed(x.astype(jnp.int32)) + self.position.get_value()
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h)[:, -1])

    def digital_ops_per_sample(self) -> int:
        """Attention scores, softmax, norms, GELU and residual sums of every block, forward and
        backward (``AnalogTransformerBlock.ops_per_sample``)."""
        return sum(block_ops(self.seq_len, b.d_model, self.num_heads, b.d_ff) for b in self.blocks)


class _DigitalBlock(nnx.Module):
    """The digital twin of ``AnalogTransformerBlock`` (Flax's attention and linears)."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, rngs: nnx.Rngs):
        self.d_model, self.d_ff = d_model, d_ff
        self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = nnx.MultiHeadAttention(num_heads, d_model, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = nnx.Linear(d_model, d_ff, rngs=rngs)
        self.mlp_out = nnx.Linear(d_ff, d_model, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))


def associative_recall(
    n_train: int = 8000, n_test: int = 2000, *, pairs: int = 4, keys: int = 8, values: int = 10, seed: int = 0
) -> Dataset:
    """A synthetic task with a known answer that needs attention: ``pairs`` key-value tokens
    (distinct keys, each token id ``key * values + value``) then one query token
    (``keys * values + key``, a key that occurs in the sequence); the label is that key's value.
    A model that cannot look back at the matching token scores at most chance, ``1 / values``.

    Returns:
      A ``Dataset`` with token ids as float32 features ``(n, pairs + 1)`` and int32 labels.
    """
    if not 1 <= pairs <= keys:
        raise ValueError(f"associative_recall.pairs: value {pairs!r} is not allowed; 1 <= pairs <= keys ({keys})")
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    key_ids = np.argsort(rng.random((n, keys)), axis=1)[:, :pairs]  # distinct keys per sequence
    vals = rng.integers(0, values, (n, pairs))
    ask = rng.integers(0, pairs, n)
    tokens = np.concatenate([key_ids * values + vals, (keys * values + key_ids[np.arange(n), ask])[:, None]], axis=1)
    labels = vals[np.arange(n), ask].astype(np.int32)
    x = tokens.astype(np.float32)
    return Dataset("associative-recall", x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], values)
