"""CrossSim v2 lookup-table sources (``dG_increasing.txt``, ``dG_decreasing.txt``) as a
``lookup-table`` device card.

**The format** (Sandia CrossSim v2, ``numeric_params.dG_lookup``; its reader takes
``np.genfromtxt(file, delimiter=",", skip_header=1, max_rows=1)`` for the conductances, the next
row for the probabilities and the rest for the table): a header line, then

- row 1: the conductance bins :math:`G_k` (siemens, increasing);
- row 2: the cumulative probability points :math:`P_j` (0 to 1, increasing);
- rows 3...: the conductance change of one pulse (siemens) at probability :math:`P_j` (rows)
  and starting conductance :math:`G_k` (columns).

Both files must share the conductance bins and the probability points (CrossSim checks the same),
the increasing (SET) table must change the conductance upward on average and the decreasing
(RESET) table downward (CrossSim swaps the files with a warning; here it is an error naming them).

**The card** is the one ``experiments/cards/make_enode_lut_card.py`` wrote for ``enode-lut``:
conductances mapped linearly onto weights in [-1, 1] (``g_min``, ``g_max`` = the first and last
bin, written to ``[physical]``), every ``stride``-th bin kept (plus the last), the table
resampled at ``PROBABILITIES`` (linear interpolation along each column), and the changes stored
in units of ``dw_min`` = the mean up step at mid-range (``device_models.lookup_table``).

Example:
  >>> text = crosssim_lut_card("enode_lut/dG_increasing.txt", "enode_lut/dG_decreasing.txt", name="my-enode")
  >>> card = parse_card(text)  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .card_errors import CardError
from .toml_writer import card_toml

__all__ = ["PROBABILITIES", "CrossSimTable", "crosssim_lut_card", "read_crosssim_table"]

PROBABILITIES = (0.0, 0.01, 0.05, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 0.95, 0.99, 1.0)


class CrossSimTable:
    """One CrossSim lookup-table file: ``g_s`` (k,) bins in siemens, ``cdf`` (p,), ``dg_s`` (p, k) siemens."""

    def __init__(self, source: str, g_s: np.ndarray, cdf: np.ndarray, dg_s: np.ndarray):
        self.source, self.g_s, self.cdf, self.dg_s = source, g_s, cdf, dg_s

    def mean_change_s(self) -> np.ndarray:
        """The mean change per bin (siemens, (k,)): the integral of the piecewise-linear quantile function."""
        return np.trapezoid(self.dg_s, self.cdf, axis=0)


def _row(src: str, line: str, number: int) -> np.ndarray:
    try:
        values = np.array([float(t) for t in line.replace(",", " ").split()], np.float64)
    except ValueError:
        raise CardError(f"{src}: line {number}: not a row of numbers ({line.strip()[:40]!r}...)") from None
    if not np.all(np.isfinite(values)):
        raise CardError(f"{src}: line {number}: a value is NaN or infinite; the table holds finite numbers")
    return values


def read_crosssim_table(path: str | Path) -> CrossSimTable:
    """Read and check one CrossSim lookup-table file (format in the module docstring).

    Raises:
      CardError: missing file, fewer than 3 rows after the header, rows of unequal length,
        conductances not increasing or negative, probabilities not increasing from 0 to 1.
    """
    src = str(path)
    p = Path(path)
    if not p.is_file():
        raise CardError(f"{src}: no such file; expected a CrossSim dG lookup table (dG_increasing.txt)")
    lines = [(i + 1, t) for i, t in enumerate(p.read_text(encoding="utf-8").splitlines()) if t.strip()]
    rows = [(n, _row(src, t, n)) for n, t in lines[1:]]  # the first line is the header
    if len(rows) < 3:
        raise CardError(
            f"{src}: {len(rows)} rows after the header; needs conductances, probabilities and >= 1 table row"
        )
    (_, g), (_, cdf) = rows[0], rows[1]
    for n, r in rows[2:]:
        if r.size != g.size:
            raise CardError(
                f"{src}: line {n}: {r.size} values; every table row needs one per conductance bin ({g.size})"
            )
    if g.size < 2 or np.any(np.diff(g) <= 0) or g[0] < 0:
        raise CardError(f"{src}: conductance bins (line {rows[0][0]}): must be >= 0 and increase strictly")
    if cdf.size != len(rows) - 2:
        raise CardError(f"{src}: {cdf.size} probability points but {len(rows) - 2} table rows; they must match")
    if abs(cdf[0]) > 1e-9 or abs(cdf[-1] - 1) > 1e-9 or np.any(np.diff(cdf) <= 0):
        raise CardError(f"{src}: probability points (line {rows[1][0]}): must increase strictly from 0 to 1")
    return CrossSimTable(src, g, cdf, np.array([r for _, r in rows[2:]]))


def _condense(t: CrossSimTable, stride: int, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    cols = sorted(set(range(0, t.g_s.size, stride)) | {t.g_s.size - 1})
    table = np.array([[np.interp(pr, t.cdf, t.dg_s[:, c]) for c in cols] for pr in probs])
    return t.g_s[cols], table


def crosssim_lut_card(
    increasing: str | Path,
    decreasing: str | Path,
    *,
    name: str = "crosssim-lut",
    stride: int = 3,
    description: str | None = None,
) -> str:
    """The TOML text of a ``lookup-table`` card from CrossSim's two table files.

    Args:
      increasing, decreasing: ``dG_increasing.txt`` (SET, potentiation) and ``dG_decreasing.txt``.
      name: the card's name.
      stride: keep every ``stride``-th conductance bin (and the last); 1 keeps them all.
      description: the card's description (default: where it came from).

    Raises:
      CardError: a bad file (``read_crosssim_table``), files that do not share their bins and
        probabilities, or tables whose mean change has the wrong sign (swapped files).
    """
    if not isinstance(stride, int) or stride < 1:
        raise CardError(f"stride: value {stride!r} is not allowed; must be an integer >= 1")
    up, down = read_crosssim_table(increasing), read_crosssim_table(decreasing)
    if up.g_s.shape != down.g_s.shape or not np.allclose(up.g_s, down.g_s, rtol=1e-9, atol=0):
        raise CardError(f"{down.source}: conductance bins differ from {up.source}'s; both files must share them")
    if up.cdf.shape != down.cdf.shape or not np.allclose(up.cdf, down.cdf, rtol=0, atol=1e-12):
        raise CardError(f"{down.source}: probability points differ from {up.source}'s; both files must share them")
    if np.mean(up.mean_change_s()) <= 0 or np.mean(down.mean_change_s()) >= 0:
        raise CardError(
            f"{up.source}: the increasing table must raise the conductance on average and {down.source} lower it; "
            "are the files swapped?"
        )
    probs = np.asarray(PROBABILITIES)
    g_nodes, t_up = _condense(up, stride, probs)
    _, t_dn = _condense(down, stride, probs)
    g_min, g_max = float(up.g_s[0]), float(up.g_s[-1])
    to_w = 2.0 / (g_max - g_min)  # siemens -> weight units
    nodes = -1.0 + (g_nodes - g_min) * to_w
    mean_up_mid = float(np.trapezoid(t_up[:, len(g_nodes) // 2], probs))
    if mean_up_mid <= 0:
        raise CardError(
            f"{up.source}: the mean up step at mid-range is {mean_up_mid!r} S; must be > 0 (the card's unit)"
        )
    src = f"CrossSim lookup tables {Path(increasing).name}, {Path(decreasing).name} (device_models.crosssim_lut)"

    def entry(value, provenance="measured", source=src):
        v = [float(x) for x in np.ravel(value)] if np.ndim(value) else float(value)
        return {"value": v, "unit": "1", "provenance": provenance, "source": source}

    fixed = "no device-to-device figure in the tables; 0 keeps the measured device as is"
    params = {
        "dw_min": entry(mean_up_mid * to_w, source=f"mean up step at mid-range of the {src}"),
        "dw_min_dtod": entry(0.0, "assumed", fixed),
        "dw_min_std": entry(0.0, "assumed", "the measured tables carry the cycle-to-cycle scatter"),
        "up_down": entry(0.0, "assumed", "the asymmetry is in the measured tables"),
        "up_down_dtod": entry(0.0, "assumed", fixed),
        "w_max": entry(1.0, "assumed", "conductance range of the tables mapped onto [-1, 1]"),
        "w_min": entry(-1.0, "assumed", "conductance range of the tables mapped onto [-1, 1]"),
        "w_max_dtod": entry(0.0, "assumed", fixed),
        "w_min_dtod": entry(0.0, "assumed", fixed),
        "cdf": entry(probs),
        "nodes": entry(nodes),
        "table_up": entry(t_up / mean_up_mid),
        "table_down": entry(t_dn / mean_up_mid),
    }
    physical = {
        k: {"value": v * 1e6, "unit": "uS", "provenance": "measured", "source": src}
        for k, v in (("g_min", g_min), ("g_max", g_max))
    }
    doc = {
        "name": name,
        "model": "lookup-table",
        "description": description or f"lookup-table device from {src}",
        "parameters": params,
        "physical": physical,
    }
    return card_toml(doc, comment=f"Device card: {name}. Written by device_models.crosssim_lut from {src}.")
