"""Device parameters are array leaves of the layer's state: a sweep over dw_min runs in one
vmapped program, and a training loss can be differentiated with respect to a card parameter."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from analogsim import MLP, load_dataset, make_train_step
from analogsim.energy import host_counts
from analogsim.parallel import device_variants, make_sweep_step
from device_models import AbstractPulsedModel

DW_MIN = (0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.004)


def _data():
    ds = load_dataset("digits")
    return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)


def test_sweep_over_dw_min_in_one_program():
    """Eight dw_min values through AnalogLinear layers, one vmapped step: every variant fires
    about lr |x d| / dw_min pulses (DESIGN.md, pulse trains), so pulses * dw_min stays put
    while the pulse count falls 16-fold across the sweep."""
    x, y = _data()
    base = MLP((64, 32, 10), device="constant-step", rngs=nnx.Rngs(0))
    models = device_variants(base, [{"dw_min": v} for v in DW_MIN], key=jax.random.key(1))
    _, state, step = make_sweep_step(models, optax.sgd(0.05), 0.05)
    dw = np.asarray(state.rest["layers"][0]["device_model"].get_value().pulsed.dw_min)
    np.testing.assert_allclose(dw, DW_MIN, rtol=1e-6)
    idx, mask = jnp.arange(64), jnp.ones(64)
    state, metrics = step(state, x, y, idx, mask, jax.random.split(jax.random.key(2), len(DW_MIN)))
    assert metrics["loss"].shape == (len(DW_MIN),)
    pulses = []
    for v in range(len(DW_MIN)):
        counts = host_counts(jax.tree.map(lambda a, v=v: a[v], state.ledger))
        pulses.append(sum(counts[f"layers/{i}"]["pulses_up"] + counts[f"layers/{i}"]["pulses_down"] for i in (0, 1)))
    pulses = np.asarray(pulses, float)
    assert np.all(np.diff(pulses) < 0), pulses
    product = pulses * np.asarray(DW_MIN)
    # BL management caps a sample's train at 31 slots, so the smallest dw_min fires a little less
    assert product.max() / product.min() < 1.3, product


def test_grad_of_a_training_loss_with_respect_to_dw_min():
    """d(loss after one pulsed step)/d(dw_min): the step size and the pulse probabilities both
    depend on it; the gradient is finite, non-zero, and agrees in sign with a finite difference
    taken with the same keys."""
    x, y = _data()
    model = MLP((64, 16, 10), device="soft-bounds", rngs=nnx.Rngs(0))
    _, state0, step = make_train_step(model, optax.sgd(0.1), 0.5, jit=False)
    idx = jnp.arange(64)

    def with_dw_min(state, value):
        def set_model(path, leaf):
            if any(getattr(p, "key", None) == "device_model" for p in path):
                return dataclasses.replace(leaf, pulsed=dataclasses.replace(leaf.pulsed, dw_min=value))
            return leaf

        is_model = lambda a: isinstance(a, AbstractPulsedModel)  # noqa: E731
        rest = jax.tree_util.tree_map_with_path(set_model, state.rest, is_leaf=is_model)
        return state._replace(rest=rest)

    def loss_after(dw_min):
        s = with_dw_min(state0, dw_min)
        s, _ = step(s, x, y, idx, key=jax.random.key(0))
        _, metrics = step(s, x, y, idx + 64, key=jax.random.key(1))
        return metrics["loss"]

    g = float(jax.jit(jax.grad(loss_after))(jnp.float32(0.002)))
    assert np.isfinite(g) and g != 0.0
    h = 2e-4
    loss_jit = jax.jit(loss_after)  # one compile for both points (the eager step took a minute)
    fd = float((loss_jit(jnp.float32(0.002 + h)) - loss_jit(jnp.float32(0.002 - h))) / (2 * h))
    assert np.sign(g) == np.sign(fd), (g, fd)
