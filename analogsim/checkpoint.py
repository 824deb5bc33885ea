"""Checkpoints of a training run: the whole :class:`~analogsim.training.TrainState` plus the
run's bookkeeping, in one ``.npz`` file written atomically (write to a temporary file in the
same directory, flush to disk, then rename), so a crash never leaves a half-written
checkpoint and the last good one stays.

Format (``checkpoint.npz``): one array per pytree leaf, ``leaf_00000`` ... in the order of
``jax.tree_util.tree_flatten`` of the state (PRNG keys stored as their raw key data), and
``meta``, a JSON string with the leaf paths, shapes and dtypes (checked on load against the
state of the model the config builds), the config, and the run's history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["CHECKPOINT_FILE", "CheckpointError", "load_checkpoint", "read_checkpoint_meta", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.npz"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; names the file and what does not match."""


def _is_key(leaf) -> bool:
    return hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def save_checkpoint(directory: str | Path, state: Any, meta: dict[str, Any]) -> Path:
    """Write ``state`` and ``meta`` (JSON-serialisable) to ``directory/checkpoint.npz`` atomically."""
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
    full_meta = {"format": FORMAT_VERSION, "layout": layout, **meta}
    arrays["meta"] = np.array(json.dumps(full_meta))
    target = directory / CHECKPOINT_FILE
    tmp = directory / f".{CHECKPOINT_FILE}.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, target)
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


def load_checkpoint(directory: str | Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Read ``directory/checkpoint.npz`` into the structure of ``template``.

    Raises:
      CheckpointError: no checkpoint, unreadable file, or a layout that does not match the
        template (another model or settings).
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
