"""Flax nnx layers whose weights live on simulated analog crossbars.

The device states are stored in :class:`AnalogWeight` and the per-cross-point device
parameters in :class:`DeviceParameters`, both ``nnx.Variable`` subclasses that are *not*
``nnx.Param``: ``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and ``nnx.grad`` never touch
them. Analog weights change only through pulsed updates (:mod:`analogsim.training`).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from device_models import AbstractPulsedModel, DeviceCard, draw_crosspoints, load_card, symmetry_point

from .algorithms import SGD, AbstractUpdateRule
from .periphery import IOParameters
from .pulsed_update import UpdateParameters
from .tile import analog_matmul

__all__ = [
    "AnalogLinear",
    "AnalogWeight",
    "DeviceParameters",
    "OutputScale",
    "Reference",
    "RuleState",
    "Tape",
    "analog_layers",
]

BACKWARD_IO = IOParameters(bound_management="none")


class AnalogWeight(nnx.Variable):
    """Device states of an analog array, (out, in), normalised weight units."""


class DeviceParameters(nnx.Variable):
    """Per-cross-point device parameters (:class:`device_models.CrossPoints`), drawn once."""


class RuleState(nnx.Variable):
    """State of the layer's update rule (:mod:`analogsim.algorithms`): hidden arrays, buffers,
    choppers, counters. Not an ``nnx.Param``; changed only by the rule's ``update``."""


class Reference(nnx.Variable):
    """The reference each cross-point's state is read against (weight = state - reference):
    0 (a fixed zero reference), or the device's symmetry point (a reference device programmed
    there, aihwkit's "symmetry point subtracted" mapping). Fixed after creation."""


REFERENCES = ("zero", "symmetry-point")


class OutputScale(nnx.Variable):
    """A digital factor on the analog output (1 by default): global drift compensation sets it."""


class Tape(nnx.Variable):
    """Scratch space the trainer uses to collect what the pulsed update needs.

    Empty outside training. During a training step the trainer puts a zero ``probe`` of the
    output's shape here, and the ``key`` of the step's reads; the layer adds the probe to its
    output (so the gradient with respect to the probe is the per-sample error ``d``) and
    records its input ``x`` and read counts. With ``{"record": True}`` (evaluation) it records
    the read counts only.
    """


def _as_model(device: DeviceCard | AbstractPulsedModel | str) -> AbstractPulsedModel:
    if isinstance(device, str):
        device = load_card(device)
    if isinstance(device, DeviceCard):
        device = device.model
    if not isinstance(device, AbstractPulsedModel):
        raise TypeError(f"device: expected a card name, DeviceCard or device model, got {type(device).__name__}")

    # Static module attributes must be hashable: every parameter becomes a Python float (tables
    # become tuples of floats).
    def to_static(v):
        a = np.asarray(v)
        return float(a) if a.ndim == 0 else tuple(float(t) for t in a.ravel())

    return jax.tree.map(to_static, device)


