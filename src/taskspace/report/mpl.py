"""matplotlib's pyplot on the Agg backend: the one place that chooses the backend.

pyplot is imported on first use, not at module import, so importing a command costs no
matplotlib start-up and ``matplotlib.use("Agg")`` runs before pyplot is loaded.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["pyplot"]


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (PNG files, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
