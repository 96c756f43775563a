"""Model registry and the common shape every model has.

Every capability (agreement score, discovery, adversarial splits) builds learners by name, so
models are created through :func:`create_model` rather than by importing classes. Each model
is a :class:`Classifier`: a ``backbone`` producing the penultimate representation and a
linear ``head`` on top of it, so discovery can reuse ``backbone`` as its encoder and the
engine can train any model the same way (many at once under ``torch.vmap``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from taskspace.errors import TaskspaceError

__all__ = [
    "Classifier",
    "ModelFactory",
    "create_model",
    "list_models",
    "register_model",
]

TV_PREFIX = "tv:"
"""Names starting with this prefix are built by torchvision (``tv:resnet18``)."""

ModelFactory = Callable[..., nn.Module]
"""``factory(num_outputs, *, in_channels, image_size, **overrides) -> Classifier``."""

_F = TypeVar("_F", bound=ModelFactory)
_REGISTRY: dict[str, ModelFactory] = {}


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


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator adding a factory to the registry under ``name`` (lower case, no ``:``).

    The factory is called as ``factory(num_outputs, in_channels=..., image_size=...,
    **overrides)`` and must return a :class:`Classifier` (or a module with the same
    ``features``/``head``/``feature_dim`` interface).
    """
    key = name.strip().lower()
    if not key or ":" in key:
        raise ValueError(f"invalid model name {name!r}: must be non-empty and contain no ':'")

    def decorator(factory: _F) -> _F:
        if key in _REGISTRY and _REGISTRY[key] is not factory:
            raise ValueError(f"model {key!r} is already registered")
        _REGISTRY[key] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    """Sorted names accepted by :func:`create_model` (``tv:<name>`` names not included)."""
    return sorted(_REGISTRY)


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
) -> nn.Module:
    """Build model ``name`` for ``[B, in_channels, image_size, image_size]`` float inputs.

    Args:
        name: a name from :func:`list_models`, or ``tv:<torchvision name>`` (needs
            torchvision; weights are never downloaded).
        num_outputs: number of logits (2 for a binary task).
        in_channels: input channels (1 for digits, 3 for CIFAR).
        image_size: input height = width; sizes the first layer of MLP and ViT.
        overrides: architecture options of that model (``widths=``, ``width=``, ``dim=``...).

    Returns:
        A module with ``forward(x) -> [B, num_outputs]``, ``features(x) -> [B, feature_dim]``,
        ``feature_dim`` and ``head`` (the final ``nn.Linear``).

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
        from taskspace.models.torchvision_models import create_torchvision_model

        return create_torchvision_model(
            key[len(TV_PREFIX) :],
            num_outputs,
            in_channels=in_channels,
            image_size=image_size,
            **overrides,
        )
    key = key.lower()
    factory = _REGISTRY.get(key)
    if factory is None:
        raise TaskspaceError(
            f"unknown model {name!r}; available: {', '.join(list_models())} "
            f"(or {TV_PREFIX}<torchvision name>)"
        )
    _check_overrides(key, factory, overrides)
    return factory(num_outputs, in_channels=in_channels, image_size=image_size, **overrides)
