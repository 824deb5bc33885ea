"""Where the time of an RT-MNIST training step goes, per pulsed-update rung.

Times, on the reference task's network (784-256-128-10 tanh MLP, batch 64, lr 0.1, aihwkit
default periphery and update settings):

- the whole jitted training step, per update mode, and the same step with the pulsed update
  replaced by "keep the weights" (what the forward and backward reads, the digital parts and
  the energy ledger cost: the floor no rung can go below);
- each analog layer's :func:`analogsim.pulsed_update` alone, per mode, on the layer inputs and
  errors recorded during a short training run (so the pulse statistics are the real ones);
- the random-number draws of the first layer's size, per PRNG implementation.

Every timing is the median of ``--reps`` calls after two warm-up calls, with the candidates
interleaved (A, B, C, A, B, C, ...) so that load from other processes hits all of them alike.
On a shared machine, ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"`` (one thread) makes the timings far steadier.

    python experiments/benchmarks/update_profile.py --data ../shared/data/mnist-10k/mnist10k.npz \\
        --device soft-bounds --modes exact,expected,gaussian --json results/update_profile.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import analogsim.training as training
from analogsim import TrainConfig, UpdateParameters, load_dataset, make_train_step, pulsed_update
from analogsim.pulsed_update import PulseCounts
from analogsim.training import build_model


def interleaved_medians(fns: dict, reps: int) -> dict[str, float]:
    """Median seconds per call of each ``name -> (fn, args)``, calls interleaved."""
    times = {name: [] for name in fns}
    for fn, args in fns.values():
        for _ in range(2):
            jax.block_until_ready(fn(*args))
    for _ in range(reps):
        for name, (fn, args) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(v)) for name, v in times.items()}


@contextlib.contextmanager
def _patched_update(fn):
    """Swap the pulsed update the trainer calls (looked up when a step is traced) for ``fn``."""
    callers = [m for m in (training, sys.modules.get("analogsim.algorithms")) if hasattr(m, "pulsed_update")]
    saved = [m.pulsed_update for m in callers]
    for m in callers:
        m.pulsed_update = fn
    try:
        yield
    finally:
        for m, f in zip(callers, saved, strict=True):
            m.pulsed_update = f


def _keep_weights(model, cp, w, x, d, lr, up, *, key):
    zero = jnp.zeros((), jnp.int32)
    return w, PulseCounts(up=zero, down=zero)


class _StepRunner:
    """One jitted training step of the RT-MNIST MLP, called on fixed batches."""

    def __init__(self, config: TrainConfig, data, no_update: bool = False, key_impl: str | None = None):
        model, _ = build_model(config, data)
        with _patched_update(_keep_weights) if no_update else contextlib.nullcontext():
            _, self.state, step = make_train_step(model, optax.sgd(config.lr), config.lr)
            self.x = jnp.asarray(data.x_train)
            self.y = jnp.asarray(data.y_train)
            self.idx = np.arange(config.batch_size)
            self.mask = np.ones(config.batch_size, np.float32)
            self.key = jax.random.key(config.seed, impl=key_impl)
            self.step = step
            self.n = 0
            self(self.state)  # trace while patched

    def __call__(self, _=None):
        self.n += 1
        bs = len(self.idx)
        idx = (self.idx + self.n * bs) % self.x.shape[0]
        self.state, metrics = self.step(
            self.state, self.x, self.y, idx, self.mask, jax.random.fold_in(self.key, self.n)
        )
        return metrics["loss"]


def record_layer_inputs(config: TrainConfig, data, steps: int) -> dict[int, tuple]:
    """Train ``steps`` steps and return, per analog layer (keyed by its input size), the
    ``(x, d, w, cp, model, up)`` of the last step (arrays on the host)."""
    seen: dict[int, tuple] = {}
    host: dict[int, tuple] = {}

    def recording(model, cp, w, x, d, lr, up, *, key):
        n_in = x.shape[1]
        leaves, treedef = jax.tree.flatten(cp)
        seen[n_in] = (model, up)

        def keep(x, d, w, *leaves):
            cp_host = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in leaves])
            host[n_in] = (np.asarray(x), np.asarray(d), np.asarray(w), cp_host)

        jax.debug.callback(keep, x, d, w, *leaves)
        return pulsed_update(model, cp, w, x, d, lr, up, key=key)

    with _patched_update(recording):
        runner = _StepRunner(config, data)
        for _ in range(steps):
            runner()
        jax.block_until_ready(runner.state)
    return {n: (*host[n], *seen[n]) for n in host}


def rng_timings(shape: tuple[int, int], reps: int) -> dict[str, float]:
    """Seconds per draw of ``shape`` numbers: uniform, normal, and a standardised popcount of
    32 bits, per PRNG implementation available in this JAX."""
    fns = {}
    for impl in ("threefry2x32", "philox4x32", "rbg", "unsafe_rbg"):
        try:
            key = jax.random.key(0, impl=impl)
        except (ValueError, KeyError):
            continue
        fns[f"{impl} uniform"] = (jax.jit(lambda k: jax.random.uniform(k, shape)), (key,))
        fns[f"{impl} normal"] = (jax.jit(lambda k: jax.random.normal(k, shape)), (key,))
        fns[f"{impl} normal bf16"] = (jax.jit(lambda k: jax.random.normal(k, shape, jnp.bfloat16)), (key,))
        fns[f"{impl} popcount"] = (
            jax.jit(
                lambda k: (
                    (jax.lax.population_count(jax.random.bits(k, shape, jnp.uint32)).astype(jnp.float32) - 16)
                    / np.sqrt(8.0)
                )
            ),
            (key,),
        )
    return interleaved_medians(fns, reps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="path to mnist10k.npz (default: the digits set)")
    ap.add_argument("--device", default="soft-bounds", help="device card")
    ap.add_argument("--modes", default="exact,expected,gaussian", help="comma-separated update modes")
    ap.add_argument("--reps", type=int, default=30, help="timed calls per candidate")
    ap.add_argument("--record-steps", type=int, default=50, help="training steps before recording layer inputs")
    ap.add_argument(
        "--key-impls",
        default="threefry2x32,philox4x32",
        help="PRNG implementations of the trainer's key to time the step with (the first is the default's)",
    )
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    data = load_dataset(args.data) if args.data else load_dataset("digits")
    modes = args.modes.split(",")

    def config(mode: str) -> TrainConfig:
        return TrainConfig(
            device=args.device, update_mode=mode, batch_size=64, lr=0.1, hidden=(256, 128), activation="tanh"
        )

    result: dict = {"device": args.device, "data": data.name, "reps": args.reps, "backend": jax.default_backend()}

    # 1. Whole training steps.
    runners = {}
    for i, impl in enumerate(args.key_impls.split(",")):
        suffix = "" if i == 0 else f" [{impl} key]"
        for mode in modes:
            runners[mode + suffix] = _StepRunner(config(mode), data, key_impl=impl)
        runners["no update" + suffix] = _StepRunner(config(modes[0]), data, no_update=True, key_impl=impl)
    step_s = interleaved_medians({name: (r, ()) for name, r in runners.items()}, args.reps)
    result["step_ms"] = {k: 1e3 * v for k, v in step_s.items()}
    result["step_samples_per_s"] = {k: 64 / v for k, v in step_s.items()}
    print("whole training step (batch 64):")
    for name, s in step_s.items():
        print(f"  {name:<30} {1e3 * s:8.3f} ms  {64 / s:10,.0f} samples/s", flush=True)

    # 2. Each layer's pulsed update alone.
    layers = record_layer_inputs(config(modes[0]), data, args.record_steps)
    fns = {}
    for _, (x, d, w, cp, model, _) in sorted(layers.items(), reverse=True):
        for mode in modes:
            up = UpdateParameters(mode=mode)

            def one(w, x, d, key, model=model, cp=cp, up=up):
                return pulsed_update(model, cp, w, x, d, 0.1, up, key=key)

            fns[f"{w.shape[0]}x{w.shape[1]} {mode}"] = (jax.jit(one), (w, x, d, jax.random.key(1)))
    upd_s = interleaved_medians(fns, args.reps)
    result["update_ms"] = {k: 1e3 * v for k, v in upd_s.items()}
    print("pulsed update alone, per layer:")
    for name, s in upd_s.items():
        print(f"  {name:<20} {1e3 * s:8.3f} ms", flush=True)

    # 3. Random numbers of the first layer's size.
    big = max(layers)
    shape = layers[big][2].shape
    rng_s = rng_timings(shape, args.reps)
    result["rng_ms"] = {k: 1e3 * v for k, v in rng_s.items()}
    print(f"random draws of {shape[0]}x{shape[1]}:")
    for name, s in rng_s.items():
        print(f"  {name:<28} {1e3 * s:8.3f} ms", flush=True)

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
