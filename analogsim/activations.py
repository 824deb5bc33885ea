"""Activation functions and the weight initialisation shared by the ready-made networks."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "torch_uniform"]

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def torch_uniform(fan_in: int):
    """PyTorch's (and aihwkit's) default init of dense and conv layers: uniform in
    :math:`\\pm 1/\\sqrt{fan_{in}}`."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init
