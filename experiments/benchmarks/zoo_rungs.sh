#!/usr/bin/env bash
# The device zoo (RT-MNIST, every built-in card) on two rungs, gaussian and exact, run as one
# process per card and rung in parallel on the CPU cores of a large machine (JAX on CPU: the
# numbers are the rungs' accuracies, not speed). Usage:
#   experiments/benchmarks/zoo_rungs.sh PATH/mnist10k.npz OUTDIR [PARALLEL] [CARDS]
# (CARDS: space-separated card names; default every built-in card)
# Writes OUTDIR/zoo_rungs.json (one row per card: accuracy on each rung) and OUTDIR/zoo_rungs.log.
set -uo pipefail
data=${1:?usage: zoo_rungs.sh PATH/mnist10k.npz OUTDIR [PARALLEL]}
out=${2:?usage: zoo_rungs.sh PATH/mnist10k.npz OUTDIR [PARALLEL]}
par=${3:-8}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
export JAX_PLATFORMS=cpu PYTHONUNBUFFERED=1
cards=${4:-$(python3 -c "import device_models; print(' '.join(device_models.builtin_card_names()))")}
for mode in gaussian exact; do for card in $cards; do echo "$mode $card"; done; done |
  xargs -P "$par" -L 1 bash -c 'python3 '"$here"'/device_zoo.py --data '"$data"' --cards $1 --update-mode $0 --out '"$work"'/$0-$1 > '"$work"'/$0-$1.log 2>&1;
    echo "$0 $1 exit $?"' 2>&1 | tee "$out/zoo_rungs.log"
python3 - "$work" "$out/zoo_rungs.json" <<'PY'
import json, sys, glob, os
work, dest = sys.argv[1], sys.argv[2]
rows = {}
for path in glob.glob(f"{work}/*/results.json"):
    mode, card = os.path.basename(os.path.dirname(path)).split("-", 1)
    d = json.load(open(path))
    for c in d["cards"]:
        rows.setdefault(c["card"], {})[mode] = c["test_accuracy"]
        rows[c["card"]][f"{mode}_update_modes"] = c.get("update_modes")
json.dump({"experiment": "device_zoo on two rungs", "rows": rows}, open(dest, "w"), indent=1)
for card, r in sorted(rows.items()):
    g, e = r.get("gaussian"), r.get("exact")
    print(f"{card:28s} gaussian {g}  exact {e}  diff {None if g is None or e is None else round(100 * (g - e), 2)}")
PY
