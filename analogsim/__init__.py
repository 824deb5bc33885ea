"""analogsim: train neural networks on simulated analog crossbars, and count the energy."""

from .data import DataError, Dataset, load_dataset
from .layers import AnalogLinear, AnalogWeight, DeviceParameters, analog_layers
from .models import MLP
from .periphery import IOParameters, analog_mvm, quantize
from .pulsed_update import UpdateParameters, pulse_probabilities, pulsed_update
from .tile import analog_matmul
from .training import ConfigError, TrainConfig, TrainingError, evaluate, make_train_step, train

__all__ = [
    "AnalogLinear",
    "AnalogWeight",
    "ConfigError",
    "DataError",
    "Dataset",
    "DeviceParameters",
    "IOParameters",
    "MLP",
    "TrainConfig",
    "TrainingError",
    "UpdateParameters",
    "analog_layers",
    "analog_matmul",
    "analog_mvm",
    "evaluate",
    "load_dataset",
    "make_train_step",
    "pulse_probabilities",
    "pulsed_update",
    "quantize",
    "train",
]
