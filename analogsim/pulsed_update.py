"""Pulsed update of an analog array with stochastic bit streams (aihwkit
``PulsedUpdateParameter``, ``StochasticCompressed`` pulses).

The SGD step :math:`W \\leftarrow W - \\eta\\, d x^T` of one sample is realised by ``BL``
time slots. In each slot, row (input) ``j`` fires with probability :math:`p_j = B|x_j|` and
column (output) ``i`` with :math:`q_i = A|d_i|`; where both fire, the cross-point receives one
pulse of sign :math:`-\\mathrm{sign}(x_j d_i)` (a positive product lowers the weight), i.e.

.. math::
    A = B = \\sqrt{\\frac{\\eta}{\\Delta w_{min} BL}}, \\qquad
    \\mathbb{E}[n_{ij}] = BL\\,p_j q_i = \\frac{\\eta |x_j d_i|}{\\Delta w_{min}}.

*Update BL management* shortens the train to
:math:`BL = \\min(\\lceil \\eta \\max|x| \\max|d| / \\Delta w_{min} \\rceil, BL_{desired})`;
*update management* multiplies ``B`` by :math:`\\sqrt{\\max|d| / \\max|x|}` and ``A`` by its
inverse, balancing the two probabilities. Probabilities are clipped to 1.

Three rungs of the fidelity ladder:

- ``exact`` (the ground truth) applies samples one after another and, inside a sample, every
  pulse with its own cycle-to-cycle noise and its own clip to the bounds.
- ``expected`` draws, per cross-point and batch, the number of up and of down pulses from a
  Poisson law whose mean is the exact expected count of the bit streams,
  :math:`\\lambda_\\pm = \\sum_s BL_s\\,p_{sj} q_{si}` over the samples whose sign gives that
  direction (so probability clipping and BL management are kept), and applies them at once
  from the state before the batch: :math:`\\Delta w = n_+ \\Delta w_+(w) - n_- \\Delta w_-(w)` plus
  Gaussian cycle-to-cycle noise of the summed variance
  :math:`n_+ \\mathrm{Var}_+(w) + n_- \\mathrm{Var}_-(w)` (the model's per-pulse variance,
  :math:`(\\sigma_{c2c} \\Delta w_\\pm)^2` for aihwkit's devices), then one clip to the bounds. It
  departs from ``exact`` in the order of pulses within a batch (first-order in the step), in
  the count distribution (Poisson instead of a sum of binomials: equal means, a variance
  larger by at most the squared coincidence probability; and independent across cross-points,
  whereas the bit streams correlate cross-points that share a row or a column), and in
  clipping once per batch.
- ``gaussian`` skips the counts: it moves each cross-point by the mean and the variance of the
  same compound-Poisson change,

  .. math::
      \\Delta w = \\lambda_+ \\Delta w_+ - \\lambda_- \\Delta w_-
        + \\sqrt{\\lambda_+ (\\Delta w_+^2 + \\mathrm{Var}_+) + \\lambda_- (\\Delta w_-^2 + \\mathrm{Var}_-)}
        \\;\\xi,

  steps and variances at the state before the batch, one draw :math:`\\xi` per cross-point and
  batch, then one clip. Beyond ``expected``'s deviations, the change is Gaussian instead of a
  sum of whole steps: a cross-point with :math:`\\lambda \\ll 1` (most of them, most batches)
  moves a little every batch rather than a whole step now and then; mean and variance are the
  same. :math:`\\xi` is a standardised popcount of 32 random bits (zero mean, unit variance,
  excess kurtosis -1/16: see :func:`_unit_noise`), and the pulse counts given to the energy
  ledger are :math:`\\sum \\lambda_\\pm` rounded at random without bias.

How ``exact`` is computed. All pulses of one sample at one cross-point have the same sign,
and given its own pulses a cross-point evolves independently of the others (its step depends
on its own state, its noise is its own). Slot after slot, cross-point ``(i, j)`` receives a
pulse in each slot where row ``j`` and column ``i`` both fire, i.e.
:math:`n_{ij} = \\mathrm{popcount}(R_j \\wedge C_i)` pulses, where :math:`R_j` and :math:`C_i` are
the bit masks of the slots in which the row and the column fire (one Bernoulli draw per line and
slot, as before); slots without a pulse leave it unchanged. Applying each cross-point's
:math:`n_{ij}` pulses one after another (pass ``k`` gives a pulse to the cross-points with
:math:`n_{ij} > k`, each with fresh noise, its step taken at the state the previous pulse left,
and its own clip) is therefore the same stochastic process as slot after slot, jointly over
the array (the masks, hence the correlations along rows and columns, are drawn the same way):
equal in distribution, not draw for draw. It needs :math:`\\max n_{ij}` passes per sample
instead of ``BL`` (one on RT-MNIST, where ``BL = 1``), and only over the fired cells (fired
columns x fired rows, about 900 of 200,704 in RT-MNIST's first layer): large arrays gather
those cells, update them and scatter them back, small arrays (up to ``_DENSE_MAX`` cross-points)
are updated whole. For models with the shared noise law (:meth:`AbstractPulsedModel.sample_step`)
the normals of the first pulses are drawn for the whole batch at once; the random numbers come
from a Philox key derived from the given one (:func:`_fast_key`), the large draws (at least
``analogsim.rng.FOUR_WORDS_MIN`` words) from all four words of each Philox block
(:mod:`analogsim.rng`). ``tests/test_pulsed_update.py``
checks the result against the literal slot-by-slot algorithm (:func:`_slot_by_slot`).

References:
    Gokmen & Vlasov, Front. Neurosci. 10, 333 (2016); IBM aihwkit ``PulsedUpdateParameter``
    (desired_bl 31, update_bl_management and update_management on).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp

from device_models import AbstractPulsedModel, CrossPoints, apply_pulses, expected_step

from . import rng
from .rng import fast_key as _fast_key

__all__ = ["UPDATE_MODES", "PulseCounts", "UpdateParameters", "pulse_probabilities", "pulsed_update"]

UPDATE_MODES = ("exact", "expected", "gaussian")


@dataclasses.dataclass(frozen=True)
class UpdateParameters:
    """Settings of the pulsed update (aihwkit defaults)."""

    desired_bl: int = 31  # longest pulse train (time slots per sample)
    update_bl_management: bool = True  # shorten BL to what the sample needs
    update_management: bool = True  # balance row and column probabilities
    # Rung of the fidelity ladder (module docstring). On RT-MNIST (5 epochs, seeds 0 and 1)
    # "expected" and "gaussian" stay within 0.7 points of "exact"; "gaussian", the fastest, is
    # the default (DESIGN.md: the fastest rung within 1 point of exact; README, fidelity ladder).
    mode: Literal["exact", "expected", "gaussian"] = "gaussian"

    def __post_init__(self):
        if not (isinstance(self.desired_bl, int) and self.desired_bl >= 1):
            raise ValueError(
                f"UpdateParameters.desired_bl: value {self.desired_bl!r} is not allowed; must be an int >= 1"
            )
        if self.mode not in UPDATE_MODES:
            raise ValueError(
                f"UpdateParameters.mode: value {self.mode!r} is not allowed; allowed: {', '.join(UPDATE_MODES)}"
            )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PulseCounts:
    """Pulses fired in one update (int32 scalars; a step is far below 2**31 pulses). The
    ``gaussian`` rung draws no counts: it gives the expected ones, rounded at random without bias."""

    up: jax.Array  # potentiating pulses
    down: jax.Array  # depressing pulses


def pulse_probabilities(
    x: jax.Array, d: jax.Array, lr: float | jax.Array, dw_min: float | jax.Array, up: UpdateParameters
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Row and column firing probabilities and the train length of one sample.

    Args:
      x: (in,) the layer input of the sample.
      d: (out,) the error at the layer output of the sample.
      lr: learning rate.
      dw_min: the device's nominal step (weight units).
      up: update settings.

    Returns:
      ``(p_rows (in,), q_cols (out,), bl)`` with ``bl`` an int32 scalar; ``bl == 0`` when ``x``
      or ``d`` is all zero (no pulses).
    """
    x_max = jnp.max(jnp.abs(x))
    d_max = jnp.max(jnp.abs(d))
    active = (x_max > 0) & (d_max > 0)
    if up.update_bl_management:
        need = jnp.ceil(lr * x_max * d_max / dw_min)
        bl = jnp.clip(need, 1, up.desired_bl).astype(jnp.int32)
    else:
        bl = jnp.asarray(up.desired_bl, jnp.int32)
    bl = jnp.where(active, bl, 0)
    safe_bl = jnp.maximum(bl, 1).astype(x.dtype)
    a = b = jnp.sqrt(lr / (dw_min * safe_bl))
    if up.update_management:
        safe_x = jnp.where(active, x_max, 1.0)
        safe_d = jnp.where(active, d_max, 1.0)
        ratio = jnp.sqrt(safe_d / safe_x)
        b = b * ratio
        a = a / ratio
    p = jnp.clip(b * jnp.abs(x), 0.0, 1.0)
    q = jnp.clip(a * jnp.abs(d), 0.0, 1.0)
    return p, q, bl


