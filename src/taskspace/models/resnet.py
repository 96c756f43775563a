"""CIFAR ResNets (``resnet18``, ``resnet50``) as in the reference.

The CIFAR template keeps full resolution in the stem: conv3x3 (stride 1, no bias) -> BN ->
ReLU, no max-pool, then four stages with strides 1/2/2/2 and widths ``width * (1, 2, 4, 8)``,
a global mean pool and the linear head. The shortcut is a 1x1 conv + BN whenever the shape
changes. ResNet-18: 11,168,832 backbone parameters (11,169,858 with 2 outputs); ResNet-50
(Bottleneck, expansion 4): 2048-d features and about 23.5M backbone parameters.

Convolutions before a BatchNorm have no bias (its true gradient is zero, and Adam turns the
float noise in it into full-size steps). No in-place activations, so the models run under
``torch.vmap`` with stacked parameters and support double backward.
"""

from __future__ import annotations

import torch
from torch import nn

from taskspace.models.classifier import Classifier, check_positive_int
from taskspace.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNetBackbone", "resnet18", "resnet50"]


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity, or 1x1 conv + BN when the block changes the shape."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """conv3x3 -> BN -> ReLU -> conv3x3 -> BN, plus shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output, same layout as the input (spatially strided)."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 (x4 channels), each with BN, plus shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual block output with ``4 * planes`` channels."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """CIFAR ResNet up to the global mean pool: ``[B, C, H, W] -> [B, feature_dim]``."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: tuple[int, int, int, int],
        in_channels: int = 3,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        stages: list[nn.Module] = []
        for i, (n, stride) in enumerate(zip(num_blocks, (1, 2, 2, 2))):
            planes = width * 2**i
            blocks: list[nn.Module] = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Globally mean-pooled features of the last stage."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return out.mean(dim=(2, 3))


def _resnet(
    block: type[BasicBlock] | type[Bottleneck],
    num_blocks: tuple[int, int, int, int],
    num_outputs: int,
    in_channels: int,
    image_size: int,
    width: int,
) -> Classifier:
    """Wrap a CIFAR ResNet backbone with its linear head."""
    width = check_positive_int(width, "resnet width")
    backbone = ResNetBackbone(block, num_blocks, in_channels=in_channels, width=width)
    return Classifier(
        backbone,
        backbone.feature_dim,
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=False,
    )


@register_model("resnet18")
def resnet18(
    num_outputs: int, *, in_channels: int = 3, image_size: int = 32, width: int = 64
) -> Classifier:
    """CIFAR ResNet-18 (BasicBlock [2, 2, 2, 2]); ``width`` is the stem/first-stage width."""
    return _resnet(BasicBlock, (2, 2, 2, 2), num_outputs, in_channels, image_size, width)


@register_model("resnet50")
def resnet50(
    num_outputs: int, *, in_channels: int = 3, image_size: int = 32, width: int = 64
) -> Classifier:
    """CIFAR ResNet-50 (Bottleneck [3, 4, 6, 3], features ``32 * width``, 2048 by default)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), num_outputs, in_channels, image_size, width)
