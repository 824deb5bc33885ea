"""The ``exact`` rung of the pulsed update: per sample, coincidence counts from slot bit masks,
then the pulses of each fired cross-point one after another (``analogsim.pulsed_update``
explains why this is the slot-by-slot process in distribution). Small arrays take the dense
path (every cross-point), large ones the sparse path (only the fired cells, in chunks)."""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from device_models import AbstractPulsedModel, apply_pulses

from .. import rng
from ..rng import fast_key as _fast_key
from .probabilities import pulse_probabilities
from .settings import PulseCounts

__all__: list[str] = []  # private to the package: reached through analogsim.pulsed_update.pulsed_update


def _fire_masks(key: jax.Array, prob: jax.Array, bl: jax.Array, n_words: int) -> jax.Array:
    """The slots in which each line fires, as bit masks.

    Args:
      key: PRNG key.
      prob: (batch, n) firing probability of each line in each slot.
      bl: (batch,) train length of each sample (slots ``t >= bl`` never fire).
      n_words: 32-bit words per mask (``ceil(desired_bl / 32)``).

    Returns:
      (batch, n, n_words) uint32; bit ``t % 32`` of word ``t // 32`` is set when the line fires in
      slot ``t`` (a Bernoulli draw ``u < prob``, as ``jax.random.bernoulli``). One uniform per
      line and slot, one pass per slot up to the batch's longest train.
    """
    words = jnp.arange(n_words)

    def slot(t, masks):
        u = rng.uniform(jax.random.fold_in(key, t), prob.shape, prob.dtype)
        fire = (u < prob) & (t < bl[:, None])
        bit = jnp.left_shift(jnp.uint32(1), (t % 32).astype(jnp.uint32))
        return masks | jnp.where(fire[..., None] & (words == t // 32), bit, jnp.uint32(0))

    zeros = jnp.zeros((*prob.shape, n_words), jnp.uint32)
    return jax.lax.fori_loop(0, jnp.max(bl, initial=0), slot, zeros)


def _compact(fired: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Indices of the fired lines of each sample, ascending, padded with 0.

    Args:
      fired: (batch, n) bool.

    Returns:
      ``(idx (batch, n) int32, count (batch,) int32)``; ``idx[s, :count[s]]`` are the fired lines.
    """
    batch, n = fired.shape
    # an associative scan and a scatter: several times cheaper than jnp.nonzero on CPU
    pos = jax.lax.associative_scan(jnp.add, fired.astype(jnp.int32), axis=-1) - 1
    idx = jnp.zeros((batch, n + 1), jnp.int32)
    lines = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32), (batch, n))
    idx = idx.at[jnp.arange(batch)[:, None], jnp.where(fired, pos, n)].set(lines)
    return idx[:, :n], pos[:, -1] + 1


def _take(a: jax.Array, idx: jax.Array) -> jax.Array:
    """``a[idx]`` for indices known to be in range (cheaper on CPU than clipping or filling)."""
    return a.at[idx].get(mode="promise_in_bounds")


def _default_noise_law(model: AbstractPulsedModel) -> bool:
    """Whether ``model`` draws its cycle-to-cycle noise with the shared law of
    ``AbstractPulsedModel.sample_step`` (step times :math:`1 + \\sigma_{c2c}\\xi`)."""
    return type(model).sample_step is AbstractPulsedModel.sample_step


def _one_pulse(model, cp, w, pulses, xi):
    """``device_models.apply_pulses`` for a model with the default noise law, with the
    standard normals ``xi`` given (drawn in bulk outside the per-sample loop, several times
    cheaper on CPU than a draw per sample)."""
    dw = model.noisy_step(cp, w, pulses, xi)
    return jnp.where(pulses != 0, jnp.clip(w + dw, cp.b_min, cp.b_max), w)


def _single_pulses(model, cp, w, n, direction, noise):
    """One pulse of sign ``direction`` where ``n > 0`` (callers ensure ``n <= 1``): ``noise``
    is the standard normals for the default noise law, else a key."""
    pulses = jnp.where(n > 0, direction, jnp.int8(0))
    if _default_noise_law(model):
        return _one_pulse(model, cp, w, pulses, noise)
    return apply_pulses(model, cp, w, pulses, key=noise)


def _pulse_trains(model, cp, w, n, direction, key):
    """``n`` pulses of sign ``direction`` at each cross-point, one after another.

    Pass ``k`` gives one pulse (own cycle-to-cycle noise, own clip, step taken at the state the
    previous pass left) to the cross-points with ``n > k``; the others are returned unchanged
    bit for bit. ``max(n)`` passes in all.
    """

    def one(k, w):
        pulses = jnp.where(n > k, direction, jnp.int8(0))
        return apply_pulses(model, cp, w, pulses, key=jax.random.fold_in(key, k))

    return jax.lax.fori_loop(0, jnp.max(n, initial=0), one, w)


# Cells (cross-points) handled at once on the sparse path of the ``exact`` rung: a sample's
# fired cells (fired columns x fired rows) go through in chunks of one of these sizes, the
# smallest for which _ITEMS chunks per sample (on average over the batch) hold them all. On
# RT-MNIST a sample fires about 35 of the 784 inputs and 25 of the 256 outputs of the first
# layer (BL = 1): about 900 cells; about 30 x 15 = 450 in the second.
_CHUNKS = (256, 512, 1024, 2048)
_ITEMS = 1.5

# Arrays of at most this many cross-points take the dense path of the ``exact`` rung (every
# cross-point of every sample; RT-MNIST's 10 x 128 output layer), larger ones the sparse path.
_DENSE_MAX = 4096


def _chunk_cells(c, chunk, ri, ci, rm, cm, sx, sd, nr, nc, n_in, s=None):
    """Chunk ``c`` of one sample's fired cells (fired columns x fired rows, row-major).

    The tables (fired-line indices ``ri``/``ci``, slot masks ``rm``/``cm``, signs ``sx``/``sd``)
    are the sample's own, or the whole batch's when the sample number ``s`` is given.

    Returns ``(flat, valid, n, direction)``, each (chunk,): the cross-point (flat index into the
    (out, in) array; 0 where not ``valid``, i.e. past the last cell), its number of pulses in
    this sample and their sign (+1 up where :math:`x_j d_i < 0`).
    """

    def pick(table, idx):
        return _take(table, idx if s is None else (s, idx))

    k = c * chunk + jnp.arange(chunk, dtype=jnp.int32)
    valid = k < nr * nc
    safe_nr = jnp.maximum(nr, 1)
    # k // nr, through float32 where that is exact (k < 2**22): CPUs have no vector integer division
    if n_in * ci.shape[-1] < 2**22:
        a = jnp.floor((k.astype(jnp.float32) + 0.5) / safe_nr.astype(jnp.float32)).astype(jnp.int32)
    else:
        a = k // safe_nr
    col = pick(ci, jnp.where(valid, a, 0))
    row = pick(ri, jnp.where(valid, k - a * safe_nr, 0))
    both = jnp.bitwise_and(pick(cm, col), pick(rm, row))
    n = jnp.where(valid, jnp.sum(jax.lax.population_count(both).astype(jnp.int32), axis=-1), 0)
    direction = -(pick(sd, col) * pick(sx, row))
    return col * n_in + row, valid, n, direction


def _coincidences(col_masks: jax.Array, row_masks: jax.Array) -> jax.Array:
    """(out, W) and (in, W) slot masks -> (out, in) int32 number of slots where both fire."""
    both = jnp.bitwise_and(col_masks[:, None, :], row_masks[None, :, :])
    return jnp.sum(jax.lax.population_count(both).astype(jnp.int32), axis=-1)


def _tally(n: jax.Array, direction: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Up and down pulses among counts ``n`` of signs ``direction`` (int32 scalars)."""
    up = jnp.sum(jnp.where(direction > 0, n, 0), dtype=jnp.int32)
    return up, jnp.sum(jnp.where(direction < 0, n, 0), dtype=jnp.int32)


def _exact_update(model, cp, w, x, d, lr, up, key):
    """The ``exact`` rung: per sample, coincidence counts from slot bit masks, then the pulses
    of each fired cross-point one after another (see the module docstring)."""
    p, q, bl = jax.vmap(pulse_probabilities, in_axes=(0, 0, None, None, None))(x, d, lr, model.pulsed.dw_min, up)
    n_words = -(-up.desired_bl // 32)
    k_rows, k_cols, k_pulses = jax.random.split(_fast_key(key), 3)
    rows = _fire_masks(k_rows, p, bl, n_words)  # (batch, in, W)
    cols = _fire_masks(k_cols, q, bl, n_words)  # (batch, out, W)
    sx = jnp.sign(x).astype(jnp.int8)
    sd = jnp.sign(d).astype(jnp.int8)
    if w.size <= _DENSE_MAX:
        w, counts = _exact_dense(model, cp, w, rows, cols, sx, sd, k_pulses)
    else:
        w, counts = _exact_sparse(model, cp, w, rows, cols, sx, sd, k_pulses)
    expected = q.T @ (p * bl[:, None].astype(p.dtype))  # the draw's expectation (dropped by jit if unused)
    return w, dataclasses.replace(counts, per_device=expected)


def _branch_key(key_data: jax.Array, impl, branch: int) -> jax.Array:
    """The key of one branch of the path choice (``lax.cond``/``switch``) from raw key data.

    Keys go into the branches as raw data: under ``vmap`` (the tests draw many updates at
    once) a ``cond`` becomes a select that runs every branch, and JAX's key-reuse checker
    then reports any key operand a branch consumes. Each branch folds in its own number.
    """
    return jax.random.fold_in(jax.random.wrap_key_data(key_data, impl=impl), branch)


def _lean_noise(model, key, shape, dtype):
    """Noise of the lean paths, one row per loop step: standard normals drawn at once for the
    default noise law, else one key per loop step."""
    if _default_noise_law(model):
        return rng.normal(key, shape, dtype)
    return jax.random.split(key, shape[0])


def _exact_dense(model, cp, w, rows, cols, sx, sd, key):
    """``exact`` on a small array: every cross-point of every sample, no gathers."""
    n = jax.vmap(_coincidences)(cols, rows)  # (batch, out, in)
    direction = -(sd[:, :, None] * sx[:, None, :])  # +1 (up) where x_j d_i < 0

    def lean(w, key_data):  # at most one pulse per cross-point and sample (BL = 1 on RT-MNIST)
        def sample(w, inputs):
            return _single_pulses(model, cp, w, *inputs), None

        noise = _lean_noise(model, _branch_key(key_data, impl, 0), n.shape, w.dtype)
        return jax.lax.scan(sample, w, (n, direction, noise))[0]

    def general(w, key_data):
        def sample(w, inputs):
            return _pulse_trains(model, cp, w, *inputs), None

        keys = jax.random.split(_branch_key(key_data, impl, 1), n.shape[0])
        return jax.lax.scan(sample, w, (n, direction, keys))[0]

    impl = jax.random.key_impl(key)
    w = jax.lax.cond(jnp.max(n) <= 1, lean, general, w, jax.random.key_data(key))
    return w, PulseCounts(*_tally(n, direction))


class _FiredCells(NamedTuple):
    """What the sparse path needs of a batch, besides the weights: the lines that fired in
    each sample and when."""

    rows: jax.Array  # (batch, in, W) uint32 slot masks of the rows (inputs)
    cols: jax.Array  # (batch, out, W) uint32 slot masks of the columns (outputs)
    sx: jax.Array  # (batch, in) int8 signs of the inputs
    sd: jax.Array  # (batch, out) int8 signs of the errors
    r_idx: jax.Array  # (batch, in) int32 fired rows of each sample, ascending, padded with 0
    c_idx: jax.Array  # (batch, out) int32 fired columns of each sample, likewise
    n_rows: jax.Array  # (batch,) int32 number of fired rows
    n_cols: jax.Array  # (batch,) int32 number of fired columns
    cells: jax.Array  # (batch,) int32 fired cells (n_rows * n_cols)
    n_in: int  # inputs of the array (the row length of the flat index)


def _cell_params(cp, shape: tuple[int, ...]):
    """Gather and rebuild the per-cross-point parameters of ``cp`` at a list of cells.

    Returns ``(gather, rebuild)``: ``gather(flat)`` is the list of the per-cross-point leaves
    (those of the array's ``shape``) at the flat indices ``flat``; ``rebuild(cell_leaves)`` is
    ``cp`` with those leaves replaced by ``cell_leaves`` (the others, shared, as they are).
    """
    leaves, treedef = jax.tree.flatten(cp)
    per_cell = [leaf.shape == shape for leaf in leaves]  # per-cross-point parameters
    flat_leaves = [leaf.reshape(-1) if cell else leaf for leaf, cell in zip(leaves, per_cell, strict=True)]

    def gather(flat):  # the per-cell leaves of ``cp`` at ``flat``
        return [_take(a, flat) for a, c in zip(flat_leaves, per_cell, strict=True) if c]

    def rebuild(cell_leaves):
        it = iter(cell_leaves)
        return jax.tree.unflatten(treedef, [next(it) if c else a for a, c in zip(leaves, per_cell, strict=True)])

    return gather, rebuild


def _scatter(w: jax.Array, flat: jax.Array, valid: jax.Array, sub: jax.Array) -> jax.Array:
    """``w`` (flat) with the cells ``flat`` set to ``sub`` where ``valid`` (the others dropped)."""
    return w.at[jnp.where(valid, flat, w.size)].set(sub, mode="drop", unique_indices=True)


def _sparse_lean(model, f: _FiredCells, params, n_items: int, impl, chunk: int, w, key_data):
    """The sparse path's lean branch (at most one pulse per cell): the list of ``n_items``
    work items, (sample, chunk) pairs in sample order, with everything that does not depend on
    the weights prepared at once, then one scan over the items. ``params`` is
    ``_cell_params``'s pair; ``w`` is flat. Returns ``(w, n_up, n_down)``."""
    gather_cp, cells_cp = params
    batch = f.rows.shape[0]
    n_chunks = (f.cells + chunk - 1) // chunk
    ends = jnp.cumsum(n_chunks)
    item = jnp.arange(n_items, dtype=jnp.int32)
    owner = jnp.minimum(jnp.searchsorted(ends, item, side="right"), batch - 1).astype(jnp.int32)
    part = item - (ends - n_chunks)[owner]

    def item_cells(s, c):
        return _chunk_cells(
            c, chunk, f.r_idx, f.c_idx, f.rows, f.cols, f.sx, f.sd, f.n_rows[s], f.n_cols[s], f.n_in, s=s
        )

    flat, valid, n, direction = jax.vmap(item_cells)(owner, part)
    listed = (item < ends[-1])[:, None]
    n = jnp.where(listed, n, 0)

    def work(w, inputs):
        flat, valid, n, direction, sub_cp, noise = inputs
        sub = _single_pulses(model, cells_cp(sub_cp), _take(w, flat), n, direction, noise)
        return _scatter(w, flat, valid, sub), None

    noise = _lean_noise(model, _branch_key(key_data, impl, 0), flat.shape, w.dtype)
    w, _ = jax.lax.scan(work, w, (flat, valid & listed, n, direction, gather_cp(flat), noise))
    return (w, *_tally(n, direction))


def _sparse_general(model, f: _FiredCells, params, impl, chunk: int, w, key_data):
    """The sparse path's general branch: sample after sample, chunk after chunk, pulse after
    pulse. ``params`` is ``_cell_params``'s pair; ``w`` is flat. Returns
    ``(w, n_up, n_down)``."""
    gather_cp, cells_cp = params

    def sample(carry, inputs):
        rm, cm, sxs, sds, ri, ci, nr, nc, key = inputs

        def one_chunk(c, carry):
            w, n_up, n_down = carry
            flat, valid, n, direction = _chunk_cells(c, chunk, ri, ci, rm, cm, sxs, sds, nr, nc, f.n_in)
            sub = _take(w, flat)
            sub = _pulse_trains(model, cells_cp(gather_cp(flat)), sub, n, direction, jax.random.fold_in(key, c))
            u, dn = _tally(n, direction)
            return _scatter(w, flat, valid, sub), n_up + u, n_down + dn

        return jax.lax.fori_loop(0, (nr * nc + chunk - 1) // chunk, one_chunk, carry), None

    zero = jnp.zeros((), jnp.int32)
    keys = jax.random.split(_branch_key(key_data, impl, 1), f.rows.shape[0])
    inputs = (f.rows, f.cols, f.sx, f.sd, f.r_idx, f.c_idx, f.n_rows, f.n_cols, keys)
    return jax.lax.scan(sample, (w, zero, zero), inputs)[0]


def _exact_sparse(model, cp, w, rows, cols, sx, sd, key):
    """``exact`` on a large array: per sample, only the fired cells (gathered, updated,
    scattered back), in chunks."""
    batch = rows.shape[0]
    out, n_in = w.shape
    size = out * n_in
    r_idx, n_rows = _compact(jnp.any(rows != 0, axis=-1))
    c_idx, n_cols = _compact(jnp.any(cols != 0, axis=-1))
    f = _FiredCells(rows, cols, sx, sd, r_idx, c_idx, n_rows, n_cols, n_rows * n_cols, n_in)
    params = _cell_params(cp, w.shape)

    # The lean path (at most one pulse per cell, as with BL = 1 on RT-MNIST) walks a list of
    # work items, (sample, chunk) pairs in sample order, of static length (_ITEMS per sample),
    # with everything that does not depend on the weights prepared at once, outside the loop;
    # the chunk size is the smallest of _CHUNKS whose list holds the batch. Any other batch
    # takes the general path: sample after sample, chunk after chunk, pulse after pulse.
    n_items = int(batch * _ITEMS)
    chunks = [c for c in _CHUNKS if c < size] or [size]

    # at most one pulse per cell: one slot per sample, or no row and column firing together twice
    once = jnp.all(jnp.sum(jax.lax.population_count(rows), axis=-1) <= 1) | jnp.all(
        jnp.sum(jax.lax.population_count(cols), axis=-1) <= 1
    )
    fits = jnp.stack([jnp.sum((f.cells + c - 1) // c) <= n_items for c in chunks])
    which = jnp.where(once & jnp.any(fits), jnp.argmax(fits), len(chunks))
    impl = jax.random.key_impl(key)
    branches = [functools.partial(_sparse_lean, model, f, params, n_items, impl, c) for c in chunks]
    branches.append(functools.partial(_sparse_general, model, f, params, impl, chunks[-1]))
    w_flat, n_up, n_down = jax.lax.switch(which, branches, w.reshape(-1), jax.random.key_data(key))
    return w_flat.reshape(w.shape), PulseCounts(up=n_up, down=n_down)
