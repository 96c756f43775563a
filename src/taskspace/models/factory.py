"""Build a model by name: :func:`create_model`, over the registry and torchvision.

Every capability (agreement score, discovery, adversarial splits) builds learners by name, so
models are created through :func:`create_model` rather than by importing classes. Registered
names come from :mod:`taskspace.models.registry`; ``tv:<name>`` names are built by
:mod:`taskspace.models.torchvision_models` (torchvision is optional).
"""

from __future__ import annotations

import inspect
from typing import Any

from taskspace.errors import TaskspaceError
from taskspace.models.classifier import Classifier, check_positive_int
from taskspace.models.registry import ModelFactory, get_factory, list_models
from taskspace.models.torchvision_models import create_torchvision_model

__all__ = ["TV_PREFIX", "create_model"]

TV_PREFIX = "tv:"
"""Names starting with this prefix are built by torchvision (``tv:resnet18``)."""


def _check_overrides(name: str, factory: ModelFactory, overrides: dict[str, Any]) -> None:
    """Reject override names the factory does not accept, listing the accepted ones."""
    params = inspect.signature(factory).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = sorted(
        p.name
        for p in params.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("in_channels", "image_size")
    )
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TaskspaceError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(accepted) or 'none'}"
        )


def create_model(
    name: str,
    num_outputs: int,
    *,
    in_channels: int = 3,
    image_size: int = 32,
    **overrides: Any,
) -> Classifier:
    """Build model ``name`` for ``[B, in_channels, image_size, image_size]`` float inputs.

    Args:
        name: a name from :func:`list_models`, or ``tv:<torchvision name>`` (needs
            torchvision; weights are never downloaded).
        num_outputs: number of logits (2 for a binary task).
        in_channels: input channels (1 for digits, 3 for CIFAR).
        image_size: input height = width; sizes the first layer of MLP and ViT.
        overrides: architecture options of that model (``widths=``, ``width=``, ``dim=``...).

    Returns:
        A :class:`Classifier`: ``forward(x) -> [B, num_outputs]``, ``features(x) ->
        [B, feature_dim]``, ``feature_dim`` and ``head`` (the final ``nn.Linear``).

    Raises:
        TaskspaceError: unknown name, unknown option or invalid size.
    """
    if not isinstance(name, str):
        raise TaskspaceError(f"model name must be a string, got {name!r}")
    num_outputs = check_positive_int(num_outputs, "num_outputs")
    in_channels = check_positive_int(in_channels, "in_channels")
    image_size = check_positive_int(image_size, "image_size")
    key = name.strip()
    if key.lower().startswith(TV_PREFIX):
        return create_torchvision_model(
            key[len(TV_PREFIX) :],
            num_outputs,
            in_channels=in_channels,
            image_size=image_size,
            **overrides,
        )
    key = key.lower()
    factory = get_factory(key)
    if factory is None:
        raise TaskspaceError(
            f"unknown model {name!r}; available: {', '.join(list_models())} "
            f"(or {TV_PREFIX}<torchvision name>)"
        )
    _check_overrides(key, factory, overrides)
    return factory(num_outputs, in_channels=in_channels, image_size=image_size, **overrides)
