"""The literal slot-by-slot ``exact`` update, the reference the ``exact`` rung is tested
against (``analogsim.pulsed_update``; ``tests/test_pulsed_update.py``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from device_models import apply_pulses

from .probabilities import pulse_probabilities
from .settings import PulseCounts

__all__: list[str] = []  # private to the package: a test reference, not part of the API


def _slot_by_slot(model, cp, w, x, d, lr, up, key):
    """Reference ``exact`` update, literally slot by slot: every slot draws its rows and columns
    and applies a pulse matrix to the whole array (about ``BL`` full-array passes per sample).
    Kept for the tests that check ``pulsed_update``'s ``exact`` rung against it (equal in
    distribution, see the module docstring)."""
    keys = jax.random.split(key, x.shape[0])

    def sample(carry, inputs):
        w, n_up, n_down = carry
        xs, ds, ks = inputs
        p, q, bl = pulse_probabilities(xs, ds, lr, model.pulsed.dw_min, up)
        # +1: potentiate (raise w) where x_j d_i < 0.
        direction = (-jnp.sign(ds)[:, None] * jnp.sign(xs)[None, :]).astype(jnp.int8)

        def slot(t, carry):
            w, n_up, n_down = carry
            k_row, k_col, k_noise = jax.random.split(jax.random.fold_in(ks, t), 3)
            rows = jax.random.bernoulli(k_row, p)
            cols = jax.random.bernoulli(k_col, q)
            pulses = jnp.where(cols[:, None] & rows[None, :], direction, jnp.int8(0))
            w = apply_pulses(model, cp, w, pulses, key=k_noise)
            n_up = n_up + jnp.sum(pulses > 0, dtype=jnp.int32)
            n_down = n_down + jnp.sum(pulses < 0, dtype=jnp.int32)
            return w, n_up, n_down

        return jax.lax.fori_loop(0, bl, slot, (w, n_up, n_down)), None

    zero = jnp.zeros((), jnp.int32)
    (w, n_up, n_down), _ = jax.lax.scan(sample, (w, zero, zero), (x, d, keys))
    return w, PulseCounts(up=n_up, down=n_down)
