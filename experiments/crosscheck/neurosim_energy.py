"""Cross-check of the energy ledger against DNN+NeuroSim V2.1 for one crossbar and one trace.

One 128 x 128 RRAM crossbar (NeuroSim V2.1's default subarray), read once with every row
driven, and written once with 2 pulses on every cell (what NeuroSim's pulse count gives for a
one-level step from level 10 to 11 of 60, ``GetWriteUpdateEstimation``). The ledger prices the same events with
NeuroSim's constants (a periphery card and a device card built from them), and NeuroSim's
formulas, transcribed below with their source lines (V2.1 at commit 18289cb,
``Training_pytorch/NeuroSIM/``), give its figures; the formulas are checked against the
figures NeuroSim's own C++ printed (``NEUROSIM_PRINTED``: ``neurosim_harness.cpp`` in this folder
links V2.1's sources unchanged and prints each component; see README.md to rebuild it).

Where the models are the same the figures agree; where they differ, ``DIFFERENCES`` says why.

    python experiments/crosscheck/neurosim_energy.py [--out results/crosscheck/neurosim_energy.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

from analogsim.energy import analog_prices
from analogsim.events import read_counts
from analogsim.periphery import IOParameters
from analogsim.periphery_card import load_periphery_card
from device_models import parse_card

R = C = 128  # Param.cpp: numRowSubArray, numColSubArray
M = 8  # numColMuxed (Param.cpp): columns per ADC
LEVELS = 64  # levelOutput (Param.cpp): a 6-bit ADC
CAP_PER_M = 0.2e-15 / 1e-6  # SubArray.cpp (Initialize): 0.2 fF per um of wire
FEATURE = 40e-9  # Param.cpp featuresize (wire width of the subarray): cell.featureSize
CELL_PITCH = 2 * FEATURE  # heightInFeatureSizeCrossbar = widthInFeatureSizeCrossbar = 2
V_READ = 0.5  # readVoltage
T_READ = 10e-9  # readPulseWidth
VDD = 0.9  # Technology.cpp, 32 nm LSTP
R_ON, R_OFF = 240e3, 24e6  # resistanceOn, resistanceOff
G_MID = 0.5 * (1 / R_ON + 1 / R_OFF)
V_WRITE = math.sqrt(2) * 4.0  # ProcessingUnit.cpp: sqrt(V_LTP^2 + V_LTD^2) with writeVoltage 4 V
T_WRITE = 50e-9  # writePulseWidth
PULSES = 2  # per cell: ceil(dG / ((Gmax - Gmin) / 60)) of a one-level step, as NeuroSim rounds it
# the write trace: every cell from level 10 to 11 of 60; NeuroSim's cell conductance for the write
# energy is the one at the mean resistance of the two states
_DG = (1 / R_ON - 1 / R_OFF) / 60
G_WRITE = 2 / (1 / (1 / R_OFF + 11 * _DG) + 1 / (1 / R_OFF + 10 * _DG))

# What V2.1's own C++ printed for this subarray (neurosim_harness.cpp: `./harness 2 4 0.5 1`;
# RRAM crossbar, 32 nm LSTP, every cell at G_MID, all rows active).
NEUROSIM_PRINTED = {
    "read_dynamic_energy_array_j": 1.76423e-12,  # SubArray::readDynamicEnergyArray: the wires
    "multilevel_sense_amp_j": 2.71794e-11,  # the ADC's column power x column time
    "sa_encoder_j": 8.31122e-12,
    "wl_switch_matrix_j": 5.12285e-12,
    "shift_add_input_j": 9.67052e-12,
    "read_dynamic_energy_j": 5.207e-11,  # the subarray's total
    "column_resistance_ohm": 3713.41,  # the first column's, with the wire resistance
    "write_dynamic_energy_array_j": 3.99756e-08,  # 2 pulses on each of the 128 x 128 cells
}

DIFFERENCES = {
    "column wires": "the same model: each output line of R cells charged to V_read once per read (C V^2, no 1/2)",
    "row wires": "NeuroSim charges the input lines to vdd (the switch matrix's supply), not V_read, and once per "
    "ADC step (numColMuxed times per read); the ledger charges them to V_read once: a factor M (vdd/V_read)^2",
    "cells": "NeuroSim has no V^2 G t_read term: the cells' current enters only its fitted ADC column power, "
    "over the ~1 ns column sensing time; the ledger bills V^2 G t_read over the whole read pulse",
    "ADC": "NeuroSim: a fitted current-mode multilevel sense amplifier at 32 nm (a (L-1) + b/R per column, 1 ns) plus "
    "an encoder; the ledger: the Walden figure of merit of the best surveyed SAR converters (Murmann survey) "
    "at the same bits",
    "write cells": "the same model where the card's pulse energy is V_w^2 G t_w (NeuroSim's per-cell write energy "
    "at the mean resistance); NeuroSim takes V_w = sqrt(2) x 4 V",
    "write wires": "NeuroSim writes row by row: a selected input line at V_w per pulse (the same as the ledger's "
    "input-line term), unselected lines at V_w/2; the ledger's parallel update pulses the output lines too, "
    "at V_w",
}


def neurosim_read() -> dict[str, float]:
    """NeuroSim's read energy terms for one read of the subarray, from its formulas."""
    cap_row = cap_col = CAP_PER_M * C * CELL_PITCH  # SubArray.cpp: capRow1/2, capCol = 0.2 fF/um x length
    n_cols = math.ceil(C / M)
    # SubArray::CalculatePower, conventionalParallel: readDynamicEnergyArray
    bl = M * cap_col * V_READ**2 * n_cols
    wl = M * cap_row * VDD**2 * R
    # MultilevelSenseAmp::GetColumnPower, current mode, 32 nm LP: a (L-1) + b exp(-c log10 R'), R' = R 0.5/Vr
    r_col = NEUROSIM_PRINTED["column_resistance_ohm"]
    p_col = 3.0875e-6 * (LEVELS - 1) + 0.0649 * math.exp(-2.297 * math.log10(r_col * 0.5 / V_READ))
    return {"column_wires_j": bl, "row_wires_j": wl, "array_j": bl + wl, "adc_j": C * p_col * 1e-9}


