#!/usr/bin/env bash
# The speed benchmarks in one go, for a machine with an accelerator (or any machine):
#   experiments/benchmarks/accelerator.sh PATH/mnist10k.npz OUTDIR
# Writes OUTDIR/{rt_mnist,rt_mnist_transfer,rt_mnist_steps_per_call,sweep_vmap}.json and the logs beside them.
# Each benchmark has its own time limit, so a slow one cannot starve the others.
set -uo pipefail
data=${1:?usage: accelerator.sh PATH/mnist10k.npz OUTDIR}
out=${2:?usage: accelerator.sh PATH/mnist10k.npz OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
timeout 240 python3 "$here/rt_mnist.py" --data "$data" --devices soft-bounds,constant-step \
    --modes exact,expected,gaussian --json "$out/rt_mnist.json" 2>&1 | tee "$out/rt_mnist.log"
timeout 120 python3 "$here/rt_mnist.py" --data "$data" --devices soft-bounds --modes gaussian,expected \
    --algorithms ttv2,chopped-ttv2 --json "$out/rt_mnist_transfer.json" 2>&1 | tee "$out/rt_mnist_transfer.log"
timeout 120 python3 "$here/rt_mnist.py" --data "$data" --devices soft-bounds --modes gaussian \
    --steps-per-call 1,100 --json "$out/rt_mnist_steps_per_call.json" 2>&1 | tee "$out/rt_mnist_steps_per_call.log"
timeout 150 python3 "$here/sweep_vmap.py" --data "$data" --epochs 2 --variants 8 \
    --json "$out/sweep_vmap.json" 2>&1 | tee "$out/sweep_vmap.log"
