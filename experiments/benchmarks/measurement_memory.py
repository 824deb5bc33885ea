"""Memory and time of reading a large pulse-measurement CSV (``device_models.load_measurement``).

Writes a synthetic CSV of ``--rows`` rows (pulse_number, polarity, conductance_s, device:
10 devices, alternating 500-pulse sweeps), then reads it in a fresh process and reports the
file size, the read time and the process's peak resident memory above what the interpreter and
imports took before the read (``resource.getrusage``, Linux kilobytes). The reader keeps one
typed array per column (about 17 bytes per row besides the device labels) and the final
``Measurement`` holds numpy copies; so memory grows linearly with the rows, about 40-60 bytes per
row at the peak, not with the file's text.

    python experiments/benchmarks/measurement_memory.py --rows 10000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_READ = """
import json, resource, sys, time
from device_models.measurements import load_measurement
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
m = load_measurement(sys.argv[1])
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rows": int(m.pulse_number.size), "read_s": dt, "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024}))
"""


def write_csv(path: Path, rows: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write("pulse_number,polarity,conductance_s,device\n")
        per_device = rows // 10
        for dev in range(10):
            g = 5e-6
            lines = []
            for k in range(1, per_device + 1):
                pol = 1 if (k - 1) // 500 % 2 == 0 else -1
                g += pol * 1e-9
                lines.append(f"{k},{pol},{g:.6e},d{dev}\n")
                if len(lines) == 100_000:
                    out.writelines(lines)
                    lines = []
            out.writelines(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="analogsim-csv-") as tmp:
        path = Path(tmp) / "big.csv"
        t0 = time.perf_counter()
        write_csv(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        print(f"wrote {args.rows:,} rows ({size_mb:,.0f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)
        proc = subprocess.run([sys.executable, "-c", _READ, str(path)], capture_output=True, text=True, check=True)
    fig = json.loads(proc.stdout.strip().splitlines()[-1])
    fig["file_mb"] = size_mb
    fig["peak_above_start_mb"] = fig["rss_peak_mb"] - fig["rss_before_mb"]
    fig["bytes_per_row"] = fig["peak_above_start_mb"] * 2**20 / fig["rows"]
    print(
        f"read {fig['rows']:,} rows in {fig['read_s']:.0f} s; peak memory {fig['rss_peak_mb']:,.0f} MB "
        f"({fig['peak_above_start_mb']:,.0f} MB above the {fig['rss_before_mb']:,.0f} MB before the read: "
        f"{fig['bytes_per_row']:.0f} bytes per row; the file is {size_mb:,.0f} MB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
