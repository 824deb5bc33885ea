"""The lookup-table model: sampling reproduces the table's moments; the measured ENODe card."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from device_models import PulsedParams, apply_pulses, load_card, nominal_crosspoints
from device_models.lookup_table import LookupTable

ENODE = Path(__file__).resolve().parents[1] / "device_models" / "cards" / "enode-lut.toml"


def toy(std=0.0):
    return LookupTable(
        PulsedParams(dw_min=0.01, dw_min_std=std, w_max=1.0, w_min=-1.0),
        cdf=(0.0, 0.5, 1.0),
        nodes=(-1.0, 1.0),
        table_up=(0.0, 0.0, 1.0, 0.5, 2.0, 1.0),
        table_down=(-2.0, -2.0, -1.0, -1.0, 0.0, 0.0),
    )


@pytest.mark.parametrize("std", [0.0, 0.3])
@pytest.mark.parametrize("w0", [-0.5, 0.0, 0.5])
def test_sampled_moments_match_the_table(std, w0):
    model = toy(std)
    n = 200_000
    cp = nominal_crosspoints(model, (n,))
    w = jnp.full((n,), w0)
    for up, sign in ((True, 1), (False, -1)):
        dw = apply_pulses(model, cp, w, jnp.full((n,), sign, jnp.int8), key=jax.random.key(int(10 * w0) + sign + 5)) - w
        mean = float((model.step_up(cp, w) if up else -model.step_down(cp, w))[0])
        var = float(model.step_variance(cp, w, up)[0])
        assert float(jnp.mean(dw)) == pytest.approx(mean, abs=5 * np.sqrt(var / n) + 1e-7)
        assert float(jnp.var(dw)) == pytest.approx(var, rel=0.03)


def test_toy_table_by_hand():
    model = toy()
    cp = nominal_crosspoints(model, (1,))
    # at w = 0 the up column is the average of the two node columns: quantiles (0, 0.75, 1.5) x 0.01
    assert float(model.step_up(cp, jnp.zeros(1))[0]) == pytest.approx(
        0.01 * (0.5 * (0 + 0.75) / 2 + 0.5 * (0.75 + 1.5) / 2), rel=1e-6
    )


def test_bad_table_shape_is_rejected():
    with pytest.raises(ValueError, match="table_up"):
        LookupTable(PulsedParams(), cdf=(0.0, 1.0), nodes=(-1.0, 0.0, 1.0), table_up=(1.0,) * 4, table_down=(-1.0,) * 6)
    with pytest.raises(ValueError, match="cdf"):
        LookupTable(PulsedParams(), cdf=(0.1, 1.0), nodes=(-1.0, 1.0))


def test_enode_card_follows_its_measured_mean_curve():
    card = load_card(ENODE)
    model = card.model
    assert card.model_name == "lookup-table" and model.pulsed.dw_min_std == 0.0
    devices = 4000
    cp = nominal_crosspoints(model, (devices,))
    w = jnp.full((devices,), -1.0)
    expect = jnp.full((1,), -1.0)
    cp1 = nominal_crosspoints(model, (1,))
    key = jax.random.key(0)
    for i in range(60):
        w = apply_pulses(model, cp, w, jnp.ones((devices,), jnp.int8), key=jax.random.fold_in(key, i))
        expect = jnp.clip(expect + model.step_up(cp1, expect), -1.0, 1.0)
    # the mean over devices tracks the table's mean-step curve (first order; the spread is small)
    assert float(jnp.mean(w)) == pytest.approx(float(expect[0]), abs=0.03)
    assert float(jnp.mean(w)) > -0.3  # ~60 up pulses move a measured ENODe well up its range
    # measured depression steps are largest mid-range, smallest at the low end (the tables)
    lo = float(model.step_down(cp1, jnp.array([-0.95]))[0])
    mid = float(model.step_down(cp1, jnp.array([0.3]))[0])
    assert mid > 2 * lo
