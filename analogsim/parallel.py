"""Many runs in one program: sweeps with ``jax.vmap`` and data parallelism over devices.

**Sweeps.** :func:`make_sweep_step` trains ``N`` variants of one network in one compiled
program: the ``N`` training states are stacked along a leading axis (:func:`stack_states`)
and the ordinary training step of :func:`analogsim.training.make_train_step` is ``vmap``-ed
over it, with one PRNG key per variant. Variant ``i`` of the sweep computes what the
unbatched step computes for state ``i`` and key ``i``: ``jax.random`` draws under ``vmap``
with a batch of keys equal the unbatched draws with each key, and the arithmetic differs at
most by float rounding. Two kinds of variants share one program (the models' ``GraphDef``
must be equal, which :func:`make_sweep_step` checks):

- *seeds*: the same configuration built with different ``nnx.Rngs`` seeds (weights,
  device-to-device draws, read-noise streams);
- *device parameter sets* (:func:`device_variants`): one base model whose analog layers get
  the cross-point draws (:class:`~device_models.CrossPoints`) of other parameter values of the
  same device model. Only parameters that act solely through those draws can be swept this
  way; see :func:`device_variants` for the list.

**Scale-out.** :func:`make_data_parallel_step` (or :func:`shard_step` on any step function)
jits the training step over a :class:`jax.sharding.Mesh` of ``jax.devices()`` with the batch
(``idx``, ``mask``) split along a ``"data"`` axis and the state and data arrays replicated.
The pulsed update sums over the batch (the outer products :math:`\\sum_s x_s d_s^T`, the pulse
counts, the ledger counts), so XLA's partitioner inserts the all-reduce and every device ends
the step with the same replicated state. With ``jax_threefry_partitionable`` on (the default
since JAX 0.5) each device draws the random bits of its own shard of the batch, and the
values do not depend on how the batch is split. The result equals the single-device step up
to the order of the cross-device reduction (float rounding), which can, rarely, flip a
Poisson pulse count whose uniform draw lies within rounding of a threshold; see
``tests/test_parallel.py`` for the observed difference. (On JAX 0.10.2 the Philox generator
of :mod:`analogsim.pulsed_update` does not compile in a program over several devices;
:func:`shard_step` then registers an equivalent lowering of ``lax.mulhi``, see
:func:`_partitionable_mulhi`.)

**Multi-host.** The same code runs on several hosts (processes) once JAX knows about them.
On every host run the same script (e.g. ``srun python train.py`` under SLURM, or by hand
with each host's ``process_id``), which calls, before any other JAX function::

    import jax
    jax.distributed.initialize(
        coordinator_address="host0.example:1234",  # host:port of process 0, reachable by all
        num_processes=4,  # number of hosts
        process_id=i,  # 0 .. num_processes-1, different on every host
    )  # on SLURM, Open MPI, TPU pods and GKE the three arguments are detected: call it bare

and then builds the model with the *same* seed everywhere (the state is replicated, so every
host must hold the same initial state), loads the full data set on every host, and computes
the same global batch order (the same ``jax.random`` key on every host)::

    mesh = data_mesh()  # all devices of all hosts (jax.devices() is global after initialize)
    graphdef, state, step = make_data_parallel_step(model, optax.sgd(lr), lr, mesh)
    x_all, y_all = replicate((x_train, y_train), mesh)
    state, metrics = step(state, x_all, y_all, idx, mask, key)  # idx, mask: the global batch

The step wrapper turns host NumPy arrays into global ``jax.Array``\\ s with
:func:`jax.make_array_from_callback`, so each process only transfers the shards its own
devices hold. The global batch size must be a multiple of the total device count. Metrics and
the state come back replicated; read them on any host (e.g. only process 0 prints). This
multi-host path is documented, not tested (the tests run several CPU devices in one process).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax import lax
from jax.interpreters import mlir
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from device_models import (
    AbstractPulsedModel,
    DeviceCard,
    PulsedParams,
    draw_crosspoints,
    load_card,
    nominal_crosspoints,
)

from .layers import analog_layers
from .training import TrainState, make_train_step, padded_batches, split_state

__all__ = [
    "CROSSPOINT_PARAMETERS",
    "check_sweepable",
    "data_mesh",
    "device_variants",
    "evaluate_sweep",
    "make_data_parallel_step",
    "make_sweep_step",
    "replicate",
    "shard_step",
    "stack_states",
    "unstack_state",
]

# The nominal parameters that reach training only through draw_crosspoints (the per-cross-point
# step scales, their up/down asymmetry, the bounds, and the cycle-to-cycle spread), unless a
# model's step equation also reads the nominal value (check_sweepable finds that out).
CROSSPOINT_PARAMETERS = (
    "dw_min_dtod",
    "dw_min_std",
    "up_down",
    "up_down_dtod",
    "w_max",
    "w_min",
    "w_max_dtod",
    "w_min_dtod",
)


# ----------------------------------------------------------------------------------------------
# Stacked states


def stack_states(states: Sequence[TrainState]) -> TrainState:
    """Stack training states of one configuration along a new leading (variant) axis.

    Raises:
      ValueError: no states, or states whose tree structure or leaf shapes differ.
    """
    if not states:
        raise ValueError("stack_states: got no states; pass at least one")
    ref = jax.tree.structure(states[0])
    for i, s in enumerate(states[1:], 1):
        if jax.tree.structure(s) != ref:
            raise ValueError(f"stack_states: state {i} has another tree structure than state 0")
        for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(states[0]), jax.tree.leaves(s), strict=True):
            if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != jnp.result_type(b):
                raise ValueError(
                    f"stack_states: leaf {jax.tree_util.keystr(path)} of state {i} is "
                    f"{jnp.result_type(b)}{list(jnp.shape(b))}, state 0 has {jnp.result_type(a)}{list(jnp.shape(a))}"
                )
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack_state(state: TrainState, i: int) -> TrainState:
    """Variant ``i`` of a stacked state (an ordinary state for :func:`~analogsim.evaluate` and
    checkpoints).

    Key leaves (read-noise streams) are rebuilt from their key data, so that taking a variant
    does not count as using its keys under ``jax.debug_key_reuse``.
    """

    def take(a):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(jax.random.key_data(a)[i], impl=jax.random.key_impl(a))
        return a[i]

    return jax.tree.map(take, state)


def _num_variants(state: TrainState) -> int:
    return int(jax.tree.leaves(state)[0].shape[0])


# ----------------------------------------------------------------------------------------------
# Sweeps


def make_sweep_step(models: Sequence[nnx.Module], tx: optax.GradientTransformation, lr: float, *, jit: bool = True):
    """One training step for ``N`` variants of a network, ``vmap``-ed into one program.

    Each variant takes the step of :func:`~analogsim.make_train_step` (forward and backward
    analog reads, optax update of the digital parameters, pulsed update of every array,
    energy ledger) on its own slice of the stacked state, with its own key:

    .. math::
        s_i \\leftarrow \\mathrm{step}(s_i, x, y, \\mathrm{idx}_i, \\mathrm{mask}_i, k_i),
        \\quad i = 0 \\ldots N-1.

    Args:
      models: ``N >= 1`` models of one configuration, differing only in their state (seeds,
        :func:`device_variants`); their ``GraphDef`` (structure and static attributes: sizes,
        device model, periphery, update settings, rule) must be equal.
      tx: optax transformation of the digital parameters (shared).
      lr: learning rate of the pulsed update (shared: it is a constant of the program).
      jit: jit the step (donating the state); ``False`` gives the plain vmapped function.

    Returns:
      ``(graphdef, state, step)``: ``state`` is the stacked :class:`~analogsim.training.TrainState`
      (every leaf has a leading axis of size ``N``) and ``step(state, x_all, y_all, idx, mask,
      keys) -> (state, metrics)`` with ``keys`` (N,) PRNG keys, ``idx``/``mask`` either (batch,)
      shared by all variants or (N, batch) one batch order per variant; ``metrics`` entries
      have shape (N,).

    Raises:
      ValueError: no models, or a model whose graph differs from the first one's.

    Example:
      >>> models = [MLP((64, 16, 10), device="constant-step", rngs=nnx.Rngs(s)) for s in range(4)]
      >>> graphdef, state, step = make_sweep_step(models, optax.sgd(0.1), 0.1)
      >>> keys = jax.random.split(jax.random.key(0), 4)
      >>> state, metrics = step(state, x_all, y_all, idx, mask, keys)  # metrics["loss"]: (4,)
    """
    if len(models) == 0:
        raise ValueError("make_sweep_step: models is empty; pass at least one model")
    built = [make_train_step(m, tx, lr, jit=False) for m in models]
    graphdef, _, one_step = built[0]
    for i, (g, _, _) in enumerate(built[1:], 1):
        if g != graphdef:
            raise ValueError(
                f"make_sweep_step: model {i} has another graph than model 0 (sizes, device model, periphery, "
                "update settings or rule differ); a sweep in one program varies only seeds or cross-point draws "
                "(device_variants)"
            )
    state = stack_states([b[1] for b in built])
    n = len(models)

    def step(state: TrainState, x_all, y_all, idx, mask, keys):
        idx_axis = 0 if jnp.ndim(idx) == 2 else None
        mask_axis = 0 if jnp.ndim(mask) == 2 else None
        return jax.vmap(one_step, in_axes=(0, None, None, idx_axis, mask_axis, 0))(state, x_all, y_all, idx, mask, keys)

    if not jit:
        return graphdef, state, step
    jitted = jax.jit(step, donate_argnums=0)

    def checked(state: TrainState, x_all, y_all, idx, mask, keys):
        if jnp.shape(keys)[:1] != (n,) or jnp.ndim(keys) != 1:
            raise ValueError(
                f"sweep step: keys has shape {jnp.shape(keys)}; pass one key per variant, shape ({n},) "
                "(e.g. jax.random.split(key, N))"
            )
        for name, a in (("idx", idx), ("mask", mask)):
            if jnp.ndim(a) not in (1, 2) or (jnp.ndim(a) == 2 and jnp.shape(a)[0] != n):
                raise ValueError(
                    f"sweep step: {name} has shape {jnp.shape(a)}; allowed: (batch,) shared by all variants "
                    f"or ({n}, batch) one per variant"
                )
        return jitted(state, x_all, y_all, idx, mask, keys)

    checked.jitted = jitted  # the jitted function, for .lower(...) and inspection
    return graphdef, state, checked


def _as_device_model(device: DeviceCard | AbstractPulsedModel | str) -> AbstractPulsedModel:
    if isinstance(device, str):
        device = load_card(device)
    if isinstance(device, DeviceCard):
        device = device.model
    if not isinstance(device, AbstractPulsedModel):
        raise TypeError(f"device variant: expected a card name, DeviceCard, device model or dict, got {type(device)}")
    return device


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-6, atol=0.0))


def _step_probe(model: AbstractPulsedModel, cp, w):
    up = model.step_up(cp, w)
    down = model.step_down(cp, w)
    var_up = model.step_variance(cp, w, True)
    var_down = model.step_variance(cp, w, False)
    pulses = jnp.where(jnp.arange(w.shape[0]) % 2 == 0, 1, -1)
    noisy = model.sample_step(cp, w, pulses, key=jax.random.key(0))
    return np.asarray(jnp.stack([up, down, var_up, var_down, noisy]))


def check_sweepable(base: AbstractPulsedModel, variant: AbstractPulsedModel) -> None:
    """Raise ``ValueError`` unless ``variant`` differs from ``base`` only in parameters that act
    through the cross-point draws (so the variant can share ``base``'s compiled program).

    Checks, in order: the same model class; the same nominal ``dw_min`` (it also sets the pulse
    probabilities, the train length and rule thresholds, which are constants of the program);
    the same model-specific parameters (``gamma_up``, tables, ...: static attributes of the
    layer); and, for each :data:`CROSSPOINT_PARAMETERS` entry that differs, that the model's
    step equations do not read the nominal value itself (probed numerically: e.g.
    :class:`~device_models.LinearStep` with ``gamma != 0`` scales its step by
    ``w / w_max`` with the *nominal* bound, so its ``w_max`` cannot be swept this way).
    """
    if type(variant) is not type(base):
        raise ValueError(
            f"device variant: model {type(variant).__name__} differs from the layer's {type(base).__name__}; "
            "a sweep in one program needs one device model class (run separate programs)"
        )
    if not _same(variant.pulsed.dw_min, base.pulsed.dw_min):
        raise ValueError(
            f"device variant: dw_min {float(variant.pulsed.dw_min):g} differs from the layer's "
            f"{float(base.pulsed.dw_min):g}; dw_min also sets the pulse probabilities (a program constant), "
            "so it cannot be swept by cross-point draws (run separate programs)"
        )
    for f in dataclasses.fields(base):
        if f.name == "pulsed":
            continue
        if not _same(getattr(variant, f.name), getattr(base, f.name)):
            raise ValueError(
                f"device variant: {type(base).__name__}.{f.name} = {getattr(variant, f.name)!r} differs from the "
                f"layer's {getattr(base, f.name)!r}; model-specific parameters are static attributes of the layer "
                "and cannot be swept in one program (sweepable: " + ", ".join(CROSSPOINT_PARAMETERS) + ")"
            )
    n = 64
    w = jnp.linspace(-1.5, 1.5, n, dtype=jnp.float32)
    cp = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), _probe_crosspoints(base, n))
    ref = _step_probe(base, cp, w)
    for name in CROSSPOINT_PARAMETERS:
        value = getattr(variant.pulsed, name)
        if _same(value, getattr(base.pulsed, name)):
            continue
        probe = dataclasses.replace(base, pulsed=dataclasses.replace(base.pulsed, **{name: value}))
        if not np.array_equal(_step_probe(probe, cp, w), ref, equal_nan=True):
            raise ValueError(
                f"device variant: {type(base).__name__}'s step equation reads the nominal {name} itself "
                f"(not only through the cross-point draws), so {name} = {float(value):g} "
                f"(layer: {float(getattr(base.pulsed, name)):g}) cannot be swept in one program"
            )


def _probe_crosspoints(model: AbstractPulsedModel, n: int):
    """Cross-points for :func:`check_sweepable`'s probe: nominal, with a spread of scales."""
    cp = nominal_crosspoints(model, (n,))
    spread = jnp.linspace(0.5, 1.5, n, dtype=jnp.float32)
    return dataclasses.replace(cp, scale_up=cp.scale_up * spread, scale_down=cp.scale_down * spread[::-1])


def _variant_model(base: AbstractPulsedModel, variant) -> AbstractPulsedModel:
    if isinstance(variant, Mapping):
        unknown = [k for k in variant if k not in {f.name for f in dataclasses.fields(PulsedParams)}]
        if unknown:
            raise ValueError(
                f"device variant: {', '.join(map(repr, unknown))} is not a PulsedParams field; dict variants set "
                "nominal pulsed parameters (sweepable: " + ", ".join(CROSSPOINT_PARAMETERS) + ")"
            )
        return dataclasses.replace(base, pulsed=dataclasses.replace(base.pulsed, **dict(variant)))
    return _as_device_model(variant)


def device_variants(
    model: nnx.Module,
    variants: Sequence[DeviceCard | AbstractPulsedModel | str | Mapping[str, float]],
    *,
    key: jax.Array,
) -> list[nnx.Module]:
    """Copies of ``model``, one per device parameter set, that differ only in their
    cross-point draws (so :func:`make_sweep_step` trains them all in one program).

    In every analog layer of each copy the :class:`~analogsim.layers.DeviceParameters` are
    replaced by ``draw_crosspoints(variant, (out, in), key=k)`` of the variant's model, the
    weights are clipped to the new bounds, and the update rule's state is initialised again
    from the variant (a Tiki-Taka rule's fast array draws its own cross-points). The layer's
    static device model stays the base one. ``k`` depends on the layer only, not on the
    variant: all variants see the same standard-normal draws (common random numbers), so they
    differ only through the parameter values.

    What can be swept this way. :func:`~device_models.draw_crosspoints` turns the nominal
    parameters into per-cross-point arrays, and these reach the pulse response:

    - ``dw_min_dtod`` (device-to-device spread of the step), ``up_down`` and ``up_down_dtod``
      (up/down asymmetry and its spread): the step scales ``scale_up``/``scale_down``;
    - ``w_max``, ``w_min``, ``w_max_dtod``, ``w_min_dtod``: the bounds ``b_max``/``b_min``
      (every model clips to them; soft-bounds, pow-step, exp-step, piecewise and protonic
      steps also scale with them);
    - ``dw_min_std`` (cycle-to-cycle spread): carried as a scalar ``dw_min_std`` per array.

    What cannot (each is a constant of the compiled program; :func:`check_sweepable` raises):

    - ``dw_min`` itself: besides the step scale it sets the pulse probabilities
      :math:`A = B = \\sqrt{\\eta / (\\Delta w_{min} BL)}`, the train length of BL management,
      and the thresholds of the Tiki-Taka family and of mixed precision (sweep it with
      separate programs);
    - the model class and model-specific parameters (``gamma_up``/``gamma_down`` of
      linear/pow/exp steps, ``A_up``, ``a``, ``b``, piecewise and lookup tables, the protonic
      model's physics), which are static attributes of the layer;
    - a :data:`CROSSPOINT_PARAMETERS` entry that the model's step equation reads as a nominal
      value too (``w_max``/``w_min`` of :class:`~device_models.LinearStep` with ``gamma != 0``);
    - update settings, periphery, the update rule's settings, the learning rate.

    Args:
      model: a freshly initialised model with analog layers (its weights and digital
        parameters are kept; every copy starts from them).
      variants: per variant, a card name, :class:`~device_models.DeviceCard`, device model, or
        a dict of nominal :class:`~device_models.PulsedParams` values that replace those of
        each layer's own device model (e.g. ``{"dw_min_std": 0.0}``).
      key: PRNG key of the cross-point draws.

    Returns:
      One model per variant, all with ``model``'s ``GraphDef``.

    Raises:
      ValueError: a variant that cannot share the program (see above), naming the parameter.

    Example:
      >>> base = MLP((784, 256, 128, 10), device="constant-step", rngs=nnx.Rngs(0))
      >>> models = device_variants(base, [{"dw_min_std": s} for s in (0.0, 0.3, 1.0)], key=jax.random.key(1))
      >>> graphdef, state, step = make_sweep_step(models, optax.sgd(0.1), 0.1)
    """
    layers = analog_layers(model)
    if not layers:
        raise ValueError("device_variants: the model has no analog layers; nothing to vary")
    # (layers, 2) keys: the cross-point draw and the rule's initial state of each layer; every
    # variant draws with clones of the same keys.
    impl = jax.random.key_impl(key)
    raw = jax.random.key_data(jax.random.split(key, (len(layers), 2)))
    out = []
    for j, variant in enumerate(variants):
        graph, arrays = nnx.split(model)
        copy = nnx.merge(graph, jax.tree.map(lambda a: a.copy(), arrays))  # own buffers (steps donate)
        for i, (path, layer) in enumerate(analog_layers(copy)):
            base = layer.model
            var_model = _variant_model(base, variant)
            try:
                check_sweepable(base, var_model)
            except ValueError as e:
                raise ValueError(f"device_variants: variant {j}, layer {'/'.join(map(str, path))}: {e}") from None
            k_dev = jax.random.wrap_key_data(raw[i, 0], impl=impl)
            k_rule = jax.random.wrap_key_data(raw[i, 1], impl=impl)
            cp = draw_crosspoints(var_model, (layer.out_features, layer.in_features), key=k_dev)
            w = jnp.clip(layer.weight.get_value(), cp.b_min, cp.b_max)
            layer.device.set_value(cp)
            layer.weight.set_value(w)
            layer.rule_state.set_value(layer.algorithm.init(var_model, w, key=k_rule))
        out.append(copy)
    return out


@functools.partial(jax.jit, static_argnums=0)
def _sweep_eval_batch(graphdef, params, analog, rest, x, y, mask):
    def one(params, analog, rest):
        m = nnx.merge(graphdef, params, analog, rest, copy=True)
        logits = m(x)
        correct = jnp.sum((jnp.argmax(logits, -1) == y) * mask)
        return correct, split_state(m)[3]

    return jax.vmap(one)(params, analog, rest)


def evaluate_sweep(
    graphdef, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int = 500
) -> tuple[np.ndarray, TrainState]:
    """Test accuracy of every variant of a stacked state (analog reads with their noise), in
    one vmapped forward program per batch.

    Variant ``i`` gets the accuracy and read-noise stream that :func:`~analogsim.evaluate`
    gives for ``unstack_state(state, i)``; the evaluation's energy counts are not tallied here
    (use :func:`~analogsim.evaluate` on an unstacked variant for those).

    Returns:
      ``(accuracy (N,) in [0, 1], state with its read-noise streams advanced)``.
    """
    n_var = _num_variants(state)
    n = x.shape[0]
    rest = state.rest
    correct = np.zeros(n_var, np.int64)
    for xb, yb, mask in padded_batches(x, y, batch_size):
        c, rest = _sweep_eval_batch(graphdef, state.params, state.analog, rest, xb, yb, mask)
        correct += np.asarray(c).astype(np.int64)
    return correct / n, state._replace(rest=rest)


# ----------------------------------------------------------------------------------------------
# Data parallelism


def data_mesh(devices: Sequence[jax.Device] | None = None, axis: str = "data") -> Mesh:
    """A one-axis mesh over ``devices`` (default: all of ``jax.devices()``, every host's)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("data_mesh: no devices given")
    return Mesh(np.asarray(devices), (axis,))


def _to_global(a: Any, sharding: NamedSharding) -> jax.Array:
    """``a`` as a global array with ``sharding``.

    Host arrays become global arrays, each process transferring only the shards its own
    devices hold. Device arrays pass through in a single process (``jit`` places them); in a
    multi-process run a process-local array (a key from ``fold_in``, a state built on this host)
    is taken to hold the same values on every process and is made global the same way.
    """
    if isinstance(a, jax.Array):
        if jax.process_count() == 1 or not a.is_fully_addressable:
            return a
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            data = _to_global(np.asarray(jax.random.key_data(a)), sharding)
            return jax.random.wrap_key_data(data, impl=jax.random.key_impl(a))
    a = np.asarray(a)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every array of ``tree`` replicated on all devices of ``mesh`` (state, data sets)."""
    sharding = NamedSharding(mesh, P())

    def put(a):
        if jax.process_count() == 1 and isinstance(a, jax.Array):
            return jax.device_put(a, sharding)
        return _to_global(a, sharding)

    return jax.tree.map(put, tree)


def _mulhi_split(x: jax.Array, y: jax.Array) -> jax.Array:
    """``lax.mulhi`` (high half of the product) from half-width partial products in the
    operands' own width (Hacker's Delight, ``mulhs``/``mulhu``): the same bits as the fused op."""
    dtype = x.dtype
    bits = jnp.iinfo(dtype).bits
    half = bits // 2
    udt = jnp.dtype(f"uint{bits}")
    xu = lax.convert_element_type(x, udt)
    yu = lax.convert_element_type(y, udt)
    mask = jnp.array((1 << half) - 1, udt)
    sh = jnp.array(half, udt)
    a, b = lax.shift_right_logical(xu, sh), xu & mask
    c, d = lax.shift_right_logical(yu, sh), yu & mask
    t = a * d + lax.shift_right_logical(b * d, sh)
    w1 = (t & mask) + b * c
    hi = a * c + lax.shift_right_logical(t, sh) + lax.shift_right_logical(w1, sh)
    if jnp.issubdtype(dtype, jnp.signedinteger):
        zero = jnp.array(0, udt)
        hi = hi - jnp.where(x < 0, yu, zero) - jnp.where(y < 0, xu, zero)
    return lax.convert_element_type(hi, dtype)


@functools.cache
def _partitionable_mulhi(platform: str, devices: tuple[jax.Device, ...]) -> bool:
    """Make ``lax.mulhi`` compile in partitioned programs on ``platform``; ``True`` when a
    lowering had to be registered.

    JAX 0.10.2 lowers ``mulhi`` (used by the Philox generator that
    :mod:`analogsim.pulsed_update` draws with) to ``chlo.mulhi``, which the Shardy partitioner's
    MHLO round trip cannot convert back ("Unable to convert MHLO to StableHLO") as soon as a
    program spans more than one device. Where a probe compile fails, this registers a
    platform-specific lowering built from half-width products (:func:`_mulhi_split`), which gives
    the same bits; where the probe compiles (a fixed JAX), nothing changes.
    """
    mesh = Mesh(np.asarray(devices), ("probe",))
    rep = NamedSharding(mesh, P())
    arg = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
    try:
        jax.jit(lax.mulhi, in_shardings=(rep, rep), out_shardings=rep).lower(arg, arg).compile()
        return False
    except Exception:  # noqa: BLE001 - any lowering or compile failure means: use the split form
        mlir.register_lowering(lax.mulhi_p, mlir.lower_fun(_mulhi_split, multiple_results=False), platform=platform)
        return True


def shard_step(step: Callable, mesh: Mesh, *, axis: str = "data", donate: bool = True) -> Callable:
    """Jit ``step(state, x_all, y_all, idx, mask, key)`` for data parallelism over ``mesh``.

    ``idx`` and ``mask`` (the batch) are split along ``axis``; the state, the data arrays and the
    key are replicated, and so are the outputs. XLA inserts the all-reduce of the batch sums.

    Args:
      step: an unjitted step, e.g. from ``make_train_step(..., jit=False)``.
      mesh: the device mesh (:func:`data_mesh`).
      axis: the mesh axis the batch is split over.
      donate: donate the input state's buffers.

    Returns:
      The sharded step, same signature; it raises ``ValueError`` when the batch size is not a
      multiple of the number of devices along ``axis``.
    """
    if axis not in mesh.shape:
        raise ValueError(f"shard_step: axis {axis!r} is not a mesh axis; the mesh has {', '.join(mesh.shape)}")
    if mesh.size > 1:
        devices = tuple(mesh.devices.flat)
        _partitionable_mulhi(devices[0].platform, devices)
    rep = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P(axis))
    jitted = jax.jit(
        step,
        in_shardings=(rep, rep, rep, batch, batch, rep),
        out_shardings=(rep, rep),
        donate_argnums=0 if donate else (),
    )
    n_dev = mesh.shape[axis]

    def sharded(state, x_all, y_all, idx, mask, key):
        size = jnp.shape(idx)[0]
        if size % n_dev or jnp.shape(mask)[:1] != (size,):
            raise ValueError(
                f"data-parallel step: batch of {size} rows (mask {jnp.shape(mask)}) cannot be split over "
                f"{n_dev} devices; use a batch size that is a multiple of {n_dev} (pad with mask 0 rows)"
            )
        return jitted(
            state,
            _to_global(x_all, rep),
            _to_global(y_all, rep),
            _to_global(idx, batch),
            _to_global(mask, batch),
            _to_global(key, rep),
        )

    sharded.jitted = jitted  # the jitted function, for .lower(...) and inspection
    return sharded


def make_data_parallel_step(
    model: nnx.Module, tx: optax.GradientTransformation, lr: float, mesh: Mesh | None = None, *, axis: str = "data"
):
    """:func:`~analogsim.make_train_step` split over the devices of ``mesh`` along the batch.

    Args:
      model: the nnx model (as for :func:`~analogsim.make_train_step`).
      tx: optax transformation of the digital parameters.
      lr: learning rate of the pulsed update.
      mesh: device mesh; default :func:`data_mesh` over all of ``jax.devices()``.
      axis: the mesh axis of the batch.

    Returns:
      ``(graphdef, state, step)`` as :func:`~analogsim.make_train_step`, with ``state``
      replicated on the mesh and ``step`` from :func:`shard_step`.

    Example:
      >>> graphdef, state, step = make_data_parallel_step(model, optax.sgd(0.1), 0.1)
      >>> x_all, y_all = replicate((x_train, y_train), data_mesh())
      >>> state, metrics = step(state, x_all, y_all, idx, mask, key)
    """
    mesh = data_mesh(axis=axis) if mesh is None else mesh
    graphdef, state, step = make_train_step(model, tx, lr, jit=False)
    return graphdef, replicate(state, mesh), shard_step(step, mesh, axis=axis)
