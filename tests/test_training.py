"""Training end to end: determinism, the ledger's consistency, and the layer in a user's model."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from analogsim import AnalogLinear, TrainConfig, counters, load_dataset, make_train_step, train
from analogsim.energy import host_counts


@pytest.fixture(scope="module")
def small_digits():
    ds = load_dataset("digits")
    import dataclasses

    return dataclasses.replace(ds, x_train=ds.x_train[:256], y_train=ds.y_train[:256])


def small_config(**kw):
    base = dict(epochs=2, batch_size=32, hidden=(16,), device="constant-step", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_same_seed_same_result_and_other_seed_differs(small_digits):
    a = train(small_config(), progress=False, dataset=small_digits)
    b = train(small_config(), progress=False, dataset=small_digits)
    c = train(small_config(seed=4), progress=False, dataset=small_digits)
    assert a["epoch_test_accuracy"] == b["epoch_test_accuracy"]
    assert a["energy_report"]["counts"] == b["energy_report"]["counts"]
    assert a["energy_report"]["counts"] != c["energy_report"]["counts"]


def test_analog_training_learns_and_ledger_adds_up(small_digits):
    res = train(small_config(epochs=3, lr=1.0), progress=False, dataset=small_digits)
    assert res["epoch_test_accuracy"][-1] > 0.5  # chance is 0.1
    rep = res["energy_report"]
    n = 256 * 3
    counts = rep["counts_by_layer"]
    # forward reads: one per real sample per layer unless bound management re-reads
    assert counts["layers/0"]["array_reads"] >= n
    # the input layer's error is never read back: its reads are forward only
    assert counts["layers/0"]["dac_conversions"] == counts["layers/0"]["array_reads"] * 64
    assert counts["layers/0"]["crosspoint_reads"] == counts["layers/0"]["array_reads"] * 64 * 16
    assert counts["layers/1"]["pulses_up"] > 0 and counts["layers/1"]["pulses_down"] > 0
    # every joule is recomputable from counts and prices
    total = sum(
        counts[layer][kind] * rep["prices"][layer][kind]["joules"]
        for layer in counts
        for kind in counts[layer]
        if kind != "array_reads"
    )
    assert rep["total_j"] == pytest.approx(total, rel=1e-12)
    assert sum(e["total_j"] for e in rep["per_epoch"]) == pytest.approx(rep["total_j"], rel=1e-9)
    assert rep["digital_baseline_j"] > 0 and rep["co2e_kg"] > 0


def test_digital_baseline_trains(small_digits):
    res = train(small_config(algorithm="digital", epochs=3, lr=1.0), progress=False, dataset=small_digits)
    assert res["epoch_test_accuracy"][-1] > 0.5
    kinds = res["energy_j"]["by_kind"]
    assert kinds["write"] == kinds["read"] == kinds["dac"] == kinds["adc"] == kinds["wire"] == 0.0
    # 64-16-10 MLP, 256 samples x 3 epochs: per sample forward, error (not for the first layer, which
    # reads the input) and gradient in*out + out per layer, 2 * 16 activation ops and 5 * 10 for the
    # softmax cross-entropy; per step the optimizer's in*out + out per layer (8 steps of 32 per epoch)
    per_sample = (2 * 64 * 16 + 16) + (3 * 16 * 10 + 10) + 2 * 16 + 5 * 10
    per_step = (64 * 16 + 16) + (16 * 10 + 10)
    ops = 256 * 3 * per_sample + 8 * 3 * per_step
    # memory: each pass reads its input and writes its output per sample; weights read per pass and written once per step
    words = 256 * 3 * (2 * (64 + 16) + 3 * (16 + 10)) + 8 * 3 * (3 * 64 * 16 + 4 * 16 * 10)
    rep = res["energy_report"]
    assert rep["counts"]["digital_ops"] == ops and rep["counts"]["memory_words"] == words
    assert kinds["digital"] == pytest.approx(ops * 4.6e-12, rel=1e-9)
    assert kinds["memory"] == pytest.approx(words * 5e-12, rel=1e-9)
    # a digital network on the chip's digital unit is the accelerator baseline: ratio 1
    assert rep["digital_baseline"]["name"] == "accelerator"
    assert rep["digital_over_analog"] == pytest.approx(1.0, rel=1e-12)


def test_exact_counters_past_32_and_53_bits():
    c = counters.zeros()
    step = jnp.uint32(2**32 - 1)
    add = jax.jit(counters.add)
    for _ in range(3):
        c = add(c, step)
    assert counters.to_int(c) == 3 * (2**32 - 1)
    big = jnp.array([2**22, 5], jnp.uint32)  # 2**54 + 5: beyond float64's exact integers
    assert counters.to_int(add(big, jnp.uint32(1))) == 2**54 + 6


class UserModel(nnx.Module):
    """What the README shows: an analog layer in your own nnx model."""

    def __init__(self, rngs):
        self.hidden = AnalogLinear(64, 32, device="soft-bounds", rngs=rngs)
        self.out = nnx.Linear(32, 10, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.hidden(x)))


def test_user_model_mixes_analog_and_digital_layers(small_digits):
    model = UserModel(nnx.Rngs(0))
    graphdef, state, step = make_train_step(model, optax.sgd(0.1), lr=0.1)
    w0 = np.asarray(state.analog["hidden"]["weight"].get_value())
    x = jnp.asarray(small_digits.x_train)
    y = jnp.asarray(small_digits.y_train)
    losses = []
    for i in range(16):
        idx = np.arange(i * 16, (i + 1) * 16) % 256
        state, metrics = step(state, x, y, idx, np.ones(16, np.float32), jax.random.key(i))
        losses.append(float(metrics["loss"]))
    w1 = np.asarray(state.analog["hidden"]["weight"].get_value())
    assert not np.array_equal(w0, w1)  # the analog weights moved by pulses
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert host_counts(state.ledger)["hidden"]["pulses_up"] > 0


def test_non_finite_loss_stops_with_step_and_layer(small_digits):
    import dataclasses

    from analogsim import TrainingError

    bad = dataclasses.replace(small_digits, x_train=small_digits.x_train * 1e20)
    with pytest.raises(
        TrainingError, match=r"epoch 1, step \d+: the loss is (nan|inf) \(non-finite: digital parameter"
    ):
        train(small_config(algorithm="digital", lr=1e38, epochs=1), progress=False, dataset=bad)


@pytest.mark.slow  # 19 s; resuming with another steps_per_call stays bit-identical in the default set (test_crash_safety)
def test_steps_per_call_does_not_change_the_result(small_digits):
    """Several steps per compiled call (a scan, with a shorter last chunk: 8 steps as 3 + 3 + 2)
    give the run of one step per call: the same keys, so the same pulses and accuracies."""
    one = train(small_config(), progress=False, dataset=small_digits)
    three = train(small_config(steps_per_call=3), progress=False, dataset=small_digits)
    assert three["epoch_test_accuracy"] == one["epoch_test_accuracy"]
    assert three["energy_report"]["counts"] == one["energy_report"]["counts"]
    assert three["config"]["steps_per_call"] == 3


@pytest.mark.parametrize("value", [0, -2, 1.5])
def test_steps_per_call_must_be_a_positive_integer(value):
    from analogsim.training import ConfigError

    with pytest.raises(ConfigError, match=f"--steps-per-call: value {value!r} is not allowed"):
        small_config(steps_per_call=value).validate()


def test_flat_state_round_trip_packs_small_leaves():
    """The state crosses compiled calls as a few arrays (small leaves packed by dtype) and comes
    back unchanged, keys included, inside and outside jit."""
    from analogsim.training import FlatState, build_model

    data = load_dataset("digits")
    model, _ = build_model(TrainConfig(hidden=(16,), device="soft-bounds"), data)
    _, state, _ = make_train_step(model, optax.sgd(0.1), 0.1)
    state = state._replace(ledger=jax.tree.map(lambda c: c + 7, state.ledger))  # non-zero counters
    flat = FlatState(state)
    raw = flat.pack(state)
    leaves = jax.tree.leaves(state)
    assert len(raw) < len(leaves) / 2  # the small leaves went into one array per dtype
    assert all(a.dtype.kind in "fui" for a in raw)  # keys travel as their raw data
    for back in (flat.unpack(raw), jax.jit(lambda r: flat.unpack(flat.pack(flat.unpack(r))))(raw)):
        assert jax.tree.structure(back) == jax.tree.structure(state)
        for a, b in zip(jax.tree.leaves(back), leaves, strict=True):
            if jnp.issubdtype(b.dtype, jax.dtypes.prng_key):
                np.testing.assert_array_equal(jax.random.key_data(a), jax.random.key_data(b))
            else:
                assert a.shape == b.shape and a.dtype == b.dtype
                np.testing.assert_array_equal(a, b)


def test_default_steps_per_call_divides_the_epoch(small_digits):
    """By default a run takes the largest divisor of its epoch's steps up to 25 as steps per
    call (every call the same length: one compilation), and says which it used."""
    from analogsim.training import auto_steps_per_call

    assert [auto_steps_per_call(n) for n in (1, 8, 23, 24, 125, 127, 150)] == [1, 8, 23, 24, 25, 1, 25]
    config = small_config()
    assert config.steps_per_call is None
    config.validate()
    res = train(config, progress=False, dataset=small_digits)  # 256 samples, batch 32: 8 steps
    assert res["steps_per_call"] == 8


def test_projecting_a_run_onto_its_own_network_gives_its_report(small_digits):
    """``analogsim energy project`` with the measured network and samples returns the run's own
    energy, time on chip and baselines: the rates scale back exactly, and the projection's
    digital element-wise work and baselines are the ledger's."""
    from analogsim.periphery_card import load_periphery_card
    from analogsim.projection import DenseShape, project

    res = train(small_config(epochs=1, batch_size=64), progress=False, dataset=small_digits)
    rep = res["energy_report"]
    shape = DenseShape("same", ((64, 16), (16, 10)))
    p = project(shape, rep["samples"], rep, load_periphery_card(), batch=64)
    assert p["total_j"] == pytest.approx(rep["total_j"], rel=1e-9, abs=0)
    assert p["by_kind"] == pytest.approx(rep["by_kind"], rel=1e-9, abs=0)
    assert p["time_s"] == pytest.approx(rep["time_s"], rel=1e-9, abs=0)
    for name, b in rep["baselines"].items():
        assert p["baselines"][name] == pytest.approx(b["j"], rel=1e-9, abs=0), name
