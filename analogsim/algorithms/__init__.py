"""Analog update rules: analog SGD, the Tiki-Taka family and mixed precision, one interface.

Modules: ``.base`` (the interface, event counts, shared helpers), ``.sgd``,
``.transfer`` (the Tiki-Taka family), ``.mixed_precision``, ``.pair`` (differential
pairs), ``.registry`` (rules by name).

Every rule is a frozen dataclass of hyperparameters with two pure functions, in the manner of
optax: ``init`` builds the rule's typed state for one array, ``update`` turns a batch of layer
inputs ``x`` and output errors ``d`` into pulses on the arrays and returns the new weight
array, the new state and what happened (``RuleCounts``, for the energy ledger). Layers
hold a rule as a static attribute and its state in a ``RuleState`` variable, so rules
swap without touching layers (``AnalogLinear(..., algorithm=TTv2())``).

Notation: ``W`` is the array the forward and backward passes read (``layer.weight``); in the
transfer rules it is the *slow* array ``C``, and ``A`` is the *fast* array that takes the
gradient pulses. Learning rates follow aihwkit's ``TransferCompound``: with
``scale_fast_lr``/``scale_transfer_lr`` the rule's ``fast_lr``/``transfer_lr`` multiply the SGD
learning rate ``lr``, otherwise they are absolute.

- ``SGD``: ``W -= lr d x^T`` by stochastic pulse trains (``pulsed_update``).

The Tiki-Taka family is one composed rule, ``Transfer`` (a fast array, column reads, a
column signal and an optional ``Buffer``, ``.signals``); the four names below build it.

- ``TikiTaka`` (TTv1, Gokmen & Haensch, Front. Neurosci. 14, 103, 2020; aihwkit
  ``TransferCompound``): the gradient goes into ``A``; every ``transfer_every`` mini-batches,
  ``columns_per_transfer`` columns of ``A`` are read (one-hot inputs through the
  ``transfer_io`` periphery) and written into ``C`` by a pulsed update with
  ``lr * transfer_lr``. The network reads ``C + gamma A``.
- ``TTv2`` (Gokmen, Front. Artif. Intell. 4, 699148, 2021; aihwkit
  ``BufferedTransferCompound``): the column reads accumulate in a digital buffer ``H``
  (weight units); where ``|H|`` reaches ``thres_scale * dw_min`` of ``C``, ``trunc(H /
  threshold)`` pulses (at most ``transfer_update.desired_bl``) go to ``C``, and ``H`` keeps
  ``momentum`` of itself (``forget_buffer``) or loses what was sent.
- ``ChoppedTTv2`` (Rasch et al., arXiv 2303.04721, 2023; aihwkit
  ``ChoppedTransferCompound``): as TTv2, but the inputs of the gradient update of ``A`` are
  multiplied by per-column random signs (choppers) and the column reads by the same signs;
  after a column is read its chopper flips with probability ``in_chop_prob``. Device biases
  of ``A`` (drift toward its symmetry point) then average out of the buffer.
- ``AGAD`` (same paper; aihwkit ``DynamicTransferCompound``, simplified): as chopped
  TTv2, with the fixed zero reference replaced by a running mean of ``A``'s reads: the buffer
  takes ``chopper * (read - reference)``, where ``reference`` is the mean read of the column
  over its previous chopper period (an exponential mean with factor ``1 - in_chop_prob``,
  frozen when the chopper flips). The chopper flips regularly every ``1/in_chop_prob`` reads of
  the column (aihwkit's default ``in_chop_random=False``).
- ``MixedPrecision`` (Nandakumar et al., Front. Neurosci. 14, 406, 2020; aihwkit
  ``MixedPrecisionCompound``): the outer product ``-lr d x^T`` is accumulated exactly in a
  digital matrix ``chi``; every ``transfer_every`` mini-batches ``n = trunc(chi /
  (granularity dw_min))`` pulses (at most ``max_pulses``) are applied to each cross-point and
  ``n granularity dw_min`` is taken out of ``chi``.

What differs from aihwkit, by design: transfers happen after the batch's gradient update
(aihwkit's C++ interleaves them between the samples of a mini-batch when ``transfer_every``
is in mat-vecs); ``columns_per_transfer=None`` reads one column per mat-vec of the batch,
which is what aihwkit does with ``units_in_mbatch=False, transfer_every=1``; AGAD's reference
is the simplified running mean above, not aihwkit's tail-weighted period mean.

Counted events (``RuleCounts``): every pulse on every array, every transfer read (one
vector each), and the digital operations of buffers, choppers and ``chi``.
"""

from .base import BUFFERED_TRANSFER_UPDATE, TRANSFER_IO, AbstractUpdateRule, RuleCounts, apply_counts
from .mixed_precision import MixedPrecision, MixedPrecisionState
from .pair import DifferentialPair, PairState
from .registry import ALGORITHMS, make_rule
from .sgd import SGD, SGDState
from .signals import AbstractColumnSignal, Buffer, Chopper, Plain, RunningReference
from .transfer import AGAD, ChoppedTTv2, TikiTaka, Transfer, TransferState, TTv2

__all__ = [
    "AGAD",
    "ALGORITHMS",
    "BUFFERED_TRANSFER_UPDATE",
    "TRANSFER_IO",
    "AbstractColumnSignal",
    "Buffer",
    "Chopper",
    "Plain",
    "RunningReference",
    "Transfer",
    "AbstractUpdateRule",
    "ChoppedTTv2",
    "DifferentialPair",
    "MixedPrecision",
    "MixedPrecisionState",
    "PairState",
    "RuleCounts",
    "SGD",
    "SGDState",
    "TTv2",
    "TikiTaka",
    "TransferState",
    "apply_counts",
    "make_rule",
]
