"""RT-MNIST benchmark: accuracy and samples/s of analog training beside the digital JAX baseline.

The reference task of DESIGN.md: a 784-256-128-10 tanh MLP on mnist10k.npz (8000 train, 2000
test), batch 64, lr 0.1, 5 epochs, analog SGD with aihwkit-default periphery and update
settings. Every configuration runs in this one process beside the digital baseline, which runs
first and again after each analog configuration (all its seeds): each row's ratio is to the mean
of the two baselines around it, so that a machine whose speed drifts (a shared CPU can slow by
2x for minutes) compares like with like.

    python experiments/benchmarks/rt_mnist.py --data ../shared/data/mnist-10k/mnist10k.npz \
        --devices constant-step,soft-bounds --modes exact,expected,gaussian --json results/rt_mnist.json
    python experiments/benchmarks/rt_mnist.py --data ../shared/data/mnist-10k/mnist10k.npz \
        --devices soft-bounds --modes expected --algorithms ttv2,chopped-ttv2

Every device x algorithm x mode asked runs (``digital`` ignores device and mode). The JSON
also records the JAX backend and devices, the machine's load average, and the peak resident
memory of the process (``ru_maxrss``: all runs together, so an upper bound for each).

Throughput is the trainer's (median over epochs after the first). On a shared machine, set
``XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"`` for one
thread per process: timings then vary far less with the load of other processes.

Without ``--data`` it runs on the digits set (a smoke run, not the reference task).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
from importlib import metadata
from pathlib import Path

import jax

from analogsim import TrainConfig, load_dataset, train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="path to mnist10k.npz (default: the digits set)")
    ap.add_argument("--devices", default="constant-step,soft-bounds", help="comma-separated card names")
    ap.add_argument("--modes", default="exact,expected,gaussian", help="comma-separated update modes")
    ap.add_argument("--algorithms", default="sgd", help="comma-separated update rules (e.g. sgd,ttv2,chopped-ttv2)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", default="0", help="comma-separated seeds")
    ap.add_argument(
        "--steps-per-call",
        default="1",
        help="comma-separated training steps per compiled call; each value gets its own digital baseline",
    )
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    data = load_dataset(args.data) if args.data else load_dataset("digits")
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [("digital", "-", "-")]
    runs += [
        (algo, dev, mode)
        for algo in args.algorithms.split(",")
        if algo != "digital"
        for dev in args.devices.split(",")
        for mode in args.modes.split(",")
    ]
    rows = []
    baselines = []

    def run(algorithm, device, mode, seed, spc):
        cfg = TrainConfig(
            algorithm=algorithm,
            device=device if device != "-" else "constant-step",
            update_mode=mode if mode != "-" else "gaussian",
            epochs=args.epochs,
            batch_size=64,
            lr=0.1,
            hidden=(256, 128),
            activation="tanh",
            seed=seed,
            steps_per_call=spc,
        )
        res = train(cfg, progress=False, dataset=data)
        return {
            "algorithm": algorithm,
            "device": device,
            "mode": mode,
            "steps_per_call": spc,
            "seed": seed,
            "test_accuracy": res["test_accuracy"],
            "samples_per_s": res["samples_per_s"],
            "energy_j": res["energy_j"]["total"],
            "pulses": {k: v for k, v in res["energy_report"]["counts"].items() if k.startswith("pulses")},
        }

    def report(row):
        rows.append(row)
        print(
            f"{row['algorithm']:<12} {row['device']:<14} {row['mode']:<8} spc {row['steps_per_call']:<3} seed "
            f"{row['seed']}: test acc {row['test_accuracy']:.4f}  {row['samples_per_s']:>10,.0f} samples/s  "
            f"({row['ratio_to_digital']:.3f}x digital at {row['baseline_samples_per_s']:,.0f})",
            flush=True,
        )

    for spc in (int(v) for v in args.steps_per_call.split(",")):
        before = run("digital", "-", "-", seeds[0], spc)
        baselines.append(before)
        report({**before, "ratio_to_digital": 1.0, "baseline_samples_per_s": before["samples_per_s"]})
        for algorithm, device, mode in runs[1:]:
            pending = [run(algorithm, device, mode, seed, spc) for seed in seeds]
            after = run("digital", "-", "-", seeds[0], spc)
            baselines.append(after)
            base = (before["samples_per_s"] + after["samples_per_s"]) / 2
            for row in pending:
                report({**row, "ratio_to_digital": row["samples_per_s"] / base, "baseline_samples_per_s": base})
            before = after
    print()
    print(
        f"| algorithm | device | mode | steps/call | seed | test accuracy | samples/s | digital samples/s "
        f"| x digital |  (data: {data.name}, {args.epochs} epochs)"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['algorithm']} | {r['device']} | {r['mode']} | {r['steps_per_call']} | {r['seed']} "
            f"| {100 * r['test_accuracy']:.1f}% "
            f"| {r['samples_per_s']:,.0f} | {r['baseline_samples_per_s']:,.0f} | {r['ratio_to_digital']:.3f} |"
        )
    rates = [b["samples_per_s"] for b in baselines]
    print(f"digital baseline, {len(rates)} runs: {min(rates):,.0f} to {max(rates):,.0f} samples/s")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    machine = {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "peak_rss_mib": peak_mib,
        "versions": {name: metadata.version(name) for name in ("analogsim-jax", "jax", "jaxlib", "flax", "optax")},
    }
    print(f"backend {machine['backend']} ({machine['devices'][0]}), peak resident memory {peak_mib:,.0f} MiB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        doc = {"data": data.name, "epochs": args.epochs, "machine": machine, "rows": rows, "baselines": baselines}
        Path(args.json).write_text(json.dumps(doc, indent=2))
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
