"""Convert a trained digital nnx model into one whose dense, conv and recurrent layers are analog.

Every ``flax.nnx.Linear`` and ``flax.nnx.Conv`` found anywhere in the module tree
(attributes, ``flax.nnx.List``, ``flax.nnx.Dict``, ``flax.nnx.Sequential``)
becomes an ``AnalogLinear`` or ``AnalogConv``
with the digital weights programmed onto its devices. Flax's recurrent cells (``LSTMCell``,
``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``) become ``AnalogLSTMCell``,
``AnalogGRUCell``, ``AnalogSimpleCell`` (their gate matrices stacked on two arrays, input and
recurrent, as aihwkit's analog cells), and ``flax.nnx.RNN`` becomes ``AnalogRNN``, whose
Python loop records every step's reads so the network trains (a scanned layer's cannot be).
Every other layer stays digital and unchanged; layers that hold matrices but are not converted
(``LinearGeneral``, ``Einsum``, ``MultiHeadAttention``: use ``AnalogMultiHeadAttention``)
are named in one warning. This is the usual starting point for hardware-aware fine-tuning or
for studying inference on analog hardware (aihwkit's ``convert_to_analog``).

*Mapping.* Device states live in normalised weight units within each cross-point's bounds.
A layer's digital weights :math:`W` are mapped with a weight scale :math:`s`,

.. math::
    W_{array} = \\mathrm{clip}\\big(W / s + \\sigma_{prog}\\,\\xi,\\; b_{min}, b_{max}\\big),
    \\qquad y = s\\,(W_{array} x) + b,

where the factor :math:`s` is applied digitally to the analog output (the layer's
``out_scale``), so the outputs are unchanged when nothing clips and :math:`\\sigma_{prog}=0`.
With ``weight_scale="auto"``, :math:`s = \\max|W| / (0.9\\, w_{bound})`, with :math:`w_{bound}`
the smaller magnitude of the card's nominal bounds ``w_max`` and ``w_min``, so the largest
weight lands at 90 % of the nominal range. Programming writes the target states exactly
(no pulse-by-pulse write-verify is simulated); ``programming_noise`` adds Gaussian noise.
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
from flax import nnx

from device_models import AbstractPulsedModel, DeviceCard

from .algorithms import SGD, AbstractUpdateRule
from .conv import AnalogConv, conv_kernel_to_array
from .layers import AUTO_SCALE_FILL, BACKWARD_IO, AbstractAnalogLayer, AnalogLinear
from .periphery import IOParameters
from .pulsed_update import UpdateParameters
from .recurrent import AnalogGRUCell, AnalogLSTMCell, AnalogRNN, AnalogSimpleCell

__all__ = ["AUTO_SCALE_FILL", "convert"]


def _path_name(path: tuple) -> str:
    return "/".join(str(p) for p in path) or "<root>"


def _indexed(parent, key) -> bool:
    """Whether ``key`` of a module path indexes ``parent`` (a list or dict) rather than names an attribute."""
    return isinstance(key, int) or isinstance(parent, nnx.List | nnx.Dict | list | dict | tuple)


def _ones(value) -> bool:
    return value is None or (value == 1 if isinstance(value, int) else all(v == 1 for v in value))


def _analog_twin(layer: nnx.Linear | nnx.Conv, name: str, rngs: nnx.Rngs, kwargs: dict) -> AnalogLinear:
    """An analog layer of ``layer``'s shape and settings (weights not yet programmed)."""
    use_bias = layer.bias is not None
    if isinstance(layer, nnx.Linear):
        return AnalogLinear(
            layer.in_features, layer.out_features, use_bias=use_bias, weight_scale=1.0, rngs=rngs, **kwargs
        )
    unsupported = []
    if layer.feature_group_count != 1:
        unsupported.append(f"feature_group_count={layer.feature_group_count} (only 1)")
    if not _ones(layer.input_dilation):
        unsupported.append(f"input_dilation={layer.input_dilation!r} (only 1)")
    if layer.mask is not None:
        unsupported.append("a kernel mask")
    if unsupported:
        raise ValueError(f"convert: conv layer {name} has {', '.join(unsupported)}; AnalogConv does not support it")
    try:
        return AnalogConv(
            layer.in_features,
            layer.out_features,
            layer.kernel_size,
            1 if layer.strides is None else layer.strides,
            padding=layer.padding,
            kernel_dilation=1 if layer.kernel_dilation is None else layer.kernel_dilation,
            use_bias=use_bias,
            weight_scale=1.0,
            rngs=rngs,
            **kwargs,
        )
    except ValueError as e:
        raise ValueError(f"convert: conv layer {name}: {e}") from None


