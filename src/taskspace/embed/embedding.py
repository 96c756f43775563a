"""Task2Vec embeddings: the :class:`Embedding` record, comparability checks, and storage.

An embedding is the diagonal Fisher of a probe's weights averaged per filter (``hessian``),
a per-entry ``scale`` (ones for Monte-Carlo, the prior precision for the variational
method) and ``meta`` saying how it was made. Two embeddings are comparable only when they
come from the same probe (same trunk weights), method, skip and estimator switches: the
keys in :data:`COMPARE_KEYS`, checked by :func:`check_comparable` before any distance.

On disk a list of embeddings is ``embeddings.safetensors`` (tensors ``hessian/<task>`` and
``scale/<task>``, float64) plus ``meta.json`` (format tag, task order, every ``meta``);
both are written atomically, ``meta.json`` last, so its presence means the pair is complete.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from taskspace.errors import TaskspaceError
from taskspace.io import save_safetensors, write_json

__all__ = [
    "COMPARE_KEYS",
    "EMBEDDINGS_FILE",
    "META_FILE",
    "Embedding",
    "check_comparable",
    "load_embeddings",
    "save_embeddings",
]

#: Meta keys that must agree before two embeddings are compared (their Fisher entries
#: then refer to the same weights of the same network, estimated the same way).
#: ``subset`` / ``max_samples`` / ``seed`` are not here: they change which images estimate
#: the same expectation, not what is estimated.
COMPARE_KEYS: tuple[str, ...] = (
    "probe",
    "probe_digest",
    "method",
    "skip_layers",
    "estimator",
    "bn_mode",
    "include_bn_gamma",
    "bernoulli",
    "method_opts",
)

EMBEDDINGS_FILE = "embeddings.safetensors"
META_FILE = "meta.json"
_FORMAT = "taskspace.embeddings"


@dataclass(eq=False)
class Embedding:
    """One task's embedding.

    Attributes:
        hessian: ``float64 [D]``; Monte-Carlo: per-filter mean of the diagonal Fisher
            (and BN gamma entries), variational: ``exp(-logvar)`` per filter.
        scale: ``[D]``; ones for Monte-Carlo, the prior precision ``exp(-loglambda2)``
            repeated per filter for the variational method.
        meta: JSON-able record: ``probe``, ``probe_digest``, ``method``, ``skip_layers``,
            ``estimator``, ``bn_mode``, ``subset``, ``max_samples``, ``include_bn_gamma``,
            ``task``, ``kind``, ``num_samples``, ``head_accuracy``, ``layout`` (list of
            ``[module_name, "filter" | "bn_gamma", count]``) and more.
    """

    hessian: np.ndarray
    scale: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.hessian = np.asarray(self.hessian, dtype=np.float64).reshape(-1)
        self.scale = np.asarray(self.scale, dtype=np.float64).reshape(-1)
        if self.scale.shape != self.hessian.shape:
            raise TaskspaceError(
                f"embedding scale has {self.scale.size} entries but hessian has "
                f"{self.hessian.size}; they must match"
            )

    @property
    def dim(self) -> int:
        """Number of entries ``D``."""
        return int(self.hessian.size)

    @property
    def task(self) -> str:
        """The task name in ``meta`` (``""`` when absent)."""
        return str(self.meta.get("task", ""))

    def __repr__(self) -> str:
        return (
            f"Embedding(task={self.task!r}, dim={self.dim}, "
            f"method={self.meta.get('method')!r}, probe={self.meta.get('probe')!r})"
        )


def check_comparable(a: Embedding, b: Embedding) -> None:
    """Raise :class:`TaskspaceError` unless ``a`` and ``b`` may be compared.

    The first differing key of :data:`COMPARE_KEYS` (a missing key reads as ``None``) is
    named with both values; then the dimensions must agree.
    """
    for key in COMPARE_KEYS:
        va, vb = a.meta.get(key), b.meta.get(key)
        if _norm(va) != _norm(vb):
            raise TaskspaceError(
                f"embeddings of tasks {a.task!r} and {b.task!r} are not comparable: "
                f"{key} differs ({_short(va)} vs {_short(vb)}); embed both with the same "
                "probe and options"
            )
    if a.dim != b.dim:
        raise TaskspaceError(
            f"embeddings of tasks {a.task!r} and {b.task!r} are not comparable: dimension "
            f"differs ({a.dim} vs {b.dim})"
        )


def _norm(value: Any) -> Any:
    """JSON round trip, so tuples and lists (a loaded embedding) compare equal."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _files(path: str | Path) -> tuple[Path, Path]:
    """``(embeddings.safetensors, meta.json)`` for a folder or either file's path."""
    p = Path(path)
    if p.name in (EMBEDDINGS_FILE, META_FILE) or p.suffix in (".safetensors", ".json"):
        p = p.parent
    return p / EMBEDDINGS_FILE, p / META_FILE


