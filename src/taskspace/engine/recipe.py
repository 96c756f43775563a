"""Training recipes: everything about *how* a learner is trained, apart from its architecture."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from taskspace.errors import TaskspaceError


@dataclass(frozen=True)
class Recipe:
    """How to train one learner.

    ``epochs`` counts passes over each model's own training examples; ``steps``, when set,
    replaces it with a fixed number of optimiser steps. Batches are always full: each model
    reads its examples as a stream of per-epoch permutations, so an epoch is ``n / batch_size``
    steps (the reference's last short batch of an epoch is folded into the next one).
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    epochs: float = 10.0
    steps: int | None = None
    batch_size: int = 128
    schedule: Literal["constant", "cosine"] = "constant"
    augment: bool = False
    crop_padding: int = 4
    bf16: bool = False
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "sgd"):
            raise TaskspaceError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine"):
            raise TaskspaceError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.batch_size < 1:
            raise TaskspaceError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise TaskspaceError(f"lr must be > 0, got {self.lr}")
        if self.steps is None and self.epochs <= 0:
            raise TaskspaceError(f"epochs must be > 0, got {self.epochs}")
        if self.steps is not None and self.steps < 1:
            raise TaskspaceError(f"steps must be >= 1, got {self.steps}")

    def num_steps(self, n_examples: int) -> int:
        """Optimiser steps for a model with ``n_examples`` training examples."""
        if self.steps is not None:
            return int(self.steps)
        return max(1, -(-int(round(self.epochs * n_examples)) // self.batch_size))

    def replace(self, **changes: Any) -> Recipe:
        return dataclasses.replace(self, **changes)


#: Named recipes. ``reference`` is the Task Discovery AS protocol (check_as.py): Adam 1e-3,
#: batch 512, 100 epochs, no augmentation, no weight decay, no schedule. ``fast`` is a short
#: CPU-friendly default with the same optimiser. ``proxy`` is the reference's proxy AS:
#: 100 plain SGD steps; the reference trains both networks of a pair with one SGD at lr 0.01
#: on ``0.5 (L_A + L_B)``, so each network steps at 0.005 on its own loss, which is what the
#: engine (one loss per model) is given here.
PRESETS: dict[str, Recipe] = {
    "reference": Recipe(optimizer="adam", lr=1e-3, batch_size=512, epochs=100),
    "fast": Recipe(optimizer="adam", lr=1e-3, batch_size=128, epochs=20),
    "proxy": Recipe(optimizer="sgd", lr=0.005, momentum=0.0, batch_size=512, steps=100),
}


def get_recipe(recipe: str | Recipe, **overrides: object) -> Recipe:
    """A preset by name (or a Recipe), with field overrides applied."""
    if isinstance(recipe, str):
        if recipe not in PRESETS:
            raise TaskspaceError(
                f"unknown recipe {recipe!r}; available: {', '.join(sorted(PRESETS))}"
            )
        recipe = PRESETS[recipe]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return recipe.replace(**overrides) if overrides else recipe
