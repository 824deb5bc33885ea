#!/usr/bin/env bash
# The speed benchmarks in one go, for a machine with an accelerator (or any machine):
#   experiments/benchmarks/accelerator.sh PATH/mnist10k.npz OUTDIR
#   experiments/benchmarks/accelerator.sh --quick digits OUTDIR   # two epochs on the digits set: checks the path
# Writes OUTDIR/{rt_mnist,rt_mnist_transfer,rt_mnist_steps_per_call,sweep_vmap}.json, the logs beside
# them, OUTDIR/cnn/{results.json,log.txt} (ResNet-20/32 images/s beside digital, cnn.py), and OUTDIR/environment.txt (versions and the devices JAX sees). Each benchmark has its own
# time limit, so a slow one cannot starve the others; the script fails if any of them failed.
set -uo pipefail
quick=0
if [[ "${1:-}" == "--quick" ]]; then quick=1; shift; fi
data=${1:?usage: accelerator.sh [--quick] PATH/mnist10k.npz|digits OUTDIR}
out=${2:?usage: accelerator.sh [--quick] PATH/mnist10k.npz|digits OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [[ "$data" == "digits" ]]; then data_args=(); sweep_data=(--quick); else data_args=(--data "$data"); sweep_data=(--data "$data"); fi
if (( quick )); then epochs=(--epochs 2); sweep_epochs=(--epochs 2 --variants 2); else epochs=(); sweep_epochs=(--epochs 2 --variants 8); fi
"$python" -c "import jax, jaxlib, flax, optax; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__, 'backend', jax.default_backend(), jax.devices())" \
    | tee "$out/environment.txt"
failed=0
run() {  # run NAME SECONDS ARGS...: one benchmark under its own limit, its log beside its JSON
    local name=$1 limit=$2; shift 2
    timeout "$limit" "$python" "$@" --json "$out/$name.json" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    if (( rc != 0 )); then echo "accelerator.sh: $name exited with status $rc" >&2; failed=1; fi
}
run rt_mnist 240 "$here/rt_mnist.py" "${data_args[@]}" "${epochs[@]}" --devices soft-bounds,constant-step \
    --modes exact,expected,gaussian
run rt_mnist_transfer 120 "$here/rt_mnist.py" "${data_args[@]}" "${epochs[@]}" --devices soft-bounds \
    --modes gaussian,expected --algorithms ttv2,chopped-ttv2
run rt_mnist_steps_per_call 120 "$here/rt_mnist.py" "${data_args[@]}" "${epochs[@]}" --devices soft-bounds \
    --modes gaussian --steps-per-call 1,25,125
run sweep_vmap 150 "$here/sweep_vmap.py" "${sweep_data[@]}" "${sweep_epochs[@]}"
if (( quick )); then
    cnn_args=(--nets resnet20 --configs sgd:gaussian --batch 32 --steps 2)
else
    cnn_args=(--configs sgd:gaussian,sgd:expected,chopped-ttv2:gaussian,ttv2:gaussian,mixed-precision:gaussian --steps 5)
fi
timeout 400 "$python" "$here/cnn.py" "${cnn_args[@]}" --out "$out/cnn" 2>&1 | tee "$out/cnn.log"
rc=${PIPESTATUS[0]}
if (( rc != 0 )); then echo "accelerator.sh: cnn exited with status $rc" >&2; failed=1; fi
exit $failed