def neurosim_write() -> dict[str, float]:
    """NeuroSim's write energy of ``PULSES`` pulses on every cell (ProcessingUnit.cpp,
    GetWriteUpdateEstimation): V_w^2 G t_w n per cell, and the selected input line per pulse."""
    cap_row = CAP_PER_M * C * CELL_PITCH
    cells = R * C * V_WRITE**2 * G_WRITE * T_WRITE * PULSES
    rows_set = R * PULSES  # totalNumSetWritePulse: per row, its largest pulse count
    return {"cells_j": cells, "row_wires_j": cap_row * V_WRITE**2 * rows_set}


def ledger() -> dict[str, float]:
    """The ledger's figures for the same events, priced with NeuroSim's constants."""
    per = dataclasses.replace(
        load_periphery_card(),
        wire_capacitance_f_per_m=CAP_PER_M,
        cell_pitch_m=CELL_PITCH,
        read_voltage_v=V_READ,
        read_time_s=T_READ,
        columns_per_adc=M,
    )
    card = parse_card(_card_text(), source="<NeuroSim V2.1 RRAM>")
    io = IOParameters(out_res=1 / (LEVELS - 2))  # 6 bits: aihwkit's 1/(2^b - 2)
    prices = analog_prices(card, per, io)
    read = read_counts(1, C, R, (1, 1))  # a layer of R inputs (rows) and C outputs (columns)
    wire = prices["read_wire_cells"].joules
    pulses = R * C * PULSES
    # a direct write of PULSES pulses on every cell: each input line carries PULSES pulses, as does each output line
    return {
        "column_wires_j": C * R * wire,  # C output lines of R cells
        "row_wires_j": R * C * wire,
        "read_wire_cells": read["read_wire_cells"],
        "cells_j": read["crosspoint_reads"] * prices["crosspoint_reads"].joules,
        "adc_j": read["adc_conversions"] * prices["adc_conversions"].joules,
        "write_cells_j": pulses * prices["pulses_up"].joules,
        "write_row_wires_j": R * PULSES * C * prices["write_wire_cells"].joules,
        "write_column_wires_j": C * PULSES * R * prices["write_wire_cells"].joules,
    }


