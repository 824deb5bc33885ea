"""Ready-made networks: the multilayer perceptron of the reference task, the CIFAR ResNets and
NeuroSim's VGG-8 (``SmallCNN``, for the digits set, lives in ``analogsim.conv``)."""

from .cnn import ANALOG_LAYERS, DEEP_MODELS, VGG8, ResNet, deep_model
from .mlp import ACTIVATIONS, MLP

__all__ = ["ACTIVATIONS", "ANALOG_LAYERS", "DEEP_MODELS", "MLP", "VGG8", "ResNet", "deep_model"]
