"""CNN benchmark: images/s of analog training of ResNet-20/32 beside the same network digital.

Synthetic CIFAR-shaped data (32x32x3, 10 classes; speed does not depend on the pixels), batch
128, the training step of ``analogsim.training.make_train_step`` (what ``analogsim train``
runs) with crop-flip augmentation inside it. Every analog configuration (network x update rule x
rung) is timed between two runs of the digital network (the same architecture with
``nnx.Conv``/``nnx.Linear``, trained by the same step), and its ratio is to the mean of those
two, so that a machine whose speed drifts compares like with like. A configuration is compiled
and run once untimed, then timed over ``--steps`` steps (the median of per-step times, each
step blocked on); ``time per epoch`` is 50,000 images at that rate.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python experiments/benchmarks/cnn.py --out results/benchmarks/cnn_cpu

The ``exact`` rung applies every patch's pulse train in sequence (a ResNet-20 step at batch
128 is 1.6 million patch updates in the first stage alone), so it is timed apart at a small
batch: ``--configs sgd:exact --batch 4 --steps 1``.

What the periphery costs: ``--configs sgd:gaussian,sgd:gaussian:bwd-perfect,
sgd:gaussian:no-out-noise,sgd:gaussian:perfect`` takes the backward read's periphery, the
output noise of both reads, or the whole periphery away (variants for measuring, not for
training).

Peak memory: the process's resident peak after each configuration (``ru_maxrss``, so it only
grows) on CPU; on an accelerator, the device's ``peak_bytes_in_use`` where JAX reports it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from analogsim import IOParameters, make_rule
from analogsim.augment import make_augment
from analogsim.layers import BACKWARD_IO
from analogsim.models import deep_model
from analogsim.pulsed_update import UpdateParameters
from analogsim.training import make_train_step

IMAGE = (32, 32, 3)
EPOCH_IMAGES = 50_000


PERFECT = IOParameters(is_perfect=True)
# periphery variants that take one part of the read away, to see what it costs
PERIPHERY = {
    "default": {},
    "bwd-perfect": {"backward_io": PERFECT},
    "no-out-noise": {
        "forward_io": dataclasses.replace(IOParameters(), out_noise=0.0),
        "backward_io": dataclasses.replace(BACKWARD_IO, out_noise=0.0),
    },
    "perfect": {"forward_io": PERFECT, "backward_io": PERFECT},
}


def _model(net: str, rule: str | None, rung: str, analog_layers: str, periphery: str = "default"):
    kwargs = {"image_shape": IMAGE, "rngs": nnx.Rngs(0)}
    if rule is not None:
        kwargs |= {"device": "constant-step", "algorithm": make_rule(rule), "analog_layers": analog_layers}
        kwargs |= {"update": UpdateParameters(mode=rung), **PERIPHERY[periphery]}
    return deep_model(net, **kwargs)


def _peak_mb() -> float:
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return stats["peak_bytes_in_use"] / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def time_config(net, rule, rung, analog_layers, batch, steps, periphery="default") -> dict:
    """Compile, run once, then time ``steps`` training steps of one configuration."""
    model = _model(net, rule, rung, analog_layers, periphery)
    graphdef, state, step = make_train_step(model, optax.sgd(0.05), 0.05, augment=make_augment("crop-flip", IMAGE))
    k = jax.random.key(0)
    x = jax.random.normal(k, (batch, 32 * 32 * 3))
    y = jax.random.randint(jax.random.fold_in(k, 1), (batch,), 0, 10)
    idx = jnp.arange(batch)
    t0 = time.perf_counter()
    state, m = step(state, x, y, idx, key=jax.random.fold_in(k, 2))
    jax.block_until_ready(m["loss"])
    compile_s = time.perf_counter() - t0
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        state, m = step(state, x, y, idx, key=jax.random.fold_in(k, 3 + i))
        jax.block_until_ready(m["loss"])
        times.append(time.perf_counter() - t0)
    if not bool(jnp.isfinite(m["loss"])):
        raise RuntimeError(f"{net} {rule} {rung}: non-finite loss")
    per_step = statistics.median(times)
    return {"images_per_s": batch / per_step, "compile_and_first_step_s": compile_s, "peak_mb": _peak_mb()}


def _environment() -> dict:
    versions = {}
    for dist in ("analogsim-jax", "jax", "jaxlib", "flax", "optax"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "load_average": os.getloadavg(),
        "versions": versions,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", default="resnet20,resnet32")
    ap.add_argument(
        "--configs",
        default="sgd:gaussian,sgd:expected,chopped-ttv2:gaussian,ttv2:gaussian,tiki-taka:gaussian,"
        "mixed-precision:gaussian,agad:gaussian",
        help="comma-separated rule:rung pairs (run on the first net; the others run --other-configs); "
        f"rule:rung:periphery for a periphery variant ({', '.join(PERIPHERY)})",
    )
    ap.add_argument("--other-configs", default="sgd:gaussian,chopped-ttv2:gaussian")
    ap.add_argument("--analog-layers", default="all", choices=("all", "inner"))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per configuration")
    ap.add_argument("--out", required=True, help="directory for results.json and log.txt")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log = open(out / "log.txt", "w")

    def say(text):
        print(text, flush=True)
        print(text, file=log, flush=True)

    nets = args.nets.split(",")
    rows = []
    say(f"{jax.default_backend()} {jax.devices()[0]}; batch {args.batch}, {args.steps} timed steps per row")
    say(
        f"{'net':<9} {'rule':<16} {'rung':<9} {'images/s':>9} {'digital':>9} {'ratio':>6} {'epoch s':>8} {'peak MB':>8}"
    )
    for n, net in enumerate(nets):
        configs = [c.split(":") for c in (args.configs if n == 0 else args.other_configs).split(",")]
        before = time_config(net, None, "-", "all", args.batch, args.steps)
        for rule, rung, *variant in configs:
            periphery = variant[0] if variant else "default"
            row = time_config(net, rule, rung, args.analog_layers, args.batch, args.steps, periphery)
            after = time_config(net, None, "-", "all", args.batch, args.steps)
            digital = (before["images_per_s"] + after["images_per_s"]) / 2
            row |= {"net": net, "rule": rule, "rung": rung, "periphery": periphery, "analog_layers": args.analog_layers}
            row |= {
                "digital_images_per_s": digital,
                "digital_before_after": [before["images_per_s"], after["images_per_s"]],
            }
            row["ratio_to_digital"] = row["images_per_s"] / digital
            row["epoch_s"] = EPOCH_IMAGES / row["images_per_s"]
            rows.append(row)
            say(
                f"{net:<9} {rule + ('' if periphery == 'default' else ' ' + periphery):<16} {rung:<9} {row['images_per_s']:>9.1f} {digital:>9.1f} "
                f"{row['ratio_to_digital']:>6.2f} {row['epoch_s']:>8.0f} {row['peak_mb']:>8.0f}"
            )
            before = after
    result = {"batch": args.batch, "steps": args.steps, "environment": _environment(), "rows": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2))
    say(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
