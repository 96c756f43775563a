"""Nested training state as safetensors plus JSON, and content digests.

Checkpoints and saved ensembles hold trees of dicts and lists whose leaves are tensors or
plain values (optimiser moments next to step counts, generator states next to seeds).
:func:`flatten_state` splits such a tree into a flat ``{name: tensor}`` dict, which
safetensors stores, and a JSON-able skeleton naming where each tensor goes, so loading
never unpickles anything. :func:`digest` hashes arguments (tensors by content) so a
checkpoint can refuse to resume a different fit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from taskspace.io import atomic_write

__all__ = ["digest", "flatten_state", "load_state", "save_state", "unflatten_state"]

_TENSOR, _PAIRS, _TUPLE = "__tensor__", "__pairs__", "__tuple__"
_META_KEY = "taskspace"


def flatten_state(tree: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """``(skeleton, tensors)``: the tree with every tensor replaced by a reference to its
    entry in ``tensors`` (contiguous CPU copies). Dicts with non-string keys (torch.optim's
    ``{param_id: state}``) keep their key types."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[path] = node.detach().cpu().contiguous().clone()
            return {_TENSOR: path}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node):
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
            return {_PAIRS: [[k, walk(v, f"{path}.{k}")] for k, v in node.items()]}
        if isinstance(node, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, bool | int | float | str):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at {path!r} in a state file")

    return walk(tree, prefix), tensors


def unflatten_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if _TENSOR in skeleton:
            return tensors[skeleton[_TENSOR]]
        if _PAIRS in skeleton:
            return {k: unflatten_state(v, tensors) for k, v in skeleton[_PAIRS]}
        if _TUPLE in skeleton:
            return tuple(unflatten_state(v, tensors) for v in skeleton[_TUPLE])
        return {k: unflatten_state(v, tensors) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


def save_state(path: str | Path, tree: Any) -> Path:
    """Write ``tree`` to one safetensors file (skeleton in its metadata), atomically."""
    skeleton, tensors = flatten_state(tree)
    meta = {_META_KEY: json.dumps(skeleton)}
    return atomic_write(path, lambda p: save_file(tensors, str(p), metadata=meta))


def load_state(path: str | Path) -> Any:
    """Read a tree written by :func:`save_state` (no pickle involved)."""
    with safe_open(str(path), framework="pt") as fh:
        skeleton = json.loads((fh.metadata() or {})[_META_KEY])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    return unflatten_state(skeleton, tensors)


def digest(obj: Any) -> str:
    """A content hash of ``obj``: tensors by dtype, shape and bytes; dataclasses and plain
    objects by class name and fields; containers recursively."""
    h = hashlib.sha256()

    def feed(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            t = node.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(node, dict):
            h.update(b"{")
            for k in sorted(node, key=repr):
                h.update(repr(k).encode())
                feed(node[k])
            h.update(b"}")
        elif isinstance(node, list | tuple):
            h.update(b"[")
            for v in node:
                feed(v)
            h.update(b"]")
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            h.update(type(node).__qualname__.encode())
            feed({f.name: getattr(node, f.name) for f in dataclasses.fields(node)})
        elif isinstance(node, type) or inspect.isroutine(node):
            h.update(f"{node.__module__}.{node.__qualname__}".encode())
        elif hasattr(node, "__dict__"):
            h.update(type(node).__qualname__.encode())
            feed(vars(node))
        else:
            h.update(repr(node).encode())

    feed(obj)
    return h.hexdigest()
