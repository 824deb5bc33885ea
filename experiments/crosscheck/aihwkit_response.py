"""Pulse responses of aihwkit's device presets, for the cross-check of analogsim's cards.

Runs in a Python with aihwkit 1.1.0 installed (never a dependency of analogsim; see
experiments/crosscheck/README.md). For each preset of ``aihwkit.simulator.presets.devices``:
2,000 devices (one tile of 2000 x 1), every weight set to the nominal ``w_min`` (clipped to each
device's bounds, as aihwkit's ``set_weights`` does), then ``N`` potentiating pulses and ``N``
depressing ones, one pulse per device per update (``desired_bl = 1``, no update or BL
management, learning rate 1: every device fires with probability 1, as aihwkit's
``utils.visualization.get_tile_for_plotting`` sets up). After each pulse the weights are read
with ``get_weights`` (the weight a read sees: write noise and the reference included), and the
mean and standard deviation over devices of the fraction ``(w - w_min) / (w_max - w_min)``
(nominal bounds) are recorded.

Usage: python aihwkit_response.py --out results/crosscheck/aihwkit_response.json [--devices 2000]
"""

import argparse
import json
import time

import numpy as np
import torch
from aihwkit.simulator.configs import SingleRPUConfig
from aihwkit.simulator.presets import devices as presets
from aihwkit.simulator.tiles import AnalogTile
from aihwkit_presets import PRESETS  # the same presets, in the same order (this folder)

MAX_PULSES = 2000  # per direction


def pulses_for(device) -> int:
    """Enough pulses to cross the nominal range once (at the nominal step), at most MAX_PULSES."""
    return int(min(MAX_PULSES, np.ceil((device.w_max - device.w_min) / device.dw_min)))


def response(name: str, devices: int, seed: int) -> dict:
    torch.manual_seed(seed)
    device = getattr(presets, name)()
    device.construction_seed = seed + 1
    config = SingleRPUConfig(device=device)
    config.update.desired_bl = 1
    config.update.update_bl_management = False
    config.update.update_management = False
    tile = AnalogTile(devices, 1, config)
    tile.set_learning_rate(1.0)
    tile.set_weights(torch.full((devices, 1), float(device.w_min)))
    n = pulses_for(device)
    x = -torch.ones(1, 1)
    d = torch.ones(1, devices)
    span = device.w_max - device.w_min
    means, stds = [], []
    for direction in [1.0] * n + [-1.0] * n:
        tile.update(x, d * direction)
        w = tile.get_weights()[0].numpy()[:, 0].astype(np.float64)
        frac = (w - device.w_min) / span
        means.append(float(frac.mean()))
        stds.append(float(frac.std()))
    return {"pulses": [n, -n], "fraction_mean": means, "fraction_std": stds}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--devices", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import aihwkit

    out = {"aihwkit": aihwkit.__version__, "torch": torch.__version__, "devices": args.devices, "presets": {}}
    for name in PRESETS:
        t = time.time()
        out["presets"][name] = response(name, args.devices, args.seed)
        print(f"{name}: {out['presets'][name]['pulses']} pulses, {time.time() - t:.1f} s", flush=True)
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