class AnalogLinear(nnx.Module):
    """A dense layer ``y = W x + b`` with ``W`` on an analog crossbar and ``b`` digital.

    Reads go through the forward/backward periphery (:class:`IOParameters`); the weights
    change by pulses (:func:`analogsim.pulsed_update.pulsed_update`) when trained with
    :func:`analogsim.training.train` or :func:`analogsim.training.make_train_step`.
    Initialisation matches aihwkit's ``AnalogLinear`` (PyTorch's): weights and bias uniform in
    :math:`\\pm 1/\\sqrt{in}`, weights clipped to each cross-point's bounds; the bias is digital
    (aihwkit's ``digital_bias``).

    Args:
      in_features: input size.
      out_features: output size.
      device: a built-in card name, a path to a card, a :class:`DeviceCard` or a model.
      use_bias: add a digital bias.
      forward_io: periphery of the forward read.
      backward_io: periphery of the backward read (no bound management by default); its tile
        sizes are taken from ``forward_io`` (the same physical tiles).
      update: pulsed-update settings of the gradient update.
      algorithm: the update rule (:mod:`analogsim.algorithms`), analog SGD by default.
      reference: ``"zero"`` (weight = device state) or ``"symmetry-point"`` (weight = state
        minus the cross-point's symmetry point, :func:`device_models.symmetry_point`: random
        up/down pulses then pull weights toward 0 instead of toward an offset).
      rngs: ``params`` draws the weights and device-to-device variation; ``read`` seeds this
        layer's read-noise stream (used when no ``key`` is passed to ``__call__`` and none is on
        the tape: a training step derives its reads' keys from its own key).

    Example:
      >>> layer = AnalogLinear(4, 2, device="constant-step", rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((3, 4)))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        device: DeviceCard | AbstractPulsedModel | str = "constant-step",
        use_bias: bool = True,
        forward_io: IOParameters = IOParameters(),
        backward_io: IOParameters = BACKWARD_IO,
        update: UpdateParameters = UpdateParameters(),
        algorithm: AbstractUpdateRule = SGD(),
        reference: str = "zero",
        rngs: nnx.Rngs,
    ):
        if in_features < 1 or out_features < 1:
            raise ValueError(f"AnalogLinear: sizes must be >= 1, got in={in_features}, out={out_features}")
        self.in_features = in_features
        self.out_features = out_features
        self.model = _as_model(device)
        self.forward_io = forward_io
        # the backward read uses the same physical tiles as the forward read
        self.backward_io = dataclasses.replace(
            backward_io, max_input_size=forward_io.max_input_size, max_output_size=forward_io.max_output_size
        )
        self.update = update
        if not isinstance(algorithm, AbstractUpdateRule):
            raise TypeError(f"algorithm: expected an update rule, got {type(algorithm).__name__}")
        self.algorithm = algorithm
        if reference not in REFERENCES:
            raise ValueError(
                f"AnalogLinear.reference: value {reference!r} is not allowed; allowed: {', '.join(REFERENCES)}"
            )
        k_w, k_b, k_dev, k_read = jax.random.split(rngs.params(), 4)
        bound = 1.0 / math.sqrt(in_features)
        cp = draw_crosspoints(self.model, (out_features, in_features), key=k_dev)
        w0 = jax.random.uniform(k_w, (out_features, in_features), jnp.float32, -bound, bound)
        self.device = DeviceParameters(cp)
        ref = symmetry_point(self.model, cp) if reference == "symmetry-point" else jnp.zeros((), jnp.float32)
        self.reference = Reference(ref)
        # static: with the zero reference the read skips the subtraction (a full pass over the
        # array that XLA cannot drop, the reference being an array)
        self.reference_kind = reference
        self.weight = AnalogWeight(algorithm.program(self.model, cp, w0 + ref))
        self.bias = (
            nnx.Param(jax.random.uniform(k_b, (out_features,), jnp.float32, -bound, bound)) if use_bias else None
        )
        self.rngs = nnx.Rngs(read=k_read)
        self.out_scale = OutputScale(jnp.ones((), jnp.float32))
        # A key of its own (folded from the device key) keeps the SGD layer's draws unchanged.
        k_rule = jax.random.fold_in(k_dev, 1)
        self.rule_state = RuleState(algorithm.init(self.model, w0 + ref, key=k_rule))
        self.tape = Tape({})

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Forward read of ``x`` (..., in) -> (..., out).

        Args:
          x: inputs; leading dimensions are flattened into the batch.
          key: PRNG key of the read noise; by default the key on the layer's tape (in a training
            step), else the layer's own ``read`` stream.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"AnalogLinear: input has {x.shape[-1]} features, layer expects {self.in_features}")
        tape = self.tape.get_value()
        if key is None:
            # a training step hands each layer a read key on its tape (derived from the step's
            # key); otherwise the layer's own stream
            key = tape["key"] if "key" in tape else self.rngs.read()
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        w = self.weight.get_value()
        if self.reference_kind != "zero":
            w = w - self.reference.get_value()
        w = self.algorithm.read_weight(w, self.rule_state.get_value())
        y, reads = analog_matmul(w, x2, key, self.forward_io, self.backward_io)
        y = y * self.out_scale.get_value()
        if "probe" in tape:
            y = y + tape["probe"]
            self.tape.set_value({**tape, "x": x2, "reads": reads})
        elif tape.get("record"):
            self.tape.set_value({**tape, "reads": reads})
        if self.bias is not None:
            y = y + self.bias.get_value()
        return y.reshape(*lead, self.out_features)


def analog_layers(model: nnx.Module) -> list[tuple[tuple, AnalogLinear]]:
    """The analog layers of ``model`` with their paths, in a fixed (path) order."""
    return [(path, m) for path, m in nnx.iter_modules(model) if isinstance(m, AnalogLinear)]
