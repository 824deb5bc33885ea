"""The state of a training run as one pytree, and as a few flat arrays between compiled calls."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from ..layers import AnalogWeight

__all__ = ["FlatState", "TrainState", "layer_name", "split_state"]


class TrainState(NamedTuple):
    """The whole state of a training run (a pytree)."""

    params: Any  # nnx.State of nnx.Param: digital parameters (biases, digital layers)
    analog: Any  # nnx.State of AnalogWeight: device states of every array
    rest: Any  # nnx.State of everything else: device models and draws, rule states, read-noise streams
    opt_state: Any  # optax state of the digital parameters
    ledger: Any  # per analog layer, per count kind: exact uint32 (high, low) counters
    step: Any = None  # int32 scalar: training steps taken (the argument of a learning-rate schedule)


def layer_name(path: tuple) -> str:
    """A layer's name in the ledger and in messages: its path joined by ``/``."""
    return "/".join(str(p) for p in path)


def split_state(model: nnx.Module):
    """``(graphdef, params, analog, rest)``: the split the training state uses."""
    return nnx.split(model, nnx.Param, AnalogWeight, ...)


class FlatState:
    """A training state as a few plain arrays between compiled calls, and back.

    Key arrays travel as their raw data. Every leaf of at most ``SMALL`` elements (ledger
    counters, scalars, keys, biases) is packed, by dtype, into one 1-D array: a compiled call
    costs about 1.6 us per argument and result on CPU, and the RT-MNIST analog state has 61
    leaves, 51 of them small (12 arrays after packing). Large leaves (weights, device parameters) pass as they are, so
    donating them updates them in place. ``pack`` and ``unpack`` work inside and outside
    ``jit``; the structure is fixed by the state given at construction.
    """

    SMALL = 4096

    def __init__(self, state: TrainState):
        leaves, self.treedef = jax.tree.flatten(state)
        self.impls = [jax.random.key_impl(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else None for a in leaves]
        raw = self._raw(leaves)
        self.shapes = [(a.shape, a.dtype) for a in raw]
        self.small = [a.size <= self.SMALL for a in raw]
        self.dtypes = sorted({str(a.dtype) for a, small in zip(raw, self.small, strict=True) if small})

    def _raw(self, leaves):
        return [a if impl is None else jax.random.key_data(a) for a, impl in zip(leaves, self.impls, strict=True)]

    def pack(self, state: TrainState) -> list[jax.Array]:
        raw = self._raw(jax.tree.leaves(state))
        big = [a for a, small in zip(raw, self.small, strict=True) if not small]
        packed = [
            jnp.concatenate(
                [jnp.ravel(a) for a, small in zip(raw, self.small, strict=True) if small and str(a.dtype) == dt]
            )
            for dt in self.dtypes
        ]
        return big + packed

    def unpack(self, flat: list[jax.Array]) -> TrainState:
        n_big = len(flat) - len(self.dtypes)
        big = iter(flat[:n_big])
        packed = dict(zip(self.dtypes, flat[n_big:], strict=True))
        offset = dict.fromkeys(self.dtypes, 0)
        leaves = []
        for (shape, dtype), small, impl in zip(self.shapes, self.small, self.impls, strict=True):
            if small:
                dt, size = str(dtype), math.prod(shape)
                a = packed[dt][offset[dt] : offset[dt] + size].reshape(shape)
                offset[dt] += size
            else:
                a = next(big)
            leaves.append(a if impl is None else jax.random.wrap_key_data(a, impl=impl))
        return jax.tree.unflatten(self.treedef, leaves)
