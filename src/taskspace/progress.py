"""Progress bars (tqdm on stderr) for anything that takes more than a few seconds."""

from __future__ import annotations

from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar"]


def progress_bar(
    total: int, desc: str, enabled: bool = True, *, initial: int = 0, unit: str = "it"
) -> Any:
    """A tqdm bar, or ``None`` when disabled (callers guard ``bar.update`` with ``if bar``)."""
    if not enabled:
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, mininterval=0.5)
