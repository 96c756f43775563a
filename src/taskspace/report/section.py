"""Report sections: one small unit per run kind, found by what a run directory holds.

A section type says which run directories it applies to (``detect``) and renders an HTML
fragment for one of them (``render``). A new command adds its own section
module under :mod:`taskspace.report.sections` that calls :func:`register`, and one import
line there; no other section changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from taskspace.report.context import PageContext
    from taskspace.report.run_view import RunView

__all__ = ["SectionType", "register", "section_types", "sections_for"]


@dataclass(frozen=True)
class SectionType:
    """A kind of report section.

    Attributes:
        kind: short name (``agreement``, ``discovery``, ...), also the section's CSS class.
        title: heading shown on the page.
        detect: whether a run directory is of this kind.
        render: the section's HTML fragment for one run directory.
    """

    kind: str
    title: str
    detect: Callable[[RunView], bool]
    render: Callable[[RunView, PageContext], str]


_TYPES: list[SectionType] = []


def register(section: SectionType) -> SectionType:
    """Add a section type (a later registration of the same kind replaces it)."""
    _TYPES[:] = [s for s in _TYPES if s.kind != section.kind]
    _TYPES.append(section)
    return section


def section_types() -> list[SectionType]:
    """Registered section types, in registration order (the page's order)."""
    return list(_TYPES)


def sections_for(run: RunView) -> list[SectionType]:
    """The section types that apply to ``run`` (usually one)."""
    return [s for s in section_types() if s.detect(run)]
