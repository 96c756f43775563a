"""The reference fully connected network (``fcnet`` in the paper's code), registered as ``mlp``.

Exactly as the reference: flatten -> [Linear -> ReLU -> BatchNorm1d] for every width but the
last, then Linear -> ReLU for the last width (the 64-d penultimate representation), then the
linear head. BatchNorm comes *after* the ReLU and every Linear has a bias; with the default
widths and 3x32x32 inputs that is 3,823,042 parameters for 2 outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from taskspace.models.classifier import Classifier, check_widths
from taskspace.models.registry import register_model

__all__ = ["DEFAULT_MLP_WIDTHS", "build_mlp_backbone", "mlp"]

DEFAULT_MLP_WIDTHS: tuple[int, ...] = (1024, 512, 256, 64)


def build_mlp_backbone(in_features: int, widths: Sequence[int]) -> nn.Sequential:
    """Flatten then the hidden layers; the output is the last width (after its ReLU, no BN)."""
    layers: list[nn.Module] = [nn.Flatten(start_dim=1)]
    previous = in_features
    for i, width in enumerate(widths):
        layers += [nn.Linear(previous, width), nn.ReLU()]
        if i < len(widths) - 1:
            layers.append(nn.BatchNorm1d(width))
        previous = width
    return nn.Sequential(*layers)


@register_model("mlp")
def mlp(
    num_outputs: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    widths: Sequence[int] = DEFAULT_MLP_WIDTHS,
) -> Classifier:
    """The reference MLP on flattened ``C*H*W`` inputs; ``widths`` sets the hidden sizes."""
    widths = check_widths(widths, "mlp widths")
    backbone = build_mlp_backbone(in_channels * image_size * image_size, widths)
    return Classifier(
        backbone,
        widths[-1],
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=True,
    )
