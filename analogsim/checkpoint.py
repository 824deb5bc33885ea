"""Checkpoints of a training run: the whole ``TrainState`` plus the
run's bookkeeping, in one ``.npz`` file written atomically (write to a temporary file in the
same directory, flush to disk, then rename), so a crash never leaves a half-written
checkpoint and the last good one stays.

Format (``checkpoint.npz``): one array per pytree leaf, ``leaf_00000`` ... in the order of
``jax.tree_util.tree_flatten`` of the state (PRNG keys stored as their raw key data), and
``meta``, a JSON string with the leaf paths, shapes and dtypes (checked on load against the
state of the model the config builds), the versions of analogsim, JAX and Flax that wrote it
(a resume with other versions is refused unless allowed), the config, and the run's history
(which may stop inside an epoch: ``step_in_epoch``).

One run at a time writes a directory: ``checkpoint_lock`` holds an exclusive ``flock`` on
``DIR/.lock`` for the whole run, which the operating system drops when the process ends, however
it ends (a run killed with SIGKILL leaves no stale lock behind). A write that fails (a full disk)
raises ``CheckpointError`` and leaves the previous checkpoint as it was.

Why not orbax-checkpoint: its atomic, asynchronous, multi-host saves answer problems this
trainer does not have (one host, a state of a few MB written once per epoch in milliseconds),
at the price of a dependency tree (tensorstore) larger than the rest of the install; one ``.npz``
and an atomic rename give the same guarantee here and stay readable with numpy alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ._version import DISTRIBUTION

__all__ = [
    "CHECKPOINT_FILE",
    "CheckpointError",
    "checkpoint_lock",
    "load_checkpoint",
    "read_checkpoint_meta",
    "save_checkpoint",
    "versions",
]

CHECKPOINT_FILE = "checkpoint.npz"
LOCK_FILE = ".lock"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    """The versions of the packages whose numerics a checkpoint depends on."""
    out = {}
    # the field is the import name; the distribution of ours is named otherwise on the index
    for package, distribution in (("analogsim", DISTRIBUTION), ("jax", "jax"), ("flax", "flax")):
        try:
            out[package] = metadata.version(distribution)
        except metadata.PackageNotFoundError:  # a source tree that is not installed
            out[package] = "unknown"
    return out


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; names the file and what does not match."""


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


@contextlib.contextmanager
def checkpoint_lock(directory: str | Path) -> Iterator[None]:
    """Hold ``directory``'s lock for the duration of a run.

    Raises:
      CheckpointError: another live process holds it (one run per checkpoint directory).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(directory / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as err:
        raise CheckpointError(f"{directory / LOCK_FILE}: cannot be opened ({err.strerror or err})") from None
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise CheckpointError(
            f"{directory}: another run is writing this checkpoint directory ({holder}); "
            "one run per directory (wait for it, or give another --checkpoint-dir)"
        ) from None
    except OSError as err:  # a file system without locks, a full disk
        fh.close()
        raise CheckpointError(f"{directory / LOCK_FILE}: cannot be locked ({err.strerror or err})") from None
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def save_checkpoint(directory: str | Path, state: Any, meta: dict[str, Any]) -> Path:
    """Write ``state`` and ``meta`` (JSON-serialisable) to ``directory/checkpoint.npz`` atomically.

    Raises:
      CheckpointError: the file cannot be written (e.g. a full disk); the previous checkpoint,
        if any, is left as it was.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves_with_paths, _ = jax.tree_util.tree_flatten_with_path(state)
    arrays = {}
    layout = []
    for i, (path, leaf) in enumerate(leaves_with_paths):
        key = _is_key(leaf)
        arr = np.asarray(jax.random.key_data(leaf) if key else leaf)
        arrays[f"leaf_{i:05d}"] = arr
        layout.append(
            {"path": jax.tree_util.keystr(path), "shape": list(arr.shape), "dtype": str(arr.dtype), "key": key}
        )
    full_meta = {"format": FORMAT_VERSION, "versions": versions(), "layout": layout, **meta}
    arrays["meta"] = np.array(json.dumps(full_meta))
    target = directory / CHECKPOINT_FILE
    tmp = directory / f".{CHECKPOINT_FILE}.tmp"
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        kept = "the previous checkpoint is intact" if target.is_file() else "no checkpoint was saved"
        raise CheckpointError(f"{target}: cannot be written ({err.strerror or err}); {kept}") from None
    return target


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The ``meta`` of ``directory/checkpoint.npz`` (config and history) without its arrays."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint")
    try:
        with np.load(path, allow_pickle=False) as f:
            return json.loads(str(f["meta"]))
    except Exception as err:  # zipfile.BadZipFile, KeyError, ValueError, OSError
        raise CheckpointError(f"{path}: not a readable analogsim checkpoint ({type(err).__name__}: {err})") from None


def load_checkpoint(
    directory: str | Path, template: Any, *, allow_version_mismatch: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Read ``directory/checkpoint.npz`` into the structure of ``template``.

    Raises:
      CheckpointError: no checkpoint, unreadable file, a layout that does not match the
        template (another model or settings), or other package versions than the ones that
        wrote it (unless ``allow_version_mismatch``).
    """
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            stored = {k: f[k] for k in f.files if k != "meta"}
    except Exception as err:  # zipfile.BadZipFile, KeyError, ValueError, OSError
        raise CheckpointError(f"{path}: not a readable analogsim checkpoint ({type(err).__name__}: {err})") from None
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: field 'format': value {meta.get('format')!r} is not allowed; expected {FORMAT_VERSION}"
        )
    _check_versions(path, meta, allow_version_mismatch)
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    layout = meta["layout"]
    if len(layout) != len(leaves_with_paths):
        raise CheckpointError(
            f"{path}: {len(layout)} arrays stored, the model of this config has {len(leaves_with_paths)}"
        )
    leaves = []
    for i, ((p, tmpl), entry) in enumerate(zip(leaves_with_paths, layout, strict=True)):
        arr = stored[f"leaf_{i:05d}"]
        want = np.asarray(jax.random.key_data(tmpl) if _is_key(tmpl) else tmpl)
        if entry["path"] != jax.tree_util.keystr(p) or arr.shape != want.shape or arr.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: array {entry['path']} {arr.shape} {arr.dtype} does not match "
                f"{jax.tree_util.keystr(p)} {want.shape} {want.dtype} of the model this config builds"
            )
        leaves.append(
            jax.random.wrap_key_data(arr, impl=jax.random.key_impl(tmpl)) if _is_key(tmpl) else jax.numpy.asarray(arr)
        )
    return jax.tree_util.tree_unflatten(treedef, leaves), meta


def _check_versions(path: Path, meta: dict[str, Any], allowed: bool) -> None:
    if allowed:
        return
    if "versions" not in meta:
        raise CheckpointError(
            f"{path}: field 'versions': missing (written before checkpoints recorded their package versions); "
            "pass --allow-version-mismatch (allow_version_mismatch=True) to resume it anyway"
        )
    saved, now = meta["versions"], versions()
    for package, version in now.items():
        # "unknown" (a source tree that is not installed) matches nothing, not even itself
        if saved.get(package) != version or version == "unknown":
            raise CheckpointError(
                f"{path}: field 'versions.{package}': value {saved.get(package)!r} is not this {package} "
                f"({version}); its numerics may differ: resume with the versions that wrote it, or pass "
                "--allow-version-mismatch (allow_version_mismatch=True)"
            )
