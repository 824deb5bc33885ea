"""Sweep benchmark: N variants of the RT-MNIST network in one vmapped program vs N sequential runs.

Two sweeps of N variants (default 8) of the reference network (784-256-128-10 tanh MLP, batch
64, lr 0.1, analog SGD, ``expected`` pulsed update):

- ``seeds``: N models built with seeds 0..N-1;
- ``c2c``: one model, N device parameter sets differing in the cycle-to-cycle spread
  ``dw_min_std`` (0 .. ``--c2c-max``), expressed by their cross-point draws
  (``analogsim.parallel.device_variants``).

Each sweep is trained twice for E epochs with the same per-variant batch orders and keys:
once with ``analogsim.parallel.make_sweep_step`` (one compiled program), once as N
sequential runs of the ordinary jitted step of ``analogsim.make_train_step`` (one
compilation per run, as N separate runs would pay). Reported per sweep: total wall time
including compilation, the first step (compile plus one step), the steady-state epoch time
(median of epochs after the first), aggregate samples/s, and the test accuracies of both.
The machine load (``os.getloadavg``) is printed beside the numbers: on a shared machine the
timings move with it.

    python experiments/benchmarks/sweep_vmap.py --data /work/shared/data/mnist-10k/mnist10k.npz \\
        --epochs 2 --json results/sweep_vmap.json
    python experiments/benchmarks/sweep_vmap.py --quick  # digits, 64-256-128-10, a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from analogsim import MLP, evaluate, load_dataset, make_train_step
from analogsim.parallel import device_variants, evaluate_sweep, make_sweep_step

LR = 0.1
BATCH = 64
HIDDEN = (256, 128)


def build(kind: str, n: int, sizes: tuple[int, ...], device: str, c2c_max: float) -> tuple[list, list]:
    """The N models of a sweep and a label per variant."""
    if kind == "seeds":
        return [MLP(sizes, device=device, rngs=nnx.Rngs(s)) for s in range(n)], [f"seed {s}" for s in range(n)]
    c2c = np.linspace(0.0, c2c_max, n)
    base = MLP(sizes, device=device, rngs=nnx.Rngs(0))
    models = device_variants(base, [{"dw_min_std": float(c)} for c in c2c], key=jax.random.key(1000))
    return models, [f"c2c {c:.3g}" for c in c2c]


def batches(n_train: int, n_var: int, epoch: int):
    """Per-variant batch orders of one epoch: (steps, N, BATCH) indices and masks."""
    steps = -(-n_train // BATCH)
    idx = np.zeros((steps, n_var, BATCH), np.int32)
    mask = np.zeros((steps, n_var, BATCH), np.float32)
    for v in range(n_var):
        perm = np.asarray(jax.random.permutation(jax.random.fold_in(jax.random.key(v), epoch), n_train))
        perm = np.concatenate([perm, np.zeros(steps * BATCH - n_train, perm.dtype)])
        idx[:, v] = perm.reshape(steps, BATCH)
        m = np.zeros(steps * BATCH, np.float32)
        m[:n_train] = 1.0
        mask[:, v] = m.reshape(steps, BATCH)
    return idx, mask


def key_table(n_var: int, n_steps: int) -> np.ndarray:
    """(steps, N, 2) uint32 key data: variant v at step g uses fold_in(key(10_000 + v), g)."""

    def one(v, g):
        return jax.random.key_data(jax.random.fold_in(jax.random.key(10_000 + v), g))

    table = jax.vmap(jax.vmap(one, (0, None)), (None, 0))(jnp.arange(n_var), jnp.arange(n_steps))
    return np.asarray(table)


def run_vmapped(models, data, orders, keys):
    """Train the stacked variants with one vmapped program; returns timings and accuracies."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    t0 = time.perf_counter()
    graphdef, state, step = make_sweep_step(models, optax.sgd(LR), LR)
    epoch_s, first_step_s, g = [], None, 0
    for idx, mask in orders:
        te = time.perf_counter()
        for s in range(idx.shape[0]):
            ts = time.perf_counter()
            state, metrics = step(state, x, y, idx[s], mask[s], jax.random.wrap_key_data(keys[g]))
            g += 1
            if first_step_s is None:
                jax.block_until_ready(metrics)
                first_step_s = time.perf_counter() - ts
        jax.block_until_ready(state)
        epoch_s.append(time.perf_counter() - te)
    total = time.perf_counter() - t0
    acc, _ = evaluate_sweep(graphdef, state, data.x_test, data.y_test)
    return {"total_s": total, "first_step_s": first_step_s, "epoch_s": epoch_s, "test_accuracy": acc.tolist()}


