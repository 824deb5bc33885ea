"""Write a small, measured-style pulse CSV from the protonic WO3 model, for the fitting tutorial.

The data are *synthetic*: a known protonic device (the ``wo3-psg-onen2022`` card's physics
with a few values changed so the fit has something to find) receives pulse trains at three
gate voltages and two pulse widths; every pulse has cycle-to-cycle noise and every reading
has read noise, as a probe station would see. Because the truth is known, the tutorial
(``notebooks/04_fit_a_device.ipynb``) can check whether the fit finds it and whether
the reported standard errors are honest.

Layout (DESIGN.md, ``analogsim fit``; ``device_models.measurements``): one row per reading,
``cycle`` (one sweep per operating point, replayed from its own first reading),
``pulse_number`` (1, 2, ... within the sweep), ``polarity`` (+1/-1, the pulse just applied),
``conductance_us`` (the reading, microsiemens, 4 decimals as an instrument would log it),
``voltage_v`` (signed gate voltage of that pulse) and ``width_s``.

Beside the CSV it writes ``<stem>.truth.json``: the parameters the data were drawn from.

Run (nothing is overwritten without ``--force``)::

    python experiments/data/make_protonic_demo_csv.py --out notebooks/data/protonic_demo_pulses.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import device_models
from device_models import apply_pulses, conductance_s, field_voltage_v, load_card, nominal_crosspoints, step_size

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "notebooks" / "data" / "protonic_demo_pulses.csv"
VOLTAGES_V = (8.0, 9.0, 10.0)  # gate pulse magnitudes (V)
WIDTHS_S = (5e-9, 10e-9)  # gate pulse widths (s)
BLOCKS = (+200, -300, +200)  # pulses per block of one sweep: potentiate, depress, potentiate
START_W = -0.6  # every sweep starts from this state (weight units), as after a reset pulse train
# The truth: the wo3-psg-onen2022 card's protonic physics with these changes (dw_min and the
# width exponent differ from the card, so the fit has to find them; up_down makes up and down
# steps differ by 5%).
CHANGES = {"dw_min": 0.004, "up_down": 0.05, "width_exponent": 0.8}
C2C = 0.2  # cycle-to-cycle spread of each step (the card's dw_min_std)
SEED = 2022


def truth_model() -> device_models.Protonic:
    """The protonic model the data are drawn from (operating pulse: the card's 10 V, 5 ns)."""
    card = load_card("wo3-psg-onen2022")
    pulsed = dataclasses.replace(card.model.pulsed, dw_min=CHANGES["dw_min"], up_down=CHANGES["up_down"])
    return dataclasses.replace(card.model, pulsed=pulsed, width_exponent=CHANGES["width_exponent"])


def sweep(model, voltage_v: float, width_s: float, *, key: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Polarity of each pulse and the true state after it, for one sweep at (voltage_v, width_s).

    Row 0 is the starting state (its polarity is that of the first pulse, as the CSV layout asks).
    """
    pulses = np.concatenate([np.full(abs(b), np.sign(b), np.int8) for b in BLOCKS])
    pulses = np.concatenate([pulses[:1], pulses])
    with jax.enable_x64(True):
        mdl = dataclasses.replace(model, voltage_up_v=voltage_v, voltage_down_v=voltage_v, width_s=width_s)
        mdl = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), mdl)
        cp = nominal_crosspoints(mdl, (), dtype=jnp.float64)  # one device: no device-to-device draw
        cp = dataclasses.replace(cp, dw_min_std=jnp.asarray(C2C, jnp.float64))
        keys = jax.random.split(key, len(pulses) - 1)

        def body(w, inp):
            p, k = inp
            w = apply_pulses(mdl, cp, w, p, key=k)
            return w, w

        _, ws = jax.lax.scan(body, jnp.asarray(START_W, jnp.float64), (jnp.asarray(pulses[1:]), keys))
        states = np.concatenate([[START_W], np.asarray(ws)])
    return pulses, states


def make_rows(model, card) -> list[str]:
    """CSV lines (header first) of all sweeps, readings with read noise."""
    g_min, g_max = card.physical["g_min_s"], card.physical["g_max_s"]
    read_std_w = float(card.retention.read_noise_std)  # the card's read noise (weight units)
    read_std_s = read_std_w * (g_max - g_min) / float(model.pulsed.w_max - model.pulsed.w_min)
    lines = ["cycle,pulse_number,polarity,conductance_us,voltage_v,width_s"]
    key = jax.random.key(SEED)
    for v in VOLTAGES_V:
        for t in WIDTHS_S:
            key, k_sweep, k_read = jax.random.split(key, 3)
            pulses, w = sweep(model, v, t, key=k_sweep)
            g = np.asarray(conductance_s(card, w))
            with jax.enable_x64(True):
                g = g + read_std_s * np.asarray(jax.random.normal(k_read, g.shape, jnp.float64))
            label = f"{v:g}V-{t * 1e9:g}ns"
            for i, (p, gi) in enumerate(zip(pulses, g, strict=True)):
                lines.append(f"{label},{i + 1},{int(p)},{gi * 1e6:.4f},{v * p:g},{t:g}")
    return lines


def truth_summary(model, card) -> dict:
    """What the data were drawn from, in the fit's terms (reference pulse: lower medians, 9 V and 5 ns)."""
    ref_v = sorted(VOLTAGES_V)[(len(VOLTAGES_V) - 1) // 2]
    ref_t = sorted(WIDTHS_S)[(len(WIDTHS_S) - 1) // 2]
    g_min, g_max = card.physical["g_min_s"], card.physical["g_max_s"]
    read_std_w = float(card.retention.read_noise_std)
    return {
        "note": "synthetic data written by experiments/data/make_protonic_demo_csv.py; not a measurement",
        "model": "protonic",
        "based_on_card": card.name,
        "changed_from_card": CHANGES,
        "dw_min_at_card_pulse": CHANGES["dw_min"],
        "card_pulse": {"voltage_v": float(model.voltage_up_v), "width_s": float(model.width_s)},
        "fit_reference_pulse": {"voltage_v": ref_v, "width_s": ref_t},
        "dw_min_at_fit_reference": float(CHANGES["dw_min"] * step_size(model, ref_v, ref_t)),
        "up_down": CHANGES["up_down"],
        "v0_v": float(field_voltage_v(model)),
        "width_exponent": CHANGES["width_exponent"],
        "saturation_up": float(model.saturation_up),
        "saturation_down": float(model.saturation_down),
        "g_min_s": g_min,
        "g_max_s": g_max,
        "dw_min_std": C2C,
        "read_noise_std_s": read_std_w * (g_max - g_min) / float(model.pulsed.w_max - model.pulsed.w_min),
        "voltages_v": list(VOLTAGES_V),
        "widths_s": list(WIDTHS_S),
        "blocks": list(BLOCKS),
        "start_w": START_W,
        "seed": SEED,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="CSV to write (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    truth_path = out.with_name(out.stem + ".truth.json")
    for p in (out, truth_path):
        if p.exists() and not args.force:
            print(f"error: {p} exists; pass --force to overwrite it", file=sys.stderr)
            return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    card = load_card("wo3-psg-onen2022")
    model = truth_model()
    lines = make_rows(model, card)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    truth_path.write_text(json.dumps(truth_summary(model, card), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(lines) - 1} rows, {out.stat().st_size / 1024:.0f} KB) and {truth_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
