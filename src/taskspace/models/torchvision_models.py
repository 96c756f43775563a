"""Optional torchvision architectures, reached as ``create_model("tv:<name>", ...)``.

torchvision is an optional dependency: it is imported only here, only when a ``tv:`` name is
requested, and a missing install is a one-line :class:`TaskspaceError`. Models are built with
``torchvision.models.get_model(name, weights=None, num_classes=num_outputs)`` (pretrained
weights are never downloaded) and wrapped into a :class:`Classifier`: the final
``nn.Linear`` (``fc``, ``classifier[-1]``, ``heads.head`` or ``head``) becomes ``head`` and
is replaced by ``nn.Identity`` inside the backbone, so ``forward == head(features)`` holds
without duplicating parameters. 1-channel inputs are repeated to 3 channels.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.models.classifier import Classifier

__all__ = ["create_torchvision_model"]

_HEAD_PATHS = ("fc", "classifier", "heads.head", "heads", "head")
"""Where torchvision keeps the final Linear, tried in order."""


class GrayToRGB(nn.Module):
    """Repeat a 1-channel image to 3 channels before a 3-channel torchvision model."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``model(x)`` with ``x`` expanded from 1 to 3 channels."""
        return self.model(x.expand(-1, 3, -1, -1))


def _import_torchvision_models() -> Any:
    """Import ``torchvision.models`` or raise the one-line install hint."""
    try:
        return importlib.import_module("torchvision.models")
    except ImportError as exc:
        raise TaskspaceError("torchvision is not installed; pip install torchvision") from exc


def _split_head(model: nn.Module, name: str) -> nn.Linear:
    """Find the final ``nn.Linear``, replace it by ``nn.Identity`` in ``model``, return it."""
    for path in _HEAD_PATHS:
        parent: nn.Module | None = model
        *parents, attr = path.split(".")
        for part in parents:
            parent = getattr(parent, part, None)
            if not isinstance(parent, nn.Module):
                parent = None
                break
        if parent is None:
            continue
        found = getattr(parent, attr, None)
        if isinstance(found, nn.Linear):
            setattr(parent, attr, nn.Identity())
            return found
        if isinstance(found, nn.Sequential) and len(found) and isinstance(found[-1], nn.Linear):
            head = found[-1]
            found[-1] = nn.Identity()
            return head
    raise TaskspaceError(
        f"torchvision model {name!r} has no final nn.Linear at "
        f"{', '.join(_HEAD_PATHS)}; use another model"
    )


def create_torchvision_model(
    name: str,
    num_outputs: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    **overrides: Any,
) -> Classifier:
    """Build torchvision model ``name`` (randomly initialised) as a :class:`Classifier`.

    ``overrides`` go to ``get_model``. ViT names also receive ``image_size``; GoogLeNet and
    Inception default to ``aux_logits=False`` so the backbone returns a plain tensor.
    """
    models = _import_torchvision_models()
    if in_channels not in (1, 3):
        raise TaskspaceError(
            f"torchvision models take 1 or 3 input channels, got in_channels={in_channels}"
        )
    for key in ("weights", "weights_backbone"):
        if overrides.get(key) is not None:
            raise TaskspaceError(f"tv:{name}: {key}= is not supported; weights are never loaded")
        overrides.pop(key, None)
    kwargs = dict(overrides)
    lowered = name.lower()
    if lowered.startswith("vit_"):
        kwargs.setdefault("image_size", image_size)
    if lowered in ("googlenet", "inception_v3"):
        kwargs.setdefault("aux_logits", False)
    try:
        model = models.get_model(name, weights=None, num_classes=num_outputs, **kwargs)
    except ValueError as exc:
        raise TaskspaceError(f"unknown torchvision model {name!r}: {exc}") from exc
    except TypeError as exc:
        raise TaskspaceError(f"tv:{name}: bad option(s) {sorted(kwargs)}: {exc}") from exc
    head = _split_head(model, name)
    backbone: nn.Module = GrayToRGB(model) if in_channels == 1 else model
    return Classifier(
        backbone,
        head.in_features,
        num_outputs,
        in_channels=in_channels,
        image_size=image_size,
        fixed_size=lowered.startswith("vit_"),
        head=head,
    )
