"""Ready-made networks: the multilayer perceptron of the reference task, the CIFAR ResNets,
NeuroSim's VGG-8 (``SmallCNN``, for the digits set, lives in ``analogsim.conv``), and the sequence
models (a recurrent classifier and a small transformer, with the associative-recall task)."""

from .cnn import ANALOG_LAYERS, DEEP_MODELS, VGG8, ResNet, deep_model
from .mlp import ACTIVATIONS, MLP
from .sequence import RecurrentClassifier, TransformerClassifier, associative_recall

__all__ = [
    "ACTIVATIONS",
    "ANALOG_LAYERS",
    "DEEP_MODELS",
    "MLP",
    "VGG8",
    "RecurrentClassifier",
    "ResNet",
    "TransformerClassifier",
    "associative_recall",
    "deep_model",
]
