"""The analog convolution's read, unrolled (im2col, what ``AnalogConv`` does) against the direct
formulation (``lax.conv_general_dilated``), on ResNet-20's three layer shapes.

Both compute the noise-free read ``y = W patch`` of every patch and its input gradient (the
backward pass); the direct form cannot apply the periphery per patch (noise management scales
each patch by its own maximum before the DAC quantises it) and gives the update no patches, so
it is only a candidate for the ideal, noise-free path. The third column is ``AnalogConv`` with
the default periphery (forward read and its backward read), the cost a training step pays.
Each figure is the median of ``--repeats`` timed calls after a compiled warm-up, the three
forms interleaved per shape.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
        python experiments/benchmarks/conv_read.py --json results/benchmarks/cnn_cpu/conv_read.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import jax
import jax.numpy as jnp
from flax import nnx

from analogsim import IOParameters
from analogsim.conv import AnalogConv, array_to_conv_kernel

SHAPES = ((16, 32), (32, 16), (64, 8))  # (channels, image side) of ResNet-20's three stages


def _timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    perfect = IOParameters(is_perfect=True)
    rows = []
    print(f"{'channels':>8} {'side':>5} {'im2col ms':>10} {'direct ms':>10} {'periphery ms':>13}")
    for channels, side in SHAPES:
        x = jax.random.normal(jax.random.key(0), (args.batch, side, side, channels))
        ideal = AnalogConv(channels, channels, (3, 3), padding=1, device="idealized", forward_io=perfect,
                           backward_io=perfect, rngs=nnx.Rngs(0))  # fmt: skip
        noisy = AnalogConv(channels, channels, (3, 3), padding=1, device="idealized", rngs=nnx.Rngs(0))
        kernel = array_to_conv_kernel(ideal.weight.get_value(), (3, 3), channels)

        def loss_unrolled(x, layer=ideal):
            return jnp.sum(layer(x, key=jax.random.key(1)) ** 2)

        def loss_periphery(x, layer=noisy):
            return jnp.sum(layer(x, key=jax.random.key(1)) ** 2)

        bias = ideal.bias.get_value()

        def loss_direct(x, kernel=kernel, bias=bias):
            y = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((1, 1), (1, 1)),
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))  # fmt: skip
            return jnp.sum((y + bias) ** 2)

        with warnings.catch_warnings():  # (a gradient through an analog layer outside the training step)
            warnings.simplefilter("ignore")
            fns = {name: jax.jit(jax.grad(f)) for name, f in
                   (("im2col", loss_unrolled), ("direct", loss_direct), ("periphery", loss_periphery))}  # fmt: skip
            g_a, g_b = fns["im2col"](x), fns["direct"](x)
            err = float(jnp.max(jnp.abs(g_a - g_b)) / jnp.max(jnp.abs(g_b)))
            ms = {name: 1e3 * _timed(fn, x, repeats=args.repeats) for name, fn in fns.items()}
        row = {"channels": channels, "side": side, "batch": args.batch, "relative_difference": err}
        row |= {f"{name}_ms": value for name, value in ms.items()}
        rows.append(row)
        print(f"{channels:>8} {side:>5} {ms['im2col']:>10.1f} {ms['direct']:>10.1f} {ms['periphery']:>13.1f}")
    if args.json:
        env = {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}
        with open(args.json, "w") as fh:
            json.dump({"environment": env, "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