def _slot_by_slot(model, cp, w, x, d, lr, up, key):
    """Reference ``exact`` update, literally slot by slot: every slot draws its rows and columns
    and applies a pulse matrix to the whole array (about ``BL`` full-array passes per sample).
    Kept for the tests that check :func:`pulsed_update`'s ``exact`` rung against it (equal in
    distribution, see the module docstring)."""
    keys = jax.random.split(key, x.shape[0])

    def sample(carry, inputs):
        w, n_up, n_down = carry
        xs, ds, ks = inputs
        p, q, bl = pulse_probabilities(xs, ds, lr, model.pulsed.dw_min, up)
        # +1: potentiate (raise w) where x_j d_i < 0.
        direction = (-jnp.sign(ds)[:, None] * jnp.sign(xs)[None, :]).astype(jnp.int8)

        def slot(t, carry):
            w, n_up, n_down = carry
            k_row, k_col, k_noise = jax.random.split(jax.random.fold_in(ks, t), 3)
            rows = jax.random.bernoulli(k_row, p)
            cols = jax.random.bernoulli(k_col, q)
            pulses = jnp.where(cols[:, None] & rows[None, :], direction, jnp.int8(0))
            w = apply_pulses(model, cp, w, pulses, key=k_noise)
            n_up = n_up + jnp.sum(pulses > 0, dtype=jnp.int32)
            n_down = n_down + jnp.sum(pulses < 0, dtype=jnp.int32)
            return w, n_up, n_down

        return jax.lax.fori_loop(0, bl, slot, (w, n_up, n_down)), None

    zero = jnp.zeros((), jnp.int32)
    (w, n_up, n_down), _ = jax.lax.scan(sample, (w, zero, zero), (x, d, keys))
    return w, PulseCounts(up=n_up, down=n_down)


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
    :meth:`AbstractPulsedModel.sample_step` (step times :math:`1 + \\sigma_{c2c}\\xi`)."""
    return type(model).sample_step is AbstractPulsedModel.sample_step


def _one_pulse(model, cp, w, pulses, xi):
    """:func:`device_models.apply_pulses` for a model with the default noise law, with the
    standard normals ``xi`` given (drawn in bulk outside the per-sample loop, several times
    cheaper on CPU than a draw per sample)."""
    dw = expected_step(model, cp, w, pulses) * (1.0 + cp.dw_min_std * xi)
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
        return _exact_dense(model, cp, w, rows, cols, sx, sd, k_pulses)
    return _exact_sparse(model, cp, w, rows, cols, sx, sd, k_pulses)


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


def _exact_sparse(model, cp, w, rows, cols, sx, sd, key):
    """``exact`` on a large array: per sample, only the fired cells (gathered, updated,
    scattered back), in chunks."""
    batch = rows.shape[0]
    out, n_in = w.shape
    size = out * n_in
    r_idx, n_rows = _compact(jnp.any(rows != 0, axis=-1))
    c_idx, n_cols = _compact(jnp.any(cols != 0, axis=-1))
    cells = n_rows * n_cols  # (batch,) fired cells of each sample
    leaves, treedef = jax.tree.flatten(cp)
    per_cell = [leaf.shape == w.shape for leaf in leaves]  # per-cross-point parameters
    flat_leaves = [leaf.reshape(-1) if cell else leaf for leaf, cell in zip(leaves, per_cell, strict=True)]

    def gather_cp(flat):  # the per-cell leaves of ``cp`` at ``flat``
        return [_take(a, flat) for a, c in zip(flat_leaves, per_cell, strict=True) if c]

    def cells_cp(cell_leaves):
        it = iter(cell_leaves)
        return jax.tree.unflatten(treedef, [next(it) if c else a for a, c in zip(leaves, per_cell, strict=True)])

    def scatter(w, flat, valid, sub):
        return w.at[jnp.where(valid, flat, size)].set(sub, mode="drop", unique_indices=True)

    # The lean path (at most one pulse per cell, as with BL = 1 on RT-MNIST) walks a list of
    # work items, (sample, chunk) pairs in sample order, of static length (_ITEMS per sample),
    # with everything that does not depend on the weights prepared at once, outside the loop;
    # the chunk size is the smallest of _CHUNKS whose list holds the batch. Any other batch
    # takes the general path: sample after sample, chunk after chunk, pulse after pulse.
    n_items = int(batch * _ITEMS)
    chunks = [c for c in _CHUNKS if c < size] or [size]

    def lean(chunk, w, key_data):
        n_chunks = (cells + chunk - 1) // chunk
        ends = jnp.cumsum(n_chunks)
        item = jnp.arange(n_items, dtype=jnp.int32)
        owner = jnp.minimum(jnp.searchsorted(ends, item, side="right"), batch - 1).astype(jnp.int32)
        part = item - (ends - n_chunks)[owner]

        def item_cells(s, c):
            return _chunk_cells(c, chunk, r_idx, c_idx, rows, cols, sx, sd, n_rows[s], n_cols[s], n_in, s=s)

        flat, valid, n, direction = jax.vmap(item_cells)(owner, part)
        listed = (item < ends[-1])[:, None]
        n = jnp.where(listed, n, 0)

        def work(w, inputs):
            flat, valid, n, direction, sub_cp, noise = inputs
            sub = _single_pulses(model, cells_cp(sub_cp), _take(w, flat), n, direction, noise)
            return scatter(w, flat, valid, sub), None

        noise = _lean_noise(model, _branch_key(key_data, impl, 0), flat.shape, w.dtype)
        w, _ = jax.lax.scan(work, w, (flat, valid & listed, n, direction, gather_cp(flat), noise))
        return (w, *_tally(n, direction))

    def general(w, key_data):
        chunk = chunks[-1]

        def sample(carry, inputs):
            rm, cm, sxs, sds, ri, ci, nr, nc, key = inputs

            def one_chunk(c, carry):
                w, n_up, n_down = carry
                flat, valid, n, direction = _chunk_cells(c, chunk, ri, ci, rm, cm, sxs, sds, nr, nc, n_in)
                sub = _take(w, flat)
                sub = _pulse_trains(model, cells_cp(gather_cp(flat)), sub, n, direction, jax.random.fold_in(key, c))
                u, dn = _tally(n, direction)
                return scatter(w, flat, valid, sub), n_up + u, n_down + dn

            return jax.lax.fori_loop(0, (nr * nc + chunk - 1) // chunk, one_chunk, carry), None

        zero = jnp.zeros((), jnp.int32)
        keys = jax.random.split(_branch_key(key_data, impl, 1), batch)
        inputs = (rows, cols, sx, sd, r_idx, c_idx, n_rows, n_cols, keys)
        return jax.lax.scan(sample, (w, zero, zero), inputs)[0]

    # at most one pulse per cell: one slot per sample, or no row and column firing together twice
    once = jnp.all(jnp.sum(jax.lax.population_count(rows), axis=-1) <= 1) | jnp.all(
        jnp.sum(jax.lax.population_count(cols), axis=-1) <= 1
    )
    fits = jnp.stack([jnp.sum((cells + c - 1) // c) <= n_items for c in chunks])
    which = jnp.where(once & jnp.any(fits), jnp.argmax(fits), len(chunks))
    branches = [functools.partial(lean, c) for c in chunks] + [general]
    impl = jax.random.key_impl(key)
    w_flat, n_up, n_down = jax.lax.switch(which, branches, w.reshape(-1), jax.random.key_data(key))
    return w_flat.reshape(w.shape), PulseCounts(up=n_up, down=n_down)


def _poisson(key: jax.Array, lam: jax.Array, kmax: int = 12, normal_above: float = 3.0) -> jax.Array:
    """Poisson counts for means ``lam``: exact inverse-CDF sampling (truncated at ``kmax``,
    a tail below 2e-5 for means up to 3) where ``lam <= normal_above``, and a rounded
    Gaussian of mean and variance ``lam`` above it. Fixed cost: ``kmax`` elementwise passes
    and one uniform per element (the Gaussian branch reuses it through the inverse normal CDF).
    """
    # read by every term below: computed once (fused into each, the join of the words is slow)
    u = rng.computed_once(rng.uniform(key, lam.shape, lam.dtype, minval=jnp.finfo(lam.dtype).tiny))
    small = jnp.minimum(lam, normal_above)
    term = jnp.exp(-small)  # P(N = 0)
    cdf = term
    n = jnp.zeros(lam.shape, jnp.int32)
    for k in range(1, kmax + 1):
        n = n + (u > cdf).astype(jnp.int32)
        term = term * small / k
        cdf = cdf + term
    big = jnp.round(lam + jnp.sqrt(lam) * jax.scipy.special.ndtri(u))
    return jnp.where(lam <= normal_above, n, jnp.maximum(big, 0).astype(jnp.int32))


def _count_terms(model, x, d, lr, up):
    """The two products behind the expected counts: per cross-point, the total
    :math:`\\sum_s BL_s p_{sj} q_{si}` and the signed sum (each term times the sign of
    :math:`x_{sj} d_{si}`), (out, in) each; and their sums over the array, (scalars) from the
    per-sample line sums, without a pass over the array."""
    p, q, bl = jax.vmap(pulse_probabilities, in_axes=(0, 0, None, None, None))(x, d, lr, model.pulsed.dw_min, up)
    pb = p * bl[:, None].astype(p.dtype)
    qs, pbs = q * jnp.sign(d), pb * jnp.sign(x)
    total = q.T @ pb
    signed = qs.T @ pbs  # > 0: more down pulses
    sum_total = jnp.sum(jnp.sum(q, axis=1) * jnp.sum(pb, axis=1))
    sum_signed = jnp.sum(jnp.sum(qs, axis=1) * jnp.sum(pbs, axis=1))
    return total, signed, sum_total, sum_signed


def _mean_counts(model, x, d, lr, up):
    """Expected up and down pulses of the batch at each cross-point, (out, in) each.

    :math:`\\sum_s BL_s\\,p_{sj} q_{si}` over the samples whose sign
    :math:`-\\mathrm{sign}(x_{sj} d_{si})` is up, and over those where it is down (probability
    clipping and BL management included). Two matrix products: the total and the signed sum.
    """
    total, signed, _, _ = _count_terms(model, x, d, lr, up)
    return _up_down(total, signed)


def _up_down(total, signed):
    """Up and down pulses from the total and the signed sum (signed > 0: more down pulses)."""
    return jnp.maximum(0.5 * (total - signed), 0.0), jnp.maximum(0.5 * (total + signed), 0.0)


def _expected_update(model, cp, w, x, d, lr, up, key):
    """The ``expected`` rung: Poisson counts per batch applied at once (see the module docstring)."""
    mean_up, mean_down = _mean_counts(model, x, d, lr, up)
    k_up, k_down, k_noise = jax.random.split(_fast_key(key), 3)
    n_up = _poisson(k_up, mean_up)
    n_down = _poisson(k_down, mean_down)
    step_up = model.step_up(cp, w)
    step_down = model.step_down(cp, w)
    f_up, f_down = n_up.astype(w.dtype), n_down.astype(w.dtype)
    dw = f_up * step_up - f_down * step_down
    var = f_up * model.step_variance(cp, w, True) + f_down * model.step_variance(cp, w, False)
    std = jnp.sqrt(var)
    dw = dw + std * rng.normal(k_noise, w.shape, w.dtype)
    new = jnp.clip(w + dw, cp.b_min, cp.b_max)
    new = jnp.where((n_up + n_down) > 0, new, w)
    return new, PulseCounts(up=jnp.sum(n_up), down=jnp.sum(n_down))


def _stochastic_round(key: jax.Array, total: jax.Array) -> jax.Array:
    """``floor(total + u)``, ``u ~ U[0, 1)``: an int32 whose mean is ``total`` (>= 0)."""
    return jnp.floor(total + jax.random.uniform(key, total.shape, total.dtype)).astype(jnp.int32)


def _unit_noise(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Zero-mean, unit-variance noise from 32 random bits per element: the standardised
    popcount, :math:`(\\mathrm{Bin}(32, 1/2) - 16)/\\sqrt{8}`.

    A near-Gaussian (skewness 0, excess kurtosis -1/16, 33 levels 0.35 apart, tails cut at
    5.7) at the cost of the random bits alone: on CPU the inverse error function of
    ``jax.random.normal`` costs about as much again as the bits (and fused into the update
    several times that), and the ``gaussian`` rung's shape of noise is an approximation anyway.
    The bits are :func:`analogsim.rng.bits` (four words from each Philox block when the array is
    large).
    """
    bits = rng.bits(key, shape)
    return ((jax.lax.population_count(bits).astype(dtype) - 16.0) * (1.0 / 8.0**0.5)).astype(dtype)


