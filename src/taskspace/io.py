"""Atomic file writes and run directories.

Every output is written to a temporary file in the same folder and renamed into place, so a
killed run never leaves a half-written CSV or checkpoint behind.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from safetensors.torch import save_file


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process umask, read once at import (reading it means setting it).
_UMASK = _umask()


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` to ``path`` atomically.

    The file gets the permissions a plain ``open(path, "w")`` would give (``mkstemp``
    makes it private), so results and reports stay readable by the user's group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | Path, data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_yaml(path: str | Path, data: Any) -> Path:
    return write_text(path, yaml.safe_dump(data, sort_keys=False))


def write_csv(path: str | Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> Path:
    """Write ``rows`` (dicts) as CSV with exactly ``columns``, atomically."""
    rows = list(rows)

    def _write(p: Path) -> None:
        with p.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: _fmt(r.get(k)) for k in columns})

    return atomic_write(path, _write)


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with Path(path).open(newline="") as fh:
        return list(csv.DictReader(fh))


def save_safetensors(path: str | Path, tensors: dict[str, Any]) -> Path:
    """Write a dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    state = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(state, str(p)))
