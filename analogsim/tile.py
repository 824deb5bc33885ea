"""The analog matrix-vector product as a differentiable JAX function, split over tiles.

Forward: ``y = W x`` read through the forward periphery. Backward (the error pass of
backpropagation): ``dx = W^T d`` read through the backward periphery, so the error that
reaches earlier layers carries the same DAC/ADC quantisation and noise as on hardware. The
cotangent of ``W`` is the plain outer product ``d x^T`` (a straight-through estimate); analog
training does not use it (the pulsed update takes the per-sample ``x`` and ``d`` instead), so
XLA drops it.

*Tiles.* A physical crossbar holds at most ``max_output_size`` x ``max_input_size`` cells
(``IOParameters``, 512 x 512 by default, aihwkit's
``MappingParameter``). A larger matrix is split as aihwkit's ``TileModuleArray`` splits it:
each dimension into ``ceil(n / max)`` tiles of near-equal size (sizes differ by at most one,
the larger first; 784 inputs with 512 per tile give two tiles of 392). Every tile is read with
its own periphery: noise management over its own slice of the input, its own DAC, output
noise, ADC and bound management. The partial outputs of tiles that share output rows are
summed digitally, in full precision:

.. math::
    y_I = \\sum_J \\mathrm{read}_{IJ}(W_{IJ}, x_J), \\qquad
    \\delta x_J = \\sum_I \\mathrm{read}^T_{IJ}(W_{IJ}^T, d_I),

where the backward read of a tile is its transposed read through the backward periphery.
A matrix that fits one tile is read exactly as ``analog_mvm`` reads
it (same noise stream).

*Cost.* Up to ``UNROLL_TILES`` tiles are read one after another in the program, each from its
own slice of ``W``; more are read in one vectorised pass (shorter tiles zero-padded, ``W``
copied into tile-major layout for the batched product). Compared with one big tile, a split
read draws output noise for every tile's outputs (a 784 x 256 layer on two tiles: 512 noisy
outputs per forward read instead of 256) and reduces and rescales per tile.

*Reads.* ``reads`` counts layer reads: one read of the layer is one read of every one of its
tiles, and a vector that bound management re-reads on its worst tile counts that tile's number
of reads (the maximum over tiles). The energy ledger prices a layer read through its
cross-points (``in * out`` in total) and its conversions; with ``R`` x ``C`` tiles a forward
read has ``in * R`` DAC and ``out * C`` ADC conversions and ``out * (C - 1)`` digital
additions (see ``tile_grid``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from .periphery import IOParameters, MVMResult, analog_mvm

__all__ = [
    "AnalogGradientWarning",
    "UNROLL_TILES",
    "analog_matmul",
    "pulsed_training",
    "read_tiles",
    "split_sizes",
    "tile_grid",
    "tiled_mvm",
]

# Arrays of up to this many tiles are read tile after tile in the program (one slice of the
# weights each); larger ones in one vectorised pass over zero-padded, tile-major blocks. On CPU
# the first is faster (RT-MNIST's 256 x 784 layer on two tiles: 0.18 ms against 0.26 ms for
# the products, as the batched product needs a tile-major copy of the weights), the second
# compiles in a time that does not grow with the number of tiles.
UNROLL_TILES = 8


class AnalogGradientWarning(UserWarning):
    """An analog layer was differentiated outside analogsim's training step."""


_IN_TRAINING_STEP = contextvars.ContextVar("analogsim_in_training_step", default=False)


@contextlib.contextmanager
def pulsed_training():
    """Mark the tracing of a training step whose analog weights are updated by pulses (the
    trainers of ``analogsim.training``); outside it, differentiating through an analog read
    warns (``AnalogGradientWarning``)."""
    token = _IN_TRAINING_STEP.set(True)
    try:
        yield
    finally:
        _IN_TRAINING_STEP.reset(token)


