"""Synthetic pulse measurements with KNOWN parameters, to test the fit and its warnings.

``synthetic_csv`` simulates ``n_devices`` devices of one model, each with its own ``dw_min``
drawn as :math:`dw_{min} (1 + \\sigma_{d2d} \\xi)`, :math:`\\xi \\sim N(0, 1)` (the
``dw_min_dtod`` convention of the cards), driven by blocks of pulses; odd devices get the
blocks with the opposite polarity (they start with depression). Cycle-to-cycle noise is the
model's own (``apply_pulses`` with a key, ``dw_min_std``); read noise is white Gaussian, added
to every reading. Conductances follow the cards' linear map from ``[w_min, w_max]`` onto
``[g_min_s, g_max_s]``. The file has the public layout of ``device_models.measurements``
(``device, pulse_number, polarity, conductance_s``), so it is read by ``load_measurement``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..pulsed import AbstractPulsedModel, apply_pulses, nominal_crosspoints


def _one_device(model: AbstractPulsedModel, w0: float, pulses: np.ndarray, c2c: float, key) -> np.ndarray:
    """States (weight units) after each pulse of one device; the first reading is ``w0``."""
    with jax.enable_x64(True):
        m64 = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), model)
        cp = nominal_crosspoints(m64, (), dtype=jnp.float64)
        cp = dataclasses.replace(cp, dw_min_std=jnp.asarray(c2c, jnp.float64))
        keys = jax.random.split(key, len(pulses))

        def body(w, inp):
            p, k = inp
            w = apply_pulses(m64, cp, w, p, key=k if c2c > 0 else None)
            return w, w

        _, ws = jax.lax.scan(body, jnp.asarray(w0, jnp.float64), (jnp.asarray(pulses[1:]), keys[1:]))
        return np.concatenate([[w0], np.asarray(ws)])


def synthetic_csv(
    path: str | Path,
    model: AbstractPulsedModel,
    *,
    key: jax.Array,
    n_devices: int = 4,
    blocks: tuple[int, ...] = (150, -150, 150),
    dw_min_dtod: float = 0.0,
    c2c: float = 0.0,
    read_noise_s: float = 0.0,
    g_min_s: float = 1e-6,
    g_max_s: float = 11e-6,
    w0: float = 0.0,
) -> dict[str, np.ndarray]:
    """Write a synthetic measurement to ``path``; returns the per-device truth (``dw_min``, ``first_polarity``).

    Args:
      path: the CSV to write.
      model: the device model (its ``pulsed.dw_min``, ``up_down``, ``w_max``, ``w_min`` and shape).
      key: JAX random key (same key, same file).
      n_devices: devices in the file; odd ones receive ``blocks`` with the signs flipped.
      blocks: pulse blocks, +n potentiating, -n depressing (one reading after each pulse).
      dw_min_dtod: relative device-to-device spread of ``dw_min`` (std/mean).
      c2c: cycle-to-cycle noise ``dw_min_std`` (relative to each step).
      read_noise_s: white read noise (siemens, standard deviation).
      g_min_s: conductance at ``w_min`` (siemens).
      g_max_s: conductance at ``w_max`` (siemens).
      w0: every device's first state (weight units).
    """
    if n_devices < 1:
        raise ValueError(f"n_devices: value {n_devices} is not allowed; allowed: >= 1")
    pulses = np.concatenate([np.full(abs(b), np.sign(b), np.int8) for b in blocks])
    k_dtod, k_c2c, k_read = jax.random.split(key, 3)
    xi = np.asarray(jax.random.normal(k_dtod, (n_devices,)))
    p = model.pulsed
    w_lo, w_hi = float(p.w_min), float(p.w_max)
    dws, lines = [], ["device,pulse_number,polarity,conductance_s"]
    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_read)).ravel().tolist())
    for d, k in enumerate(jax.random.split(k_c2c, n_devices)):
        dw = float(p.dw_min) * (1.0 + dw_min_dtod * xi[d])
        dws.append(dw)
        pol = pulses if d % 2 == 0 else -pulses
        dev = dataclasses.replace(model, pulsed=dataclasses.replace(p, dw_min=dw))
        w = _one_device(dev, w0, pol, c2c, k)
        g = g_min_s + (w - w_lo) / (w_hi - w_lo) * (g_max_s - g_min_s)
        g = np.maximum(g + read_noise_s * rng.standard_normal(g.size), 0.0)
        lines += [f"D{d},{i + 1},{int(q)},{float(x)!r}" for i, (q, x) in enumerate(zip(pol, g, strict=True))]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"dw_min": np.asarray(dws), "first_polarity": np.array([1 if d % 2 == 0 else -1 for d in range(n_devices)])}
