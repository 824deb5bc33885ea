"""Dump the field values of aihwkit's device presets to JSON (run with aihwkit 1.1.0 installed).

Usage: python aihwkit_presets.py --out results/crosscheck/aihwkit_presets.json
``preset_cards.py`` then writes analogsim's built-in cards from that file.
"""

import argparse
import dataclasses
import json

from aihwkit.simulator.presets import devices

PRESETS = [
    "ReRamESPresetDevice",
    "ReRamSBPresetDevice",
    "CapacitorPresetDevice",
    "EcRamPresetDevice",
    "EcRamMOPresetDevice",
    "IdealizedPresetDevice",
    "GokmenVlasovPresetDevice",
    "PCMPresetDevice",
    "ReRamArrayOMPresetDevice",
    "ReRamArrayHfO2PresetDevice",
]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = {}
    for name in PRESETS:
        dev = getattr(devices, name)()
        fields = {f.name: getattr(dev, f.name) for f in dataclasses.fields(dev)}
        out[name] = {
            "class": type(dev).__mro__[1].__name__,
            **{k: v for k, v in fields.items() if isinstance(v, bool | int | float | list)},
        }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