def _gaussian_update(model, cp, w, x, d, lr, up, key):
    """The ``gaussian`` rung: the batch's compound-Poisson change, its mean and variance, with
    one near-normal draw per cross-point (see the module docstring)."""
    total, signed, sum_total, sum_signed = _count_terms(model, x, d, lr, up)
    mean_up, mean_down = _up_down(total, signed)
    k_noise, k_up, k_down = jax.random.split(_fast_key(key), 3)
    step_up = model.step_up(cp, w)
    step_down = model.step_down(cp, w)
    drift = mean_up * step_up - mean_down * step_down
    var = mean_up * (step_up**2 + model.step_variance(cp, w, True)) + mean_down * (
        step_down**2 + model.step_variance(cp, w, False)
    )
    new = jnp.clip(w + drift + jnp.sqrt(var) * _unit_noise(k_noise, w.shape, w.dtype), cp.b_min, cp.b_max)
    new = jnp.where(mean_up + mean_down > 0, new, w)
    # the array's expected totals from the line sums (equal to summing mean_up and mean_down, up
    # to rounding, since total >= |signed| at every cross-point), without another pass over it
    sum_up, sum_down = _up_down(sum_total, sum_signed)
    counts = PulseCounts(up=_stochastic_round(k_up, sum_up), down=_stochastic_round(k_down, sum_down))
    return new, counts


def pulsed_update(
    model: AbstractPulsedModel,
    cp: CrossPoints,
    w: jax.Array,
    x: jax.Array,
    d: jax.Array,
    lr: float | jax.Array,
    up: UpdateParameters,
    *,
    key: jax.Array,
) -> tuple[jax.Array, PulseCounts]:
    """Apply the pulsed SGD update of a batch with the rung ``up.mode`` of the fidelity ladder
    (``exact``: sample after sample, pulse after pulse; see the module docstring).

    Args:
      model: device model of the array.
      cp: the array's cross-point parameters.
      w: (out, in) device states.
      x: (batch, in) layer inputs.
      d: (batch, out) errors at the layer output (the gradient of the loss with respect to the
        output, so with a mean-reduced loss it includes the 1/batch factor, as in aihwkit).
      lr: learning rate.
      up: update settings.
      key: PRNG key.

    Returns:
      The new states and the pulses fired.
    """
    if up.mode == "expected":
        return _expected_update(model, cp, w, x, d, lr, up, key)
    if up.mode == "gaussian":
        return _gaussian_update(model, cp, w, x, d, lr, up, key)
    return _exact_update(model, cp, w, x, d, lr, up, key)
