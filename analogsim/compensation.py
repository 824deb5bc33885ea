"""Drift compensation from reference reads: undo a scale (global, per column) or a scale and an
offset (affine) that retention put on an array's outputs.

At programming time, the outputs :math:`Y_0 = X_{ref} W_0^T` of ``K`` known reference input
vectors are kept in digital memory; after the wait, the same vectors are read again,
:math:`Y_t = X_{ref} W_t^T`, and a correction of the digital output is fitted:

- ``global`` (aihwkit's ``GlobalDriftCompensation``): one factor
  :math:`\\alpha = \\sum |Y_0| / \\sum |Y_t|`, output :math:`\\alpha y`;
- ``column``: one factor per output column, :math:`\\alpha_j = \\sum_k |Y_{0,kj}| / \\sum_k |Y_{t,kj}|`;
- ``affine``: per column, the least-squares fit :math:`Y_{t,kj} = a_j Y_{0,kj} + b_j s_k`
  (:math:`s_k = \\sum_i X_{ref,ki}`), output :math:`(y_j - b_j \\sum_i x_i) / a_j`.

The affine form undoes a relaxation toward a common rest state exactly:
:math:`w(t) = w_{rest} + (w_0 - w_{rest}) e` gives :math:`W(t) x = e\\,W_0 x + (1 - e)\\,w_{rest} \\sum_i x_i`,
an offset a rescale cannot remove (a protonic card's relaxation; a PCM drift with one exponent is a
pure scale, which all three undo). ``K`` must exceed 2 and the references must vary in
:math:`\\sum_i x_i`; ``reference_inputs`` draws uniform vectors in [0, 1] with a fixed key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["COMPENSATIONS", "fit_compensation", "reference_inputs"]

COMPENSATIONS = ("none", "global", "column", "affine")


def reference_inputs(n_in: int, k: int = 32, *, key: jax.Array | None = None) -> jax.Array:
    """``k`` reference input vectors (k, n_in), uniform in [0, 1] (default key: ``jax.random.key(0)``)."""
    key = jax.random.key(0) if key is None else key
    return jax.random.uniform(key, (k, n_in), jnp.float32)


def fit_compensation(kind: str, x_ref: jax.Array, y0: jax.Array, yt: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The correction ``(scale, offset)`` per column (out,) from reference reads.

    The corrected output is ``(y - offset * sum(x)) * scale``.

    Args:
      kind: one of ``COMPENSATIONS``.
      x_ref: (K, in) reference inputs.
      y0: (K, out) their outputs right after programming.
      yt: (K, out) their outputs after the wait.
    """
    if kind not in COMPENSATIONS:
        raise ValueError(f"compensation: value {kind!r} is not allowed; allowed: {', '.join(COMPENSATIONS)}")
    n_out = y0.shape[1]
    ones, zeros = jnp.ones((n_out,), y0.dtype), jnp.zeros((n_out,), y0.dtype)
    if kind == "none":
        return ones, zeros
    if kind == "global":
        den = jnp.sum(jnp.abs(yt))
        alpha = jnp.where(den > 0, jnp.sum(jnp.abs(y0)) / jnp.where(den > 0, den, 1.0), 1.0)
        return ones * alpha, zeros
    if kind == "column":
        den = jnp.sum(jnp.abs(yt), axis=0)
        return jnp.where(den > 0, jnp.sum(jnp.abs(y0), axis=0) / jnp.where(den > 0, den, 1.0), 1.0), zeros
    s = jnp.sum(x_ref, axis=1)

    def one_column(y0_j, yt_j):
        a_mat = jnp.stack([y0_j, s], axis=1)  # (K, 2)
        coef, *_ = jnp.linalg.lstsq(a_mat, yt_j)
        return coef

    coef = jax.vmap(one_column, in_axes=(1, 1))(y0, yt)  # (out, 2)
    a, b = coef[:, 0], coef[:, 1]
    ok = jnp.abs(a) > 1e-6
    return jnp.where(ok, 1.0 / jnp.where(ok, a, 1.0), 1.0), jnp.where(ok, b, 0.0)
