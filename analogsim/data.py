"""Datasets: the scikit-learn digits set (offline default), MNIST IDX files, CIFAR-10's
Python batches, and ``.npz`` files.

Every dataset comes back as float32 features flattened to ``(n, features)`` (images channels
last: height, width, channel) and int32 labels ``0..classes-1``, with the image shape where
there is one (``Dataset.image_shape``). Features are in ``[0, 1]`` (integer pixels divided by
255, or by 16 for the digits set), except CIFAR-10, which is normalised per channel to mean 0
and standard deviation 1 over its training set (the usual preprocessing of CIFAR ResNets).
Anything malformed raises ``DataError`` naming the file, the field, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
from pathlib import Path

import numpy as np

__all__ = ["CIFAR10_FILES", "DataError", "Dataset", "load_dataset"]

CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")

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
    image_shape: tuple[int, int, int] | None = None  # (height, width, channels) of the flattened images

    @property
    def num_features(self) -> int:
        return self.x_train.shape[1]

    def image(self) -> tuple[int, int, int] | None:
        """``image_shape``, or a square one-channel image when the features are a square number
        (``None`` if neither)."""
        if self.image_shape is not None:
            return self.image_shape
        side = math.isqrt(self.num_features)
        return (side, side, 1) if side * side == self.num_features else None


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int32)
    # A fixed, stratified split: 1437 training and 360 test images.
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=360, random_state=0, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, 10, (8, 8, 1))


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
            f"{path}: no such file; --dataset takes digits, mnist or cifar10 (with --data-dir) or a path to an .npz file"
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


def _image_shape(x: np.ndarray) -> tuple[int, int, int] | None:
    """The image shape of ``(n, h, w)`` or ``(n, h, w, c)`` samples (``None`` for flat ones)."""
    if x.ndim == 3:
        return (*x.shape[1:], 1)
    if x.ndim == 4:
        return tuple(x.shape[1:])
    return None


def _check(name: str, source: str, arrays: dict[str, np.ndarray], image_shape=None) -> Dataset:
    image_shape = image_shape or _image_shape(arrays["x_train"])
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
    return Dataset(name, x_tr, y_tr, x_te, y_te, classes, image_shape)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a CIFAR batch holds nothing else, and a
    pickle that names any other class is refused rather than run."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("_codecs", "encode"),  # (bytes in a protocol-2 pickle written by Python 3)
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused class {module}.{name}")


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 32, 32, 3)`` uint8 and labels of one CIFAR-10 Python batch file."""
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as err:
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: field 'data'/'labels': missing (found {keys}); a CIFAR-10 batch holds both")
    data = np.asarray(batch[b"data"])
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(
            f"{path}: field 'data': shape {data.shape} dtype {data.dtype} is not allowed; expected (n, 3072) uint8"
        )
    labels = np.asarray(batch[b"labels"])
    if (
        labels.shape != (data.shape[0],)
        or not np.issubdtype(labels.dtype, np.integer)
        or labels.min() < 0
        or labels.max() > 9
    ):
        raise DataError(
            f"{path}: field 'labels': {labels.shape[0] if labels.ndim else labels} labels, expected {data.shape[0]} in 0..9"
        )
    # stored channel-major (1024 red, 1024 green, 1024 blue, each row-major 32x32): to channels last
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels.astype(np.int32)


def _cifar10(data_dir: str | Path) -> Dataset:
    root = Path(data_dir)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    if not root.is_dir():
        raise DataError(
            f"--data-dir {str(data_dir)!r}: not a directory; it must hold CIFAR-10's Python batches "
            f"{list(CIFAR10_FILES)} (the extracted cifar-10-python.tar.gz)"
        )
    parts = {}
    for stem in CIFAR10_FILES:
        if not (root / stem).is_file():
            raise DataError(f"{root}: field {stem!r}: missing file {stem}; CIFAR-10 needs {list(CIFAR10_FILES)}")
        parts[stem] = _cifar_batch(root / stem)
    x_tr = np.concatenate([parts[s][0] for s in CIFAR10_FILES[:-1]]).astype(np.float32) / 255.0
    y_tr = np.concatenate([parts[s][1] for s in CIFAR10_FILES[:-1]])
    x_te = parts["test_batch"][0].astype(np.float32) / 255.0
    mean = x_tr.mean(axis=(0, 1, 2))
    std = np.maximum(x_tr.std(axis=(0, 1, 2)), 1e-6)
    norm = lambda x: ((x - mean) / std).reshape(x.shape[0], -1).astype(np.float32)  # noqa: E731
    return Dataset("cifar10", norm(x_tr), y_tr, norm(x_te), parts["test_batch"][1], 10, (32, 32, 3))


def load_dataset(dataset: str = "digits", data_dir: str | Path | None = None) -> Dataset:
    """Load ``digits`` (scikit-learn's bundled set), ``mnist`` (IDX files in ``data_dir``),
    ``cifar10`` (the Python batches of ``cifar-10-python.tar.gz``, extracted into ``data_dir``
    or its ``cifar-10-batches-py`` folder) or the ``.npz`` file at path ``dataset`` (images
    ``(n, h, w)`` or ``(n, h, w, c)`` keep their shape in ``image_shape``).

    Raises:
      DataError: for anything missing or malformed.
    """
    if dataset == "digits":
        return _digits()
    if dataset == "mnist":
        if data_dir is None:
            raise DataError("--dataset mnist needs --data-dir DIR holding the four MNIST IDX files")
        return _check("mnist", str(data_dir), _mnist_dir(data_dir))
    if dataset == "cifar10":
        if data_dir is None:
            raise DataError("--dataset cifar10 needs --data-dir DIR holding CIFAR-10's Python batches")
        return _cifar10(data_dir)
    path = Path(dataset)
    if path.suffix != ".npz":
        raise DataError(
            f"--dataset {dataset!r} is not allowed; use digits, mnist or cifar10 (with --data-dir) or a path to an .npz file"
        )
    return _check(path.stem, str(path), _npz(path))
