"""A small, fast CNN for CPU work and quick agreement scores, registered as ``convnet``.

Not part of the reference: [conv3x3 (no bias) -> BN -> ReLU -> max-pool 2] per width
(default 32, 64, 128), a global mean pool and the linear head. Pooling is skipped once the
feature map is 1x1, so 8x8 digits (8 -> 4 -> 2 -> 1) and smaller inputs work. Every op is
vmap-safe and has double backward, so it can also serve as the learner in discovery.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from taskspace.models.registry import Classifier, check_widths, register_model

__all__ = ["DEFAULT_CONVNET_WIDTHS", "ConvNetBackbone", "convnet"]

DEFAULT_CONVNET_WIDTHS: tuple[int, ...] = (32, 64, 128)


class _PoolIfLarger(nn.Module):
    """2x2 max-pool, skipped when the feature map is already 1 pixel high or wide.

    The decision depends only on the (static) input shape, so it is safe under ``vmap``
    and ``torch.compile``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Max-pool by 2 unless either spatial side is below 2."""
        if min(x.shape[-2], x.shape[-1]) < 2:
            return x
        return F.max_pool2d(x, 2)


class ConvNetBackbone(nn.Module):
    """Conv blocks then global mean pool: ``[B, C, H, W] -> [B, widths[-1]]``."""

    def __init__(self, in_channels: int, widths: Sequence[int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        previous = in_channels
        for width in widths:
            layers += [
                nn.Conv2d(previous, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                _PoolIfLarger(),
            ]
            previous = width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally mean-pooled features of the last block."""
        return self.layers(x).mean(dim=(2, 3))


@register_model("convnet")
def convnet(
    num_outputs: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    widths: Sequence[int] = DEFAULT_CONVNET_WIDTHS,
) -> Classifier:
    """Small CNN for any input size; ``widths`` sets the number and width of conv blocks."""
    widths = check_widths(widths, "convnet widths")
    backbone = ConvNetBackbone(in_channels, widths)
    return Classifier(
        backbone,
        backbone.feature_dim,
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=False,
    )
