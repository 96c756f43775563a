"""``Ensemble``: M trained models of one architecture, and how to save and load them.

A later stage (JTT's second stage, a report, an evaluation on another split) reads a
trained ensemble instead of retraining it. The tensors go to a safetensors file and
everything else (architecture name and arguments, output layout) to a JSON sidecar, so
loading never unpickles anything.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write, write_json
from taskspace.models import create_model

__all__ = ["Ensemble"]

_FORMAT = "taskspace.ensemble"
_GROUPS = ("params", "buffers", "objective_state")


@dataclass
class Ensemble:
    """M trained models of one architecture, as stacked state ``{name: [M, ...]}``.

    ``num_tasks`` > 1 means each model has one head per task: its ``num_outputs`` logits
    are ``num_tasks`` consecutive blocks (``logits.view(..., num_tasks, -1)``).
    ``objective_state`` is the training objective's final per-model state (e.g. Group
    DRO's ``q``), empty for plain cross-entropy.
    """

    model_name: str
    num_outputs: int
    in_channels: int
    image_size: int
    model_kwargs: dict = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)
    num_tasks: int = 1
    objective_state: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def build(self) -> nn.Module:
        """A fresh module of this ensemble's architecture (random init, CPU)."""
        return create_model(
            self.model_name,
            self.num_outputs,
            in_channels=self.in_channels,
            image_size=self.image_size,
            **self.model_kwargs,
        )

    def model(self, m: int) -> nn.Module:
        """Model ``m`` as an ordinary module, in eval mode."""
        module = self.build()
        state = {k: v[m] for k, v in {**self.params, **self.buffers}.items()}
        module.load_state_dict(state)
        return module.eval()

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        both = {**self.params, **self.buffers}
        return [{k: v[m] for k, v in both.items()} for m in range(len(self))]

    def select(self, models: Sequence[int]) -> Ensemble:
        """The ensemble of models ``models`` (in that order)."""
        idx = torch.as_tensor(list(models), dtype=torch.long)
        return Ensemble(
            self.model_name,
            self.num_outputs,
            self.in_channels,
            self.image_size,
            dict(self.model_kwargs),
            {k: v[idx] for k, v in self.params.items()},
            {k: v[idx] for k, v in self.buffers.items()},
            self.num_tasks,
            {k: v[idx] for k, v in self.objective_state.items()},
        )

    @staticmethod
    def concat(parts: Sequence[Ensemble]) -> Ensemble:
        first = parts[0]
        return Ensemble(
            first.model_name,
            first.num_outputs,
            first.in_channels,
            first.image_size,
            dict(first.model_kwargs),
            {k: torch.cat([p.params[k] for p in parts]) for k in first.params},
            {k: torch.cat([p.buffers[k] for p in parts]) for k in first.buffers},
            first.num_tasks,
            {k: torch.cat([p.objective_state[k] for p in parts]) for k in first.objective_state},
        )

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` (tensors) and ``<path>.json`` (the rest), atomically;
        returns the JSON path. A ``.json`` or ``.safetensors`` suffix on ``path`` is
        ignored."""
        tensors_path, json_path = _paths(path)
        tensors = {
            f"{g}.{k}": v.detach().cpu().contiguous()
            for g in _GROUPS
            for k, v in getattr(self, g).items()
        }
        meta = {
            "format": _FORMAT,
            "version": 1,
            "model_name": self.model_name,
            "num_outputs": self.num_outputs,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_tasks": self.num_tasks,
            "model_kwargs": _jsonable(self.model_kwargs),
            "tensors": {k: list(v.shape) for k, v in tensors.items()},
        }
        atomic_write(tensors_path, lambda p: save_file(tensors, str(p)))
        write_json(json_path, meta)  # written last: its presence means the pair is complete
        return json_path

    @classmethod
    def load(cls, path: str | Path) -> Ensemble:
        """Read an ensemble written by :meth:`save` (no pickle involved)."""
        tensors_path, json_path = _paths(path)
        if not json_path.is_file() or not tensors_path.is_file():
            raise TaskspaceError(f"no saved ensemble at {json_path} (+ .safetensors)")
        meta = json.loads(json_path.read_text())
        if meta.get("format") != _FORMAT:
            raise TaskspaceError(f"{json_path} is not a saved taskspace ensemble")
        tensors = load_file(str(tensors_path))
        shapes = {k: list(v.shape) for k, v in tensors.items()}
        if shapes != meta["tensors"]:
            raise TaskspaceError(
                f"{tensors_path} does not match {json_path.name} (tensor names or shapes "
                "differ); save the ensemble again"
            )
        groups = {
            g: {k[len(g) + 1 :]: v for k, v in tensors.items() if k.startswith(g + ".")}
            for g in _GROUPS
        }
        return cls(
            meta["model_name"],
            meta["num_outputs"],
            meta["in_channels"],
            meta["image_size"],
            _from_json(meta["model_kwargs"]),
            groups["params"],
            groups["buffers"],
            meta["num_tasks"],
            groups["objective_state"],
        )


def _paths(path: str | Path) -> tuple[Path, Path]:
    stem = Path(path)
    if stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _jsonable(kwargs: dict) -> dict:
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise TaskspaceError(f"model_kwargs cannot be saved as JSON ({err})") from err
    return kwargs


def _from_json(value: Any) -> Any:
    """JSON lists back to tuples (model arguments such as ``widths`` are tuples)."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value
