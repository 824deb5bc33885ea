"""Time ``fit_auto`` (``analogsim fit --model auto``) before and after the fitting speed-up, interleaved.

The old path is the package at ``--old-rev`` (checked out with ``git worktree add`` into a
temporary directory); the new path is this checkout. Each timing is one fresh Python process
(``PYTHONPATH`` pointing at one tree) that loads the CSV and times ``fit_auto`` alone (JAX
compilation included, imports excluded), old and new alternating, so both see the same load
on a shared machine. Data: the Gong et al. 2018 HfO2 RRAM pulses (when present; normalised
weights) and a synthetic file of 4 soft-bounds devices in nS (``device_models.fitting.synthetic``,
both polarities first, 450 pulses each).

Usage:
  python experiments/benchmarks/fit_auto.py [--old-rev a37f383] [--repeats 2]
Writes results/fitting/fit_auto.json and prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import jax

from device_models import PulsedParams, SoftBounds
from device_models.fitting.synthetic import synthetic_csv

ROOT = Path(__file__).resolve().parents[2]
GONG = Path("/work/shared/data/measured/gong2018_hfo2_rram_pulses.csv")
_CHILD = (
    "import sys, time\n"
    "from device_models.measurements import load_measurement\n"
    "from device_models.fitting import fit_auto\n"
    "m = load_measurement(sys.argv[1])\n"
    "t = time.perf_counter(); r = fit_auto(m); dt = time.perf_counter() - t\n"
    "print(dt, r[0].model_name)\n"
)


def _time(tree: Path, csv: Path) -> tuple[float, str]:
    """(seconds of fit_auto, best model) in a fresh process importing the package from ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(csv)], env=env, cwd=tree, capture_output=True, text=True, check=True
    )
    seconds, best = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-rev", default="a37f383", help="git revision of the old path (before the speed-up)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each path per data set")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.old_rev], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        try:
            syn = Path(tmp) / "synthetic_4_devices_nS.csv"
            model = SoftBounds(PulsedParams(dw_min=0.02, up_down=0.1, w_max=1.0, w_min=-1.0))
            synthetic_csv(syn, model, key=jax.random.key(0), n_devices=4, dw_min_dtod=0.1, read_noise_s=0.5e-9,
                          g_min_s=2e-9, g_max_s=90e-9)  # fmt: skip
            data = {"synthetic": syn} | ({"gong2018": GONG} if GONG.exists() else {})
            results: dict[str, dict[str, list]] = {}
            for name, csv in data.items():
                results[name] = {"old": [], "new": [], "best_old": [], "best_new": []}
                for i in range(args.repeats):
                    for label, tree in (("old", old), ("new", ROOT)):
                        seconds, best = _time(tree, csv)
                        results[name][label].append(seconds)
                        results[name][f"best_{label}"].append(best)
                        print(f"{name} run {i} {label}: {seconds:.1f} s (best {best})", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, check=False)
    summary = {
        name: {
            "old_median_s": statistics.median(r["old"]),
            "new_median_s": statistics.median(r["new"]),
            **r,
        }
        for name, r in results.items()
    }
    for name, s in summary.items():
        print(f"{name}: old {s['old_median_s']:.1f} s, new {s['new_median_s']:.1f} s (medians)")
    out = ROOT / "results" / "fitting" / "fit_auto.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"old_rev": args.old_rev, "cpus": os.cpu_count(), **summary}, indent=1) + "\n")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
