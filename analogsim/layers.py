"""Flax nnx layers whose weights live on simulated analog crossbars.

State of one analog array, each an ``nnx.Variable`` subclass that is *not* ``nnx.Param``
(``nnx.Optimizer(model, tx, wrt=nnx.Param)`` and ``nnx.grad`` never touch them):

- ``AnalogWeight`` (out, in): the device states, normalised weight units; they change
  only through pulsed updates (``analogsim.training``);
- ``DeviceModel``: the device model (``device_models``) with its continuous
  parameters as float32 array leaves, so a sweep can ``vmap`` over them and ``jax.grad`` can
  differentiate through them;
- ``DeviceDraws`` (out, in) x 4: the standard normals of the device-to-device variation,
  drawn once; each cross-point's parameters follow from them and the device model
  (``device_models.crosspoints``), so a change of a nominal parameter moves every
  cross-point consistently;
- ``Reference``, ``OutputScale``, ``RuleState``: read reference, digital output
  factor, state of the update rule;
- ``WriteNoise`` (out, in), for devices with write noise: the draw that a read sees on top
  of the device state, redrawn where a device is written (``device_models.between_updates``).

*Recording for the pulsed update.* A training step runs the forward pass under
``nnx.capture(..., Recorded, ErrorProbe)`` (``capture_calls``). Each call of the layer then
adds a zero ``ErrorProbe`` to its output (``nnx.Module.perturb``: the gradient of the loss
with respect to the probe is the per-sample error ``d`` at that call) and sows the input
vectors and read counts of the call as ``Recorded`` values (``nnx.Module.sow``). A layer called ``k`` times in one
forward pass (weight sharing, an unrolled recurrence) records ``k`` calls, its update sums the
``k`` outer products, and the ledger counts ``k`` reads, as hardware that reads one array
``k`` times would. Outside a training step nothing is recorded.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.errors import TraceContextError

from device_models import (
    AbstractPulsedModel,
    CrossPoints,
    DeviceCard,
    builtin_card_names,
    crosspoints,
    decay_and_diffuse,
    has_write_noise,
    load_card,
    needed_draws,
    standard_draws,
    symmetry_point,
    write_noise,
    writes_between_updates,
)

from .algorithms import SGD, AbstractUpdateRule
from .modifiers import WeightModifier, modified_matmul, modify_weights
from .periphery import IOParameters
from .pulsed_update import UpdateParameters, resolve_update
from .tile import analog_matmul

__all__ = [
    "AUTO_SCALE_FILL",
    "AbstractAnalogLayer",
    "AnalogLinear",
    "AnalogWeight",
    "DeviceDraws",
    "DeviceModel",
    "ErrorProbe",
    "OutputScale",
    "Recorded",
    "Reference",
    "RuleState",
    "SMALL_RANGE_WARNING",
    "analog_layers",
    "as_array_model",
    "card_reference",
    "capture_calls",
    "layer_calls",
]

BACKWARD_IO = IOParameters(bound_management="none")
AUTO_SCALE_FILL = 0.9  # weight_scale "auto" maps the largest |weight| to this fraction of the nominal bound
# A layer whose initial weights span less than this fraction of the device's nominal range
# warns (its reads are dominated by output noise and quantisation): 3,000 inputs with the
# +-1/sqrt(in) initialisation span 3% of a +-0.6 device; RT-MNIST's 784 inputs 6%.
SMALL_RANGE_WARNING = 0.05


class AnalogWeight(nnx.Variable):
    """Device states of an analog array, (out, in), normalised weight units."""


class DeviceModel(nnx.Variable):
    """The array's device model; its continuous parameters are float32 array leaves."""


class DeviceDraws(nnx.Variable):
    """The standard-normal draws of the array's device-to-device variation
    (``device_models.CrossPointDraws``), drawn once."""


class RuleState(nnx.Variable):
    """State of the layer's update rule (``analogsim.algorithms``): hidden arrays, buffers,
    choppers, counters. Not an ``nnx.Param``; changed only by the rule's ``update``."""


class Reference(nnx.Variable):
    """The reference each cross-point's state is read against (weight = state - reference):
    0 (a fixed zero reference), or the device's symmetry point (a reference device programmed
    there, aihwkit's "symmetry point subtracted" mapping). Fixed after creation."""


REFERENCES = ("zero", "symmetry-point")