def _scale(w: jax.Array, model: AbstractPulsedModel, weight_scale, name: str) -> float:
    if weight_scale is None:
        return 1.0
    if weight_scale == "auto":
        bound = min(float(model.pulsed.w_max), -float(model.pulsed.w_min))
        if not bound > 0:
            raise ValueError(
                f"convert: weight_scale 'auto' needs a device with w_max > 0 > w_min, got w_max={model.pulsed.w_max}, "
                f"w_min={model.pulsed.w_min} (layer {name})"
            )
        w_abs = float(jnp.max(jnp.abs(w)))
        return w_abs / (AUTO_SCALE_FILL * bound) if w_abs > 0 else 1.0
    return float(weight_scale)


def _check_options(weight_scale, programming_noise: float, key: jax.Array | None) -> None:
    """Raise ``ValueError`` for a ``weight_scale`` or ``programming_noise`` that ``convert`` does not allow."""
    if not (weight_scale is None or weight_scale == "auto"):
        if isinstance(weight_scale, str) or not (math.isfinite(weight_scale) and weight_scale > 0):
            raise ValueError(
                f"convert: weight_scale {weight_scale!r} is not allowed; allowed: 'auto', a finite float > 0, or None"
            )
    if not (math.isfinite(programming_noise) and programming_noise >= 0):
        raise ValueError(
            f"convert: programming_noise {programming_noise!r} is not allowed; must be a finite number >= 0"
        )
    if programming_noise > 0 and key is None:
        raise ValueError("convert: programming_noise > 0 needs a PRNG key: pass key=jax.random.key(...)")


def _programmed(
    layer: nnx.Linear | nnx.Conv,
    name: str,
    index: int,
    rngs: nnx.Rngs,
    kwargs: dict,
    weight_scale,
    programming_noise: float,
    key: jax.Array | None,
) -> AbstractAnalogLayer:
    """The analog twin of ``layer`` with its weights programmed (the ``index``-th layer converted:
    its programming noise draws with ``fold_in(key, index)``)."""
    analog = _analog_twin(layer, name, rngs, kwargs)
    w = layer.kernel.get_value()
    w = w.T if isinstance(layer, nnx.Linear) else conv_kernel_to_array(w)
    s = _scale(w, analog.model, weight_scale, name)
    target = w.astype(jnp.float32) / s
    if programming_noise > 0:
        noise_key = jax.random.fold_in(key, index)
        target = target + programming_noise * jax.random.normal(noise_key, target.shape, target.dtype)
    cp = analog.crosspoints()
    target = target + analog.reference.get_value()
    analog.weight.set_value(analog.algorithm.program(analog.model, cp, target))
    # the rule's state (hidden arrays, buffers, a pair's second device) starts from the target
    analog.rule_state.set_value(analog.algorithm.init(analog.model, target, key=rngs.params()))
    analog.out_scale.set_value(jnp.asarray(s, jnp.float32))
    if layer.bias is not None:
        analog.bias.set_value(jnp.asarray(layer.bias.get_value(), jnp.float32))
    return analog


def _stacked(linears: list[nnx.Linear], bias_from: list[nnx.Linear] | None) -> nnx.Linear:
    """One ``nnx.Linear`` whose outputs are the outputs of ``linears`` one after another (the
    bias from ``bias_from``, in the same order; ``None``: no bias)."""
    kernel = jnp.concatenate([lin.kernel.get_value() for lin in linears], axis=1)
    out = nnx.Linear(kernel.shape[0], kernel.shape[1], use_bias=bias_from is not None, rngs=nnx.Rngs(0))
    out.kernel.set_value(kernel)
    if bias_from is not None:
        out.bias.set_value(jnp.concatenate([lin.bias.get_value() for lin in bias_from]))
    return out


