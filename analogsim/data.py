"""Datasets: the scikit-learn digits set (offline default), MNIST IDX files, and ``.npz`` files.

Every dataset comes back as float32 features in ``[0, 1]`` (integer pixels are divided by
255, or by 16 for the digits set) flattened to ``(n, features)``, and int32 labels
``0..classes-1``. Anything malformed raises ``DataError`` naming the file, the field, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import gzip
from pathlib import Path

import numpy as np

__all__ = ["DataError", "Dataset", "load_dataset"]

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


class DataError(ValueError):
    """A dataset that cannot be used; the message names file, field, value and the rule."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    x_train: np.ndarray  # (n_train, features) float32 in [0, 1]
    y_train: np.ndarray  # (n_train,) int32
    x_test: np.ndarray  # (n_test, features) float32
    y_test: np.ndarray  # (n_test,) int32
    num_classes: int

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    # A fixed, stratified split: 1437 training and 360 test images.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10)


def _read_idx(path: Path, field: str) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: field {field!r}: cannot be read ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(
            f"{path}: field {field!r}: not an IDX file of unsigned bytes (magic {raw[:4]!r}); expected 0x00000801 or 0x00000803"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: field {field!r}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims)) if dims else 0
    if len(raw) - header != size:
        raise DataError(f"{path}: field {field!r}: {len(raw) - header} data bytes, header says {dims} = {size}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _mnist_dir(data_dir: str | Path) -> dict[str, np.ndarray]:
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(
            f"--data-dir {str(root)!r}: not a directory; it must hold the four MNIST IDX files {sorted(IDX_FILES.values())} (optionally .gz)"
        )
    out = {}
    for field, stem in IDX_FILES.items():
        for cand in (root / stem, root / f"{stem}.gz"):
            if cand.is_file():
                out[field] = _read_idx(cand, field)
                break
        else:
            raise DataError(f"{root}: field {field!r}: missing file {stem} (or {stem}.gz)")
    return out


def _npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(
            f"{path}: no such file; --dataset takes digits, mnist (with --data-dir) or a path to an .npz file"
        )
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in IDX_FILES if k not in f.files]
            if missing:
                raise DataError(
                    f"{path}: missing array(s) {missing}; an .npz dataset holds x_train, y_train, x_test, y_test (found {sorted(f.files)})"
                )
            return {k: np.asarray(f[k]) for k in IDX_FILES}
    except DataError:
        raise
    except Exception as err:  # zipfile.BadZipFile, ValueError (pickled objects), OSError
        raise DataError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None


def _features(source: str, field: str, x: np.ndarray) -> np.ndarray:
    if x.ndim < 2:
        raise DataError(
            f"{source}: field {field!r}: shape {x.shape} is not allowed; needs (n, features...) with n >= 1"
        )
    if x.shape[0] == 0:
        raise DataError(f"{source}: field {field!r}: empty (shape {x.shape}); needs at least one sample")
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise DataError(
                f"{source}: field {field!r}: integer values in [{lo}, {hi}] are not allowed; integer pixels must be in [0, 255]"
            )
        x = x.astype(np.float32) / 255.0
    elif np.issubdtype(x.dtype, np.floating):
        if not np.all(np.isfinite(x)):
            raise DataError(f"{source}: field {field!r}: contains NaN or inf; values must be finite")
        x = x.astype(np.float32)
    else:
        raise DataError(
            f"{source}: field {field!r}: dtype {x.dtype} is not allowed; use integers in [0, 255] or floats"
        )
    return x.reshape(x.shape[0], -1)


def _labels(source: str, field: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"{source}: field {field!r}: shape {y.shape} is not allowed; labels must be 1-D")
    if y.shape[0] != n:
        raise DataError(f"{source}: field {field!r}: {y.shape[0]} labels for {n} samples; the counts must match")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError(f"{source}: field {field!r}: dtype {y.dtype} is not allowed; labels must be integers")
    if y.min() < 0:
        raise DataError(f"{source}: field {field!r}: label {int(y.min())} is not allowed; labels must be >= 0")
    return y.astype(np.int32)


def _check(name: str, source: str, arrays: dict[str, np.ndarray]) -> Dataset:
    x_tr = _features(source, "x_train", arrays["x_train"])
    x_te = _features(source, "x_test", arrays["x_test"])
    if x_tr.shape[1] != x_te.shape[1]:
        raise DataError(
            f"{source}: field 'x_test': {x_te.shape[1]} features per sample, x_train has {x_tr.shape[1]}; they must match"
        )
    y_tr = _labels(source, "y_train", arrays["y_train"], x_tr.shape[0])
    y_te = _labels(source, "y_test", arrays["y_test"], x_te.shape[0])
    classes = int(y_tr.max()) + 1
    if classes < 2:
        raise DataError(f"{source}: field 'y_train': only one class (label {int(y_tr.max())}); needs at least 2")
    if y_te.max() >= classes:
        raise DataError(
            f"{source}: field 'y_test': label {int(y_te.max())} is not allowed; y_train has labels 0..{classes - 1}"
        )
    return Dataset(name, x_tr, y_tr, x_te, y_te, classes)


def load_dataset(dataset: str = "digits", data_dir: str | Path | None = None) -> Dataset:
    """Load ``digits`` (scikit-learn's bundled set), ``mnist`` (IDX files in ``data_dir``) or
    the ``.npz`` file at path ``dataset``.

    Raises:
      DataError: for anything missing or malformed.
    """
    if dataset == "digits":
        return _digits()
    if dataset == "mnist":
        if data_dir is None:
            raise DataError("--dataset mnist needs --data-dir DIR holding the four MNIST IDX files")
        return _check("mnist", str(data_dir), _mnist_dir(data_dir))
    path = Path(dataset)
    if path.suffix != ".npz":
        raise DataError(
            f"--dataset {dataset!r} is not allowed; use digits, mnist (with --data-dir) or a path to an .npz file"
        )
    return _check(path.stem, str(path), _npz(path))