class WriteNoise(nnx.Variable):
    """The write noise a read sees on top of the device state (aihwkit's apparent minus
    persistent weight): (out, in) for a device with ``write_noise_std > 0``, else a scalar 0."""


class Wear(nnx.Variable):
    """Pulses each device has received since the layer was made, (out, in) float32, for a card
    that gives an endurance (``physical.endurance``); else a scalar 0 and nothing is tallied.
    Counts the array the update rule writes every step (SGD: the weights; transfer rules: the
    fast array; mixed precision: the weights; device pairs: both devices of a pair together,
    an upper bound for each). Every rung tallies the update's expected pulses per device (the
    ``exact`` rung too: its per-device draw is not kept), so the tally is the mean wear. Whole pulses are kept
    as int32 and the fraction apart (``WearFraction``), so fractional expectations keep
    adding up where a float32 total would stall (0.003 per update sticks at 65,536)."""


class WearFraction(nnx.Variable):
    """The fractional part of ``Wear`` (float32, in [0, 1))."""


class OutputScale(nnx.Variable):
    """A digital factor on the analog output: the weight scale of the mapping (1 when weights
    are stored as they are), or a drift compensation."""


class Recorded(nnx.Variable):
    """What a training step records per call of a layer (a tuple, one entry per call)."""


class ErrorProbe(nnx.Perturbation):
    """A zero added to one call's output in a training step; its gradient is that call's error."""


def as_array_model(device: DeviceCard | AbstractPulsedModel | str) -> AbstractPulsedModel:
    """The device model of ``device`` with every continuous parameter as a float32 array."""
    if isinstance(device, str):
        device = load_card(device)
    if isinstance(device, DeviceCard):
        device = device.model
    if not isinstance(device, AbstractPulsedModel):
        raise TypeError(f"device: expected a card name, DeviceCard or device model, got {type(device).__name__}")
    return jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), device)


def card_reference(device) -> str | None:
    """What names the card of ``device`` (a built-in name or a card file), so the energy ledger
    can price the layer with its own card; ``None`` for a bare device model."""
    if isinstance(device, str):
        return device
    if isinstance(device, DeviceCard):
        return device.name if device.name in builtin_card_names() else device.source_file
    return None


def _endurance(device) -> float | None:
    """The endurance of ``device``'s card (``physical.endurance``, pulses), or ``None``."""
    if isinstance(device, str):
        device = load_card(device)
    if isinstance(device, DeviceCard):
        return device.physical.get("endurance_pulses")
    return None


def _nominal_bound(model: AbstractPulsedModel) -> float:
    """The smaller magnitude of the nominal bounds (concrete models only)."""
    return min(float(model.pulsed.w_max), -float(model.pulsed.w_min))


_warned_jit_rngs = False


