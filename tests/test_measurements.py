"""Pulse-measurement CSV loading: every malformed case gives one line naming file and field."""

from __future__ import annotations

import time

import numpy as np
import pytest

from device_models import measurements
from device_models.measurements import MeasurementError, load_measurement

GOOD_HEADER = "pulse_number,polarity,weight\n"

# (id, file text or None for "no file", the field the message must name)
BAD_CASES = [
    ("missing-file", None, "no such file"),
    ("empty-file", "", "empty"),
    ("blank-lines-only", "\n \n\n", "empty"),
    ("header-only", GOOD_HEADER, "no data rows"),
    ("missing-polarity", "pulse_number,weight\n1,0.1\n2,0.2\n", "polarity"),
    ("missing-state", "pulse_number,polarity\n1,1\n2,1\n", "conductance_s"),
    ("misspelt-state-column", "pulse_number,polarity,conductance_S\n1,1,0.1\n", "ignored columns: conductance_S"),
    ("duplicate-column", "pulse_number,polarity,weight,weight\n1,1,0.1,0.1\n", "weight"),
    ("two-state-columns", "pulse_number,polarity,weight,conductance_s\n1,1,0.1,1e-6\n", "conductance_s"),
    ("wrong-field-count", GOOD_HEADER + "1,1,0.1\n2,1\n", "row 2"),
    ("non-numeric-state", GOOD_HEADER + "1,1,0.1\n2,1,abc\n", "'weight', row 2"),
    ("empty-cell", GOOD_HEADER + "1,1,0.1\n2,,0.2\n", "'polarity', row 2"),
    ("nan-state", GOOD_HEADER + "1,1,0.1\n2,1,nan\n", "'weight', row 2"),
    ("inf-state", GOOD_HEADER + "1,1,0.1\n2,1,inf\n", "'weight', row 2"),
    ("negative-conductance", "pulse_number,polarity,conductance_s\n1,1,1e-6\n2,1,-1e-7\n", "'conductance_s', row 2"),
    ("negative-conductance-us", "pulse_number,polarity,conductance_us\n1,1,-3\n2,1,1\n", "'conductance_us', row 1"),
    ("polarity-2", GOOD_HEADER + "1,1,0.1\n2,2,0.2\n", "'polarity', row 2"),
    ("polarity-0", GOOD_HEADER + "1,0,0.1\n2,1,0.2\n", "'polarity', row 1"),
    ("polarity-text", GOOD_HEADER + "1,up,0.1\n2,1,0.2\n", "'polarity', row 1"),
    ("pulse-number-repeats-from-0", GOOD_HEADER + "0,1,0.1\n0,1,0.2\n", "'pulse_number', row 2"),
    ("current-without-read-voltage", "pulse_number,polarity,current_a\n1,1,1e-6\n2,1,2e-6\n", "read_voltage_v"),
    (
        "read-voltage-zero",
        "pulse_number,polarity,current_ua,read_voltage_v\n1,1,1,0.1\n2,1,2,0\n",
        "'read_voltage_v', row 2",
    ),
    (
        "current-gives-negative-g",
        "pulse_number,polarity,current_ua,read_voltage_v\n1,1,1,0.1\n2,1,-2,0.1\n",
        "'current_ua', row 2",
    ),
    ("pulse-number-fraction", GOOD_HEADER + "1,1,0.1\n1.5,1,0.2\n", "'pulse_number', row 2"),
    ("pulse-number-nan", GOOD_HEADER + "1,1,0.1\nnan,1,0.2\n", "'pulse_number', row 2"),
    ("pulse-number-repeats", GOOD_HEADER + "1,1,0.1\n2,1,0.2\n2,1,0.3\n", "'pulse_number', row 3"),
    (
        "pulse-number-goes-back",
        GOOD_HEADER + "1,1,0.1\n2,1,0.2\n3,1,0.3\n1,-1,0.2\n",
        "pulse_number goes back from 3 to 1 at row 4 (line 5): add a device or cycle column",
    ),
    (
        "goes-back-within-device",
        "device,pulse_number,polarity,weight\nA,1,1,0.1\nA,2,1,0.2\nA,1,-1,0.1\n",
        "within device A: add a cycle column",
    ),
    (
        "goes-back-within-cycle",
        "device,cycle,pulse_number,polarity,weight\nA,0,1,1,0.1\nA,0,3,1,0.2\nA,0,2,-1,0.1\n",
        "pulse_number goes back from 3 to 2 at row 3",
    ),
    ("single-data-point", GOOD_HEADER + "1,1,0.1\n", "single data point"),
    ("single-point-in-a-cycle", "cycle,pulse_number,polarity,weight\n0,1,1,0.1\n0,2,1,0.2\n1,1,-1,0.2\n", "cycle 1"),
    ("empty-device-label", "device,pulse_number,polarity,weight\nA,1,1,0.1\n,2,1,0.2\n", "'device', row 2"),
    ("empty-cycle-label", "cycle,pulse_number,polarity,weight\n0,1,1,0.1\n ,2,1,0.2\n", "'cycle', row 2"),
    ("width-zero", "pulse_number,polarity,weight,width_s\n1,1,0.1,1e-6\n2,1,0.2,0\n", "'width_s', row 2"),
    ("width-negative", "pulse_number,polarity,weight,width_s\n1,1,0.1,-1e-6\n2,1,0.2,1e-6\n", "'width_s', row 1"),
    ("width-nan", "pulse_number,polarity,weight,width_s\n1,1,0.1,nan\n2,1,0.2,1e-6\n", "'width_s', row 1"),
    ("voltage-nan", "pulse_number,polarity,weight,voltage_v\n1,1,0.1,1.5\n2,1,0.2,NaN\n", "'voltage_v', row 2"),
    ("voltage-text", "pulse_number,polarity,weight,voltage_v\n1,1,0.1,high\n2,1,0.2,1\n", "'voltage_v', row 1"),
]


