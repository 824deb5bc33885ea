"""Fuzzing the inputs a user writes: device cards, pulse-measurement CSVs, .npz datasets and
training settings. Every mutated input either works or raises the project's own error (a
``ValueError`` subclass) with a one-line message; never another exception, never a NaN state,
never a hang (each example has a deadline)."""

import math
import re
from importlib import resources

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analogsim.data import DataError, load_dataset
from analogsim.training import ConfigError, TrainConfig
from device_models import CardError, nominal_crosspoints, parse_card
from device_models.measurements import MeasurementError, load_measurement

FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])
CARDS = {
    name: resources.files("device_models").joinpath("cards", f"{name}.toml").read_text()
    for name in ("wo3-psg-onen2022", "soft-bounds", "exp-step", "reram-sb")
}
ODD_VALUES = ["nan", "inf", "-inf", "1e308", "-1e308", "-1", "0", "1e-320", '"text"', "true", "[1, 2]", "{a = 1}", '""']


def _one_line(err: Exception) -> None:
    msg = str(err)
    assert msg and "\n" not in msg, msg


@st.composite
def mutated_cards(draw):
    name = draw(st.sampled_from(sorted(CARDS)))
    lines = CARDS[name].splitlines()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["value", "delete", "unit", "provenance", "duplicate", "garbage"]))
        if kind == "value" and lines[i].startswith("value ="):
            lines[i] = "value = " + draw(st.sampled_from(ODD_VALUES))
        elif kind == "delete":
            del lines[i]
        elif kind == "unit" and lines[i].startswith("unit ="):
            lines[i] = 'unit = "' + draw(st.sampled_from(["", "V", "nS", "furlong", "1", "MV/cm", "ns"])) + '"'
        elif kind == "provenance" and lines[i].startswith("provenance ="):
            lines[i] = 'provenance = "' + draw(st.sampled_from(["guessed", "", "derived", "measured"])) + '"'
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "garbage":
            lines.insert(i, draw(st.text(max_size=20)))
    return "\n".join(lines)


@FUZZ
@given(mutated_cards())
def test_mutated_cards_load_or_name_the_problem(text):
    try:
        card = parse_card(text, source="fuzz.toml")
    except CardError as err:
        _one_line(err)
        assert str(err).startswith("fuzz.toml")
        return
    model = card.model  # a card that loads gives finite steps everywhere in its range
    cp = nominal_crosspoints(model, (9,))
    w = jnp.linspace(model.pulsed.w_min, model.pulsed.w_max, 9)
    assert bool(jnp.all(jnp.isfinite(model.step_up(cp, w)) & jnp.isfinite(model.step_down(cp, w))))


CELLS = st.one_of(
    st.sampled_from(["", "nan", "inf", "-1", "0", "1", "+1", "-1", "2", "1e-6", "abc", "1e400", "0x10", " 3 "]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-5, 2000).map(str),
)
HEADERS = st.sampled_from(
    [
        "pulse_number,polarity,conductance_s",
        "pulse_number,polarity,weight",
        "pulse_number,polarity,conductance_us,voltage_v,width_s",
        "pulse_number,polarity,weight,device,cycle",
        "pulse_number,weight",
        "",
    ]
)


@FUZZ
@given(
    header=HEADERS,
    rows=st.lists(st.lists(CELLS, min_size=0, max_size=6), max_size=12),
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
)
def test_mutated_measurement_csvs_load_or_name_the_problem(tmp_path_factory, header, rows, encoding):
    path = tmp_path_factory.mktemp("csv") / "m.csv"
    text = "\n".join([header, *(",".join(r) for r in rows)])
    path.write_bytes(text.encode(encoding, errors="replace"))
    try:
        m = load_measurement(path)
    except MeasurementError as err:
        _one_line(err)
        assert str(path) in str(err)
        return
    assert np.all(np.isfinite(m.state)) and np.all(np.abs(m.pulse_number) <= 2**53)


ARRAYS = st.sampled_from(
    [
        np.zeros((4, 3), np.float32),
        np.full((4, 3), np.nan, np.float32),
        np.ones((4,), np.float32),
        np.array([0, 1, 2, 1]),
        np.array([0, 1, 99, -1]),
        np.array([0.5, 1.0, 2.0, 1.0]),
        np.array(["a", "b", "c", "d"]),
        np.zeros((0, 3), np.float32),
        np.ones((4, 2, 2), np.float64),
        np.array([True, False, True, False]),
    ]
)


