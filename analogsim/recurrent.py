"""Recurrent cells whose matrices live on analog crossbars, and the loop that runs them.

A cell holds two arrays, as aihwkit's ``AnalogLSTMCell``/``AnalogGRUCell``/``AnalogVanillaRNNCell``
do: ``ih`` (input to the stacked gates, with the digital bias) and ``hh`` (hidden state to the
stacked gates, no bias). Each time step reads each array once, so a sequence of length ``T``
reads each array ``T`` times; in a training step every read is recorded
(``analogsim.layers``), the pulsed update applies the sum of the ``T`` outer products
:math:`\\sum_t d_t x_t^T` of each array, and the energy ledger counts ``T`` reads.

The gate equations are Flax's (``flax.nnx.LSTMCell``, ``GRUCell``, ``SimpleCell``), so a
converted nnx cell computes what it computed before (``analogsim.convert``):

.. math::
    \\text{LSTM:}\\quad [i, f, g, o] = W_{ih} x_t + W_{hh} h_{t-1} + b,\\quad
    c_t = \\sigma(f) c_{t-1} + \\sigma(i) \\tanh(g),\\quad h_t = \\sigma(o) \\tanh(c_t)

.. math::
    \\text{GRU:}\\quad r, z = \\sigma(\\cdot),\\quad n = \\tanh(x^n + r\\, h^n),\\quad
    h_t = (1 - z)\\, n + z\\, h_{t-1}

with :math:`[x^r, x^z, x^n] = W_{ih} x_t + b`, :math:`[h^r, h^z, h^n] = W_{hh} h_{t-1}`; the
simple cell is :math:`h_t = \\tanh(W_{ih} x_t + b + W_{hh} h_{t-1})`.

*Loops.* ``AnalogRNN`` runs a cell over the time axis with a Python loop (unrolled when
traced), so each step's read is recorded and the network trains. ``flax.nnx.RNN`` (a
``scan``) runs analog cells for inference, but a training step cannot record the reads of a
scanned layer and refuses with one line; ``convert`` turns ``nnx.RNN`` into ``AnalogRNN``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from .layers import AnalogLinear

__all__ = [
    "AnalogGRUCell",
    "AnalogLSTMCell",
    "AnalogRNN",
    "AnalogSimpleCell",
    "RECURRENT_CELLS",
    "cell_ops_per_step",
]

# Gates stacked on the output lines of one array (Flax's order)
GATES = {"lstm": 4, "gru": 3, "simple": 1}
# Digital operations per hidden unit and time step, forward (gate activations, the sum of the two
# reads, element-wise products and sums of the state update); the backward pass costs as many.
OPS_PER_UNIT = {"lstm": 4 + 4 + 3 + 1 + 1 + 1, "gru": 3 + 3 + 1 + 4, "simple": 1 + 1}


class _AnalogCell(nnx.Module):
    """The two arrays of a recurrent cell and its carry (shared by the three cells)."""

    kind = ""

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable = jax.nn.sigmoid,
        activation_fn: Callable = jnp.tanh,
        rngs: nnx.Rngs,
        ih: AnalogLinear | None = None,
        hh: AnalogLinear | None = None,
        **analog,
    ):
        """Build the cell's two arrays.

        Args:
          in_features: input size.
          hidden_features: hidden state size.
          gate_fn: the gates' nonlinearity (LSTM, GRU).
          activation_fn: the state nonlinearity.
          rngs: random streams (``params``: weights and device variation; ``read``: read noise).
          ih: a ready-made input array (``analogsim.convert``); ``None``: a new one.
          hh: a ready-made recurrent array; ``None``: a new one.
          **analog: ``AnalogLinear`` settings of both arrays: ``device``, ``forward_io``,
            ``backward_io``, ``update``, ``algorithm``, ``reference``, ``weight_scale``.
        """
        gates = GATES[self.kind] * hidden_features
        for name, size in (("in_features", in_features), ("hidden_features", hidden_features)):
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise ValueError(f"{type(self).__name__}.{name}: value {size!r} is not allowed; an integer >= 1")
        self.in_features = in_features
        self.hidden_features = hidden_features
        self.gate_fn = gate_fn
        self.activation_fn = activation_fn
        self.ih = ih if ih is not None else AnalogLinear(in_features, gates, use_bias=True, rngs=rngs, **analog)
        self.hh = hh if hh is not None else AnalogLinear(hidden_features, gates, use_bias=False, rngs=rngs, **analog)
        for arr, n_in in ((self.ih, in_features), (self.hh, hidden_features)):
            if (arr.in_features, arr.out_features) != (n_in, gates):
                raise ValueError(
                    f"{type(self).__name__}: array of shape ({arr.out_features}, {arr.in_features}) is not allowed; "
                    f"expected ({gates}, {n_in})"
                )

    @property
    def num_feature_axes(self) -> int:
        return 1

    def initialize_carry(self, input_shape: tuple[int, ...], rngs=None):
        """A zero carry for inputs of shape ``(*batch, in_features)`` (``rngs`` is accepted for
        ``nnx.RNN`` and not used)."""
        h = jnp.zeros((*input_shape[:-1], self.hidden_features), jnp.float32)
        return (h, h) if self.kind == "lstm" else h

    def ops_per_step(self) -> int:
        """Digital operations per sample and time step, forward and backward (``cell_ops_per_step``)."""
        return cell_ops_per_step(self)


class AnalogLSTMCell(_AnalogCell):
    """An LSTM cell with its input and recurrent matrices on two analog arrays (``ih``:
    ``(4H, in)`` with the bias, ``hh``: ``(4H, H)``); gates in Flax's order i, f, g, o.
    Carry ``(c, h)``. See the module docstring for the equations.

    Example:
      >>> cell = AnalogLSTMCell(28, 64, device="idealized", rngs=nnx.Rngs(0))
      >>> y = AnalogRNN(cell)(jnp.ones((2, 5, 28)))  # (2, 5, 64)
    """

    kind = "lstm"

    def __call__(self, carry, inputs: jax.Array):
        c, h = carry
        i, f, g, o = jnp.split(self.ih(inputs) + self.hh(h), 4, axis=-1)
        c = self.gate_fn(f) * c + self.gate_fn(i) * self.activation_fn(g)
        h = self.gate_fn(o) * self.activation_fn(c)
        return (c, h), h


class AnalogGRUCell(_AnalogCell):
    """A GRU cell with its input and recurrent matrices on two analog arrays (``ih``:
    ``(3H, in)`` with the bias, ``hh``: ``(3H, H)``); gates r, z, n as Flax's ``GRUCell``.
    Carry ``h``."""

    kind = "gru"

    def __call__(self, carry, inputs: jax.Array):
        x_r, x_z, x_n = jnp.split(self.ih(inputs), 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.hh(carry), 3, axis=-1)
        r = self.gate_fn(x_r + h_r)
        z = self.gate_fn(x_z + h_z)
        n = self.activation_fn(x_n + r * h_n)
        h = (1.0 - z) * n + z * carry
        return h, h


class AnalogSimpleCell(_AnalogCell):
    """An Elman cell :math:`h_t = \\tanh(W_{ih} x_t + b + W_{hh} h_{t-1})` on two analog arrays
    (aihwkit's ``AnalogVanillaRNNCell``). Carry ``h``."""

    kind = "simple"

    def __call__(self, carry, inputs: jax.Array):
        h = self.activation_fn(self.ih(inputs) + self.hh(carry))
        return h, h


RECURRENT_CELLS = {"lstm": AnalogLSTMCell, "gru": AnalogGRUCell, "simple": AnalogSimpleCell}


def cell_ops_per_step(cell: nnx.Module) -> int:
    """Digital operations of one cell per sample and time step, forward and backward (the energy
    ledger's ``activations`` convention): ``OPS_PER_UNIT`` per hidden unit each way. A Flax cell
    whose linears were converted one by one counts as its analog twin."""
    for kind, cls in RECURRENT_CELLS.items():
        if isinstance(cell, cls):
            return 2 * OPS_PER_UNIT[kind] * cell.hidden_features
    kinds = {nnx.LSTMCell: "lstm", nnx.OptimizedLSTMCell: "lstm", nnx.GRUCell: "gru", nnx.SimpleCell: "simple"}
    for cls, kind in kinds.items():
        if isinstance(cell, cls):
            return 2 * OPS_PER_UNIT[kind] * cell.hidden_features
    raise ValueError(f"cell_ops_per_step: {type(cell).__name__} is not a known recurrent cell")


class AnalogRNN(nnx.Module):
    """Run a recurrent cell over the time axis with a Python loop, so that a training step
    records every step's reads (``flax.nnx.RNN``'s interface, without ``seq_lengths``).

    Args:
      cell: an analog cell (``AnalogLSTMCell``, ...) or any nnx cell with
        ``initialize_carry``.
      time_major: inputs are ``(T, batch, features)`` instead of ``(batch, T, features)``.
      return_carry: return ``(carry, outputs)`` instead of ``outputs``.
      reverse: run from the last step to the first (outputs in the input's order when
        ``keep_order``).
      keep_order: with ``reverse``, put the outputs back in the input's order.
    """

    def __init__(
        self,
        cell: nnx.Module,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
    ):
        self.cell = cell
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.keep_order = keep_order

    def __call__(self, inputs: jax.Array, *, initial_carry=None, seq_lengths=None):
        """Outputs ``(batch, T, hidden)`` (or time-major), and the last carry with ``return_carry``."""
        if seq_lengths is not None:
            raise ValueError(
                "AnalogRNN: seq_lengths is not supported; pad the sequences and read the output at each one's last step"
            )
        axis = 0 if self.time_major else inputs.ndim - 2
        steps = [jnp.take(inputs, t, axis=axis) for t in range(inputs.shape[axis])]
        if self.reverse:
            steps = steps[::-1]
        if initial_carry is None:  # (a Flax cell wants a stream even for its zero carry)
            initial_carry = self.cell.initialize_carry(steps[0].shape, nnx.Rngs(carry=0))
        carry = initial_carry
        outputs = []
        for x in steps:
            carry, y = self.cell(carry, x)
            outputs.append(y)
        if self.reverse and self.keep_order:
            outputs = outputs[::-1]
        out = jnp.stack(outputs, axis=axis)
        return (carry, out) if self.return_carry else out
