"""Sweeps: ``N`` variants of one network (seeds or device parameter sets) trained and evaluated
in one compiled program, ``vmap``-ed over stacked states (``analogsim.parallel``)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from device_models import (
    AbstractPulsedModel,
    DeviceCard,
    PulsedParams,
)

from ..layers import analog_layers, as_array_model
from ..training import TrainState, make_train_step, padded_batches
from ..training.evaluation import eval_batch, evaluation_key

__all__ = [
    "check_sweepable",
    "device_variants",
    "evaluate_sweep",
    "make_sweep_step",
    "stack_states",
    "unstack_state",
]

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
    """Variant ``i`` of a stacked state (an ordinary state for ``evaluate`` and
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

    Each variant takes the step of ``make_train_step`` (forward and backward
    analog reads, optax update of the digital parameters, pulsed update of every array,
    energy ledger) on its own slice of the stacked state, with its own key:

    .. math::
        s_i \\leftarrow \\mathrm{step}(s_i, x, y, \\mathrm{idx}_i, \\mathrm{mask}_i, k_i),
        \\quad i = 0 \\ldots N-1.

    Args:
      models: ``N >= 1`` models of one configuration, differing only in their state (seeds,
        ``device_variants``); their ``GraphDef`` (structure and static attributes: sizes,
        device model, periphery, update settings, rule) must be equal.
      tx: optax transformation of the digital parameters (shared).
      lr: learning rate of the pulsed update (shared: it is a constant of the program).
      jit: jit the step (donating the state); ``False`` gives the plain vmapped function.

    Returns:
      ``(graphdef, state, step)``: ``state`` is the stacked ``TrainState``
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
    structure = jax.tree.structure(built[0][1])
    for i, (g, state_i, _) in enumerate(built[1:], 1):
        if g != graphdef or jax.tree.structure(state_i) != structure:
            raise ValueError(
                f"make_sweep_step: model {i} has another graph than model 0 (sizes, device model, periphery, "
                "update settings or rule differ); a sweep in one program varies only seeds or device parameter "
                "values (device_variants)"
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


def check_sweepable(base: AbstractPulsedModel, variant: AbstractPulsedModel) -> None:
    """Raise ``ValueError`` unless ``variant`` can share ``base``'s compiled program: the same
    model class and structure (static fields, table lengths). Every continuous parameter is an
    array leaf of the layer's state, so any of them can differ."""
    if type(variant) is not type(base):
        raise ValueError(
            f"device variant: model {type(variant).__name__} differs from the layer's {type(base).__name__}; "
            "a sweep in one program needs one device model class (run separate programs)"
        )
    shapes = lambda m: jax.tree.map(lambda v: np.shape(v), m)  # noqa: E731
    if jax.tree.structure(variant) != jax.tree.structure(base) or shapes(variant) != shapes(base):
        raise ValueError(
            f"device variant: {type(base).__name__} with other static settings or table lengths than the layer's; "
            "a sweep in one program varies parameter values only (run separate programs)"
        )


def _variant_model(base: AbstractPulsedModel, variant) -> AbstractPulsedModel:
    if isinstance(variant, Mapping):
        unknown = [k for k in variant if k not in {f.name for f in dataclasses.fields(PulsedParams)}]
        if unknown:
            raise ValueError(
                f"device variant: {', '.join(map(repr, unknown))} is not a PulsedParams field; dict variants set "
                "nominal pulsed parameters"
            )
        return dataclasses.replace(base, pulsed=dataclasses.replace(base.pulsed, **dict(variant)))
    try:
        return as_array_model(variant)
    except TypeError as e:
        raise TypeError(f"device variant: {e}; or a dict of nominal parameters") from None


def device_variants(
    model: nnx.Module,
    variants: Sequence[DeviceCard | AbstractPulsedModel | str | Mapping[str, float]],
    *,
    key: jax.Array,
) -> list[nnx.Module]:
    """Copies of ``model``, one per device parameter set, that differ only in their device
    model's parameter values (so ``make_sweep_step`` trains them all in one program).

    In every analog layer of each copy the ``DeviceModel`` is replaced by
    the variant's model (its parameters as arrays), the weights are clipped to the cross-points'
    new bounds, and the update rule's state is initialised again from the variant (a Tiki-Taka
    rule's fast array draws its own cross-points, with a key that depends on the layer only).
    The layer's device-to-device draws (``DeviceDraws``) are kept: all
    variants see the same standard normals (common random numbers), so they differ only
    through the parameter values. Any continuous parameter can be swept (``dw_min`` too, which
    also sets the pulse probabilities, the train length and rule thresholds); the model class
    and its static settings cannot (``check_sweepable``).

    Args:
      model: a freshly initialised model with analog layers (its weights and digital
        parameters are kept; every copy starts from them).
      variants: per variant, a card name, ``DeviceCard``, device model, or
        a dict of nominal ``PulsedParams`` values that replace those of
        each layer's own device model (e.g. ``{"dw_min": 0.002}``).
      key: PRNG key of the update rules' initial states.

    Returns:
      One model per variant, all with ``model``'s ``GraphDef``.

    Raises:
      ValueError: a variant that cannot share the program, naming the layer.

    Example:
      >>> base = MLP((784, 256, 128, 10), device="constant-step", rngs=nnx.Rngs(0))
      >>> models = device_variants(base, [{"dw_min": s} for s in (0.0005, 0.001, 0.002)], key=jax.random.key(1))
      >>> graphdef, state, step = make_sweep_step(models, optax.sgd(0.1), 0.1)
    """
    layers = analog_layers(model)
    if not layers:
        raise ValueError("device_variants: the model has no analog layers; nothing to vary")
    # (layers,) keys of the rules' initial states; every variant draws with clones of the same
    # keys (common random numbers), so they travel as raw data
    impl = jax.random.key_impl(key)
    raw = jax.random.key_data(jax.random.split(key, len(layers)))
    out = []
    for j, variant in enumerate(variants):
        graph, arrays = nnx.split(model)
        copy = nnx.merge(graph, jax.tree.map(lambda a: a.copy(), arrays))  # own buffers (steps donate)
        for i, (path, layer) in enumerate(analog_layers(copy)):
            base = layer.model
            var_model = as_array_model(_variant_model(base, variant))
            try:
                check_sweepable(base, var_model)
            except ValueError as e:
                raise ValueError(f"device_variants: variant {j}, layer {'/'.join(map(str, path))}: {e}") from None
            layer.device_model.set_value(var_model)
            cp = layer.crosspoints()
            w = jnp.clip(layer.weight.get_value(), cp.b_min, cp.b_max)
            layer.weight.set_value(w)
            k_rule = jax.random.wrap_key_data(raw[i], impl=impl)
            layer.rule_state.set_value(layer.algorithm.init(var_model, w, key=k_rule))
        out.append(copy)
    return out


@functools.partial(jax.jit, static_argnums=0)
def _sweep_eval_batch(graphdef, params, analog, rest, x, y, mask, keys):
    def one(params, analog, rest, key):
        correct, _, rest = eval_batch(graphdef, params, analog, rest, x, y, mask, key)
        return correct, rest

    return jax.vmap(one)(params, analog, rest, keys)


def evaluate_sweep(
    graphdef, state: TrainState, x: np.ndarray, y: np.ndarray, batch_size: int = 500
) -> tuple[np.ndarray, TrainState]:
    """Test accuracy of every variant of a stacked state (analog reads with their noise), in
    one vmapped forward program per batch.

    Variant ``i`` gets the accuracy and read-noise stream that ``evaluate``
    gives for ``unstack_state(state, i)``; the evaluation's energy counts are not tallied here
    (use ``evaluate`` on an unstacked variant for those).

    Returns:
      ``(accuracy (N,) in [0, 1], state with its read-noise streams advanced)``.
    """
    n_var = _num_variants(state)
    n = x.shape[0]
    rest = state.rest
    steps = np.zeros(n_var, np.int64) if state.step is None else np.asarray(state.step)
    keys = [evaluation_key(int(s)) for s in steps]
    correct = np.zeros(n_var, np.int64)
    for b, (xb, yb, mask) in enumerate(padded_batches(x, y, batch_size)):
        batch_keys = jnp.stack([jax.random.fold_in(k, b) for k in keys])
        c, rest = _sweep_eval_batch(graphdef, state.params, state.analog, rest, xb, yb, mask, batch_keys)
        correct += np.asarray(c).astype(np.int64)
    return correct / n, state._replace(rest=rest)
