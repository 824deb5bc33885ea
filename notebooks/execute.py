"""Execute the tutorial notebooks in place, so that their outputs (figures included) are committed
and the documentation site renders them as they ran.

    python notebooks/execute.py                 # every notebook
    python notebooks/execute.py 07_where_the_energy_goes.ipynb

Each notebook records, in its metadata, a hash of its code cells and the versions it ran with;
``tests/test_notebook_outputs.py`` checks that the committed outputs come from the committed
code (edit a cell and the test asks for this script to be run again). The test suite also runs
every notebook from scratch (nbmake), so a notebook that stops working fails CI either way.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
METADATA_KEY = "analogsim"


def code_hash(nb) -> str:
    """SHA-256 of the notebook's code cells, in order (outputs and markdown excluded)."""
    h = hashlib.sha256()
    for cell in nb.cells:
        if cell.cell_type == "code":
            h.update(cell.source.encode())
            h.update(b"\0")
    return h.hexdigest()


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    seconds = time.perf_counter() - start
    versions = {name: metadata.version(name) for name in ("analogsim-jax", "jax", "flax")}
    nb.metadata[METADATA_KEY] = {"code_sha256": code_hash(nb), "versions": versions}
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook file names in notebooks/ (default: all)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    paths = [HERE / name for name in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    for path in paths:
        if not path.is_file():
            print(f"notebooks/execute.py: {path} does not exist", file=sys.stderr)
            return 2
        print(f"{path.name}: {execute(path, args.timeout):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