def _cell_arrays(cell) -> tuple[type, nnx.Linear, nnx.Linear]:
    """The analog cell class of a Flax cell and its input and recurrent matrices as two stacked
    ``nnx.Linear`` (the bias on the input one: the two reads are summed, except in the GRU, whose
    bias Flax keeps on the input side)."""
    if isinstance(cell, nnx.LSTMCell):
        ih = [cell.ii, cell.if_, cell.ig, cell.io]
        hh = [cell.hi, cell.hf, cell.hg, cell.ho]
        return AnalogLSTMCell, _stacked(ih, hh), _stacked(hh, None)
    if isinstance(cell, nnx.OptimizedLSTMCell):
        return AnalogLSTMCell, _stacked([cell.dense_i], [cell.dense_h]), _stacked([cell.dense_h], None)
    cls = AnalogGRUCell if isinstance(cell, nnx.GRUCell) else AnalogSimpleCell
    return cls, cell.dense_i, cell.dense_h


RECURRENT = (nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell)


def _analog_cell(cell, name: str, index: int, rngs, kwargs, weight_scale, programming_noise, key):
    """The analog twin of a Flax recurrent cell, its two arrays programmed."""
    cls, ih, hh = _cell_arrays(cell)
    arrays = [
        _programmed(lin, f"{name}/{part}", index + k, rngs, kwargs, weight_scale, programming_noise, key)
        for k, (lin, part) in enumerate(((ih, "ih"), (hh, "hh")))
    ]
    return cls(cell.in_features, cell.hidden_features, gate_fn=getattr(cell, "gate_fn", jax.nn.sigmoid),
               activation_fn=cell.activation_fn, rngs=rngs, ih=arrays[0], hh=arrays[1])  # fmt: skip


def _warn_left_digital(model: nnx.Module) -> None:
    """One warning naming the layers with matrices that ``convert`` leaves digital."""
    left = [
        f"{_path_name(p)} ({type(m).__name__})"
        for p, m in nnx.iter_modules(model)
        if isinstance(m, nnx.LinearGeneral | nnx.Einsum | nnx.MultiHeadAttention)
    ]
    if left:
        warnings.warn(
            f"convert: {len(left)} layer(s) with weight matrices stay digital: {', '.join(left[:6])}"
            f"{' ...' if len(left) > 6 else ''}; build attention from analogsim.AnalogMultiHeadAttention",
            stacklevel=3,
        )


def _put(holder, path: tuple, name: str, new: AbstractAnalogLayer) -> None:
    """Put ``new`` at the module path ``path`` of ``holder`` (an attribute, list entry or dict entry)."""
    parent = holder
    for p in path[:-1]:
        parent = parent[p] if _indexed(parent, p) else getattr(parent, p)
    if isinstance(parent, tuple):
        raise ValueError(f"convert: layer {name} sits in a tuple, which cannot be changed; use nnx.List")
    if _indexed(parent, path[-1]):
        parent[path[-1]] = new
    else:
        setattr(parent, path[-1], new)


