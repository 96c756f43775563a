"""Groupings: which attribute is the target and which attributes define the groups.

A grouping string ``Task:Attr[,Attr2,...]`` names a target attribute ``y`` and k
spurious attributes ``a1 .. ak`` of a dataset (``dataset.attributes [N, A]``, 0/1, with
``dataset.attribute_names``). A task then has ``2^(k+1)`` groups, enumerated as
``itertools.product([0, 1], repeat=k + 1)`` over ``(y, a1, ..., ak)``, i.e. binary with
``y`` as the top bit::

    g = y * 2^k + a1 * 2^(k-1) + ... + ak        (k = 1: g = 2y + a)

The attributes keep the order they are written in (the original collected them in a
``set()``, which made multi-attribute group ids change between runs), and group counts are
always padded to ``2^(k+1)`` (a plain ``bincount`` drops empty trailing groups).

Training and evaluation may use different groupings (e.g. train JTT or Group DRO on
``Blond_Hair:Male`` and evaluate under ``Blond_Hair:Male,Young``): each is a
:class:`Grouping` of its own over the same dataset.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError

__all__ = [
    "Grouping",
    "class_counts",
    "group_counts",
    "group_index",
    "parse_grouping",
]


def _close(name: str, names: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(list(names)[:12]) + (", ..." if len(names) > 12 else "")
    return f"known attributes: {shown}"


@dataclass(frozen=True)
class Grouping:
    """A target attribute and the spurious attributes that split each class into groups.

    ``task``/``attributes`` are names, ``task_index``/``attribute_indices`` their columns in
    ``dataset.attributes``; ``attributes`` are kept in the written order, which fixes the
    group ids (:func:`group_index`).
    """

    task: str
    attributes: tuple[str, ...]
    task_index: int
    attribute_indices: tuple[int, ...]

    def __str__(self) -> str:
        return f"{self.task}:{','.join(self.attributes)}"

    @property
    def k(self) -> int:
        """Number of spurious attributes."""
        return len(self.attributes)

    @property
    def num_groups(self) -> int:
        """``2^(k+1)``: every combination of the target and the attributes."""
        return 2 ** (self.k + 1)

    def group_names(self) -> list[str]:
        """``"Task=y,A1=a1,..."`` for every group id, in id order."""
        names = []
        for g in range(self.num_groups):
            bits = [(g >> (self.k - i)) & 1 for i in range(self.k + 1)]
            parts = [f"{n}={b}" for n, b in zip((self.task, *self.attributes), bits)]
            names.append(",".join(parts))
        return names

    def group_class(self) -> torch.Tensor:
        """The class ``y`` of every group id, ``int64 [2^(k+1)]`` (the top bit)."""
        return torch.arange(self.num_groups) >> self.k

    def _attributes(self, dataset: ImageDataset) -> torch.Tensor:
        attrs = dataset.attributes
        if attrs is None or dataset.attribute_names is None:
            raise TaskspaceError(
                f"dataset {dataset.name!r} has no attributes; grouping {self} needs them"
            )
        if len(dataset.attribute_names) != attrs.shape[1]:
            raise TaskspaceError(
                f"dataset {dataset.name!r} has {attrs.shape[1]} attribute columns but "
                f"{len(dataset.attribute_names)} attribute names"
            )
        cols = [self.task_index, *self.attribute_indices]
        names = [self.task, *self.attributes]
        if any(c >= attrs.shape[1] or dataset.attribute_names[c] != n for c, n in zip(cols, names)):
            raise TaskspaceError(
                f"grouping {self} was parsed against another dataset's attributes; "
                f"parse it again for {dataset.name!r}"
            )
        sub = attrs[:, cols].long()
        if bool(((sub != 0) & (sub != 1)).any()):
            raise TaskspaceError(
                f"dataset {dataset.name!r}: attributes of {self} must be 0/1 "
                "(map the original's -1/+1 to 0/1 when loading)"
            )
        return sub

    def targets(self, dataset: ImageDataset) -> torch.Tensor:
        """Target labels ``y [N]`` (int64 0/1)."""
        return self._attributes(dataset)[:, 0].clone()

    def groups(self, dataset: ImageDataset) -> torch.Tensor:
        """Group ids ``g [N]`` (int64 in ``[0, 2^(k+1))``)."""
        sub = self._attributes(dataset)
        return group_index(sub[:, 0], sub[:, 1:])

    def group_counts(self, dataset: ImageDataset, split: str | torch.Tensor) -> torch.Tensor:
        """Examples per group in ``split`` (a name or indices), padded to ``2^(k+1)``."""
        return group_counts(self.groups(dataset)[_idx(dataset, split)], self.num_groups)

    def class_counts(self, dataset: ImageDataset, split: str | torch.Tensor) -> torch.Tensor:
        """Examples per class ``[2]`` in ``split``."""
        return class_counts(self.targets(dataset)[_idx(dataset, split)])

    def proportions(
        self, dataset: ImageDataset, split: str | torch.Tensor = "train"
    ) -> torch.Tensor:
        """Group proportions ``p_g`` in ``split`` (float64, sums to 1): the weights of the
        weighted average accuracy (train proportions by default)."""
        counts = self.group_counts(dataset, split).double()
        if float(counts.sum()) == 0:
            raise TaskspaceError(f"split {split!r} is empty")
        return counts / counts.sum()


def _idx(dataset: ImageDataset, split: str | torch.Tensor) -> torch.Tensor:
    return dataset.split(split) if isinstance(split, str) else torch.as_tensor(split).long()


def parse_grouping(spec: str, attribute_names: Sequence[str]) -> Grouping:
    """Parse ``"Task:Attr[,Attr2,...]"`` against a dataset's ``attribute_names``.

    An unknown name raises :class:`TaskspaceError` naming the close matches; the
    attributes keep their written order. ``Task:Task`` is allowed (the spurious-ID
    pipeline's diagonal: two of its groups are empty); an attribute written twice is not.
    """
    names = list(attribute_names)
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise TaskspaceError(
            f"grouping {spec!r} must look like 'Task:Attr' or 'Task:Attr1,Attr2' (one ':')"
        )
    task, rest = (s.strip() for s in spec.split(":"))
    attrs = [a.strip() for a in rest.split(",")]
    if not task or not rest.strip() or any(not a for a in attrs):
        raise TaskspaceError(
            f"grouping {spec!r} has an empty name; write 'Task:Attr' or 'Task:Attr1,Attr2'"
        )
    for n in (task, *attrs):
        if n not in names:
            raise TaskspaceError(f"grouping {spec!r}: unknown attribute {n!r}; {_close(n, names)}")
    dup = sorted({a for a in attrs if attrs.count(a) > 1})
    if dup:
        raise TaskspaceError(f"grouping {spec!r} names {', '.join(dup)} more than once")
    return Grouping(task, tuple(attrs), names.index(task), tuple(names.index(a) for a in attrs))


def group_index(y: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """``g = y * 2^k + a1 * 2^(k-1) + ... + ak`` for ``y [N]`` and ``attributes [N, k]``
    (or ``[N]`` for k = 1), all 0/1, in the given column order."""
    a = attributes.long()
    if a.dim() == 1:
        a = a[:, None]
    if y.dim() != 1 or a.dim() != 2 or a.shape[0] != y.shape[0]:
        raise TaskspaceError(
            f"group_index needs y [N] and attributes [N, k], got {tuple(y.shape)} and "
            f"{tuple(attributes.shape)}"
        )
    bits = torch.cat([y.long()[:, None], a], dim=1)
    if bool(((bits != 0) & (bits != 1)).any()):
        raise TaskspaceError("group_index needs 0/1 targets and attributes")
    k = a.shape[1]
    powers = 2 ** torch.arange(k, -1, -1)
    return (bits * powers).sum(1)


def group_counts(groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Examples per group id, ``int64 [num_groups]`` (empty trailing groups kept as 0)."""
    g = groups.long().flatten()
    if len(g) and (int(g.min()) < 0 or int(g.max()) >= num_groups):
        raise TaskspaceError(f"group ids must lie in [0, {num_groups})")
    return torch.bincount(g, minlength=num_groups)


def class_counts(y: torch.Tensor, num_classes: int = 2) -> torch.Tensor:
    """Examples per class, ``int64 [num_classes]``."""
    return group_counts(y, num_classes)
