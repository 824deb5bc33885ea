"""A/B of two source trees on the RT-MNIST benchmark, interleaved: A, B, A, B, ...

Each round runs this checkout's ``rt_mnist.py`` in a fresh process with ``PYTHONPATH`` set to
one tree (for example a ``git worktree`` of the previous commit, and this checkout), so both
trees train with the same benchmark code. Each run reports its own digital baseline in the same
process, so ``x digital`` compares like with like on a machine whose speed drifts; accuracies
and pulse counts must agree between the trees when a change is meant to keep results.

    git worktree add /tmp/before HEAD~1
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \\
    python experiments/benchmarks/ab_trees.py /tmp/before . --rounds 2 \\
        --data ../shared/data/mnist-10k/mnist10k.npz --devices soft-bounds --modes gaussian \\
        --algorithms sgd,ttv2,chopped-ttv2 --json results/benchmarks/ab_core.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).with_name("rt_mnist.py")


def run_tree(tree: Path, bench_args: list[str]) -> list[dict]:
    """One rt_mnist.py process on ``tree``; its rows."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
        subprocess.run(
            [sys.executable, str(BENCH), *bench_args, "--json", str(out)],
            env=env,
            check=True,
            cwd=tree,
            stdout=subprocess.DEVNULL,
        )
        return json.loads(out.read_text())["rows"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="tree A (e.g. a worktree of the previous commit)")
    ap.add_argument("b", type=Path, help="tree B (e.g. this checkout)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=None)
    args, bench_args = ap.parse_known_args(argv)
    bench_args = [
        a if not a.startswith("..") and not a.startswith("./") else str(Path(a).resolve()) for a in bench_args
    ]
    results = {"a": [], "b": []}
    for r in range(args.rounds):
        for side in ("a", "b"):
            rows = run_tree(getattr(args, side), bench_args)
            results[side].append(rows)
            for row in rows:
                print(
                    f"round {r + 1} {side.upper()} {row['algorithm']:<12} {row['device']:<12} {row['mode']:<8} "
                    f"acc {row['test_accuracy']:.4f} {row['samples_per_s']:>9,.0f} samples/s "
                    f"{row['ratio_to_digital']:.3f}x digital pulses {row.get('pulses')}",
                    flush=True,
                )
    print("\n| run | A: acc | B: acc | A: x digital (rounds) | B: x digital (rounds) | pulses equal |")
    print("|---|---|---|---|---|---|")
    for i, row in enumerate(results["b"][0]):
        name = f"{row['algorithm']} {row['device']} {row['mode']}"
        a_rows = [rows[i] for rows in results["a"]]
        b_rows = [rows[i] for rows in results["b"]]
        same = all(x.get("pulses") == y.get("pulses") for x, y in zip(a_rows, b_rows, strict=True))
        a_ratio = ", ".join(f"{x['ratio_to_digital']:.3f}" for x in a_rows)
        b_ratio = ", ".join(f"{x['ratio_to_digital']:.3f}" for x in b_rows)
        print(
            f"| {name} | {a_rows[0]['test_accuracy']:.4f} | {b_rows[0]['test_accuracy']:.4f} "
            f"| {a_ratio} | {b_ratio} | {same} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"a": str(args.a), "b": str(args.b), "bench_args": bench_args, "results": results}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
