"""analogsim: train neural networks on simulated analog crossbars, and count the energy."""

from ._version import DISTRIBUTION, __version__
from .algorithms import (
    AGAD,
    ALGORITHMS,
    SGD,
    AbstractUpdateRule,
    ChoppedTTv2,
    MixedPrecision,
    TikiTaka,
    TTv2,
    make_rule,
)
from .attention import AnalogMultiHeadAttention, AnalogTransformerBlock
from .conv import AnalogConv, SmallCNN
from .convert import convert
from .data import DataError, Dataset, load_dataset
from .inference import evaluate_after, evaluate_model_after
from .layers import AbstractAnalogLayer, AnalogLinear, AnalogWeight, DeviceDraws, DeviceModel, analog_layers
from .models import MLP
from .modifiers import WeightModifier
from .parallel import (
    data_mesh,
    device_variants,
    evaluate_sweep,
    make_data_parallel_step,
    make_sweep_step,
    replicate,
    shard_step,
    stack_states,
    unstack_state,
)
from .periphery import IOParameters, analog_mvm, quantize
from .pulsed_update import UpdateParameters, pulse_probabilities, pulsed_update
from .recurrent import AnalogGRUCell, AnalogLSTMCell, AnalogRNN, AnalogSimpleCell
from .tile import analog_matmul
from .training import (
    ConfigError,
    MetricsLogger,
    RunResult,
    TrainConfig,
    TrainingError,
    evaluate,
    make_train_step,
    train,
    train_model,
)
from .training.endurance import endurance_report

__all__ = [
    "__version__",
    "DISTRIBUTION",
    "AGAD",
    "ALGORITHMS",
    "AbstractUpdateRule",
    "ChoppedTTv2",
    "MixedPrecision",
    "SGD",
    "TTv2",
    "TikiTaka",
    "endurance_report",
    "evaluate_after",
    "evaluate_model_after",
    "data_mesh",
    "device_variants",
    "evaluate_sweep",
    "make_data_parallel_step",
    "make_sweep_step",
    "replicate",
    "shard_step",
    "stack_states",
    "unstack_state",
    "make_rule",
    "AnalogConv",
    "AnalogGRUCell",
    "AnalogLSTMCell",
    "AnalogMultiHeadAttention",
    "AnalogRNN",
    "AnalogSimpleCell",
    "AnalogTransformerBlock",
    "AnalogLinear",
    "AnalogWeight",
    "ConfigError",
    "DataError",
    "Dataset",
    "AbstractAnalogLayer",
    "DeviceDraws",
    "DeviceModel",
    "MetricsLogger",
    "RunResult",
    "train_model",
    "IOParameters",
    "MLP",
    "SmallCNN",
    "TrainConfig",
    "TrainingError",
    "UpdateParameters",
    "analog_layers",
    "analog_matmul",
    "analog_mvm",
    "convert",
    "evaluate",
    "load_dataset",
    "make_train_step",
    "pulse_probabilities",
    "pulsed_update",
    "quantize",
    "train",
    "WeightModifier",
]
