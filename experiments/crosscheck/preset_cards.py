"""Write analogsim's built-in cards of aihwkit's device presets from ``aihwkit_presets.json``.

Every field of an aihwkit preset that the card's model knows is written with exactly aihwkit's
value. An entry already in the card keeps its provenance and source when its value is unchanged;
a new or changed entry cites the preset (``assumed``: aihwkit's chosen value, unless the card
marks it otherwise). Descriptions are rewritten to say what is still not modelled.

Usage: python experiments/crosscheck/preset_cards.py [--presets results/crosscheck/aihwkit_presets.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device_models.cards import _PULSED_CHECKS, card_toml
from device_models.registry import MODELS

CARDS = Path(__file__).resolve().parents[2] / "device_models" / "cards"
SOURCE = "aihwkit 1.1.0 src/aihwkit/simulator/presets/devices.py, {preset}.{field}"
# preset -> (card, model, reference, description)
TARGETS = {
    "ReRamESPresetDevice": ("reram-es-gong2018", "exp-step", "Gong et al., Nat. Commun. 9, 2102 (2018)",
                            "HfO2 ReRAM (aihwkit ReRamESPresetDevice, after Gong et al., Nat. Commun. 2018): exponential step, strong up/down asymmetry, cycle-to-cycle noise 5 and write noise 75 (x dw_min)"),
    "ReRamSBPresetDevice": ("reram-sb", "soft-bounds-reference", "Gong et al., Nat. Commun. 9, 2102 (2018)",
                            "HfO2 ReRAM, soft-bounds loose fit (aihwkit ReRamSBPresetDevice, after Gong et al., Nat. Commun. 2018): additive cycle-to-cycle noise 3.75 and write noise 56 (x dw_min)"),
    "CapacitorPresetDevice": ("capacitor-li2018", "linear-step", "Li et al., VLSI 2018",
                              "Capacitor cell (aihwkit CapacitorPresetDevice, after Li et al., VLSI 2018): nearly constant step of 0.005 with a 5% linear slope, additive noise, leakage with a lifetime of 1e6 mini-batches"),
    "EcRamPresetDevice": ("ecram-tang2018", "linear-step", "Tang et al., IEDM 2018", None),
    "EcRamMOPresetDevice": ("ecram-mo-kim2019", "linear-step", "Kim et al., IEDM 2019", None),
    "IdealizedPresetDevice": ("idealized", "constant-step", "Gokmen & Vlasov, Front. Neurosci. 2016", None),
    "GokmenVlasovPresetDevice": ("gokmen-vlasov-2016", "constant-step", "Gokmen & Vlasov, Front. Neurosci. 2016", None),
    "PCMPresetDevice": ("pcm-nandakumar2020", "exp-step", "Nandakumar et al., Front. Neurosci. 2020",
                        "Ge2Sb2Te5 phase-change memory (aihwkit PCMPresetDevice, after Nandakumar et al., Front. Neurosci. 2020): one-directional exponential step on [0, 2] with state-dependent cycle-to-cycle noise, reset to 0.01 +- 0.02; used in pairs with refresh (--algorithm sgd-pair)"),
    "ReRamArrayOMPresetDevice": ("reram-array-om-gong2022", "soft-bounds-reference", "Gong & Rasch et al., IEDM 2022 (optimized-material ReRAM array)",
                                 "ReRAM array, optimized material (aihwkit ReRamArrayOMPresetDevice, fit to Gong & Rasch et al., IEDM 2022): soft bounds with log-normal step spread, additive noise, write noise, read against a reference at each device's symmetry point (5% reference error); corrupt devices off by default, as in aihwkit"),
    "ReRamArrayHfO2PresetDevice": ("reram-array-hfo2-gong2022", "soft-bounds-reference", "Gong & Rasch et al., IEDM 2022 (baseline HfO2 ReRAM array)",
                                   "ReRAM array, baseline HfO2 (aihwkit ReRamArrayHfO2PresetDevice, fit to Gong & Rasch et al., IEDM 2022): soft bounds with log-normal step spread, additive noise, write noise, read against a reference at each device's symmetry point (5% reference error); corrupt devices off by default, as in aihwkit"),
}  # fmt: skip
FITTED = {"dw_min", "up_down", "w_max", "w_min", "gamma_up", "gamma_down", "A_up", "A_down", "a", "b"}
ARRAY_FITTED = {"dw_min", "dw_min_dtod", "w_max_dtod", "w_min_dtod", "dw_min_std", "write_noise_std"}


def write_card(preset: str, values: dict) -> Path:
    card, model, paper, description = TARGETS[preset]
    path = CARDS / f"{card}.toml"
    doc = {"name": card, "model": model, "parameters": {}}
    if path.exists():
        import tomllib

        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    doc["model"] = model
    if description:
        doc["description"] = description
    params = doc.setdefault("parameters", {})
    allowed = list(_PULSED_CHECKS) + list(MODELS[model].parameter_rules)
    for field in allowed:
        if field not in values:
            continue
        value = values[field]
        old = params.get(field)
        if old is not None and old["value"] == value:
            continue
        fitted = field in (ARRAY_FITTED | FITTED if "Array" in preset else FITTED)
        params[field] = {
            "value": value,
            "unit": "1",
            "provenance": "fitted" if fitted else "assumed",
            "source": SOURCE.format(preset=preset, field=field)
            + (f"; fit to {paper}" if fitted else "; not stated as fitted: aihwkit's chosen value"),
        }
    for entry in params.values():  # notes that said what was not modelled are out of date
        note = entry.get("note", "")
        if "not modelled" in note or "multiplicative" in note:
            del entry["note"]
    doc["description"] = doc.get("description", "").replace(" (gamma_dtod 0.05 not modelled)", "")
    path.write_text(card_toml(doc), encoding="utf-8")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="results/crosscheck/aihwkit_presets.json")
    args = ap.parse_args()
    presets = json.loads(Path(args.presets).read_text())
    for preset, values in presets.items():
        print(write_card(preset, values))


if __name__ == "__main__":
    main()
