"""Run directories shared by every command: a deterministic name from the options that
change results, and a refusal to resume a directory made with different ones."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from taskspace.config import to_dict
from taskspace.errors import TaskspaceError


def config_digest(cfg: Any, ignore: Collection[str]) -> str:
    """Short hash of a config's result-affecting options (all fields not in ``ignore``)."""
    key = {k: v for k, v in to_dict(cfg).items() if k not in ignore}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]


def check_run_config(out: Path, cfg: Any, ignore: Collection[str]) -> None:
    """Raise when ``out/config.yaml`` holds other result-affecting options than ``cfg``.

    An option missing from the saved file (added to taskspace after the run was made) counts
    as its default, so a newer version resumes an older run unless the option is changed.
    """
    path = out / "config.yaml"
    if not path.exists():
        return
    import yaml

    old = yaml.safe_load(path.read_text()) or {}
    new = to_dict(cfg)
    defaults = to_dict(type(cfg)())
    diff = sorted(k for k in new if k not in ignore and old.get(k, defaults.get(k)) != new[k])
    if diff:
        raise TaskspaceError(f"run directory {out} was made with different options "
                             f"({', '.join(diff)}); use another out=... or delete it")
