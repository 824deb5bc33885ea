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
  excess kurtosis -1/16: see ``_unit_noise``), and the pulse counts given to the energy
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
are updated whole. For models with the shared noise law (``AbstractPulsedModel.sample_step``)
the normals of the first pulses are drawn for the whole batch at once; the random numbers come
from a Philox key derived from the given one (``analogsim.rng.fast_key``), the large draws
(at least ``analogsim.rng.FOUR_WORDS_MIN`` words) from all four words of each Philox block
(``analogsim.rng``). ``tests/test_pulsed_update.py`` checks the result against the literal
slot-by-slot algorithm (``_slot_by_slot``).

Modules, one concept each: ``settings`` (``UpdateParameters``,
``PulseCounts``), ``probabilities`` (firing probabilities and
the expected counts), one per rung (``exact``,
``expected``, ``gaussian``) and
``reference`` (the slot-by-slot reference of the tests).

References:
    Gokmen & Vlasov, Front. Neurosci. 10, 333 (2016); IBM aihwkit ``PulsedUpdateParameter``
    (desired_bl 31, update_bl_management and update_management on).
"""

from __future__ import annotations

import dataclasses

import jax

from device_models import AbstractPulsedModel, CrossPoints

from .exact import (  # noqa: F401 (re-exported)
    _CHUNKS,
    _DENSE_MAX,
    _ITEMS,
    _branch_key,
    _chunk_cells,
    _coincidences,
    _compact,
    _default_noise_law,
    _exact_dense,
    _exact_sparse,
    _exact_update,
    _fire_masks,
    _lean_noise,
    _one_pulse,
    _pulse_trains,
    _single_pulses,
    _take,
    _tally,
)
from .expected import _expected_update, _poisson  # noqa: F401 (re-exported)
from .gaussian import _gaussian_update, _stochastic_round, _unit_noise  # noqa: F401 (re-exported)
from .probabilities import _count_terms, _mean_counts, _up_down, pulse_probabilities, stream_counts  # noqa: F401
from .reference import _slot_by_slot  # noqa: F401 (re-exported)
from .safety import check_rungs, resolve_update
from .settings import UPDATE_MODES, PulseCounts, UpdateParameters

__all__ = [
    "UPDATE_MODES",
    "PulseCounts",
    "UpdateParameters",
    "check_rungs",
    "pulse_probabilities",
    "pulsed_update",
    "resolve_update",
]

# The private names above stay importable from here, as from the single module this package
# replaces (tests and benchmarks use several). A name that a function looks up when it runs (the
# tunables ``_DENSE_MAX``, ``_CHUNKS``, ``_ITEMS``; ``rng``; ``_unit_noise``) is read from the
# submodule that holds it: patch it there (``analogsim.pulsed_update.exact._DENSE_MAX``), not here.


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
      The new states and the pulses fired (with the slots and line pulses of the bit streams,
      the same for every rung: expectations from the firing probabilities).
    """
    if up.mode == "auto":
        try:
            up = resolve_update(model, up)
        except (TypeError, jax.errors.ConcretizationTypeError):
            raise ValueError(
                "pulsed_update: mode 'auto' needs a concrete device model to choose a rung; resolve it first "
                "(analogsim.pulsed_update.resolve_update) or pass exact, expected or gaussian"
            ) from None
    if up.mode == "expected":
        w, pulses = _expected_update(model, cp, w, x, d, lr, up, key)
    elif up.mode == "gaussian":
        w, pulses = _gaussian_update(model, cp, w, x, d, lr, up, key)
    else:
        w, pulses = _exact_update(model, cp, w, x, d, lr, up, key)
    slots, rows, cols = stream_counts(x, d, lr, model.pulsed.dw_min, up)
    return w, dataclasses.replace(pulses, slots=slots, row_pulses=rows, column_pulses=cols)