def _card_text() -> str:
    pulse_energy = V_WRITE**2 * G_WRITE * T_WRITE
    params = {"dw_min": 1 / 30, "w_max": 1.0, "w_min": -1.0}  # 60 levels between the bounds, no variation
    params |= dict.fromkeys(("dw_min_dtod", "dw_min_std", "up_down", "up_down_dtod", "w_max_dtod", "w_min_dtod"), 0.0)
    text = 'name = "neurosim-v2.1-rram"\nmodel = "constant-step"\n'
    for k, v in params.items():
        text += f'[parameters.{k}]\nvalue = {v}\nunit = "1"\nprovenance = "assumed"\nsource = "NeuroSim V2.1"\n'
    for field, (value, unit) in {
        "g_min": (1e6 / R_OFF, "uS"),
        "g_max": (1e6 / R_ON, "uS"),
        "pulse_energy": (pulse_energy * 1e15, "fJ"),
        "pulse_voltage": (V_WRITE, "V"),
        "pulse_width": (T_WRITE * 1e9, "ns"),
    }.items():
        text += f'[physical.{field}]\nvalue = {value!r}\nunit = "{unit}"\nprovenance = "assumed"\nsource = "NeuroSim V2.1 Param.cpp"\n'
    return text


def crosscheck() -> dict:
    ours, read, write = ledger(), neurosim_read(), neurosim_write()
    rows = [
        ("column wires (read)", ours["column_wires_j"], read["column_wires_j"]),
        ("row wires (read)", ours["row_wires_j"], read["row_wires_j"]),
        ("cells (read)", ours["cells_j"], None),
        ("ADC, 6 bits, 128 columns", ours["adc_j"], read["adc_j"]),
        ("cells (write, 2 pulses each)", ours["write_cells_j"], write["cells_j"]),
        ("selected input lines (write)", ours["write_row_wires_j"], write["row_wires_j"]),
        ("output lines (write)", ours["write_column_wires_j"], None),
    ]
    return {
        "subarray": f"{R} x {C} RRAM crossbar, NeuroSim V2.1 defaults (32 nm LSTP), every cell at G = {G_MID:.4g} S",
        "rows": [{"term": t, "ledger_j": a, "neurosim_j": b, "ratio": (a / b if b else None)} for t, a, b in rows],
        "neurosim_formulas_vs_printed": {
            "array_j": [read["array_j"], NEUROSIM_PRINTED["read_dynamic_energy_array_j"]],
            "adc_j": [read["adc_j"], NEUROSIM_PRINTED["multilevel_sense_amp_j"]],
            "write_array_j": [
                write["cells_j"] + write["row_wires_j"],
                NEUROSIM_PRINTED["write_dynamic_energy_array_j"],
            ],
        },
        "neurosim_printed": NEUROSIM_PRINTED,
        "differences": DIFFERENCES,
        "row_wire_factor": M * (VDD / V_READ) ** 2,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/crosscheck/neurosim_energy.json")
    args = ap.parse_args(argv)
    result = crosscheck()
    print(f"{'term':<32} {'ledger':>11} {'NeuroSim':>11} {'ratio':>7}")
    for row in result["rows"]:
        ns = f"{row['neurosim_j']:.4g}" if row["neurosim_j"] is not None else "-"
        ratio = f"{row['ratio']:.3g}" if row["ratio"] is not None else "-"
        print(f"{row['term']:<32} {row['ledger_j']:>11.4g} {ns:>11} {ratio:>7}")
    for k, (formula, printed) in result["neurosim_formulas_vs_printed"].items():
        print(f"NeuroSim {k}: formula {formula:.5g} J, its C++ printed {printed:.5g} J")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
