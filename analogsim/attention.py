"""Self-attention and a transformer block whose matrices live on analog crossbars.

The projections (query, key, value, output) and the block's MLP are ``AnalogLinear`` arrays;
what multiplies two activations (the scores :math:`QK^T` and their product with :math:`V`), the
softmax, the layer normalisations and the residual sums are digital, as on IBM's analog
transformer chips (the scores change with every input and cannot be programmed into a
crossbar):

.. math::
    \\mathrm{head}_h = \\mathrm{softmax}\\Big(\\frac{Q_h K_h^T}{\\sqrt{d_h}} + M\\Big) V_h,
    \\qquad Q = W_Q x,\\ K = W_K x,\\ V = W_V x,\\ y = W_O [\\mathrm{head}_1, \\dots]

with :math:`M` 0 or :math:`-\\infty` (a causal mask). Every token's projection is one read of
each array, so a sequence of ``T`` tokens reads each array ``T`` times (recorded in training like
any analog layer: ``analogsim.layers``).

*Energy.* ``ops_per_sample`` counts the digital work per sample for the ledger's
``activations`` entry, forward and backward: the score and value products, :math:`2 T^2 d`
multiply-adds forward and twice that backward (Kaplan et al. 2020, "Scaling laws for neural
language models", Section 2.1: training costs 3x the forward pass), the softmax (5 operations per
score each way), layer normalisation (8 per element each way, an assumption: mean, variance,
normalise, scale and shift), the GELU (2 per element each way) and the residual sums.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import AnalogLinear

__all__ = ["AnalogMultiHeadAttention", "AnalogTransformerBlock", "attention_ops", "block_ops"]

SOFTMAX_OPS = 5  # per score and pass: subtract the max, exp, sum, divide; its derivative
NORM_OPS = 8  # per element and pass (assumed): mean, variance, normalise, scale, shift
GELU_OPS = 2  # per element and pass


def attention_ops(seq_len: int, qkv_features: int, num_heads: int) -> int:
    """Digital operations of self-attention per sample of ``seq_len`` tokens, forward and
    backward: the two activation products (3 x their ``2 T^2 d`` forward multiply-adds) and
    the softmax."""
    t = seq_len
    return 3 * 2 * t * t * qkv_features + 2 * SOFTMAX_OPS * num_heads * t * t


def block_ops(seq_len: int, d_model: int, num_heads: int, d_ff: int) -> int:
    """Digital operations of a transformer block per sample, forward and backward: attention
    (``attention_ops``), two layer norms, the GELU and two residual sums per token."""
    per_token = 2 * (2 * NORM_OPS * d_model + GELU_OPS * d_ff + 2 * d_model)
    return attention_ops(seq_len, d_model, num_heads) + seq_len * per_token


class AnalogMultiHeadAttention(nnx.Module):
    """Multi-head self-attention with analog projections and digital scores.

    Args:
      num_heads: number of heads; ``qkv_features`` must be a multiple of it.
      in_features: token width.
      qkv_features: width of the queries, keys and values (default ``in_features``).
      out_features: output width (default ``in_features``).
      use_bias: digital biases on the four projections.
      causal: each token attends only to itself and earlier tokens.
      rngs: random streams of the arrays.
      **analog: ``AnalogLinear`` settings of all four arrays (``device``, ``forward_io``,
        ``backward_io``, ``update``, ``algorithm``, ``reference``, ``weight_scale``).

    Example:
      >>> attn = AnalogMultiHeadAttention(2, 16, device="idealized", rngs=nnx.Rngs(0))
      >>> y = attn(jnp.ones((3, 5, 16)))  # (3, 5, 16)
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        *,
        use_bias: bool = True,
        causal: bool = False,
        rngs: nnx.Rngs,
        **analog,
    ):
        qkv = in_features if qkv_features is None else qkv_features
        out = in_features if out_features is None else out_features
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1 or qkv % num_heads:
            raise ValueError(
                f"AnalogMultiHeadAttention.num_heads: value {num_heads!r} is not allowed; an integer >= 1 that "
                f"divides qkv_features ({qkv})"
            )
        self.num_heads = num_heads
        self.in_features = in_features
        self.qkv_features = qkv
        self.out_features = out
        self.causal = causal
        self.query = AnalogLinear(in_features, qkv, use_bias=use_bias, rngs=rngs, **analog)
        self.key = AnalogLinear(in_features, qkv, use_bias=use_bias, rngs=rngs, **analog)
        self.value = AnalogLinear(in_features, qkv, use_bias=use_bias, rngs=rngs, **analog)
        self.out = AnalogLinear(qkv, out, use_bias=use_bias, rngs=rngs, **analog)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        """Attend over the tokens of ``x`` (batch, T, in_features); ``mask`` (batch, T, T) or
        broadcastable, True where a query may attend to a key."""
        *lead, t, _ = x.shape
        heads, d_h = self.num_heads, self.qkv_features // self.num_heads

        def split(y):
            return y.reshape(*lead, t, heads, d_h)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("...qhd,...khd->...hqk", q, k) / math.sqrt(d_h)
        allowed = jnp.ones((t, t), bool) if mask is None else mask[..., None, :, :]
        if self.causal:
            allowed = allowed & jnp.tril(jnp.ones((t, t), bool))
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        probs = jax.nn.softmax(scores, axis=-1)
        heads_out = jnp.einsum("...hqk,...khd->...qhd", probs, v).reshape(*lead, t, self.qkv_features)
        return self.out(heads_out)

    def ops_per_sample(self, seq_len: int) -> int:
        """Digital operations per sample of length ``seq_len``, forward and backward (``attention_ops``)."""
        return attention_ops(seq_len, self.qkv_features, self.num_heads)


class AnalogTransformerBlock(nnx.Module):
    """A pre-norm transformer block: :math:`x + \\mathrm{Attn}(\\mathrm{LN}(x))`, then
    :math:`x + W_2\\,\\mathrm{GELU}(W_1 \\mathrm{LN}(x))`, every matrix analog (five arrays
    of the attention and MLP), the normalisations digital.

    Args:
      d_model: token width.
      num_heads: attention heads.
      d_ff: hidden width of the MLP.
      causal: causal self-attention.
      rngs: random streams.
      **analog: ``AnalogLinear`` settings of every array.
    """

    def __init__(self, d_model: int, num_heads: int, d_ff: int, *, causal: bool = False, rngs: nnx.Rngs, **analog):
        self.d_model = d_model
        self.d_ff = d_ff
        self.norm1 = nnx.LayerNorm(d_model, rngs=rngs)
        self.attention = AnalogMultiHeadAttention(num_heads, d_model, causal=causal, rngs=rngs, **analog)
        self.norm2 = nnx.LayerNorm(d_model, rngs=rngs)
        self.mlp_in = AnalogLinear(d_model, d_ff, rngs=rngs, **analog)
        self.mlp_out = AnalogLinear(d_ff, d_model, rngs=rngs, **analog)

    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.mlp_out(jax.nn.gelu(self.mlp_in(self.norm2(x))))

    def ops_per_sample(self, seq_len: int) -> int:
        """Digital operations per sample of length ``seq_len``, forward and backward (``block_ops``)."""
        return block_ops(seq_len, self.d_model, self.attention.num_heads, self.d_ff)