@pytest.mark.parametrize("text, field", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_csv_names_file_and_field_in_one_line(tmp_path, text, field):
    path = tmp_path / "pulses_under_test.csv"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(MeasurementError) as info:
        load_measurement(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert "pulses_under_test.csv" in msg
    assert field in msg, msg
    assert isinstance(info.value, ValueError)


def test_directory_is_not_a_file(tmp_path):
    with pytest.raises(MeasurementError, match="not a regular file"):
        load_measurement(tmp_path)


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(GOOD_HEADER.encode() + b"1,1,0.1\n2,1,\xff\xfe\n")
    with pytest.raises(MeasurementError, match="latin.csv: cannot be read as UTF-8"):
        load_measurement(path)


def test_conductance_us_is_converted_to_siemens(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("pulse_number,polarity,conductance_us\n1,+1,2.5\n2,+1,2.75\n3,-1,2.6\n", encoding="utf-8")
    m = load_measurement(path)
    assert m.unit == "S" and m.state_column == "conductance_us"
    np.testing.assert_allclose(m.state, [2.5e-6, 2.75e-6, 2.6e-6])
    np.testing.assert_array_equal(m.polarity, [1, 1, -1])
    np.testing.assert_array_equal(m.pulse_number, [1, 2, 3])
    assert m.device is None and m.cycle is None and m.voltage_v is None and m.width_s is None
    assert [s.label for s in m.segments()] == ["all rows"]


def test_conductance_s_and_weight_units(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("pulse_number,polarity,conductance_s\n1,1,1e-6\n2,1,2e-6\n", encoding="utf-8")
    assert load_measurement(path).unit == "S"
    path.write_text(GOOD_HEADER + "1,1,-0.5\n2,1,-0.4\n", encoding="utf-8")
    m = load_measurement(path)
    assert m.unit == "1"
    np.testing.assert_allclose(m.state, [-0.5, -0.4])


def test_device_and_cycle_columns_make_segments(tmp_path):
    path = tmp_path / "dc.csv"
    rows = ["device,cycle,pulse_number,polarity,weight"]
    rows += [f"D1,0,{i},1,{0.1 * i}" for i in range(1, 4)]
    rows += [f"D1,1,{i},-1,{0.3 - 0.1 * i}" for i in range(1, 4)]  # a new sweep restarts pulse_number
    rows += [f"D2,0,{i},1,{0.2 * i}" for i in range(5, 8)]  # may start at any positive number
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    m = load_measurement(path)
    segs = m.segments()
    assert [s.label for s in segs] == ["device D1, cycle 0", "device D1, cycle 1", "device D2, cycle 0"]
    assert [s.rows.tolist() for s in segs] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert m.devices() == ["D1", "D2"]
    d2 = m.select_device("D2")
    assert d2.n_rows == 3 and d2.pulse_number.tolist() == [5, 6, 7]
    with pytest.raises(MeasurementError, match="'device': value 'D9' is not in the file"):
        m.select_device("D9")


def test_voltage_and_width_columns(tmp_path):
    path = tmp_path / "vw.csv"
    path.write_text(
        " pulse_number , polarity , weight , voltage_v , width_s \n1,1,0.1,2.0,1e-6\n2,-1,0.05,-2.0,1e-6\n",
        encoding="utf-8",
    )
    m = load_measurement(path)
    np.testing.assert_allclose(m.voltage_v, [2.0, -2.0])
    np.testing.assert_allclose(m.width_s, [1e-6, 1e-6])


def test_streaming_200k_rows_reads_the_file_once(tmp_path, monkeypatch):
    n = 200_000
    path = tmp_path / "big.csv"
    k = np.arange(1, n + 1)
    pol = np.where((k // 500) % 2 == 0, 1, -1)
    w = np.sin(k / 3000.0)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("pulse_number,polarity,conductance_us,voltage_v\n")
        fh.writelines(f"{a},{b},{c:.6f},{1.5 * b}\n" for a, b, c in zip(k, pol, 5.0 + w, strict=True))
    opened = []
    real_open = open

    def counting_open(*args, **kwargs):
        opened.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(measurements, "open", counting_open, raising=False)
    t0 = time.perf_counter()
    m = load_measurement(path)
    elapsed = time.perf_counter() - t0
    assert len(opened) == 1
    assert m.n_rows == n
    np.testing.assert_allclose(m.state[:3], (5.0 + w[:3]) * 1e-6, rtol=1e-6)
    assert elapsed < 8.0, f"200k rows took {elapsed:.1f} s"


def test_extra_columns_are_ignored_and_listed(tmp_path):
    path = tmp_path / "instrument.csv"
    path.write_text(
        "time_s,pulse_number,polarity,temperature_k,conductance_us,compliance\n"
        "0.0,1,1,300,2.5,1e-3\n0.1,2,1,300,2.75,1e-3\n0.2,3,-1,301,2.6,1e-3\n",
        encoding="utf-8",
    )
    m = load_measurement(path)
    assert m.ignored_columns == ("time_s", "temperature_k", "compliance")
    note = m.note()
    assert "\n" not in note and "time_s, temperature_k, compliance" in note
    np.testing.assert_allclose(m.state, [2.5e-6, 2.75e-6, 2.6e-6])
    path.write_text(GOOD_HEADER + "1,1,0.1\n2,1,0.2\n", encoding="utf-8")
    assert load_measurement(path).note() is None


def test_current_and_read_voltage_give_conductance(tmp_path):
    # G = I / V_read: 25 uA at 0.1 V is 250 uS; a read voltage of -0.2 V with -50 uA also gives 250 uS
    path = tmp_path / "iv.csv"
    path.write_text(
        "pulse_number,polarity,current_ua,read_voltage_v\n1,1,25,0.1\n2,1,30,0.1\n3,-1,-50,-0.2\n", encoding="utf-8"
    )
    m = load_measurement(path)
    assert m.unit == "S" and m.state_column == "current_ua"
    np.testing.assert_allclose(m.state, [250e-6, 300e-6, 250e-6], rtol=1e-12)
    np.testing.assert_allclose(m.read_voltage_v, [0.1, 0.1, -0.2])
    path.write_text("pulse_number,polarity,current_a\n1,1,2.467e-4\n2,1,2.5e-4\n", encoding="utf-8")
    m = load_measurement(path, read_voltage_v=0.1)
    np.testing.assert_allclose(m.state, [2.467e-3, 2.5e-3], rtol=1e-12)
    np.testing.assert_allclose(m.read_voltage_v, [0.1, 0.1])
    with pytest.raises(MeasurementError, match="read_voltage_v: value 0"):
        load_measurement(path, read_voltage_v=0.0)


def test_read_voltage_both_as_column_and_argument_is_refused(tmp_path):
    path = tmp_path / "both.csv"
    path.write_text("pulse_number,polarity,current_a,read_voltage_v\n1,1,1e-6,0.1\n2,1,2e-6,0.1\n", encoding="utf-8")
    with pytest.raises(MeasurementError, match="both as a column and as an argument"):
        load_measurement(path, read_voltage_v=0.1)


@pytest.mark.parametrize("first", [0, 1, 1000, -5])
def test_pulse_numbering_may_start_anywhere(tmp_path, first):
    path = tmp_path / "n.csv"
    rows = [f"{first + 2 * i},1,{0.1 * i}" for i in range(4)]  # every second pulse recorded
    path.write_text(GOOD_HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    m = load_measurement(path)
    assert m.pulse_number.tolist() == [first, first + 2, first + 4, first + 6]
