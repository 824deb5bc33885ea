"""Many runs in one program: sweeps with ``jax.vmap`` and data parallelism over devices.

**Sweeps.** ``make_sweep_step`` trains ``N`` variants of one network in one compiled
program: the ``N`` training states are stacked along a leading axis (``stack_states``)
and the ordinary training step of ``analogsim.training.make_train_step`` is ``vmap``-ed
over it, with one PRNG key per variant. Variant ``i`` of the sweep computes what the
unbatched step computes for state ``i`` and key ``i``: ``jax.random`` draws under ``vmap``
with a batch of keys equal the unbatched draws with each key, and the arithmetic differs at
most by float rounding. Two kinds of variants share one program (the models' ``GraphDef``
must be equal, which ``make_sweep_step`` checks):

- *seeds*: the same configuration built with different ``nnx.Rngs`` seeds (weights,
  device-to-device draws, read-noise streams);
- *device parameter sets* (``device_variants``): one base model whose analog layers get
  other parameter values of the same device model (every continuous parameter is an array
  leaf of the layer's state, so ``dw_min``, the bounds, the noise and the model-specific
  parameters all sweep in one program).

**Scale-out.** ``make_data_parallel_step`` (or ``shard_step`` on any step function)
jits the training step over a ``jax.sharding.Mesh`` of ``jax.devices()`` with the batch
(``idx``, ``mask``) split along a ``"data"`` axis and the state and data arrays replicated.
The pulsed update sums over the batch (the outer products :math:`\\sum_s x_s d_s^T`, the pulse
counts, the ledger counts), so XLA's partitioner inserts the all-reduce and every device ends
the step with the same replicated state. With ``jax_threefry_partitionable`` on (the default
since JAX 0.5) each device draws the random bits of its own shard of the batch, and the
values do not depend on how the batch is split. The result equals the single-device step up
to the order of the cross-device reduction (float rounding), which can, rarely, flip a
Poisson pulse count whose uniform draw lies within rounding of a threshold; see
``tests/test_parallel.py`` for the observed difference. (On JAX 0.10.2 the Philox generator
of ``analogsim.pulsed_update`` does not compile in a program over several devices;
``shard_step`` then registers an equivalent lowering of ``lax.mulhi``, see
``_partitionable_mulhi``.)

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
``jax.make_array_from_callback``, so each process only transfers the shards its own
devices hold. The global batch size must be a multiple of the total device count. Metrics and
the state come back replicated; read them on any host (e.g. only process 0 prints). This
multi-host path is documented, not tested (the tests run several CPU devices in one process).

Modules: ``sweep`` (stacked states, the sweep step, device variants, the
sweep's evaluation) and ``scale_out`` (the mesh, replication, the sharded
step and the ``mulhi`` lowering it may need).
"""

from .scale_out import (  # noqa: F401 (re-exported)
    _mulhi_split,
    _partitionable_mulhi,
    _to_global,
    data_mesh,
    make_data_parallel_step,
    replicate,
    shard_step,
)
from .sweep import (  # noqa: F401 (re-exported)
    _num_variants,
    _sweep_eval_batch,
    _variant_model,
    check_sweepable,
    device_variants,
    evaluate_sweep,
    make_sweep_step,
    stack_states,
    unstack_state,
)

__all__ = [
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
