"""Pulse measurements: load and check a conductance-versus-pulse CSV (DESIGN.md, ``analogsim fit``).

The file has a header row and one row per pulse:

==================  =========  ===================================================================
column              required   meaning
==================  =========  ===================================================================
``pulse_number``    yes        the pulse count, in the order the pulses were applied: any integers
                               increasing within each device/cycle (0, 1, ... or 1, 2, ... or any
                               start; gaps mean unrecorded pulses)
``polarity``        yes        +1 potentiating or -1 depressing: the pulse just applied
``conductance_s``   one of     the state after that pulse, in siemens (>= 0)
``conductance_us``  the three  ... in microsiemens (>= 0); converted to siemens at load
``weight``         of these   ... in normalised weight units (any finite number)
``current_a``      (the state) the read current after that pulse, in amperes; G = I / V_read with
``current_ua``                 ... in microamperes; the read voltage from ``read_voltage_v``
``read_voltage_v`` no         the read voltage in volts (non-zero), per row; or give it once as
                               ``load_measurement(path, read_voltage_v=0.1)``
                               (``analogsim assess --read-voltage 0.1``)
``device``          no         label of the device (several devices in one file)
``cycle``           no         label of a sweep that starts from its own first reading
``voltage_v``       no         pulse amplitude in volts (finite)
``width_s``         no         pulse width in seconds (finite, > 0)
==================  =========  ===================================================================

Any other column (a timestamp, a temperature, the instrument's own counters) is ignored; its
name is kept in ``Measurement.ignored_columns`` and ``Measurement.note()`` lists them in one
line. A current column is converted once, at load, to a conductance
:math:`G = I / V_{read}` (which must be >= 0); the state is then in siemens and
``Measurement.state_column`` names the current column.

Every cell is checked as it is read (one pass over the file with ``csv``), and the first
problem raises ``MeasurementError`` (a ``ValueError``) with one line naming the file, the
column with the row number (data rows count from 1; ``line`` is the line in the file), the value
and what is allowed.

Example:
  >>> m = load_measurement("gong2018_hfo2_rram_pulses.csv")  # doctest: +SKIP
  >>> m.unit, m.n_rows, [s.label for s in m.segments()]  # doctest: +SKIP
  ('1', 2000, ['cycle 0', 'cycle 1'])
"""

from __future__ import annotations

import array
import csv
import dataclasses
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["Measurement", "MeasurementError", "Segment", "load_measurement", "MEASUREMENT_COLUMNS"]

_REQUIRED = ("pulse_number", "polarity")
# column -> (unit of Measurement.state, factor to base units); currents are then divided by V_read
_STATE_COLUMNS = {
    "conductance_s": ("S", 1.0),
    "conductance_us": ("S", 1e-6),
    "weight": ("1", 1.0),
    "current_a": ("S", 1.0),
    "current_ua": ("S", 1e-6),
}
_CURRENT_COLUMNS = ("current_a", "current_ua")
_OPTIONAL = ("device", "cycle", "voltage_v", "width_s", "read_voltage_v")
_STATE_CHOICES = "conductance_s, conductance_us, weight, current_a, current_ua"
MEASUREMENT_COLUMNS = _REQUIRED + tuple(_STATE_COLUMNS) + _OPTIONAL


class MeasurementError(ValueError):
    """A measurement file that cannot be used; the one-line message names file, field, value and rule."""


@dataclasses.dataclass(frozen=True)
class Segment:
    """One device/cycle: a sweep replayed from its own first reading."""

    device: str | None  # device label, None without a device column
    cycle: str | None  # cycle label, None without a cycle column
    rows: np.ndarray  # (m,) int64 indices of its rows in the measurement, in file order

    @property
    def label(self) -> str:
        parts = []
        if self.device is not None:
            parts.append(f"device {self.device}")
        if self.cycle is not None:
            parts.append(f"cycle {self.cycle}")
        return ", ".join(parts) or "all rows"


