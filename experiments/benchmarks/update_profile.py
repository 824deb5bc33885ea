"""Where the time of an RT-MNIST training step goes, per pulsed-update rung.

Times, on the reference task's network (784-256-128-10 tanh MLP, batch 64, lr 0.1, aihwkit
default periphery and update settings), each step run as ``train()`` runs it (the state as flat
arrays, donated, one step per compiled call, the key folded in inside):

1. the whole training step, per update mode, beside the digital step, and with parts switched
   off: the pulsed update replaced by "keep the weights" (what the reads, the digital parts and
   the energy ledger cost: the floor no rung can go below), the read noise drawn as zeros, the
   ``gaussian`` rung's update noise drawn as zeros (what those random numbers cost); and each
   mode with its large draws from ``jax.random`` instead of ``analogsim.rng`` (its A/B), and the
   default rung with every draw through the four-word path (``rng.FOUR_WORDS_MIN = 0``);
2. each analog layer's ``analogsim.pulsed_update`` alone, per mode, on the layer inputs and
   errors recorded during a short training run (so the pulse statistics are the real ones);
3. the random-number draws of the first layer's size, per PRNG implementation, and from
   ``analogsim.rng`` (four words from each Philox block, the trainer's large draws);
4. with ``--trace``, the share of each part of the compiled step (matrix products, read
   periphery, pulsed update, energy ledger, the rest), from a ``jax.profiler`` trace of the
   step's XLA operations, grouped by the named scopes of the trainer (``periphery``,
   ``pulsed_update``, ``ledger``), and the costliest XLA operations. The profiler slows every
   operation, so shares, not times.

Every timing is the median of ``--reps`` calls after two warm-up calls, with the candidates
interleaved (A, B, C, A, B, C, ...) so that load from other processes hits all of them alike.
On a shared machine, ``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1"`` (one thread) makes the timings far steadier.

    python experiments/benchmarks/update_profile.py --data ../shared/data/mnist-10k/mnist10k.npz \
        --device soft-bounds --modes exact,expected,gaussian --trace --json results/update_profile.json
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import sys
import tempfile
import time
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import analogsim.training as training
from analogsim import TrainConfig, UpdateParameters, load_dataset, make_train_step, pulsed_update, rng
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


@contextlib.contextmanager
def _patched(module, name, value):
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


def _zero_noise(key, shape, dtype):
    return jnp.zeros(shape, dtype)


def no_read_noise():
    """Read noise drawn as zeros (the periphery's ``_read_noise``)."""
    return _patched(sys.modules["analogsim.periphery"], "_read_noise", _zero_noise)


def no_update_noise():
    """The ``gaussian`` rung's per-cross-point noise drawn as zeros."""
    return _patched(sys.modules["analogsim.pulsed_update.gaussian"], "_unit_noise", _zero_noise)


# jax.random in place of analogsim.rng (one Philox block per word instead of four words a block)
_JAX_RANDOM = types.SimpleNamespace(
    bits=lambda key, shape: jax.random.bits(key, shape, jnp.uint32),
    uniform=lambda key, shape, dtype=jnp.float32, minval=0.0, maxval=1.0: jax.random.uniform(
        key, shape, dtype, minval, maxval
    ),
    normal=lambda key, shape, dtype=jnp.float32: jax.random.normal(key, shape, dtype),
    computed_once=rng.computed_once,
)


def jax_random_draws():
    """The trainer's large draws from ``jax.random`` (as before analogsim.rng): the A/B of its
    generator. The draws have the same laws, other values."""
    stack = contextlib.ExitStack()
    rungs = ("exact", "expected", "gaussian")  # the modules of analogsim.pulsed_update that draw
    for name in (*(f"analogsim.pulsed_update.{r}" for r in rungs), "analogsim.periphery"):
        stack.enter_context(_patched(sys.modules[name], "rng", _JAX_RANDOM))
    return stack


class _StepRunner:
    """One jitted training step of the RT-MNIST MLP as ``train()`` runs it: the state as flat
    arrays (donated), one step per call, the step's key folded in inside the compiled call."""

    def __init__(self, config: TrainConfig, data, patches=()):
        model, _ = build_model(config, data)
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            _, state, step = make_train_step(model, optax.sgd(config.lr), config.lr, jit=False)
            flat = training.FlatState(state)
            x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
            bs = config.batch_size
            idx = jnp.asarray(np.arange(x.shape[0] // bs * bs).reshape(-1, bs))
            mask = jnp.ones((bs,), jnp.float32)
            key = jax.random.key(config.seed)

            def run(raw, i):
                state, metrics = step(flat.unpack(raw), x, y, idx[i % idx.shape[0]], mask, jax.random.fold_in(key, i))
                return flat.pack(state), metrics["loss"]

            self.run = jax.jit(run, donate_argnums=0)
            self.raw = flat.pack(state)
            self.n = 0
            self()  # trace while patched

    def __call__(self, _=None):
        self.raw, loss = self.run(self.raw, self.n)
        self.n += 1
        return loss


def record_layer_inputs(config: TrainConfig, data, steps: int) -> dict[int, tuple]:
    """Train ``steps`` steps and return, per analog layer (keyed by its input size), the
    ``(x, d, w, cp, model, up)`` of the last step (arrays on the host)."""
    seen: dict[int, tuple] = {}
    host: dict[int, tuple] = {}

    def recording(model, cp, w, x, d, lr, up, *, key):
        n_in = x.shape[1]
        # the device model's parameters are traced arrays too (leaves of the layer's state)
        leaves, treedef = jax.tree.flatten((cp, model))
        seen[n_in] = (up,)

        def keep(x, d, w, *leaves):
            cp_host, model_host = jax.tree.unflatten(treedef, [jnp.asarray(a) for a in leaves])
            host[n_in] = (np.asarray(x), np.asarray(d), np.asarray(w), cp_host, model_host)

        jax.debug.callback(keep, x, d, w, *leaves)
        return pulsed_update(model, cp, w, x, d, lr, up, key=key)

    with _patched_update(recording):
        runner = _StepRunner(config, data)
        for _ in range(steps):
            runner()
        jax.block_until_ready(runner.raw)
    return {n: (*host[n], *seen[n]) for n in host}


def rng_timings(shape: tuple[int, int], reps: int) -> dict[str, float]:
    """Seconds per draw of ``shape`` numbers: uniform, normal, and a standardised popcount of
    32 bits, per PRNG implementation available in this JAX."""
    fns = {}
    # Each timed call draws from the same key on purpose; it goes in as raw data (JAX's key-reuse
    # checker, on in the tests, would refuse the key itself).
    for impl in ("threefry2x32", "philox4x32", "rbg", "unsafe_rbg"):
        try:
            data = jax.random.key_data(jax.random.key(0, impl=impl))
        except (ValueError, KeyError):
            continue
        draws = {
            "uniform": lambda k: jax.random.uniform(k, shape),
            "normal": lambda k: jax.random.normal(k, shape),
            "normal bf16": lambda k: jax.random.normal(k, shape, jnp.bfloat16),
            "popcount": lambda k: (
                (jax.lax.population_count(jax.random.bits(k, shape, jnp.uint32)).astype(jnp.float32) - 16)
                / np.sqrt(8.0)
            ),
        }
        for name, draw in draws.items():
            fns[f"{impl} {name}"] = (
                jax.jit(lambda d, draw=draw, impl=impl: draw(jax.random.wrap_key_data(d, impl=impl))),
                (data,),
            )
    # analogsim.rng: four words from each Philox block (the trainer's large draws), its key words
    # drawn from a Philox key
    data = jax.random.key_data(jax.random.key(0, impl="philox4x32"))
    ours = {
        "uniform": lambda k: rng.uniform(k, shape),
        "normal": lambda k: rng.normal(k, shape),
        "popcount": lambda k: (jax.lax.population_count(rng.bits(k, shape)).astype(jnp.float32) - 16) / np.sqrt(8.0),
    }
    for name, draw in ours.items():
        fns[f"analogsim.rng (4 words a block) {name}"] = (
            jax.jit(lambda d, draw=draw: draw(jax.random.wrap_key_data(d, impl="philox4x32"))),
            (data,),
        )
    return interleaved_medians(fns, reps)


PARTS = {
    "matmul": "matrix products (reads, update counts, digital)",
    "periphery": "read periphery (DAC, noise, ADC, bound management)",
    "pulsed_update": "pulsed update (device steps, its random numbers)",
    "ledger": "energy ledger",
    "other": "the rest (activations, loss, optimizer, keys, copies)",
}


def _part_of(hlo_line: str) -> str:
    """The part of the step an XLA operation belongs to, from its HLO text."""
    op_name = re.search(r'op_name="([^"]*)"', hlo_line)
    op_name = op_name.group(1) if op_name else ""
    if " dot(" in hlo_line or op_name.endswith("dot_general"):
        return "matmul"
    for scope in ("ledger", "pulsed_update", "periphery"):  # e.g. .../pulsed_update/..., .../jvp(periphery)/...
        if re.search(rf"(^|[/(]){scope}($|[/)])", op_name):
            return scope
    return "other"


def step_shares(runner: _StepRunner, steps: int, top: int = 8) -> tuple[dict[str, float], list[dict]]:
    """Each part's share of the XLA operations' time in ``steps`` traced calls of ``runner``, and
    the ``top`` costliest operations (share, HLO name, result shape, JAX operation)."""
    hlo = runner.run.lower(runner.raw, 0).compile().as_text()
    lines = {}
    for line in hlo.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = ", line)
        if m:
            lines[m.group(1)] = line
    for _ in range(3):
        runner()
    jax.block_until_ready(runner.raw)
    with tempfile.TemporaryDirectory() as tmp:
        jax.profiler.start_trace(tmp, create_perfetto_trace=True)
        for _ in range(steps):
            runner()
        jax.block_until_ready(runner.raw)
        jax.profiler.stop_trace()
        (trace,) = Path(tmp).rglob("*.trace.json.gz")
        events = json.loads(gzip.decompress(trace.read_bytes()))["traceEvents"]
    total = dict.fromkeys(PARTS, 0.0)
    per_op: dict[str, float] = {}
    for e in events:
        if e.get("ph") == "X" and e["name"] in lines:  # an XLA operation (thunk) of the step
            total[_part_of(lines[e["name"]])] += e["dur"]
            per_op[e["name"]] = per_op.get(e["name"], 0.0) + e["dur"]
    whole = sum(total.values())
    costliest = []
    for name, dur in sorted(per_op.items(), key=lambda kv: -kv[1])[:top]:
        line = lines[name]
        op_name = re.search(r'op_name="([^"]*)"', line)
        shape = re.match(r"\s*(?:ROOT )?%?[\w.\-]+ = (\S+)", line)
        costliest.append(
            {
                "share": dur / whole,
                "hlo": name,
                "shape": shape.group(1) if shape else "",
                "op": op_name.group(1) if op_name else "",
            }
        )
    return {PARTS[k]: v / whole for k, v in total.items()}, costliest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="path to mnist10k.npz (default: the digits set)")
    ap.add_argument("--device", default="soft-bounds", help="device card")
    ap.add_argument("--modes", default="exact,expected,gaussian", help="comma-separated update modes")
    ap.add_argument("--reps", type=int, default=30, help="timed calls per candidate")
    ap.add_argument("--record-steps", type=int, default=50, help="training steps before recording layer inputs")
    ap.add_argument("--trace", action="store_true", help="also break each step down by part (jax.profiler)")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)

    data = load_dataset(args.data) if args.data else load_dataset("digits")
    modes = args.modes.split(",")

    def config(mode: str, algorithm: str = "sgd") -> TrainConfig:
        return TrainConfig(
            device=args.device,
            update_mode=mode,
            algorithm=algorithm,
            batch_size=64,
            lr=0.1,
            hidden=(256, 128),
            activation="tanh",
        )

    result: dict = {"device": args.device, "data": data.name, "reps": args.reps, "backend": jax.default_backend()}

    # 1. Whole training steps, and with parts switched off.
    runners = {"digital": _StepRunner(config(modes[0], "digital"), data)}
    for mode in modes:
        runners[mode] = _StepRunner(config(mode), data)
    runners["no update"] = _StepRunner(config(modes[0]), data, [_patched_update(_keep_weights)])
    runners["gaussian, no read noise"] = _StepRunner(config("gaussian"), data, [no_read_noise()])
    runners["gaussian, no update noise"] = _StepRunner(config("gaussian"), data, [no_update_noise()])
    for mode in modes:
        runners[f"{mode}, jax.random draws"] = _StepRunner(config(mode), data, [jax_random_draws()])
    runners["gaussian, four words for every draw"] = _StepRunner(
        config("gaussian"), data, [_patched(rng, "FOUR_WORDS_MIN", 0)]
    )
    step_s = interleaved_medians({name: (r, ()) for name, r in runners.items()}, args.reps)
    result["step_ms"] = {k: 1e3 * v for k, v in step_s.items()}
    result["step_samples_per_s"] = {k: 64 / v for k, v in step_s.items()}
    print("whole training step (batch 64), as train() calls it:")
    for name, sec in step_s.items():
        print(f"  {name:<30} {1e3 * sec:8.3f} ms  {64 / sec:10,.0f} samples/s", flush=True)

    # 4. (traced first, while the runners exist) each part's share of the step
    if args.trace:
        result["step_shares"], result["costliest_ops"] = {}, {}
        for name in ("digital", *modes):
            shares, costliest = step_shares(runners[name], steps=max(20, args.reps))
            result["step_shares"][name], result["costliest_ops"][name] = shares, costliest
            print(f"share of the compiled step, {name} (jax.profiler trace):")
            for part, frac in shares.items():
                print(f"  {part:<44} {100 * frac:5.1f}%  ~{frac * 1e3 * step_s[name]:.3f} ms", flush=True)
            print(f"  costliest XLA operations, {name}:")
            for op in costliest:
                print(f"    {100 * op['share']:5.1f}%  {op['hlo']:<28} {op['shape']:<22} {op['op'][-70:]}", flush=True)

    # 2. Each layer's pulsed update alone.
    layers = record_layer_inputs(config(modes[0]), data, args.record_steps)
    fns = {}
    for _, (x, d, w, cp, model, _) in sorted(layers.items(), reverse=True):
        for mode in modes:
            up = UpdateParameters(mode=mode)

            def one(w, x, d, key_data, model=model, cp=cp, up=up):  # the same key every call, as raw data
                return pulsed_update(model, cp, w, x, d, 0.1, up, key=jax.random.wrap_key_data(key_data))

            fns[f"{w.shape[0]}x{w.shape[1]} {mode}"] = (jax.jit(one), (w, x, d, jax.random.key_data(jax.random.key(1))))
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
