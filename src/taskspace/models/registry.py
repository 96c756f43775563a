"""The model registry: a plain store of factories by name.

Architectures add themselves with :func:`register_model`; :func:`list_models` names them and
:func:`get_factory` looks one up. Building a model (checks, ``tv:`` names) is the job of
:func:`taskspace.models.factory.create_model`, which sits beside this store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from taskspace.models.classifier import Classifier

__all__ = ["ModelFactory", "get_factory", "list_models", "register_model"]

ModelFactory = Callable[..., Classifier]
"""``factory(num_outputs, *, in_channels, image_size, **overrides) -> Classifier``."""

_F = TypeVar("_F", bound=ModelFactory)
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator adding a factory to the registry under ``name`` (lower case, no ``:``).

    The factory is called as ``factory(num_outputs, in_channels=..., image_size=...,
    **overrides)`` and must return a :class:`~taskspace.models.classifier.Classifier`.
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
    """Sorted registered names (``tv:<name>`` names not included)."""
    return sorted(_REGISTRY)


def get_factory(name: str) -> ModelFactory | None:
    """The factory registered under ``name`` (already lower case), or ``None``."""
    return _REGISTRY.get(name)
