"""Property-based tests of every registered device model (hypothesis).

Random cards within the loader's allowed ranges and random pulse sequences; each example
applies 400 slots to a 50 x 50 array (about 670,000 pulses), so the test as a whole fires
at least 5 x 2 x 670,000 (about 6.7 million) pulses per model.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_models import MODELS, PulsedParams, apply_pulses, draw_crosspoints

SHAPE = (50, 50)
SLOTS = 400

cards = st.fixed_dictionaries(
    {
        "dw_min": st.floats(1e-4, 0.2),
        "dw_min_dtod": st.floats(0.0, 0.5),
        "dw_min_std": st.floats(0.0, 0.5),
        "up_down": st.floats(-0.9, 0.9),
        "up_down_dtod": st.floats(0.0, 0.1),
        "w_max": st.floats(0.05, 2.0),
        "w_min": st.floats(-2.0, -0.05),
        "w_max_dtod": st.floats(0.0, 0.5),
        "w_min_dtod": st.floats(0.0, 0.5),
    }
)


def _run(model, cp, w0, key, noisy):
    """Apply SLOTS random slots; return final states and the per-slot property violations."""

    def slot(w, k):
        kp, kn = jax.random.split(k)
        pulses = jax.random.randint(kp, SHAPE, -1, 2).astype(jnp.int8)
        new = apply_pulses(model, cp, w, pulses, key=kn if noisy else None)
        out_of_bounds = jnp.sum((new > cp.b_max) | (new < cp.b_min))
        non_finite = jnp.sum(~jnp.isfinite(new))
        unchanged_broken = jnp.sum((pulses == 0) & (new != w))
        wrong_way = jnp.sum(((pulses > 0) & (new < w)) | ((pulses < 0) & (new > w)))
        fired = jnp.sum(pulses != 0)
        return new, jnp.stack([out_of_bounds, non_finite, unchanged_broken, wrong_way, fired])

    w, stats = jax.lax.scan(slot, w0, jax.random.split(key, SLOTS))
    return w, jnp.sum(stats, axis=0)


_run_jit = jax.jit(_run, static_argnums=(4,))
FIRED = {name: 0 for name in MODELS}


@pytest.mark.parametrize("name", sorted(MODELS))
@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(card=cards, seed=st.integers(0, 2**31 - 1))
def test_random_cards_and_pulses_keep_every_invariant(name, card, seed):
    model = MODELS[name](pulsed=PulsedParams(**{k: jnp.float32(v) for k, v in card.items()}))
    k_dev, k_w, k_free, k_run = jax.random.split(jax.random.key(seed), 4)
    k_again = jax.random.clone(k_run)  # deliberate reuse: the determinism check
    cp = draw_crosspoints(model, SHAPE, key=k_dev)
    w0 = jax.random.uniform(k_w, SHAPE, minval=cp.b_min, maxval=cp.b_max)

    # Noise-free: up pulses never lower, down pulses never raise the state.
    _, stats = _run_jit(model, cp, w0, k_free, False)
    oob, nonfinite, unchanged, wrong, fired = (int(v) for v in stats)
    assert (oob, nonfinite, unchanged, wrong) == (0, 0, 0, 0)

    # Noisy: bounds, finiteness, no-pulse invariance; the same key gives the same result.
    w_a, stats = _run_jit(model, cp, w0, k_run, True)
    oob, nonfinite, unchanged, _, fired_noisy = (int(v) for v in stats)
    assert (oob, nonfinite, unchanged) == (0, 0, 0)
    w_b, _ = _run_jit(model, cp, w0, k_again, True)
    np.testing.assert_array_equal(np.asarray(w_a), np.asarray(w_b))
    FIRED[name] += fired + fired_noisy


@pytest.mark.parametrize("name", sorted(MODELS))
def test_property_run_fired_a_million_pulses(name):
    """Guards the claim in the module docstring (runs after the property test above)."""
    if FIRED[name] == 0:
        pytest.skip("run together with test_random_cards_and_pulses_keep_every_invariant")
    assert FIRED[name] >= 1_000_000
