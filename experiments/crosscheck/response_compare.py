"""Compare analogsim's pulse responses of aihwkit's device presets with aihwkit's own.

Reads ``results/crosscheck/aihwkit_response.json`` (made by ``aihwkit_response.py`` in a Python
with aihwkit 1.1.0), simulates the same protocol with each preset's built-in card
(``device_models.simulate_response``: 2,000 devices, read weights starting at the nominal
``w_min``, N up then N down single pulses) and reports, per preset, the largest difference over
pulses of the mean and of the std of the fraction of the range. The bar: both within 0.02, or,
for the mean at a pulse where the two populations are so spread that 2,000 devices cannot
resolve 0.02 (PCM's first depressing pulse, which throws most devices from the top of the range
to the bottom), within four standard errors of the difference of two sample means
(4 sqrt((s_a^2 + s_b^2) / n)).

Usage: python experiments/crosscheck/response_compare.py [--out results/crosscheck/response_compare.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import numpy as np

from device_models import load_card, simulate_response

CARD_OF = {
    "ReRamESPresetDevice": "reram-es-gong2018",
    "ReRamSBPresetDevice": "reram-sb",
    "CapacitorPresetDevice": "capacitor-li2018",
    "EcRamPresetDevice": "ecram-tang2018",
    "EcRamMOPresetDevice": "ecram-mo-kim2019",
    "IdealizedPresetDevice": "idealized",
    "GokmenVlasovPresetDevice": "gokmen-vlasov-2016",
    "PCMPresetDevice": "pcm-nandakumar2020",
    "ReRamArrayOMPresetDevice": "reram-array-om-gong2022",
    "ReRamArrayHfO2PresetDevice": "reram-array-hfo2-gong2022",
}
TOLERANCE = 0.02


def compare(reference: dict, seed: int = 0) -> dict:
    rows = {}
    for preset, ref in reference["presets"].items():
        card = load_card(CARD_OF[preset])
        w_min = float(card.model.pulsed.w_min)
        r = simulate_response(
            card.model, ref["pulses"], devices=reference["devices"], start=w_min, key=jax.random.key(seed)
        )
        d_mean = np.abs(r.fraction_mean - np.asarray(ref["fraction_mean"]))
        d_std = np.abs(r.fraction_std - np.asarray(ref["fraction_std"]))
        se = np.sqrt((r.fraction_std**2 + np.asarray(ref["fraction_std"]) ** 2) / reference["devices"])
        mean_ok = bool(np.all(d_mean <= np.maximum(TOLERANCE, 4 * se)))
        rows[preset] = {
            "card": CARD_OF[preset],
            "pulses": ref["pulses"],
            "max_abs_diff_mean": float(d_mean.max()),
            "max_abs_diff_std": float(d_std.max()),
            "pulse_of_max_mean": int(d_mean.argmax()),
            "pulse_of_max_std": int(d_std.argmax()),
            "standard_error_at_max_mean": float(se[d_mean.argmax()]),
            "within_tolerance": bool(mean_ok and d_std.max() <= TOLERANCE),
        }
        print(
            f"{preset:28s} {CARD_OF[preset]:28s} mean {d_mean.max():.4f} (pulse {d_mean.argmax()})  "
            f"(se {se[d_mean.argmax()]:.4f})  std {d_std.max():.4f} (pulse {d_std.argmax()})  "
            f"{'ok' if rows[preset]['within_tolerance'] else 'OFF'}"
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default="results/crosscheck/aihwkit_response.json")
    ap.add_argument("--out", default="results/crosscheck/response_compare.json")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    reference = json.loads(Path(args.reference).read_text())
    rows = compare(reference, args.seed)
    out = {"aihwkit": reference["aihwkit"], "tolerance": TOLERANCE, "devices": reference["devices"], "presets": rows}
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
