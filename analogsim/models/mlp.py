"""The multilayer perceptron of the reference task (RT-MNIST)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from flax import nnx

from ..activations import ACTIVATIONS, torch_uniform
from ..algorithms import SGD, AbstractUpdateRule
from ..layers import AnalogLinear
from ..pulsed_update import UpdateParameters

__all__ = ["ACTIVATIONS", "MLP"]


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
      analog_layers: ``all`` (every layer analog when ``device`` is given) or ``inner`` (the
        first and last layers digital).
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
        analog_layers: str = "all",
        rngs: nnx.Rngs,
    ):
        sizes = tuple(sizes)
        if len(sizes) < 2 or any(isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1 for n in sizes):
            raise ValueError(
                f"MLP.sizes: value {sizes!r} is not allowed; must be two or more integers >= 1 (input, ..., output)"
            )
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: value {activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}")
        if analog_layers not in ("all", "inner"):
            raise ValueError(f"analog_layers: value {analog_layers!r} is not allowed; allowed: all, inner")
        self.activation = activation
        layers = []
        last = len(sizes) - 2
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            if device is None or (analog_layers == "inner" and i in (0, last)):
                init = torch_uniform(n_in)
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
