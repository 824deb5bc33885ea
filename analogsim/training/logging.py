"""A metrics callback for ``analogsim.training.train_model`` that appends every epoch's
metrics to a CSV or JSON-lines file."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

__all__ = ["MetricsLogger"]


class MetricsLogger:
    """Append each epoch's metrics to ``path`` (``.csv``: a header then one row per epoch;
    ``.jsonl``: one JSON object per line). An existing file is refused unless ``append``.

    Example:
      >>> run = train_model(model, data, callback=MetricsLogger("metrics.csv"))  # doctest: +SKIP
    """

    def __init__(self, path: str | Path, *, append: bool = False):
        self.path = Path(path)
        if self.path.suffix not in (".csv", ".jsonl"):
            raise ValueError(
                f"MetricsLogger: file {str(self.path)!r} is not allowed; its suffix must be .csv or .jsonl"
            )
        if self.path.exists() and not append:
            raise ValueError(f"MetricsLogger: file {str(self.path)!r} exists; pass append=True to add to it")
        self._fields: list[str] | None = None

    def __call__(self, metrics: dict[str, Any]) -> None:
        if self.path.suffix == ".jsonl":
            with self.path.open("a") as f:
                f.write(json.dumps(metrics) + "\n")
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fields = self._fields or list(metrics)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self._fields)
            if new:
                writer.writeheader()
            writer.writerow(metrics)