@FUZZ
@given(
    keys=st.lists(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "x", "labels"]), min_size=0, max_size=6),
    arrays=st.lists(ARRAYS, min_size=6, max_size=6),
)
def test_mutated_npz_datasets_load_or_name_the_problem(tmp_path_factory, keys, arrays):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    np.savez(path, **{k: a for k, a in zip(keys, arrays, strict=False)})
    try:
        ds = load_dataset(str(path))
    except DataError as err:
        _one_line(err)
        assert str(path) in str(err)
        return
    assert np.all(np.isfinite(ds.x_train)) and ds.x_train.shape[0] == ds.y_train.shape[0] > 0


SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "epochs": st.sampled_from([0, -1, 1, 10**9]),
        "batch_size": st.sampled_from([0, -3, 1, 64]),
        "lr": st.sampled_from([0.0, -0.1, math.nan, math.inf, 0.1, 1e9]),
        "hidden": st.sampled_from([(), (0,), (-4,), (8,), (8, 8)]),
        "algorithm": st.sampled_from(["sgd", "ttv2", "nope", ""]),
        "update_mode": st.sampled_from(["auto", "exact", "fast", ""]),
        "activation": st.sampled_from(["tanh", "relu", "swish", ""]),
        "reference": st.sampled_from(["zero", "symmetry-point", "half"]),
        "device": st.sampled_from(["soft-bounds", "no-such-card", ""]),
        "algo_options": st.sampled_from([(), (("transfer_every", "0"),), (("nope", "1"),), (("momentum", "x"),)]),
        "grid_intensity": st.sampled_from([None, -1.0, math.nan, 0.5]),
        "steps_per_call": st.sampled_from([None, 0, -2, 5]),
        "seed": st.sampled_from([0, -1, 2**40]),
    },
)


@FUZZ
@given(SETTINGS)
def test_random_training_settings_are_checked_before_anything_runs(kw):
    try:
        TrainConfig(**kw).validate()
    except (ConfigError, CardError) as err:
        _one_line(err)


@pytest.mark.parametrize("n_rows", [0, 1])
def test_empty_and_single_row_csvs(tmp_path, n_rows):
    path = tmp_path / "m.csv"
    path.write_text("pulse_number,polarity,weight\n" + "1,1,0.5\n" * n_rows)
    with pytest.raises(MeasurementError) as err:
        load_measurement(path)
    _one_line(err.value)


def _mlp(sizes=(64, 4, 10)):
    from flax import nnx

    from analogsim import MLP

    return MLP(sizes, rngs=nnx.Rngs(0))


def _layer(n_in, n_out):
    from flax import nnx

    from analogsim import AnalogLinear

    return AnalogLinear(n_in, n_out, rngs=nnx.Rngs(0))


def _train(**kw):
    from analogsim import train

    return train(_mlp(), load_dataset("digits"), progress=False, **kw)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: _layer(3.5, 3), "AnalogLinear.in_features: value 3.5"),
        (lambda: _layer(3, 0), "AnalogLinear.out_features: value 0"),
        (lambda: _layer(True, 3), "AnalogLinear.in_features: value True"),
        (lambda: _mlp((4, 0, 3)), "MLP.sizes: value (4, 0, 3)"),
        (lambda: _mlp((4,)), "MLP.sizes: value (4,)"),
        (lambda: _train(epochs=-1), "epochs: value -1"),
        (lambda: _train(batch_size=0), "batch_size: value 0"),
        (lambda: _train(steps_per_call=-1), "steps_per_call: value -1"),
        (lambda: _train(eval_batch_size=2.5), "eval_batch_size: value 2.5"),
        (lambda: _train(lr=float("nan")), "lr nan"),
    ],
)
def test_the_api_refuses_bad_arguments_where_they_enter(call, needle):
    with pytest.raises(ValueError, match=re.escape(needle)) as err:
        call()
    _one_line(err.value)


TOKENS = st.sampled_from(
    [
        "--device", "soft-bounds", "nope.toml", "--algorithm", "ttv2", "magic", "--lr", "0.1", "-1", "nan", "abc",
        "--batch-size", "0", "64", "--hidden", "8,8", "0", "x,1", "--update-mode", "exact", "warp",
        "--dataset", "digits", "missing.npz", "--activation", "relu", "swish", "--reference", "half",
        "--algo-opt", "transfer_every=0", "momentum", "--seed", "-3", "--json", "--force", "--resume", "", "--",
    ]
)  # fmt: skip


@FUZZ
@given(st.lists(TOKENS, max_size=8))
def test_random_train_command_lines_end_in_one_error_line(capsys, tokens):
    from analogsim.cli import main

    try:  # --epochs 0 last: every line is refused before any training (argparse: last wins)
        rc = main(["train", *tokens, "--epochs", "0"])
    except SystemExit as exc:  # argparse: usage, then one error line
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err, err
    assert "error:" in err[-1] and "Traceback" not in "\n".join(err)
