"""Datasets: digits by default, MNIST IDX files, .npz files; malformed ones give one-line errors."""

import gzip
import subprocess
import sys

import numpy as np
import pytest

from analogsim import DataError, load_dataset


def test_digits_default_split_is_fixed():
    a = load_dataset()
    b = load_dataset("digits")
    assert a.x_train.shape == (1437, 64) and a.x_test.shape == (360, 64)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0
    assert a.num_classes == 10


def write_idx(path, arr, compress):
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_files(tmp_path, compress):
    rng = np.random.default_rng(0)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 256, (12, 28, 28)), compress)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(12) % 10, compress)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (5, 28, 28)), compress)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5), compress)
    ds = load_dataset("mnist", tmp_path)
    assert ds.x_train.shape == (12, 784) and ds.x_test.shape == (5, 784)
    assert ds.x_train.max() <= 1.0 and ds.num_classes == 10


def test_truncated_idx_file(tmp_path):
    for name, arr in [
        ("train-images-idx3-ubyte", np.zeros((3, 2, 2))),
        ("train-labels-idx1-ubyte", np.zeros(3)),
        ("t10k-images-idx3-ubyte", np.zeros((3, 2, 2))),
        ("t10k-labels-idx1-ubyte", np.zeros(3)),
    ]:
        write_idx(tmp_path / name, arr, False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1]))
    with pytest.raises(DataError, match="y_test"):
        load_dataset("mnist", tmp_path)


def good_arrays():
    rng = np.random.default_rng(1)
    return dict(
        x_train=rng.integers(0, 256, (20, 4, 4), dtype=np.uint8),
        y_train=np.arange(20) % 3,
        x_test=rng.integers(0, 256, (6, 4, 4), dtype=np.uint8),
        y_test=np.arange(6) % 3,
    )


def test_npz_loads_and_scales(tmp_path):
    np.savez(tmp_path / "d.npz", **good_arrays())
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.x_train.shape == (20, 16) and ds.num_classes == 3
    assert ds.x_train.dtype == np.float32 and ds.x_train.max() <= 1.0


BAD = {
    "missing array": (lambda a: a.pop("y_test"), "y_test"),
    "shape mismatch": (lambda a: a.update(y_train=np.arange(19) % 3), "y_train"),
    "label out of range": (lambda a: a.update(y_test=np.array([0, 1, 2, 3, 0, 1])), "y_test"),
    "negative label": (lambda a: a.update(y_train=np.arange(20) % 3 - 1), "y_train"),
    "nan pixels": (lambda a: a.update(x_train=np.full((20, 16), np.nan)), "x_train"),
    "feature mismatch": (lambda a: a.update(x_test=np.zeros((6, 15), np.uint8)), "x_test"),
    "empty split": (lambda a: a.update(x_test=np.zeros((0, 16), np.uint8), y_test=np.zeros(0, int)), "x_test"),
    "string labels": (lambda a: a.update(y_train=np.array(["a"] * 20)), "y_train"),
    "pixels over 255": (lambda a: a.update(x_train=np.full((20, 16), 300, np.int32)), "x_train"),
    "one class": (lambda a: a.update(y_train=np.zeros(20, int), y_test=np.zeros(6, int)), "y_train"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_npz_one_line_error(tmp_path, case):
    arrays = good_arrays()
    mutate, field = BAD[case]
    mutate(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as err:
        load_dataset(str(path))
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and field in msg


def test_not_an_npz(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_text("hello")
    with pytest.raises(DataError, match="junk.npz"):
        load_dataset(str(path))


def test_mnist_without_dir_and_unknown_name():
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="cifar"):
        load_dataset("cifar")


def test_cli_bad_dataset_exits_2(tmp_path):
    arrays = good_arrays()
    arrays["y_test"] = np.array([0, 1, 2, 9, 0, 1])
    np.savez(tmp_path / "bad.npz", **arrays)
    proc = subprocess.run(
        [sys.executable, "-m", "analogsim.cli", "train", "--dataset", str(tmp_path / "bad.npz")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "y_test" in proc.stderr