@dataclasses.dataclass(frozen=True, eq=False)
class Measurement:
    """A checked pulse measurement (arrays are per row, in file order).

    ``state`` is in siemens when ``unit == "S"`` (``conductance_s`` or ``conductance_us``
    columns) and in normalised weight units when ``unit == "1"`` (``weight`` column).
    """

    source: str  # the file it was read from
    pulse_number: np.ndarray  # (n,) int64, increasing within each device/cycle (any start)
    polarity: np.ndarray  # (n,) int8, +1 or -1
    state: np.ndarray  # (n,) float64, siemens or normalised (see unit)
    unit: str  # "S" or "1"
    state_column: str  # the column the state came from
    device: np.ndarray | None = None  # (n,) str labels, or None
    cycle: np.ndarray | None = None  # (n,) str labels, or None
    voltage_v: np.ndarray | None = None  # (n,) float64 volts, or None
    width_s: np.ndarray | None = None  # (n,) float64 seconds, or None
    read_voltage_v: np.ndarray | None = None  # (n,) float64 volts of the read (current data), or None
    ignored_columns: tuple[str, ...] = ()  # columns of the file that were not read

    def note(self) -> str | None:
        """One line naming the ignored columns, or None if every column was read."""
        if not self.ignored_columns:
            return None
        return (
            f"{self.source}: ignored column(s) {', '.join(self.ignored_columns)} (not part of the measurement layout)"
        )

    @property
    def n_rows(self) -> int:
        return int(self.state.shape[0])

    def devices(self) -> list[str]:
        """Device labels in order of first appearance (empty without a device column)."""
        if self.device is None:
            return []
        return list(dict.fromkeys(self.device.tolist()))

    def segments(self) -> list[Segment]:
        """The device/cycle sweeps in order of first appearance, each with its rows."""
        n = self.n_rows
        # integer codes per label column, combined; then each code's rows (stable: file order),
        # without a Python object per row (a file of 10 million rows stays in numpy arrays)
        code = np.zeros(n, np.int64)
        uniques = []
        for labels in (self.device, self.cycle):
            if labels is None:
                uniques.append(np.array([None], object))
                continue
            u, inv = np.unique(labels, return_inverse=True)
            uniques.append(u)
            code = code * len(u) + inv
        groups, first, inverse, counts = np.unique(code, return_index=True, return_inverse=True, return_counts=True)
        rows = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
        n_cyc = len(uniques[1])
        out = []
        for g in np.argsort(first):  # in order of first appearance
            d, c = divmod(int(groups[g]), n_cyc)
            dev = None if self.device is None else str(uniques[0][d])
            cyc = None if self.cycle is None else str(uniques[1][c])
            out.append(Segment(dev, cyc, rows[g].astype(np.int64)))
        return out

    def select_device(self, label: str) -> Measurement:
        """The rows of one device, as a measurement of its own."""
        if self.device is None:
            raise MeasurementError(
                f"{self.source}: column 'device': there is no device column to select {label!r} from"
            )
        mask = self.device == label
        if not mask.any():
            raise MeasurementError(
                f"{self.source}: column 'device': value {label!r} is not in the file; allowed: {', '.join(self.devices())}"
            )
        pick = lambda a: None if a is None else a[mask]  # noqa: E731
        return dataclasses.replace(
            self,
            pulse_number=self.pulse_number[mask],
            polarity=self.polarity[mask],
            state=self.state[mask],
            device=pick(self.device),
            cycle=pick(self.cycle),
            voltage_v=pick(self.voltage_v),
            width_s=pick(self.width_s),
            read_voltage_v=pick(self.read_voltage_v),
        )


def _label(src, column: str, row: int, line: int, text: str) -> str:
    """A non-empty ``device``/``cycle`` label, or a one-line error naming where it is empty."""
    if not text:
        raise MeasurementError(
            f"{src}: column {column!r}, row {row} (line {line}): value '' is not allowed; must be a non-empty label"
        )
    return text


