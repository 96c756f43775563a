"""The common shape every model has, and the option checks architectures share.

Each model is a :class:`Classifier`: a ``backbone`` producing the penultimate representation
and a linear ``head`` on top of it, so discovery can reuse ``backbone`` as its encoder and the
engine can train any model the same way (many at once under ``torch.vmap``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskspace.errors import TaskspaceError

__all__ = ["Classifier", "check_positive_int", "check_widths"]


class Classifier(nn.Module):
    """``head(backbone(x))`` with input checks: the contract every taskspace model meets.

    Attributes:
        backbone: maps ``[B, C, H, W]`` float images to ``[B, feature_dim]`` features. It is
            a submodule (not just a method) so it can be called with
            ``torch.func.functional_call`` on its own and reused as an encoder.
        head: the final ``nn.Linear(feature_dim, num_outputs)``; a new default-initialised
            one unless an existing Linear is passed (torchvision models keep theirs).
        feature_dim: size of the penultimate representation.
        num_outputs, in_channels, image_size: what the model was built for.
        fixed_size: whether the model only accepts ``image_size x image_size`` inputs
            (MLP, ViT) or any spatial size (convolutional models).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_outputs: int,
        *,
        in_channels: int,
        image_size: int,
        fixed_size: bool,
        head: nn.Linear | None = None,
    ) -> None:
        super().__init__()
        if head is None:
            head = nn.Linear(feature_dim, num_outputs)
        elif (head.in_features, head.out_features) != (feature_dim, num_outputs):
            raise ValueError(
                f"head maps {head.in_features} -> {head.out_features}, "
                f"expected {feature_dim} -> {num_outputs}"
            )
        self.backbone = backbone
        self.head = head
        self.feature_dim = int(feature_dim)
        self.num_outputs = int(num_outputs)
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.fixed_size = bool(fixed_size)

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`TaskspaceError` for inputs of the wrong rank, channels or size.

        Only shapes are inspected (static under ``vmap`` and ``torch.compile``), so the check
        costs nothing and turns an obscure matmul shape error into one clear line.
        """
        if x.dim() != 4:
            raise TaskspaceError(f"model input must be [B, C, H, W], got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise TaskspaceError(
                f"model built for {self.in_channels} input channel(s) got {x.shape[1]} "
                f"(input shape {tuple(x.shape)})"
            )
        if self.fixed_size and tuple(x.shape[2:]) != (self.image_size, self.image_size):
            raise TaskspaceError(
                f"model built for {self.image_size}x{self.image_size} images got "
                f"{x.shape[2]}x{x.shape[3]}; pass image_size= when creating it"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate representation ``[B, feature_dim]`` of float images ``[B, C, H, W]``."""
        self._check_input(x)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_outputs]``; always equal to ``head(features(x))``."""
        return self.head(self.features(x))


def check_positive_int(value: Any, what: str) -> int:
    """Return ``value`` as an int, or raise :class:`TaskspaceError` if it is not >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TaskspaceError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_widths(value: Any, what: str) -> tuple[int, ...]:
    """Return ``value`` as a non-empty tuple of positive ints, or raise TaskspaceError."""
    if isinstance(value, int | str) or not hasattr(value, "__iter__"):
        raise TaskspaceError(f"{what} must be a sequence of positive integers, got {value!r}")
    widths = tuple(value)
    if not widths:
        raise TaskspaceError(f"{what} must not be empty")
    return tuple(check_positive_int(w, what) for w in widths)
