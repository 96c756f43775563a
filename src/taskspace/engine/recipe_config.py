"""The ``recipe.*`` options: a named recipe plus any field overridden."""

from __future__ import annotations

from dataclasses import dataclass

from taskspace.config import option
from taskspace.engine.recipe import Recipe, get_recipe

__all__ = ["RecipeConfig"]


@dataclass
class RecipeConfig:
    """How a learner is trained: ``preset`` (fast, reference, proxy) and overrides."""

    preset: str = option("fast", "fast (CPU default), reference (the paper's AS protocol) or proxy")
    epochs: float | None = option(None, "passes over each model's training examples")
    steps: int | None = option(None, "a fixed number of optimiser steps instead of epochs")
    lr: float | None = option(None, "learning rate")
    batch_size: int | None = option(None, "batch size")
    optimizer: str | None = option(None, "adam or sgd")
    momentum: float | None = option(None, "SGD momentum")
    weight_decay: float | None = option(None, "weight decay")
    augment: bool | None = option(None, "random crop + flip")
    schedule: str | None = option(None, "constant or cosine")
    bf16: bool = option(False, "bf16 autocast (CUDA only)")
    channels_last: bool = option(False, "channels_last memory format (CUDA only)")

    def resolve(self) -> Recipe:
        """The :class:`Recipe` (preset with the set fields overridden; checked)."""
        return get_recipe(
            self.preset,
            epochs=self.epochs,
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            augment=self.augment,
            schedule=self.schedule,
            bf16=self.bf16 or None,
            channels_last=self.channels_last or None,
        )