def run_sequential(models, data, orders, keys):
    """Train the variants one after another, each with its own jitted step (and compilation)."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    total = 0.0
    epoch_s = np.zeros(len(orders))
    first_step_s, acc = [], []
    for v, model in enumerate(models):
        t0 = time.perf_counter()
        graphdef, state, step = make_train_step(model, optax.sgd(LR), LR)
        g = 0
        for e, (idx, mask) in enumerate(orders):
            te = time.perf_counter()
            for s in range(idx.shape[0]):
                ts = time.perf_counter()
                state, metrics = step(state, x, y, idx[s, v], mask[s, v], jax.random.wrap_key_data(keys[g, v]))
                g += 1
                if g == 1:
                    jax.block_until_ready(metrics)
                    first_step_s.append(time.perf_counter() - ts)
            jax.block_until_ready(state)
            epoch_s[e] += time.perf_counter() - te
        total += time.perf_counter() - t0
        acc.append(evaluate(graphdef, state, data.x_test, data.y_test)[0])  # not timed
    return {
        "total_s": total,
        "first_step_s": float(sum(first_step_s)),
        "epoch_s": epoch_s.tolist(),
        "test_accuracy": acc,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="path to mnist10k.npz")
    ap.add_argument("--quick", action="store_true", help="digits instead of --data (a smoke run)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--variants", type=int, default=8)
    ap.add_argument("--sweeps", default="seeds,c2c", help="comma-separated: seeds, c2c")
    ap.add_argument("--device", default="constant-step", help="device card")
    ap.add_argument("--c2c-max", type=float, default=1.0, help="largest dw_min_std of the c2c sweep")
    ap.add_argument("--json", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.quick == (args.data is not None):
        ap.error("give exactly one of --data PATH and --quick")
    if args.epochs < 2:
        ap.error("--epochs must be >= 2 (the steady state is measured after the first epoch)")

    data = load_dataset("digits") if args.quick else load_dataset(args.data)
    sizes = (data.num_features, *HIDDEN, data.num_classes)
    n_var = args.variants
    steps_per_epoch = -(-data.x_train.shape[0] // BATCH)
    keys = key_table(n_var, steps_per_epoch * args.epochs)
    orders = [batches(data.x_train.shape[0], n_var, e) for e in range(args.epochs)]
    env = {
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    print(
        f"data {data.name} {data.x_train.shape}, sizes {sizes}, batch {BATCH}, {args.epochs} epochs, N={n_var}, {env}"
    )
    rows = []
    for kind in args.sweeps.split(","):
        for how, run in (("vmapped", run_vmapped), ("sequential", run_sequential)):
            models, labels = build(kind, n_var, sizes, args.device, args.c2c_max)
            load_before = os.getloadavg()
            res = run(models, data, orders, keys)
            load_after = os.getloadavg()
            steady = statistics.median(res["epoch_s"][1:])
            row = {
                "sweep": kind,
                "how": how,
                "variants": labels,
                **res,
                "steady_epoch_s": steady,
                "samples_per_s": n_var * data.x_train.shape[0] / steady,
                "load_1min_before": load_before[0],
                "load_1min_after": load_after[0],
            }
            rows.append(row)
            print(
                f"{kind:<5} {how:<10}: total {row['total_s']:7.1f} s, first step {row['first_step_s']:6.2f} s, "
                f"steady epoch {steady:6.2f} s ({row['samples_per_s']:,.0f} samples/s), "
                f"acc {np.round(row['test_accuracy'], 3).tolist()}, load {load_before[0]:.1f}->{load_after[0]:.1f}",
                flush=True,
            )
    print()
    print(
        f"| sweep | program | total s (incl. compile) | first step s | steady epoch s | samples/s | load 1 min |"
        f"  (N={n_var}, {args.epochs} epochs, {data.name}, {os.cpu_count()} cores)"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['sweep']} | {r['how']} | {r['total_s']:.1f} | {r['first_step_s']:.2f} | {r['steady_epoch_s']:.2f} "
            f"| {r['samples_per_s']:,.0f} | {r['load_1min_before']:.1f}-{r['load_1min_after']:.1f} |"
        )
    speedups = {}
    for kind in args.sweeps.split(","):
        v = next(r for r in rows if r["sweep"] == kind and r["how"] == "vmapped")
        s = next(r for r in rows if r["sweep"] == kind and r["how"] == "sequential")
        speedups[kind] = {
            "total": s["total_s"] / v["total_s"],
            "steady_epoch": s["steady_epoch_s"] / v["steady_epoch_s"],
            "max_accuracy_diff": float(np.max(np.abs(np.subtract(v["test_accuracy"], s["test_accuracy"])))),
        }
        print(
            f"{kind}: vmapped is {speedups[kind]['total']:.2f}x faster in total, "
            f"{speedups[kind]['steady_epoch']:.2f}x per steady epoch; "
            f"largest test-accuracy difference vmapped vs sequential {speedups[kind]['max_accuracy_diff']:.4f}"
        )
    out = {"data": data.name, "epochs": args.epochs, "variants": n_var, "env": env, "rows": rows, "speedup": speedups}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
