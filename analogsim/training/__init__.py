"""Training and evaluation of nnx models with analog layers.

Modules, one concept each:

- ``config``: ``TrainConfig`` (the ``analogsim train`` flags), its
  checks, the model it builds;
- ``state``: ``TrainState`` and its flat form between compiled calls;
- ``step``: ``make_train_step``, one training step of any nnx model;
- ``evaluation``: ``evaluate``, in eval mode, with event counts;
- ``loop``: ``train_model`` (any nnx model) and ``train`` (a config);
- ``report``: prices, the digital baseline and CO2 of the energy report;
- ``logging``: ``MetricsLogger``, a CSV/JSONL metrics callback.
"""

from .config import ALGORITHMS, ConfigError, TrainConfig, TrainingError, build_model
from .epochs import StopOnInterrupt, TrainingInterrupted
from .evaluation import evaluate, padded_batches
from .logging import MetricsLogger
from .loop import AUTO_MAX_STEPS_PER_CALL, RunResult, auto_steps_per_call, run_report, train, train_config, train_model
from .report import baseline_report, flops_per_sample, ledger_prices
from .state import FlatState, TrainState, layer_name, split_state
from .step import make_train_step, masked_xent

__all__ = [
    "ALGORITHMS",
    "AUTO_MAX_STEPS_PER_CALL",
    "ConfigError",
    "FlatState",
    "MetricsLogger",
    "RunResult",
    "TrainConfig",
    "TrainState",
    "StopOnInterrupt",
    "TrainingError",
    "TrainingInterrupted",
    "auto_steps_per_call",
    "baseline_report",
    "build_model",
    "evaluate",
    "flops_per_sample",
    "layer_name",
    "ledger_prices",
    "make_train_step",
    "masked_xent",
    "padded_batches",
    "run_report",
    "split_state",
    "train",
    "train_config",
    "train_model",
]
