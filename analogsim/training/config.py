"""The settings of a training run (the ``analogsim train`` flags), their checks, and the
model they build."""

from __future__ import annotations

import dataclasses
import importlib
import math
from pathlib import Path
from typing import Any

from flax import nnx

from device_models import DeviceCard, load_card

from ..algorithms import ALGORITHMS as UPDATE_RULES
from ..algorithms import make_rule
from ..augment import AUGMENTATIONS, make_augment
from ..checkpoint import CHECKPOINT_FILE
from ..data import Dataset
from ..layers import REFERENCES, analog_layers
from ..models import ACTIVATIONS, ANALOG_LAYERS, DEEP_MODELS, MLP, deep_model
from ..modifiers import parse_modifier
from ..pulsed_update import UPDATE_MODES, UpdateParameters

__all__ = [
    "ALGORITHMS",
    "MODELS",
    "ConfigError",
    "TrainConfig",
    "TrainingError",
    "build_augment",
    "build_model",
    "check_resume",
    "config_dict",
]

ALGORITHMS = (*UPDATE_RULES, "digital")


class ConfigError(ValueError):
    """A training setting that is not allowed; the message names it and the allowed values."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says where and why."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the ``analogsim train`` flags)."""

    dataset: str = "digits"
    data_dir: str | None = None
    device: str = "wo3-psg-onen2022"
    algorithm: str = "sgd"
    algo_options: tuple[tuple[str, str], ...] = ()  # (name, value) hyperparameters of the rule
    reference: str = "zero"  # analog weights read against 0 or the devices' symmetry points
    update_mode: str = "auto"  # gaussian where safe on the card, else exact (pulsed_update.safety)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    model: str = "mlp"  # mlp, cnn (SmallCNN), resnet20/32/56, vgg8, or module:factory (build_model)
    hidden: tuple[int, ...] = (256, 128)
    activation: str | None = None  # None: the model's own (tanh for mlp and cnn, relu for resnet*/vgg8)
    analog_layers: str = "all"  # all, or inner (first and last layers digital; mlp, cnn, resnet*, vgg8)
    augment: str = "auto"  # none, crop-flip, or auto (crop-flip for cifar10, none otherwise)
    seed: int = 0
    energy_report: str | None = None
    force: bool = False
    periphery: str = "periphery-default"
    grid_intensity: float | None = None  # kg CO2e per kWh; None: the periphery card's
    checkpoint_dir: str | None = None  # save the full state here after every epoch
    resume: bool = False  # continue from the checkpoint in checkpoint_dir
    allow_version_mismatch: bool = False  # resume a checkpoint written by other package versions
    eval_batch_size: int = 500
    # training steps per compiled call (speed only; see train()); None: auto_steps_per_call
    steps_per_call: int | None = None
    # hardware-aware training: KIND:NUMBER (analogsim.modifiers.parse_modifier), "" for none
    weight_modifier: str = ""

    def __post_init__(self):
        if self.activation is None:  # the model's own, so that a saved config names it
            object.__setattr__(self, "activation", "relu" if self.model in DEEP_MODELS else "tanh")

    def resolved_augment(self) -> str:
        """``augment`` with ``auto`` resolved: ``crop-flip`` for ``cifar10``, else ``none``."""
        if self.augment != "auto":
            return self.augment
        return "crop-flip" if self.dataset == "cifar10" else "none"

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first setting that is not allowed."""
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"--algorithm: value {self.algorithm!r} is not allowed; allowed: {', '.join(ALGORITHMS)}")
        if self.algo_options:
            if self.algorithm == "digital":
                raise ConfigError("--algo-opt: the digital algorithm has no options")
            try:
                make_rule(self.algorithm, dict(self.algo_options))
            except ValueError as e:
                raise ConfigError(str(e)) from None
        if self.reference not in REFERENCES:
            raise ConfigError(f"--reference: value {self.reference!r} is not allowed; allowed: {', '.join(REFERENCES)}")
        if self.update_mode not in UPDATE_MODES:
            raise ConfigError(
                f"--update-mode: value {self.update_mode!r} is not allowed; allowed: {', '.join(UPDATE_MODES)}"
            )
        if self.model not in MODELS and (":" not in self.model or self.model.startswith(":")):
            raise ConfigError(
                f"--model: value {self.model!r} is not allowed; allowed: {', '.join(MODELS)}, or module:factory "
                "(a function of num_features, num_classes, device, update, algorithm, reference, activation, rngs)"
            )
        if self.analog_layers not in ANALOG_LAYERS:
            raise ConfigError(
                f"--analog-layers: value {self.analog_layers!r} is not allowed; allowed: {', '.join(ANALOG_LAYERS)}"
            )
        if self.analog_layers != "all" and self.model not in MODELS:
            raise ConfigError(
                f"--analog-layers: value {self.analog_layers!r} is not allowed with --model {self.model!r}; "
                "a model factory decides its own analog layers (use all)"
            )
        if self.augment not in (*AUGMENTATIONS, "auto"):
            raise ConfigError(
                f"--augment: value {self.augment!r} is not allowed; allowed: auto, {', '.join(AUGMENTATIONS)}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(
                f"--activation: value {self.activation!r} is not allowed; allowed: {', '.join(ACTIVATIONS)}"
            )
        for name in ("epochs", "batch_size", "eval_batch_size", "steps_per_call"):
            value = getattr(self, name)
            if name == "steps_per_call" and value is None:  # chosen per run (auto_steps_per_call)
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(
                    f"--{name.replace('_', '-')}: value {value!r} is not allowed; must be an integer >= 1"
                )
        try:
            parse_modifier(self.weight_modifier)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not (isinstance(self.lr, int | float) and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr: value {self.lr!r} is not allowed; must be a finite number > 0")
        if any((not isinstance(h, int)) or h < 1 for h in self.hidden):
            raise ConfigError(
                f"--hidden: value {','.join(map(str, self.hidden))!r} is not allowed; widths must be integers >= 1"
            )
        if self.grid_intensity is not None and not (math.isfinite(self.grid_intensity) and self.grid_intensity >= 0):
            raise ConfigError(
                f"--grid-intensity: value {self.grid_intensity!r} is not allowed; must be a finite number >= 0"
            )
        if self.resume and self.checkpoint_dir is None:
            raise ConfigError("--resume needs --checkpoint-dir DIR (the directory of the run to continue)")
        if self.checkpoint_dir is not None:
            ckpt = Path(self.checkpoint_dir) / CHECKPOINT_FILE
            if not self.resume and ckpt.is_file() and not self.force:
                raise ConfigError(
                    f"--checkpoint-dir: {ckpt} exists; pass --resume to continue that run or --force to start over"
                )
        if self.energy_report is not None and Path(self.energy_report).exists() and not self.force:
            raise ConfigError(f"--energy-report: file {self.energy_report!r} exists; pass --force to overwrite it")


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()}


# Settings that may change between a run and its resumption (they do not change the result).
_RESUMABLE = (
    "epochs",
    "energy_report",
    "force",
    "resume",
    "allow_version_mismatch",
    "checkpoint_dir",
    "eval_batch_size",
    "steps_per_call",
    "grid_intensity",
    "periphery",
)


def check_resume(config: TrainConfig, meta: dict[str, Any]) -> None:
    saved = meta["config"]
    now = config_dict(config)
    for field, value in now.items():
        if field in _RESUMABLE:
            continue
        if saved.get(field) != value:
            raise ConfigError(
                f"--resume: setting {field!r} is {value!r} but the checkpointed run used {saved.get(field)!r}; "
                "a resumed run must keep every setting but --epochs"
            )
    if meta.get("step_in_epoch") and saved.get("steps_per_call") != now["steps_per_call"]:
        raise ConfigError(
            f"--steps-per-call: value {now['steps_per_call']!r} is not allowed; the checkpoint stopped inside an epoch "
            f"with {saved.get('steps_per_call')!r}, and a resumed epoch keeps its calls to stay bit-identical"
        )
    if meta.get("step_in_epoch") and config.epochs <= meta["epoch"]:
        raise ConfigError(
            f"--epochs: value {config.epochs} is not allowed; the checkpoint stopped inside epoch {meta['epoch'] + 1}: "
            f"must be >= {meta['epoch'] + 1}"
        )
    if meta["epoch"] > config.epochs:
        raise ConfigError(
            f"--epochs: value {config.epochs} is not allowed; the checkpoint already has {meta['epoch']} epochs"
        )


MODELS = ("mlp", "cnn", *DEEP_MODELS)


def _import_factory(spec: str):
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(
            f"--model: {spec!r} cannot be imported ({e}); give module:factory of an importable module"
        ) from None


def _image_shape(config: TrainConfig, dataset: Dataset) -> tuple[int, int, int]:
    shape = dataset.image()
    if config.model == "cnn" and (shape is None or shape[2] != 1 or shape[0] % 4 or shape[1] % 4):
        raise ConfigError(
            f"--model cnn: dataset {dataset.name!r} has {dataset.num_features} features (image shape {shape}); the "
            "small CNN needs one-channel images with sides divisible by 4 (digits 8x8, MNIST 28x28)"
        )
    if shape is None or shape[0] < 8 or shape[1] < 8:
        raise ConfigError(
            f"--model {config.model}: dataset {dataset.name!r} has {dataset.num_features} features (image shape "
            f"{shape}); it needs images of at least 8x8 (digits, MNIST, CIFAR-10, or an .npz of (n, h, w[, c]) images)"
        )
    return shape


def build_model(config: TrainConfig, dataset: Dataset) -> tuple[nnx.Module, DeviceCard | None]:
    """The model of ``config`` for ``dataset`` (``_build_model``), with ``--weight-modifier``
    set on every analog layer (a layer's forward read in a training step sees it)."""
    model, card = _build_model(config, dataset)
    modifier = parse_modifier(config.weight_modifier)
    if modifier is not None:
        for _, layer in analog_layers(model):
            layer.modifier = modifier
    return model, card


def _build_model(config: TrainConfig, dataset: Dataset) -> tuple[nnx.Module, DeviceCard | None]:
    """The model of ``config`` for ``dataset`` (digital for ``--algorithm digital``):
    ``mlp`` (``MLP`` of ``--hidden`` widths), ``cnn`` (``SmallCNN``), ``resnet20``,
    ``resnet32``, ``resnet56`` (``analogsim.models.ResNet``), ``vgg8``
    (``analogsim.models.VGG8``), or ``module:factory``, a function called with the
    keyword arguments ``num_features``, ``num_classes``, ``device`` (a
    ``DeviceCard``, ``None`` for digital), ``update``, ``algorithm``,
    ``reference``, ``activation`` and ``rngs`` that returns an nnx model (logits out)."""
    card = None if config.algorithm == "digital" else load_card(config.device)
    kwargs = {
        "device": card,
        "update": UpdateParameters(mode=config.update_mode),
        "algorithm": None if card is None else make_rule(config.algorithm, dict(config.algo_options)),
        "reference": config.reference,
        "rngs": nnx.Rngs(config.seed),
    }
    if config.model == "mlp":
        sizes = (dataset.num_features, *config.hidden, dataset.num_classes)
        return MLP(sizes, config.activation, analog_layers=config.analog_layers, **kwargs), card
    if config.model in ("cnn", *DEEP_MODELS):
        from ..conv import SmallCNN

        shape = _image_shape(config, dataset)
        common = {"num_classes": dataset.num_classes, "activation": config.activation}
        common |= {"analog_layers": config.analog_layers, **kwargs}
        if config.model == "cnn":
            return SmallCNN(image_shape=shape[:2], **common), card
        return deep_model(config.model, image_shape=shape, **common), card
    factory = _import_factory(config.model)
    model = factory(
        num_features=dataset.num_features, num_classes=dataset.num_classes, activation=config.activation, **kwargs
    )
    if not isinstance(model, nnx.Module):
        raise ConfigError(f"--model: {config.model!r} returned {type(model).__name__}, not an nnx model")
    return model, card


def build_augment(config: TrainConfig, dataset: Dataset):
    """The training-step augmentation of ``config`` (``None``: none)."""
    try:
        return make_augment(config.resolved_augment(), dataset.image())
    except ValueError as e:
        raise ConfigError(f"--augment: {e}") from None
