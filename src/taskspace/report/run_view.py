"""A read-only view of a run directory for the HTML report.

The report layer reads what commands wrote (``config.yaml`` as plain YAML, CSV tables,
``done.json``, task and split files); it never imports the commands or the run layer, so it
builds a page for any folder that holds such files, including run directories made by an
older version. Every read that can fail on a damaged folder returns ``None`` instead of
raising, so a section shows what is there.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from taskspace.errors import TaskspaceError
from taskspace.io import read_csv

__all__ = ["RunView", "open_run"]

#: Files that make a folder a run directory (any one of them).
RUN_FILES = ("config.yaml", "sweep.csv", "done.json")


class RunView:
    """What a run directory holds: its config, finished marker, tables and files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    def has(self, *names: str) -> bool:
        """Whether every file in ``names`` exists."""
        return all((self.path / n).exists() for n in names)

    @cached_property
    def config(self) -> dict[str, Any]:
        """``config.yaml`` as a nested mapping (empty when missing or unreadable)."""
        try:
            data = yaml.safe_load((self.path / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            return {}
        return data if isinstance(data, dict) else {}

    def option(self, dotted: str, default: Any = None) -> Any:
        """A config value by dotted key (``recipe.lr``)."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def finished(self) -> bool:
        """Whether the run wrote its finished marker (a sweep: whether every point did)."""
        if (self.path / "done.json").exists():
            return True
        if (self.path / "config.yaml").exists():
            return False
        points = self.csv("sweep.csv") or []
        return bool(points) and all(str(r.get("finished")).lower() == "true" for r in points)

    @cached_property
    def metrics(self) -> dict[str, Any]:
        """The headline metrics of ``done.json`` (empty when not finished)."""
        try:
            data = json.loads((self.path / "done.json").read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def csv(self, name: str | Path) -> list[dict[str, str]] | None:
        """Rows of a CSV table (a name in the run directory, or a path), or ``None`` when
        missing or unreadable."""
        path = self.path / name
        if not path.is_file():
            return None
        try:
            return read_csv(path)
        except (OSError, ValueError, UnicodeDecodeError):
            return None

    def parts(self, suffix: str = "csv") -> list[Path]:
        """Finished part files (a run with parts writes one per finished part)."""
        return sorted((self.path / "parts").glob(f"part-[0-9][0-9][0-9][0-9].{suffix}"))

    def rows(self, table: str) -> list[dict[str, str]]:
        """A merged table, else the rows of the part files finished so far (a run killed
        before it merged its parts)."""
        rows = self.csv(table)
        if rows is not None:
            return rows
        return [r for part in self.parts() for r in self.csv(part) or []]


def open_run(path: str | Path) -> RunView:
    """A view of ``path``; refuses a path that is not a run directory (one line)."""
    p = Path(path)
    if not p.exists():
        raise TaskspaceError(f"no such run directory: {p}")
    if not p.is_dir():
        raise TaskspaceError(f"{p} is a file, not a run directory")
    if not any((p / f).exists() for f in RUN_FILES):
        what = (
            "is empty" if not any(p.iterdir()) else "holds no config.yaml, done.json or sweep.csv"
        )
        raise TaskspaceError(f"{p} {what}: not a run directory of taskspace")
    return RunView(p)
