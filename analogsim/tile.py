"""The analog matrix-vector product as a differentiable JAX function.

Forward: ``y = W x`` read through the forward periphery. Backward (the error pass of
backpropagation): ``dx = W^T d`` read through the backward periphery, so the error that
reaches earlier layers carries the same DAC/ADC quantisation and noise as on hardware. The
cotangent of ``W`` is the plain outer product ``d x^T`` (a straight-through estimate); analog
training does not use it (the pulsed update takes the per-sample ``x`` and ``d`` instead), so
XLA drops it.
"""

from __future__ import annotations

import functools

import jax

from .periphery import IOParameters, analog_mvm

__all__ = ["analog_matmul"]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def analog_matmul(
    w: jax.Array, x: jax.Array, key: jax.Array, forward_io: IOParameters, backward_io: IOParameters
) -> tuple[jax.Array, jax.Array]:
    """Analog ``x @ W.T`` with periphery; returns ``(y, reads)``.

    Args:
      w: (out, in) weights.
      x: (batch, in) inputs.
      key: PRNG key; the forward and backward reads use independent streams from it.
      forward_io: periphery of the forward read.
      backward_io: periphery of the backward (transposed) read.

    Returns:
      ``y`` (batch, out) and ``reads`` (batch,) int32, the number of analog reads each vector
      took (bound management may re-read).
    """
    res = analog_mvm(w, x, forward_io, key=jax.random.fold_in(key, 0))
    return res.y, res.reads


def _fwd(w, x, key, forward_io, backward_io):
    out = analog_matmul(w, x, key, forward_io, backward_io)
    return out, (w, x, key)


def _bwd(forward_io, backward_io, residuals, cotangents):
    w, x, key = residuals
    g, _ = cotangents
    dx = analog_mvm(w.T, g, backward_io, key=jax.random.fold_in(key, 1)).y
    return g.T @ x, dx, None


analog_matmul.defvjp(_fwd, _bwd)
