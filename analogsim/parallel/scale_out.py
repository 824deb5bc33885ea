"""Scale-out: the training step jitted over a device mesh with the batch split along one axis
(``analogsim.parallel`` explains the numerics and the multi-host recipe)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
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

from ..training import make_train_step

__all__ = ["data_mesh", "make_data_parallel_step", "replicate", "shard_step"]


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
    ``analogsim.pulsed_update`` draws with) to ``chlo.mulhi``, which the Shardy partitioner's
    MHLO round trip cannot convert back ("Unable to convert MHLO to StableHLO") as soon as a
    program spans more than one device. Where a probe compile fails, this registers a
    platform-specific lowering built from half-width products (``_mulhi_split``), which gives
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
      mesh: the device mesh (``data_mesh``).
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
    """``make_train_step`` split over the devices of ``mesh`` along the batch.

    Args:
      model: the nnx model (as for ``make_train_step``).
      tx: optax transformation of the digital parameters.
      lr: learning rate of the pulsed update.
      mesh: device mesh; default ``data_mesh`` over all of ``jax.devices()``.
      axis: the mesh axis of the batch.

    Returns:
      ``(graphdef, state, step)`` as ``make_train_step``, with ``state``
      replicated on the mesh and ``step`` from ``shard_step``.

    Example:
      >>> graphdef, state, step = make_data_parallel_step(model, optax.sgd(0.1), 0.1)
      >>> x_all, y_all = replicate((x_train, y_train), data_mesh())
      >>> state, metrics = step(state, x_all, y_all, idx, mask, key)
    """
    mesh = data_mesh(axis=axis) if mesh is None else mesh
    graphdef, state, step = make_train_step(model, tx, lr, jit=False)
    return graphdef, replicate(state, mesh), shard_step(step, mesh, axis=axis)