def convert(
    model: nnx.Module,
    *,
    device: DeviceCard | AbstractPulsedModel | str,
    rngs: nnx.Rngs,
    forward_io: IOParameters = IOParameters(),
    backward_io: IOParameters = BACKWARD_IO,
    update: UpdateParameters = UpdateParameters(),
    algorithm: AbstractUpdateRule = SGD(),
    reference: str = "zero",
    weight_scale: str | float | None = "auto",
    programming_noise: float = 0.0,
    key: jax.Array | None = None,
) -> nnx.Module:
    """A copy of ``model`` with its ``nnx.Linear`` and ``nnx.Conv`` layers on analog arrays.

    The digital weights :math:`W` of each layer are programmed as
    :math:`\\mathrm{clip}(W/s + \\sigma_{prog}\\xi, b_{min}, b_{max})` (per cross-point
    bounds, :math:`\\xi \\sim N(0,1)`) and the layer's output is multiplied back by :math:`s`
    (its ``out_scale``); biases are copied as digital biases. ``model`` is not changed. A layer
    shared by several paths stays shared (one analog array).

    Args:
      model: any nnx model; only its ``nnx.Linear`` and ``nnx.Conv`` layers are converted
        (conv layers: 1-D or 2-D, no feature groups, no input dilation, no mask, padding
        ``'SAME'``, ``'VALID'`` or explicit).
      device: card name/path, ``DeviceCard`` or device model of the arrays.
      rngs: ``params`` draws each array's device-to-device variation (and the initial weights
        that programming overwrites); ``read`` seeds the read-noise streams.
      forward_io: periphery of the forward reads.
      backward_io: periphery of the backward reads.
      update: pulsed-update settings (for training the converted model).
      algorithm: update rule of the analog layers (``analogsim.algorithms``); its state is
        built from the programmed weights.
      reference: what the weights are read against (``AnalogLinear``); the programmed
        state is the target plus the reference.
      weight_scale: ``"auto"`` (per layer, :math:`s = \\max|W| / (0.9\\,w_{bound})`, the
        largest weight at 90 % of the card's nominal bound), a float :math:`s > 0` for every
        layer (weight units per normalised device unit), or ``None`` (:math:`s = 1`: weights
        programmed as they are, clipped to the bounds).
      programming_noise: std :math:`\\sigma_{prog} \\ge 0` of Gaussian noise added to each
        programmed state, in normalised device weight units (before the output scale ``s``).
      key: PRNG key of the programming noise; required when ``programming_noise > 0``.

    Returns:
      The converted model (a new object; ``model`` keeps its layers and values).

    Example:
      >>> digital = nnx.Sequential(nnx.Linear(4, 8, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(8, 2, rngs=nnx.Rngs(1)))
      >>> analog = convert(digital, device="idealized", rngs=nnx.Rngs(2))
    """
    _check_options(weight_scale, programming_noise, key)
    kwargs = {
        "device": device,
        "forward_io": forward_io,
        "backward_io": backward_io,
        "update": update,
        "algorithm": algorithm,
        "reference": reference,
    }

    root = nnx.clone(model)
    convertible = (nnx.Linear, nnx.Conv, nnx.RNN, *RECURRENT)
    holder = nnx.List([root]) if isinstance(root, convertible) else root  # a root layer gets a parent
    done: dict[int, nnx.Module] = {}  # id of a digital layer -> its analog twin (shared layers stay shared)
    arrays = 0  # arrays programmed so far: the i-th draws its programming noise with fold_in(key, i)
    for kinds in (RECURRENT, (nnx.RNN,), (nnx.Linear, nnx.Conv)):  # cells before their linears; RNNs after cells
        while True:
            # a shared layer shows up once per pass; after its first path is replaced, the next pass finds the others
            todo = [(p, m) for p, m in nnx.iter_modules(holder) if isinstance(m, kinds)]
            if not todo:
                break
            for path, layer in todo:
                name = _path_name(path if holder is root else path[1:])
                if id(layer) not in done:
                    done[id(layer)] = _twin(layer, name, arrays, rngs, kwargs, weight_scale, programming_noise, key)
                    arrays += 2 if isinstance(layer, RECURRENT) else 0 if isinstance(layer, nnx.RNN) else 1
                _put(holder, path, name, done[id(layer)])
    out = holder[0] if holder is not root else root
    _warn_left_digital(out)
    return out


def _twin(layer, name: str, index: int, rngs, kwargs, weight_scale, programming_noise, key) -> nnx.Module:
    """The analog twin of a Linear, Conv, recurrent cell or RNN (an ``AnalogRNN`` around its
    already converted cell)."""
    if isinstance(layer, nnx.RNN):
        return AnalogRNN(layer.cell, time_major=layer.time_major, return_carry=layer.return_carry,
                         reverse=layer.reverse, keep_order=layer.keep_order)  # fmt: skip
    if isinstance(layer, RECURRENT):
        return _analog_cell(layer, name, index, rngs, kwargs, weight_scale, programming_noise, key)
    return _programmed(layer, name, index, rngs, kwargs, weight_scale, programming_noise, key)
