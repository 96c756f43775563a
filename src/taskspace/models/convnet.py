"""A small, fast CNN for CPU work and quick agreement scores, registered as ``convnet``.

Not part of the reference: [conv3x3 (no bias) -> BN -> ReLU -> max-pool 2] per width
(default 32, 64, 128), a global mean pool and the linear head. Pooling is skipped once the
feature map is 1x1, so 8x8 digits (8 -> 4 -> 2 -> 1) and smaller inputs work. Every op is
vmap-safe and has double backward, so it can also serve as the learner in discovery.

``pool="flatten"`` feeds the head the whole last feature map instead (position-specific
features, fixed input size). With it, two nets trained on the same random labels memorise
them in init-dependent ways, as a ResNet-18 does at scale, so random tasks get a low
agreement score on a CPU budget (CIFAR-10, 5,000 images, 30 epochs: human 0.74 vs random
0.59; with the mean pool both kinds stayed near 0.8, see the README).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.models.classifier import Classifier, check_widths
from taskspace.models.registry import register_model

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
    """Conv blocks then a global mean pool, ``[B, C, H, W] -> [B, widths[-1]]``, or the
    flattened last feature map (``pool="flatten"``)."""

    def __init__(
        self, in_channels: int, widths: Sequence[int], pool: str = "mean", image_size: int = 32
    ) -> None:
        super().__init__()
        if pool not in ("mean", "flatten"):
            raise TaskspaceError(f"convnet pool must be 'mean' or 'flatten', got {pool!r}")
        self.pool = pool
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
        side = image_size
        for _ in widths:
            side = side // 2 if side >= 2 else side
        self.feature_dim = previous if pool == "mean" else previous * side * side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally mean-pooled (or flattened) features of the last block."""
        out = self.layers(x)
        return out.mean(dim=(2, 3)) if self.pool == "mean" else out.flatten(1)


@register_model("convnet")
def convnet(
    num_outputs: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    widths: Sequence[int] = DEFAULT_CONVNET_WIDTHS,
    pool: str = "mean",
) -> Classifier:
    """Small CNN; ``widths`` sets the number and width of conv blocks, ``pool`` the head's
    input (``mean``: any input size; ``flatten``: the ``image_size`` it was built for)."""
    widths = check_widths(widths, "convnet widths")
    backbone = ConvNetBackbone(in_channels, widths, pool, image_size)
    return Classifier(
        backbone,
        backbone.feature_dim,
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=pool == "flatten",
    )