def save_embeddings(path: str | Path, embeddings: Sequence[Embedding]) -> Path:
    """Write ``embeddings`` to ``path`` (a folder, or a path to either file in it).

    Returns the ``meta.json`` path. Task names (``meta["task"]``, or ``task-<i>`` when
    empty) must be unique.
    """
    tensors_path, meta_path = _files(path)
    names = [e.task or f"task-{i}" for i, e in enumerate(embeddings)]
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise TaskspaceError(f"two embeddings are for task {n!r}; task names must be unique")
        seen.add(n)
    tensors: dict[str, torch.Tensor] = {}
    for name, e in zip(names, embeddings):
        tensors[f"hessian/{name}"] = torch.from_numpy(np.ascontiguousarray(e.hessian))
        tensors[f"scale/{name}"] = torch.from_numpy(np.ascontiguousarray(e.scale))
    try:
        metas = [_norm(e.meta) for e in embeddings]
    except (TypeError, ValueError) as err:
        raise TaskspaceError(f"embedding meta cannot be saved as JSON ({err})") from err
    record = {
        "format": _FORMAT,
        "version": 1,
        "tasks": names,
        "dims": [e.dim for e in embeddings],
        "meta": metas,
    }
    save_safetensors(tensors_path, tensors)
    write_json(meta_path, record)  # last: its presence means the pair is complete
    return meta_path


def load_embeddings(path: str | Path) -> list[Embedding]:
    """Read embeddings written by :func:`save_embeddings` (no pickle involved).

    Missing or corrupt files raise :class:`TaskspaceError` with one line naming the file.
    """
    tensors_path, meta_path = _files(path)
    if not meta_path.is_file():
        raise TaskspaceError(f"no saved embeddings at {meta_path}")
    if not tensors_path.is_file():
        raise TaskspaceError(f"{tensors_path} is missing (needed with {meta_path.name})")
    try:
        record = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TaskspaceError(f"{meta_path} is not readable JSON ({err})") from err
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise TaskspaceError(f"{meta_path} is not a saved taskspace embeddings file")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise TaskspaceError(f"{tensors_path} is corrupt ({err}); embed the tasks again") from err
    out: list[Embedding] = []
    names, metas = record.get("tasks", []), record.get("meta", [])
    if not isinstance(names, list) or not isinstance(metas, list) or len(names) != len(metas):
        raise TaskspaceError(f"{meta_path} is malformed (tasks and meta lists differ)")
    for name, meta in zip(names, metas):
        h, s = tensors.get(f"hessian/{name}"), tensors.get(f"scale/{name}")
        if h is None or s is None:
            raise TaskspaceError(
                f"{tensors_path} has no tensors for task {name!r} listed in {meta_path.name}; "
                "embed the tasks again"
            )
        out.append(Embedding(h.double().numpy(), s.double().numpy(), dict(meta)))
    return out