def _number(src: str, column: str, row: int, line: int, text: str, allowed: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MeasurementError(
            f"{src}: column {column!r}, row {row} (line {line}): value {text!r} is not allowed; must be {allowed}"
        ) from None
    if not math.isfinite(value):
        raise MeasurementError(
            f"{src}: column {column!r}, row {row} (line {line}): value {text!r} is not allowed; must be {allowed} (finite, not NaN)"
        )
    return value


def _check_header(src: str, header: list[str]) -> tuple[list[str], str, tuple[str, ...]]:
    """(column names, the state column, the ignored columns) of a checked header."""
    names = [h.strip() for h in header]
    if names and names[0].startswith("\ufeff"):
        names[0] = names[0][1:]
    seen = set()
    for name in names:
        if name in seen:
            raise MeasurementError(f"{src}: header: column {name!r} appears twice; each column may appear once")
        seen.add(name)
    ignored = tuple(n for n in names if n not in MEASUREMENT_COLUMNS)
    states = [n for n in names if n in _STATE_COLUMNS]
    missing = [n for n in _REQUIRED if n not in names]
    if missing or not states:
        what = missing + ([] if states else [f"one of {_STATE_CHOICES.replace(', ', '|')}"])
        seen_note = f" (ignored columns: {', '.join(ignored)})" if ignored else ""
        raise MeasurementError(
            f"{src}: header: missing required column(s) {', '.join(what)}; required: pulse_number, polarity and "
            f"exactly one of {_STATE_CHOICES}{seen_note}"
        )
    if len(states) > 1:
        raise MeasurementError(f"{src}: header: two state columns {states}; give exactly one of {_STATE_CHOICES}")
    return names, states[0], ignored


def load_measurement(path: str | Path, *, read_voltage_v: float | None = None) -> Measurement:
    """Read and check a pulse-measurement CSV in one streaming pass.

    Args:
      path: the CSV file (layout in the module docstring).
      read_voltage_v: the read voltage (volts, non-zero) of a file with a ``current_a`` or
        ``current_ua`` column and no ``read_voltage_v`` column: :math:`G = I / V_{read}`.

    Returns:
      The ``Measurement``, state in siemens (``conductance_*``) or normalised (``weight``).

    Raises:
      MeasurementError: the file is missing, empty or unreadable; the header lacks a required
        column, has an unknown or duplicate one, or two state columns; a cell is not a number,
        NaN or infinite, or out of range (negative conductance, polarity not +1/-1,
        ``pulse_number`` not a positive integer, ``width_s <= 0``); ``pulse_number`` does not
        increase within a device/cycle; or a device/cycle has a single reading (nothing to fit);
        a current column without a read voltage (or with both the column and the argument).
    """
    src = str(path)
    p = Path(path)
    _check_file(src, p)
    if read_voltage_v is not None and not (math.isfinite(read_voltage_v) and read_voltage_v != 0):
        raise MeasurementError(
            f"{src}: read_voltage_v: value {read_voltage_v!r} is not allowed; must be a finite non-zero number of volts"
        )
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            layout = _Layout.of(src, _header_row(src, reader), read_voltage_v)
            columns = _read_rows(src, reader, layout)
    except UnicodeDecodeError as err:
        raise MeasurementError(f"{src}: cannot be read as UTF-8 text ({err.reason} at byte {err.start})") from None
    except csv.Error as err:
        raise MeasurementError(f"{src}: not a valid CSV file ({err})") from None
    except OSError as err:
        raise MeasurementError(f"{src}: cannot be read ({err.strerror or err})") from None
    return _measurement(src, layout, columns)


def _check_file(src: str, p: Path) -> None:
    """Raise unless ``p`` is an existing regular file."""
    if not p.exists():
        raise MeasurementError(
            f"{src}: no such file; expected a measurement CSV (columns: {', '.join(MEASUREMENT_COLUMNS)})"
        )
    if not p.is_file():
        raise MeasurementError(f"{src}: not a regular file; expected a measurement CSV")


def _header_row(src: str, reader) -> list[str]:
    """The first non-blank row of the CSV (the header); an error if the file has none."""
    for fields in reader:
        if fields and any(f.strip() for f in fields):
            return fields
    raise MeasurementError(
        f"{src}: file is empty; expected a header row with pulse_number, polarity and one of "
        "conductance_s, conductance_us, weight, then one row per pulse"
    )


@dataclasses.dataclass(frozen=True)
class _Layout:
    """The checked header: column names and positions, and the state column with its unit."""

    names: list[str]  # column names in file order
    col: dict[str, int]  # column name -> position in a row
    state_col: str  # conductance_s, conductance_us, weight, current_a or current_ua
    unit: str  # "S" or "1": the unit of Measurement.state
    factor: float  # state column value -> base unit (1e-6 for conductance_us and current_ua)
    ignored: tuple[str, ...] = ()  # columns not read
    read_voltage_v: float | None = None  # one read voltage for every row (current columns)

    @classmethod
    def of(cls, src: str, header: list[str], read_voltage_v: float | None = None) -> _Layout:
        """Check ``header`` (see ``_check_header``) and locate its columns."""
        names, state_col, ignored = _check_header(src, header)
        unit, factor = _STATE_COLUMNS[state_col]
        current = state_col in _CURRENT_COLUMNS
        if current and read_voltage_v is None and "read_voltage_v" not in names:
            raise MeasurementError(
                f"{src}: header: column {state_col!r} is a current; give the read voltage as a read_voltage_v column "
                "or as read_voltage_v= (analogsim assess --read-voltage V), so that G = I / V_read"
            )
        if read_voltage_v is not None and "read_voltage_v" in names:
            raise MeasurementError(
                f"{src}: read_voltage_v: given both as a column and as an argument ({read_voltage_v!r}); give one"
            )
        rv = read_voltage_v if current else None
        return cls(names, {n: i for i, n in enumerate(names)}, state_col, unit, factor, ignored, rv)


@dataclasses.dataclass
class _Columns:
    """The checked values of the rows read so far, one typed array per column, in file order
    (8 bytes per number, 1 per polarity, a shared string per device or cycle label: about 17
    bytes per row besides the labels, against about 80 in Python lists)."""

    pulse_number: array.array = dataclasses.field(default_factory=lambda: array.array("q"))
    polarity: array.array = dataclasses.field(default_factory=lambda: array.array("b"))
    state: array.array = dataclasses.field(default_factory=lambda: array.array("d"))  # in the layout's unit
    device: list[str] = dataclasses.field(default_factory=list)  # interned: one object per label
    cycle: list[str] = dataclasses.field(default_factory=list)
    voltage: array.array = dataclasses.field(default_factory=lambda: array.array("d"))  # volts
    width: array.array = dataclasses.field(default_factory=lambda: array.array("d"))  # seconds
    read_voltage: array.array = dataclasses.field(default_factory=lambda: array.array("d"))  # volts
    last_pulse: dict[tuple, tuple[int, int]] = dataclasses.field(
        default_factory=dict
    )  # (device, cycle) -> (pulse_number, row)


def _read_rows(src: str, reader, layout: _Layout) -> _Columns:
    """Check every data row after the header (blank lines skipped) and collect its values."""
    columns = _Columns()
    n_cols = len(layout.names)
    row = 0
    for fields in reader:
        if not fields or not any(f.strip() for f in fields):
            continue  # blank line
        row += 1
        line = reader.line_num
        if len(fields) != n_cols:
            raise MeasurementError(
                f"{src}: row {row} (line {line}): has {len(fields)} fields {fields!r}; the header has {n_cols} ({', '.join(layout.names)})"
            )
        _add_row(src, row, line, [x.strip() for x in fields], layout, columns)
    return columns


def _add_row(src: str, row: int, line: int, f: list[str], layout: _Layout, columns: _Columns) -> None:
    """Check the stripped cells ``f`` of one data row and append their values to ``columns``."""
    col = layout.col
    i_pn, i_pol, i_state = col["pulse_number"], col["polarity"], col[layout.state_col]
    pn = _number(src, "pulse_number", row, line, f[i_pn], "an integer")
    if pn != int(pn) or abs(pn) > 2**53:  # (beyond 2**53 a float no longer holds every integer)
        raise MeasurementError(
            f"{src}: column 'pulse_number', row {row} (line {line}): value {f[i_pn]!r} is not allowed; must be an integer (0, 1, ... or 1, 2, ...) of magnitude up to 2**53"
        )
    pol = _number(src, "polarity", row, line, f[i_pol], "+1 or -1")
    if pol not in (1.0, -1.0):
        raise MeasurementError(
            f"{src}: column 'polarity', row {row} (line {line}): value {f[i_pol]!r} is not allowed; must be +1 (potentiating) or -1 (depressing)"
        )
    current = layout.state_col in _CURRENT_COLUMNS
    allowed = "a finite number" if layout.unit == "1" else ("a current" if current else ">= 0 (a conductance)")
    s = _number(src, layout.state_col, row, line, f[i_state], allowed)
    key = _add_optional(src, row, line, f, col, columns)
    if current:
        v_read = columns.read_voltage[-1] if layout.read_voltage_v is None else layout.read_voltage_v
        s = s / v_read  # G = I / V_read (then in siemens after the factor)
    if layout.unit == "S" and s < 0:
        why = f" (G = I / V_read = {s * layout.factor:.4g} S)" if current else ""
        raise MeasurementError(
            f"{src}: column {layout.state_col!r}, row {row} (line {line}): value {f[i_state]!r} is not allowed; must give a conductance >= 0{why}"
        )
    pn_i = int(pn)
    _check_increasing(src, row, line, key, pn_i, col, columns.last_pulse.get(key))
    columns.last_pulse[key] = (pn_i, row)
    columns.pulse_number.append(pn_i)
    columns.polarity.append(int(pol))
    columns.state.append(s * layout.factor)


def _add_optional(
    src: str, row: int, line: int, f: list[str], col: dict[str, int], columns: _Columns
) -> tuple[str | None, str | None]:
    """Check and append one row's optional cells; return its (device, cycle) key."""
    i_dev, i_cyc = col.get("device"), col.get("cycle")
    i_v, i_w, i_r = col.get("voltage_v"), col.get("width_s"), col.get("read_voltage_v")
    d = c = None
    if i_dev is not None:
        d = _label(src, "device", row, line, f[i_dev])
        columns.device.append(sys.intern(d))
    if i_cyc is not None:
        c = _label(src, "cycle", row, line, f[i_cyc])
        columns.cycle.append(sys.intern(c))
    if i_v is not None:
        columns.voltage.append(_number(src, "voltage_v", row, line, f[i_v], "a finite number of volts"))
    if i_w is not None:
        wd = _number(src, "width_s", row, line, f[i_w], "a number of seconds > 0")
        if wd <= 0:
            raise MeasurementError(
                f"{src}: column 'width_s', row {row} (line {line}): value {f[i_w]!r} is not allowed; must be > 0 (seconds)"
            )
        columns.width.append(wd)
    if i_r is not None:
        vr = _number(src, "read_voltage_v", row, line, f[i_r], "a non-zero number of volts")
        if vr == 0:
            raise MeasurementError(
                f"{src}: column 'read_voltage_v', row {row} (line {line}): value {f[i_r]!r} is not allowed; must be non-zero (volts)"
            )
        columns.read_voltage.append(vr)
    return d, c


def _check_increasing(
    src: str, row: int, line: int, key: tuple, pn_i: int, col: dict[str, int], prev: tuple[int, int] | None
) -> None:
    """Raise if ``pn_i`` does not exceed ``prev``, the last (pulse_number, row) of the same device/cycle."""
    if prev is None or pn_i > prev[0]:
        return
    d, c = key
    where = f" within {Segment(d, c, np.empty(0)).label}" if key != (None, None) else ""
    if pn_i == prev[0]:
        raise MeasurementError(
            f"{src}: column 'pulse_number', row {row} (line {line}): value {pn_i} repeats row {prev[1]}{where}; "
            "pulse numbers must increase within each device/cycle"
        )
    if "device" not in col and "cycle" not in col:
        hint = "add a device or cycle column"
    elif "cycle" not in col:
        hint = "add a cycle column (a new sweep of the same device)"
    else:
        hint = "pulse numbers must increase within each device/cycle"
    raise MeasurementError(
        f"{src}: column 'pulse_number': pulse_number goes back from {prev[0]} to {pn_i} at row {row} "
        f"(line {line}){where}: {hint}"
    )


def _measurement(src: str, layout: _Layout, columns: _Columns) -> Measurement:
    """Build the ``Measurement``; an error unless every device/cycle has at least 2 readings."""
    if not columns.state:
        raise MeasurementError(f"{src}: header only, no data rows; expected one row per pulse after the header")
    if len(columns.state) == 1:
        raise MeasurementError(f"{src}: a single data point (row 1); at least 2 readings are needed to fit")
    col = layout.col
    m = Measurement(
        source=src,
        pulse_number=np.asarray(columns.pulse_number, np.int64),
        polarity=np.asarray(columns.polarity, np.int8),
        state=np.asarray(columns.state, np.float64),
        unit=layout.unit,
        state_column=layout.state_col,
        device=np.asarray(columns.device, dtype=str) if "device" in col else None,
        cycle=np.asarray(columns.cycle, dtype=str) if "cycle" in col else None,
        voltage_v=np.asarray(columns.voltage, np.float64) if "voltage_v" in col else None,
        width_s=np.asarray(columns.width, np.float64) if "width_s" in col else None,
        read_voltage_v=_read_voltages(layout, columns),
        ignored_columns=layout.ignored,
    )
    for seg in m.segments():
        if seg.rows.size < 2:
            raise MeasurementError(
                f"{src}: column 'pulse_number': {seg.label} has a single data point (row {int(seg.rows[0]) + 1}); "
                "each device/cycle needs at least 2 readings to fit"
            )
    return m


def _read_voltages(layout: _Layout, columns: _Columns) -> np.ndarray | None:
    """Each row's read voltage (volts): the column's, the argument's, or None."""
    if "read_voltage_v" in layout.col:
        return np.asarray(columns.read_voltage, np.float64)
    if layout.read_voltage_v is not None:
        return np.full(len(columns.state), float(layout.read_voltage_v))
    return None
