"""The ``model.*`` options: one name for the learner everywhere, and its overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from taskspace.config import option

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """A learner architecture: a registry name and its constructor overrides."""

    name: str = option("mlp", "mlp, convnet, resnet18, resnet50, vit4 or tv:<torchvision name>")
    kwargs: dict[str, Any] = option(
        factory=dict,
        help="architecture overrides, e.g. "
        "{widths: [256, 64]} or {widths: [16, 32, 64], pool: flatten}",
    )