def split_sizes(size: int, max_size: int) -> tuple[int, ...]:
    """Sizes of the tiles along one dimension of ``size`` cells, at most ``max_size`` each.

    aihwkit's split: ``ceil(size / max_size)`` near-equal parts, the larger first; ``max_size``
    of 0 means no limit.

    Example:
      >>> split_sizes(784, 512), split_sizes(1100, 512), split_sizes(256, 512)
      ((392, 392), (367, 367, 366), (256,))
    """
    if size < 1:
        raise ValueError(f"split_sizes: size {size!r} is not allowed; must be >= 1")
    if max_size < 0:
        raise ValueError(f"split_sizes: max_size {max_size!r} is not allowed; must be >= 1, or 0 for no limit")
    if max_size == 0 or size <= max_size:
        return (size,)
    n = -(-size // max_size)
    base, extra = divmod(size, n)
    return tuple(base + (i < extra) for i in range(n))


def tile_grid(out_size: int, in_size: int, io: IOParameters) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Row sizes and column sizes of the tiles that hold an ``(out_size, in_size)`` matrix."""
    return split_sizes(out_size, io.max_output_size), split_sizes(in_size, io.max_input_size)


def _padded_layout(sizes: tuple[int, ...]) -> np.ndarray:
    """Where each slot of the padded layout takes its cell from (``sum(sizes)``: a zero pad).

    With tiles of unequal size the shorter ones are padded to the longest, so all tiles stack
    into one array. Returns (len(sizes) * max(sizes),) int32.
    """
    n, width = sum(sizes), max(sizes)
    src = np.full((len(sizes), width), n, np.int32)
    start = 0
    for i, s in enumerate(sizes):
        src[i, :s] = np.arange(start, start + s)
        start += s
    return src.ravel()


def _to_blocks(v: jax.Array, sizes: tuple[int, ...], axis: int) -> jax.Array:
    """Lay ``v``'s ``axis`` out as ``len(sizes)`` blocks of ``max(sizes)`` (zero-padded)."""
    if len(set(sizes)) > 1:
        pad = [(0, 0)] * v.ndim
        pad[axis] = (0, 1)
        v = jnp.take(jnp.pad(v, pad), jnp.asarray(_padded_layout(sizes)), axis=axis)
    return v.reshape(*v.shape[:axis], len(sizes), max(sizes), *v.shape[axis + 1 :])


def _from_blocks(v: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """Inverse of ``_to_blocks`` on the last axis of ``v`` (..., len(sizes), max(sizes))."""
    v = v.reshape(*v.shape[:-2], -1)
    if len(set(sizes)) > 1:
        v = jnp.take(v, jnp.asarray(np.nonzero(_padded_layout(sizes) < sum(sizes))[0]), axis=-1)
    return v


def _valid(sizes: tuple[int, ...]) -> jax.Array | None:
    """(len(sizes), max(sizes)) bool: the real (not padded) cells, or ``None`` without padding."""
    if len(set(sizes)) == 1:
        return None
    return jnp.asarray((_padded_layout(sizes) < sum(sizes)).reshape(len(sizes), max(sizes)))


def read_tiles(
    w: jax.Array,
    x: jax.Array,
    io: IOParameters,
    *,
    key: jax.Array | None,
    rows: tuple[int, ...],
    cols: tuple[int, ...],
    transposed: bool = False,
    unrolled: bool | None = None,
) -> MVMResult:
    """Read every tile of ``w`` through its own periphery and add the partial outputs digitally.

    Args:
      w: (out, in) weights, ``out = sum(rows)``, ``in = sum(cols)``; tile ``(i, j)`` holds
        rows ``sum(rows[:i])`` to ``sum(rows[:i + 1])`` and the matching columns.
      x: (batch, in) inputs, or (batch, out) for a transposed read.
      io: periphery of every tile.
      key: PRNG key (``None``: noise-free); each tile draws from its own stream.
      rows, cols: the tile sizes (``tile_grid``).
      transposed: read ``W^T x`` (the backward read) instead of ``W x``.
      unrolled: read the tiles one after another in the program (each its own slice of ``w``)
        instead of in one vectorised pass; ``None``: unrolled for at most ``UNROLL_TILES``
        tiles. Both give the same result (same keys, same noise; float rounding aside).

    Returns:
      ``MVMResult``: ``y`` (batch, out), or (batch, in) when transposed, and ``reads``
      (batch,) int32, the largest number of reads any tile took for that vector.
    """
    # Zero-padded input cells add nothing to the product, to the absolute maximum or to the
    # input norm; padded output cells are read but dropped, and ignored by bound management.
    if (sum(rows), sum(cols)) != w.shape:
        raise ValueError(f"read_tiles: tiles of rows {rows} and columns {cols} do not cover w of shape {w.shape}")
    n_r, n_c = len(rows), len(cols)
    keys = None if key is None else jax.random.split(key, (n_r, n_c))
    if unrolled is None:
        unrolled = n_r * n_c <= UNROLL_TILES
    if unrolled:
        return _read_tiles_unrolled(w, x, io, keys, rows, cols, transposed)
    w_b = _to_blocks(_to_blocks(w, cols, 1), rows, 0)  # (R, r, C, c), tile (i, j) = w_b[i, :, j]
    # Nested vmaps over the tiles: one vectorised read of all of them; tiles that share an input
    # (a column of tiles forward, a row of tiles backward) share it without copies.
    if not transposed:
        x_b = _to_blocks(x, cols, 1)  # (batch, C, c)

        def tile_row(w_i, keys_i, valid_i):  # the C tiles of row of tiles i; w_i (r, C, c)
            def one(w_ij, x_j, k_ij):
                return analog_mvm(w_ij, x_j, io, key=k_ij, valid_outputs=valid_i)

            return jax.vmap(one, in_axes=(1, 1, 0))(w_i, x_b, keys_i)

        res = jax.vmap(tile_row)(w_b, keys, _valid(rows))  # y (R, C, batch, r), reads (R, C, batch)
        y = jnp.sum(res.y, axis=1)  # digital sum over the tiles that share output rows
        y = _from_blocks(y.transpose(1, 0, 2), rows)
    else:
        d_b = _to_blocks(x, rows, 1)  # (batch, R, r)

        def tile_row_t(w_i, d_i, keys_i):  # the C tiles of row of tiles i, read transposed
            def one_t(w_ij, k_ij, valid_j):
                return analog_mvm(w_ij.T, d_i, io, key=k_ij, valid_outputs=valid_j)

            return jax.vmap(one_t, in_axes=(1, 0, 0))(w_i, keys_i, _valid(cols))

        res = jax.vmap(tile_row_t, in_axes=(0, 1, 0))(w_b, d_b, keys)  # y (R, C, batch, c)
        y = jnp.sum(res.y, axis=0)  # digital sum over the tiles that share input columns
        y = _from_blocks(y.transpose(1, 0, 2), cols)
    return MVMResult(y, jnp.max(res.reads, axis=(0, 1)))


def _read_tiles_unrolled(w, x, io, keys, rows, cols, transposed) -> MVMResult:
    """``read_tiles`` tile after tile: each tile reads its own slice of ``w`` (no padding,
    no tile-major copy of ``w``), with the key ``keys[i, j]`` the vectorised pass gives it."""
    r0 = np.cumsum((0, *rows))
    c0 = np.cumsum((0, *cols))
    parts = [[None] * len(cols) for _ in rows]
    for i in range(len(rows)):
        for j in range(len(cols)):
            w_ij = w[r0[i] : r0[i + 1], c0[j] : c0[j + 1]]
            k = None if keys is None else keys[i, j]
            if transposed:
                parts[i][j] = analog_mvm(w_ij.T, x[:, r0[i] : r0[i + 1]], io, key=k)
            else:
                parts[i][j] = analog_mvm(w_ij, x[:, c0[j] : c0[j + 1]], io, key=k)
    reads = functools.reduce(jnp.maximum, [p.reads for row in parts for p in row])
    if transposed:  # the tiles of a column of tiles share input columns: their outputs add up
        y = jnp.concatenate([sum(parts[i][j].y for i in range(len(rows))) for j in range(len(cols))], axis=1)
    else:  # the tiles of a row of tiles share output rows
        y = jnp.concatenate([sum(parts[i][j].y for j in range(len(cols))) for i in range(len(rows))], axis=1)
    return MVMResult(y, reads)


def tiled_mvm(
    w: jax.Array, x: jax.Array, io: IOParameters, *, key: jax.Array | None, max_rows: int, max_cols: int
) -> MVMResult:
    """Read ``y = W x`` on tiles of at most ``max_rows`` x ``max_cols``, partial sums added digitally.

    Args:
      w: (out, in) the matrix as this read sees it.
      x: (batch, in) inputs.
      io: periphery of every tile.
      key: PRNG key (``None``: noise-free); each tile draws from its own stream.
      max_rows: most outputs per tile (0: no limit).
      max_cols: most inputs per tile (0: no limit).

    Returns:
      ``MVMResult``: ``y`` (batch, out), and ``reads`` (batch,) int32, the largest number
      of reads any tile took for that vector (0 when no tile read it).
    """
    rows, cols = split_sizes(w.shape[0], max_rows), split_sizes(w.shape[1], max_cols)
    if io.is_perfect or (len(rows) == 1 and len(cols) == 1):
        # one tile; a perfect read of the tiles sums to the perfect read of the whole matrix
        return analog_mvm(w, x, io, key=key)
    return read_tiles(w, x, io, key=key, rows=rows, cols=cols)


def _check_same_tiles(forward_io: IOParameters, backward_io: IOParameters) -> None:
    for name in ("max_input_size", "max_output_size"):
        f, b = getattr(forward_io, name), getattr(backward_io, name)
        if f != b:
            raise ValueError(
                f"analog_matmul: forward_io.{name} = {f!r} but backward_io.{name} = {b!r}; both reads use "
                f"the same physical tiles: set {name} to the same value in both"
            )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def analog_matmul(
    w: jax.Array, x: jax.Array, key: jax.Array, forward_io: IOParameters, backward_io: IOParameters
) -> tuple[jax.Array, jax.Array]:
    """Analog ``x @ W.T`` with periphery, on tiles; returns ``(y, reads)``.

    Args:
      w: (out, in) weights.
      x: (batch, in) inputs.
      key: PRNG key; the forward and backward reads use independent streams from it.
      forward_io: periphery of the forward read; its ``max_output_size`` x ``max_input_size``
        is the tile size.
      backward_io: periphery of the backward (transposed) read; same tile size.

    Returns:
      ``y`` (batch, out) and ``reads`` (batch,) int32, the number of analog reads each vector
      took (bound management may re-read; with several tiles, the worst tile's count).

    Raises:
      ValueError: ``forward_io`` and ``backward_io`` give different tile sizes.

    Example:
      >>> y, reads = analog_matmul(jnp.ones((2, 3)), jnp.ones((4, 3)), jax.random.key(0),
      ...                          IOParameters(), IOParameters(bound_management="none"))
    """
    _check_same_tiles(forward_io, backward_io)
    res = tiled_mvm(
        w,
        x,
        forward_io,
        key=jax.random.fold_in(key, 0),
        max_rows=forward_io.max_output_size,
        max_cols=forward_io.max_input_size,
    )
    return res.y, res.reads


def _fwd(w, x, key, forward_io, backward_io):
    # (called only when a gradient through the read is being taken)
    if not _IN_TRAINING_STEP.get():
        warnings.warn(
            "a gradient was taken through an analog layer outside analogsim's training step: gradients reach "
            "digital parameters only, and the crossbar weights do not change (an optimizer pointed at them "
            "would run float SGD on device states, without pulses or bounds). Train with analogsim.train(model, "
            "data) or analogsim.make_train_step; for input gradients only, ignore AnalogGradientWarning.",
            AnalogGradientWarning,
            stacklevel=2,
        )
    out = analog_matmul(w, x, key, forward_io, backward_io)
    return out, (w, x, key)


def _bwd(forward_io, backward_io, residuals, cotangents):
    w, x, key = residuals
    g, _ = cotangents
    k = jax.random.fold_in(key, 1)
    rows, cols = tile_grid(*w.shape, forward_io)
    if backward_io.is_perfect or (len(rows) == 1 and len(cols) == 1):
        dx = analog_mvm(w.T, g, backward_io, key=k).y
    else:  # the same tiles, read transposed
        dx = read_tiles(w, g, backward_io, key=k, rows=rows, cols=cols, transposed=True).y
    return g.T @ x, dx, None


analog_matmul.defvjp(_fwd, _bwd)