class AbstractAnalogLayer(nnx.Module, abc.ABC):
    """The state and the read of one analog array; ``AnalogLinear`` and
    ``AnalogConv`` say how a call turns into input vectors."""

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
        weight_scale: str | float | None = None,
        modifier: WeightModifier | None = None,
        rngs: nnx.Rngs,
    ):
        name = type(self).__name__
        if modifier is not None and not isinstance(modifier, WeightModifier):
            raise TypeError(f"{name}.modifier: expected a WeightModifier or None, got {type(modifier).__name__}")
        for arg, size in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
                raise ValueError(f"{name}.{arg}: value {size!r} is not allowed; must be an integer >= 1")
        if not isinstance(algorithm, AbstractUpdateRule):
            raise TypeError(f"algorithm: expected an update rule, got {type(algorithm).__name__}")
        if reference not in REFERENCES:
            raise ValueError(f"{name}.reference: value {reference!r} is not allowed; allowed: {', '.join(REFERENCES)}")
        self.in_features = in_features
        self.out_features = out_features
        model = as_array_model(device)
        self.device_model = DeviceModel(model)
        self.card = card_reference(device)  # static: prices this layer's events (energy ledger)
        # static: the card's endurance (pulses per device shown without degradation), or None
        self.endurance = _endurance(device)
        self.forward_io = forward_io
        # the backward read uses the same physical tiles as the forward read
        self.backward_io = dataclasses.replace(
            backward_io, max_input_size=forward_io.max_input_size, max_output_size=forward_io.max_output_size
        )
        # static: "auto" becomes the rung that is safe on this device (one line when it is exact)
        self.update = resolve_update(model, update, where=f"{name}({in_features}, {out_features})")
        self.algorithm = algorithm
        k_w, k_b, k_dev, k_read = jax.random.split(rngs.params(), 4)
        bound = 1.0 / math.sqrt(in_features)
        draws = standard_draws((out_features, in_features), key=k_dev, extra=needed_draws(model))
        self.draws = DeviceDraws(draws)
        cp = crosspoints(model, draws)
        w0 = jax.random.uniform(k_w, (out_features, in_features), jnp.float32, -bound, bound)
        scale = self._weight_scale(w0, model, weight_scale)
        w0 = w0 / scale
        ref = jnp.zeros((), jnp.float32)
        if reference == "symmetry-point":
            ref = symmetry_point(model, cp)
        elif hasattr(model, "device_reference"):  # a device read against its own reference device
            ref, reference = model.device_reference(cp, draws), "device"
        self.reference = Reference(ref)
        # static: with the zero reference the read skips the subtraction (a full pass over the
        # array that XLA cannot drop, the reference being an array)
        self.reference_kind = reference
        # static: a device without write noise keeps a scalar zero and its read adds nothing
        self.write_noise_on = has_write_noise(model)
        noise = jnp.zeros((), jnp.float32)
        if self.write_noise_on:
            noise = write_noise(model, (out_features, in_features), key=jax.random.fold_in(k_dev, 2))
            noise = noise * model.pulsed.apply_write_noise_on_set
        self.weight = AnalogWeight(algorithm.program(model, cp, w0 + ref))
        self.bias = (
            nnx.Param(jax.random.uniform(k_b, (out_features,), jnp.float32, -bound, bound)) if use_bias else None
        )
        self.rngs = nnx.Rngs(read=k_read)
        self.out_scale = OutputScale(jnp.asarray(scale, jnp.float32))
        # static: the training-time weight modifier of the forward read (analogsim.modifiers), or None
        self.modifier = modifier
        self.write_noise = WriteNoise(noise)
        wear_shape = (out_features, in_features) if self.endurance else ()
        self.wear = Wear(jnp.zeros(wear_shape, jnp.int32))
        self.wear_fraction = WearFraction(jnp.zeros(wear_shape, jnp.float32))
        # A key of its own (folded from the device key) keeps the SGD layer's draws unchanged.
        self.rule_state = RuleState(algorithm.init(model, w0 + ref, key=jax.random.fold_in(k_dev, 1)))

    def _weight_scale(self, w0: jax.Array, model: AbstractPulsedModel, weight_scale) -> float:
        """The output scale of the initial mapping; warns when the weights would use a sliver
        of the device range."""
        name = type(self).__name__
        bound = _nominal_bound(model)
        w_abs = float(jnp.max(jnp.abs(w0)))
        if weight_scale is None:
            if bound > 0 and w_abs / bound < SMALL_RANGE_WARNING:
                warnings.warn(
                    f"{name}({self.in_features}, {self.out_features}): the initial weights span {w_abs / bound:.1%} "
                    f"of the device range (+-{bound:g}); reads will be dominated by noise and quantisation. "
                    "Pass weight_scale='auto' to map them onto the range (the output is scaled back digitally).",
                    stacklevel=3,
                )
            return 1.0
        if weight_scale == "auto":
            if not bound > 0:
                raise ValueError(f"{name}: weight_scale 'auto' needs a device with w_max > 0 > w_min")
            return w_abs / (AUTO_SCALE_FILL * bound) if w_abs > 0 else 1.0
        if isinstance(weight_scale, str) or not (math.isfinite(weight_scale) and weight_scale > 0):
            raise ValueError(
                f"{name}.weight_scale: value {weight_scale!r} is not allowed; allowed: None, 'auto', a finite float > 0"
            )
        return float(weight_scale)

    @property
    def model(self) -> AbstractPulsedModel:
        """The device model (continuous parameters as arrays)."""
        return self.device_model.get_value()

    def crosspoints(self) -> CrossPoints:
        """Each cross-point's parameters, from the device model and the array's draws."""
        return crosspoints(self.model, self.draws.get_value())

    def _read_key(self) -> jax.Array:
        """The next key of the layer's read-noise stream.

        Inside a ``jax.jit``/``jax.grad`` of a closure over the model (instead of ``nnx.jit``)
        the stream cannot advance (nnx state may not change across trace levels): the key is
        then taken without advancing, so every call of that compiled function draws the same
        noise. Pass ``key=`` for fresh noise there.
        """
        global _warned_jit_rngs
        try:
            return self.rngs.read()
        except TraceContextError:
            if not _warned_jit_rngs:
                _warned_jit_rngs = True
                warnings.warn(
                    "analog layer called inside jax.jit/jax.grad of a closure: its read-noise stream cannot "
                    "advance there, so every call of that function draws the same noise; use nnx.jit, or pass key=",
                    stacklevel=4,
                )
            stream = self.rngs.read
            return jax.random.fold_in(stream.key.get_value(), stream.count.get_value())

    def _read(self, x2: jax.Array, source: jax.Array, key: jax.Array | None) -> jax.Array:
        """Read the (rows, in) vectors ``x2`` (rows, out); ``source`` is the call's argument."""
        if key is None:
            key = self._read_key()
        w = self.weight.get_value()
        if self.write_noise_on:
            w = w + self.write_noise.get_value()
        if self.reference_kind != "zero":
            w = w - self.reference.get_value()
        w = self.algorithm.read_weight(w, self.rule_state.get_value())
        # Under nnx.capture(..., Recorded, ErrorProbe) (a training pass) the module holds the
        # capture's collections in ``__captures__``, where sow and perturb find them too; the
        # number of calls recorded so far names this call's probe.
        recorded = next((v for v in getattr(self, "__captures__", ()) if type(v) is Recorded), None)
        modifier = getattr(self, "modifier", None)
        if recorded is not None and modifier is not None and modifier.active:  # training: forward read only
            w_read = modify_weights(modifier, w, key=jax.random.fold_in(key, 7))
            y, reads = modified_matmul(w, w_read, x2, key, self.forward_io, self.backward_io)
        else:
            y, reads = analog_matmul(w, x2, key, self.forward_io, self.backward_io)
        # a NaN input gives a NaN output (the periphery's clipping would hide it)
        y = jnp.where(jnp.isnan(x2).any(axis=-1, keepdims=True), jnp.nan, y)
        offset = getattr(self, "out_offset", None)  # set by drift compensation (analogsim.compensation) only
        if offset is not None:
            y = y - jnp.sum(x2, axis=-1, keepdims=True) * offset.get_value()
        y = y * self.out_scale.get_value()
        if recorded is not None:
            k = len(recorded["inputs"]) if "inputs" in recorded else 0
            y = self.perturb(f"error_probe_{k}", y, variable_type=ErrorProbe)
            self.sow(Recorded, "inputs", x2)
            self.sow(Recorded, "reads", reads)
            self.sow(Recorded, "sources", source)
        if self.bias is not None:
            y = y + self.bias.get_value()
        return y

    def settle(self, cp: CrossPoints, w_old: jax.Array, w_new: jax.Array, touched, *, key: jax.Array) -> None:
        """Store the states an update left, after the mini-batch's decay and diffusion, and
        redraw the write noise of the devices that were written.

        Args:
          cp: the array's cross-points.
          w_old: device states before the update's pulses.
          w_new: device states after them.
          touched: the probability (or 0/1 indicator) that each device received a pulse, from
            the update rung; ``None``: the devices whose state changed.
          key: PRNG key.
        """
        k_between, k_pick, k_noise = jax.random.split(key, 3)
        written_all = writes_between_updates(cp)
        if written_all:
            w_new = decay_and_diffuse(self.model, cp, w_new, key=k_between)
        self.weight.set_value(w_new)
        if not self.write_noise_on:
            return
        if written_all:  # aihwkit redraws every device's write noise after a decay or diffusion step
            written = jnp.ones(w_new.shape, bool)
        elif touched is None:
            written = w_new != w_old
        else:
            written = jax.random.uniform(k_pick, w_new.shape, w_new.dtype) < touched
        fresh = write_noise(self.model, w_new.shape, key=k_noise, dtype=w_new.dtype)
        self.write_noise.set_value(jnp.where(written, fresh, self.write_noise.get_value()))

    def tally_wear(self, per_device: jax.Array | None) -> None:
        """Add an update's pulses per device to ``Wear`` (only for a card with an endurance)."""
        if self.endurance is not None and per_device is not None:
            total = self.wear_fraction.get_value() + per_device.astype(jnp.float32)
            whole = jnp.floor(total)
            self.wear.set_value(self.wear.get_value() + whole.astype(jnp.int32))
            self.wear_fraction.set_value(total - whole)

    @abc.abstractmethod
    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Forward read of ``x``."""


class AnalogLinear(AbstractAnalogLayer):
    """A dense layer ``y = W x + b`` with ``W`` on an analog crossbar and ``b`` digital.

    Reads go through the forward/backward periphery (``IOParameters``); the weights
    change by pulses (``analogsim.pulsed_update.pulsed_update``) when trained with
    ``analogsim.training.train`` or ``analogsim.training.make_train_step``.
    Initialisation matches aihwkit's ``AnalogLinear`` (PyTorch's): weights and bias uniform in
    :math:`\\pm 1/\\sqrt{in}`, weights clipped to each cross-point's bounds; the bias is digital
    (aihwkit's ``digital_bias``). With ``weight_scale`` the weights are stored as
    :math:`W/s` and the output multiplied back by :math:`s` (as ``analogsim.convert`` maps).

    Args:
      in_features: input size.
      out_features: output size.
      device: a built-in card name, a path to a card, a ``DeviceCard`` or a model.
      use_bias: add a digital bias.
      forward_io: periphery of the forward read.
      backward_io: periphery of the backward read (no bound management by default); its tile
        sizes are taken from ``forward_io`` (the same physical tiles).
      update: pulsed-update settings of the gradient update.
      algorithm: the update rule (``analogsim.algorithms``), analog SGD by default.
      reference: ``"zero"`` (weight = device state) or ``"symmetry-point"`` (weight = state
        minus the cross-point's symmetry point, ``device_models.symmetry_point``: random
        up/down pulses then pull weights toward 0 instead of toward an offset).
      weight_scale: ``None`` (aihwkit's: weights stored as they are; warns when they span less
        than 5% of the device range), ``"auto"`` (the largest initial weight at 90% of the
        nominal bound) or a float :math:`s > 0`.
      modifier: a ``WeightModifier`` (``analogsim.modifiers``) that perturbs the weights of the
        forward read inside a training step only (hardware-aware training), or ``None``.
      rngs: ``params`` draws the weights and device-to-device variation; ``read`` seeds this
        layer's read-noise stream (a training step reseeds it from its own key).

    Example:
      >>> layer = AnalogLinear(4, 2, device="constant-step", rngs=nnx.Rngs(0))
      >>> y = layer(jnp.ones((3, 4)))
    """

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """Forward read of ``x`` (..., in) -> (..., out).

        Args:
          x: inputs; leading dimensions are flattened into the batch.
          key: PRNG key of the read noise; by default the layer's own ``read`` stream.
        """
        if x.shape[-1] != self.in_features:
            raise ValueError(f"AnalogLinear: input has {x.shape[-1]} features, layer expects {self.in_features}")
        lead = x.shape[:-1]
        y = self._read(x.reshape(-1, self.in_features), x, key)
        return y.reshape(*lead, self.out_features)


def analog_layers(model: nnx.Module) -> list[tuple[tuple, AbstractAnalogLayer]]:
    """The analog layers of ``model`` with their paths, in a fixed (path) order."""
    return [(path, m) for path, m in nnx.iter_modules(model) if isinstance(m, AbstractAnalogLayer)]


def capture_calls(model: nnx.Module, x: jax.Array, probes=None):
    """``model(x)`` with every analog layer's calls recorded (module docstring).

    Args:
      model: the model.
      x: its input.
      probes: values of the ``ErrorProbe`` s (a ``State`` from an earlier capture);
        ``None``: zeros.

    Returns:
      ``(y, recorded, probes)``: the output, the ``Recorded`` ``State`` and the
      ``ErrorProbe`` ``State``, both keyed by layer path (``layer_calls``).
    """
    capture = nnx.capture(lambda m, x: m(x), Recorded, ErrorProbe, init=probes)
    return capture(model, x)


def layer_calls(recorded, path: tuple) -> list[dict[str, jax.Array]]:
    """What the layer at ``path`` recorded in a ``capture_calls``: per call its ``inputs``
    (rows, in), ``reads`` (rows,) and ``source`` (the call's argument)."""
    node = recorded
    for p in path:
        if p not in node:
            return []
        node = node[p]
    value = lambda v: v.get_value() if isinstance(v, nnx.Variable) else v  # noqa: E731
    return [
        {"inputs": x, "reads": r, "source": s}
        for x, r, s in zip(value(node["inputs"]), value(node["reads"]), value(node["sources"]), strict=True)
    ]
