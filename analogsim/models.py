"""Ready-made networks: the multilayer perceptron of the reference task."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .algorithms import SGD, AbstractUpdateRule
from .layers import AnalogLinear
from .pulsed_update import UpdateParameters

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "sigmoid": jax.nn.sigmoid}


def _torch_uniform(fan_in: int):
    """PyTorch's (and aihwkit's) default init: uniform in +-1/sqrt(fan_in)."""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class MLP(nnx.Module):
    """A multilayer perceptron; every layer analog (``device`` given) or all digital.

    Args:
      sizes: layer widths including input and output, e.g. ``(784, 256, 128, 10)``.
      activation: ``tanh``, ``relu`` or ``sigmoid`` between layers (the output is logits).
      device: card name/path, ``DeviceCard`` or model for analog layers;
        ``None`` builds floating-point ``nnx.Linear`` layers with the same initialisation.
      update: pulsed-update settings of the analog layers.
      algorithm: update rule of the analog layers (``analogsim.algorithms``); ``None``: SGD.
      reference: what analog weights are read against (``AnalogLinear``).
      rngs: random streams.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "tanh",
        *,
        device=None,
        update=UpdateParameters(),
        algorithm: AbstractUpdateRule | None = None,
        reference: str = "zero",
        rngs: nnx.Rngs,
    ):
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 for n in sizes):
            raise ValueError(
                f"MLP.sizes: value {sizes!r} is not allowed; must be two or more integers >= 1 (input, ..., output)"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: value {activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}")
        self.activation = activation
        layers = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
            if device is None:
                init = _torch_uniform(n_in)
                layers.append(nnx.Linear(n_in, n_out, kernel_init=init, bias_init=init, rngs=rngs))
            else:
                layers.append(
                    AnalogLinear(
                        n_in,
                        n_out,
                        device=device,
                        update=update,
                        algorithm=algorithm or SGD(),
                        reference=reference,
                        rngs=rngs,
                    )
                )
        self.layers = nnx.List(layers)

    def digital_ops_per_sample(self) -> int:
        """Digital operations of the activation functions per training sample (the energy
        ledger's ``activations`` entry): one evaluation forward and one derivative backward per
        hidden unit."""
        return 2 * sum(layer.out_features for layer in list(self.layers)[:-1])

    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = act(x)
        return x
