"""Models, and the input shapes each accepts.

The MNIST CNN follows McMahan et al. 2017, "Communication-Efficient Learning of
Deep Networks from Decentralized Data" (arXiv:1602.05629): two 5x5 conv layers
(32, 64 channels) with 2x2 max-pooling, FC 3136->512, FC 512->10; 1,663,370
parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 grey-scale digits (scikit-learn ``load_digits``)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, num_classes)
        )

    # Pixel mean and std of load_digits scaled to [0, 1]: standardized inputs let plain
    # SGD make progress from round 1 instead of idling near chance for several rounds.
    MEAN, STD = 0.305, 0.376

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features((x - self.MEAN) / self.STD))


class MnistCNN(nn.Module):
    """The CNN of McMahan et al. 2017 for 28x28 grey-scale images."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(7 * 7 * 64, 512), nn.ReLU(), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class LogisticRegression(nn.Module):
    """Multinomial logistic regression (FedProx paper's model for Synthetic data)."""

    def __init__(self, num_features: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class LinearRegression(nn.Module):
    """y = x·w + b, trained with mean squared error."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1)).squeeze(-1)


def _cifar_mobilenet(num_classes: int) -> nn.Module:
    # MobileNetV3-small (1.5M parameters) suits small devices; its adaptive pooling
    # handles 32x32 inputs, so only the classifier size changes.
    from torchvision.models import mobilenet_v3_small

    return mobilenet_v3_small(weights=None, num_classes=num_classes)


@dataclass(frozen=True)
class ModelSpec:
    """How to build a model and which inputs it accepts.

    ``input_shape`` is the per-example shape without the batch dimension; ``None``
    means any shape (the model flattens its input). ``task`` is "classification" or
    "regression".
    """

    build: Callable[[tuple[int, ...], int], nn.Module]
    input_shape: tuple[int, ...] | None
    task: str
    description: str


def _flat_features(shape: tuple[int, ...]) -> int:
    n = 1
    for dim in shape:
        n *= dim
    return n


MODELS: dict[str, ModelSpec] = {
    "digits-cnn": ModelSpec(
        lambda shape, k: DigitsCNN(k), (1, 8, 8), "classification", "small CNN, 8x8 images"
    ),
    "mnist-cnn": ModelSpec(
        lambda shape, k: MnistCNN(k),
        (1, 28, 28),
        "classification",
        "CNN of McMahan et al. 2017, 28x28 images (1.66M parameters)",
    ),
    "cifar-mobilenet": ModelSpec(
        lambda shape, k: _cifar_mobilenet(k),
        (3, 32, 32),
        "classification",
        "torchvision MobileNetV3-small, 32x32 RGB images",
    ),
    "logreg": ModelSpec(
        lambda shape, k: LogisticRegression(_flat_features(shape), k),
        None,
        "classification",
        "multinomial logistic regression, any input (flattened)",
    ),
    "linreg": ModelSpec(
        lambda shape, k: LinearRegression(_flat_features(shape)),
        None,
        "regression",
        "linear regression with squared loss, any input (flattened)",
    ),
}


def check_model_input(model: str, input_shape: tuple[int, ...]) -> None:
    """Raise ``ValueError`` if ``model`` cannot take examples of ``input_shape``."""
    if model not in MODELS:
        raise ValueError(f"model={model!r} is unknown; known models: {', '.join(sorted(MODELS))}")
    expected = MODELS[model].input_shape
    if expected is not None and tuple(input_shape) != expected:
        raise ValueError(
            f"model={model!r} takes inputs of shape {expected} (channels, height, width) "
            f"but the dataset's examples have shape {tuple(input_shape)}; choose a model "
            f"for this shape (e.g. model='logreg' takes any shape) or convert the data"
        )


def build_model(model: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``model`` for examples of ``input_shape``, checking that it fits."""
    check_model_input(model, input_shape)
    return MODELS[model].build(tuple(input_shape), num_classes)
