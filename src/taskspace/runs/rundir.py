"""Run directories: one folder per run, named from the options that change results.

Every command writes into a :class:`RunDir`: ``config.yaml`` (the full resolved config),
its results, and, for commands with independent parts, one file per finished part under
``parts/``. Rerunning the same command resumes: finished parts are skipped, and a folder
made with different result-changing options is refused (one line, exit 2). Writes are
atomic (:mod:`taskspace.io`), so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from taskspace.config import flatten, load_config, to_dict
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_json, write_yaml

__all__ = ["RunDir", "config_digest"]

#: The marker a finished run writes (sweeps skip points that have it).
DONE = "done.json"


def _result_options(cfg: Any, ignore: Collection[str]) -> dict[str, Any]:
    """Dotted options that change results (``ignore`` holds dotted keys or group prefixes)."""

    def ignored(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in ignore)

    return {k: v for k, v in flatten(cfg).items() if not ignored(k)}


def config_digest(cfg: Any, ignore: Collection[str]) -> str:
    """Short hash of a config's result-changing options."""
    key = _result_options(cfg, ignore)
    return hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]


class RunDir:
    """A run's folder: config check, atomic files, parts and resume.

    Args:
        path: the folder (created on :meth:`start`).
        ignore: dotted options that do not change results (a resumed run may change them).
    """

    def __init__(self, path: str | Path, ignore: Collection[str] = ()) -> None:
        self.path = Path(path)
        self.ignore = set(ignore)

    @classmethod
    def for_config(
        cls,
        cfg: Any,
        command: str,
        ignore: Collection[str],
        out: str | None = None,
        name_parts: Iterable[str] = (),
    ) -> RunDir:
        """``out``, or ``runs/<command>-<name parts>-<digest>`` (deterministic, so the same
        command resumes the same folder)."""
        if out:
            return cls(out, ignore)
        stem = "-".join([command, *[str(p).replace("/", "_") for p in name_parts]])
        return cls(Path("runs") / f"{stem}-{config_digest(cfg, ignore)}", ignore)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ config
    def check(self, cfg: Any) -> None:
        """Refuse a folder whose ``config.yaml`` has other result-changing options.

        An option missing from the saved file (added after the run was made) counts as its
        default, so a newer version resumes an older run unless that option is changed.
        """
        path = self.path / "config.yaml"
        if not path.exists():
            return
        try:
            old = load_config(type(cfg), path)
        except TaskspaceError as err:
            raise TaskspaceError(
                f"run directory {self.path} holds a config this version "
                f"cannot read ({err}); use another out=... or delete it"
            ) from None
        before, now = _result_options(old, self.ignore), _result_options(cfg, self.ignore)
        diff = sorted(k for k in now if before.get(k) != now[k])
        if diff:
            raise TaskspaceError(
                f"run directory {self.path} was made with different options "
                f"({', '.join(diff)}); use another out=... or delete it"
            )

    def start(self, cfg: Any, first_files: Callable[[], object] | None = None) -> bool:
        """Check ``cfg`` against the folder; on a new folder call ``first_files()`` (inputs
        the run must keep, e.g. its splits) and then write ``config.yaml``. Returns whether
        the run is new."""
        self.check(cfg)
        if (self.path / "config.yaml").exists():
            return False
        self.path.mkdir(parents=True, exist_ok=True)
        if first_files is not None:
            first_files()
        write_yaml(self.path / "config.yaml", to_dict(cfg))
        return True

    def config(self, cls: type) -> Any:
        """The config stored in the folder."""
        return load_config(cls, self.path / "config.yaml")

    # ------------------------------------------------------------------ parts
    def part(self, i: int, suffix: str = "csv") -> Path:
        return self.path / "parts" / f"part-{i:04d}.{suffix}"

    def pending(self, n_parts: int, suffix: str = "csv") -> list[int]:
        """Parts not finished yet (no part file)."""
        return [i for i in range(n_parts) if not self.part(i, suffix).exists()]

    def write_part(self, i: int, rows: list[dict], columns: list[str]) -> Path:
        return write_csv(self.part(i), rows, columns)

    def merged_rows(self, n_parts: int) -> list[dict[str, str]]:
        """Rows of every part file, in part order."""
        rows: list[dict[str, str]] = []
        for i in range(n_parts):
            rows.extend(read_csv(self.part(i)))
        return rows

    # ------------------------------------------------------------------ finished
    def finished(self) -> bool:
        return (self.path / DONE).exists()

    def mark_finished(self, metrics: dict[str, Any]) -> None:
        """Write the marker with the run's headline metrics (read by sweep tables)."""
        write_json(self.path / DONE, metrics)

    def metrics(self) -> dict[str, Any]:
        path = self.path / DONE
        return json.loads(path.read_text()) if path.exists() else {}
