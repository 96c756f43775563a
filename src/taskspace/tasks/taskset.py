"""Task sets: ``K`` labellings of the same ``N`` images, with names, kinds and metadata.

A *task* is one row of labels ``[N]`` in ``[0, n_classes)``; a :class:`TaskSet` stacks ``K``
of them so that the engine can train many models on the same images at once. Every task
has a unique name (the identifier used in result tables and CSV headers) and a kind saying
where it came from (:data:`TASK_KINDS`).

Metadata convention. ``meta`` is a free JSON-able dict. Set-level facts (encoder, sign
convention, seed) are top-level keys; per-task facts live in ``meta["tasks"][name]`` (a
dict per task name, e.g. ``{"positive_classes": [0, 1, 2, 5, 6]}``). :meth:`TaskSet.select`
keeps only the selected tasks' entries, and :meth:`TaskSet.concat` moves set-level keys
that the parts disagree on into the per-task entries, so no fact is ever attributed to the
wrong task. :meth:`TaskSet.task_meta` gives the merged view for one task.

Partly labelled tasks. ``labels`` covers every image, but a task read from a file that labels
only some of them (the reference's CIFAR files label the 50,000 training images, not the
test images) records the dataset splits it has no labels on under
``meta[UNLABELLED_SPLITS_KEY]`` (e.g. ``["test"]``); the labels there are a filler 0 and
must not be scored (:meth:`TaskSet.unlabelled_splits`, used by the agreement score).
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError

#: Where a task came from. ``original`` is the dataset's own multi-class labelling;
#: ``standin`` marks stand-ins for discovered tasks (``taskspace split discovered=standin``).
TASK_KINDS: tuple[str, ...] = (
    "human",
    "random",
    "discovered",
    "standin",
    "attribute",
    "table",
    "original",
)

#: Meta key (set-level or per task) listing the dataset splits a task has no labels on.
UNLABELLED_SPLITS_KEY = "unlabelled_splits"

#: Key of the per-task metadata dict inside :attr:`TaskSet.meta`.
TASKS_META_KEY = "tasks"


@dataclass(eq=False)
class TaskSet:
    """``K`` tasks over the same ``N`` images.

    Attributes:
        labels: ``int64 [K, N]``, values in ``[0, n_classes)`` per task. Any integer or bool
            tensor is accepted and converted to ``int64``.
        names: ``K`` unique task names.
        kinds: ``K`` kinds, each one of :data:`TASK_KINDS`.
        meta: JSON-able metadata; per-task entries under ``meta["tasks"][name]``.
    """

    labels: torch.Tensor
    names: list[str]
    kinds: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        labels = self.labels
        if not isinstance(labels, torch.Tensor):
            raise TaskspaceError(
                f"task labels must be a torch.Tensor [K, N], got {type(labels).__name__}"
            )
        if labels.dim() != 2:
            raise TaskspaceError(
                f"task labels must be 2-D [K, N] (one row per task), got shape "
                f"{tuple(labels.shape)}; use labels.unsqueeze(0) for a single task"
            )
        if labels.dtype.is_floating_point or labels.dtype.is_complex:
            raise TaskspaceError(
                f"task labels must be integers, got {labels.dtype}; round and cast them "
                "with .long() first"
            )
        self.labels = labels.to(torch.int64)
        if self.labels.numel() and int(self.labels.min()) < 0:
            k = int((self.labels < 0).any(dim=1).nonzero()[0])
            raise TaskspaceError(
                f"task labels must be non-negative class ids, but task {k} has value "
                f"{int(self.labels[k].min())}"
            )
        self.names = [str(n) for n in self.names]
        self.kinds = [str(k) for k in self.kinds]
        K = self.labels.shape[0]
        if len(self.names) != K:
            raise TaskspaceError(f"{len(self.names)} task names for {K} tasks; give one per task")
        if len(self.kinds) != K:
            raise TaskspaceError(f"{len(self.kinds)} task kinds for {K} tasks; give one per task")
        dup = [n for n, c in Counter(self.names).items() if c > 1]
        if dup:
            raise TaskspaceError(
                f"duplicate task name {dup[0]!r}; task names must be unique "
                "(rename with TaskSet.renamed before combining sets)"
            )
        bad = [k for k in self.kinds if k not in TASK_KINDS]
        if bad:
            raise TaskspaceError(f"unknown task kind {bad[0]!r}; expected one of {TASK_KINDS}")
        if not isinstance(self.meta, dict):
            raise TaskspaceError(f"task meta must be a dict, got {type(self.meta).__name__}")
        per_task = self.meta.get(TASKS_META_KEY, {})
        if not isinstance(per_task, dict):
            raise TaskspaceError(
                f"task meta[{TASKS_META_KEY!r}] must be a dict of task name -> dict"
            )

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        kinds = dict(Counter(self.kinds))
        return f"TaskSet(K={len(self)}, N={self.num_images}, kinds={kinds})"

    @property
    def num_images(self) -> int:
        """``N``, the number of images every task labels."""
        return int(self.labels.shape[1])

    def index(self, name: str) -> int:
        """Position of the task called ``name``."""
        try:
            return self.names.index(name)
        except ValueError:
            shown = ", ".join(self.names[:5]) + (", ..." if len(self) > 5 else "")
            raise TaskspaceError(f"no task named {name!r} (tasks: {shown})") from None

    def _position(self, k: int | str) -> int:
        if isinstance(k, str):
            return self.index(k)
        k = int(k)
        if not -len(self) <= k < len(self):
            raise TaskspaceError(f"task index {k} out of range for {len(self)} tasks")
        return k % len(self)

    def num_classes(self, k: int | str) -> int:
        """Number of classes of task ``k`` (index or name).

        This is ``max label + 1``, or the declared ``meta["tasks"][name]["num_classes"]``
        when larger (a multi-class task whose top class is absent from the images). A usable
        task has at least 2.
        """
        k = self._position(k)
        found = int(self.labels[k].max()) + 1 if self.num_images else 0
        declared = self.task_meta(k).get("num_classes")
        return max(found, int(declared)) if isinstance(declared, int) else found

    def task_meta(self, k: int | str) -> dict[str, Any]:
        """Set-level metadata merged with task ``k``'s own entry (the task's wins)."""
        k = self._position(k)
        out = {key: v for key, v in self.meta.items() if key != TASKS_META_KEY}
        out.update(self.meta.get(TASKS_META_KEY, {}).get(self.names[k], {}))
        return copy.deepcopy(out)

    def unlabelled_splits(self, k: int | str) -> list[str]:
        """Dataset splits on which task ``k`` has no labels (``[]``: it labels every image).

        Set by importers of files that label only some images, e.g. ``["test"]`` for the
        reference's CIFAR task files, which label the official training images only.
        """
        value = self.task_meta(k).get(UNLABELLED_SPLITS_KEY, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TaskspaceError(
                f"task {self.names[self._position(k)]!r}: meta[{UNLABELLED_SPLITS_KEY!r}] must "
                f"be a list of split names, got {value!r}"
            )
        return value

    # ------------------------------------------------------------------ derived sets
    def select(self, indices: int | str | Iterable[int | str] | torch.Tensor) -> TaskSet:
        """The tasks at ``indices`` (positions, names, a bool mask or an index tensor)."""
        if isinstance(indices, torch.Tensor):
            if indices.dtype == torch.bool:
                if indices.shape != (len(self),):
                    raise TaskspaceError(
                        f"task mask has shape {tuple(indices.shape)}, expected ({len(self)},)"
                    )
                indices = indices.nonzero().flatten()
            items: list[int | str] = [int(i) for i in indices.flatten().tolist()]
        elif isinstance(indices, (int, str)):
            items = [indices]
        else:
            items = list(indices)
        pos = [self._position(i) for i in items]
        names = [self.names[p] for p in pos]
        meta = copy.deepcopy(self.meta)
        if TASKS_META_KEY in meta:
            per_task = meta[TASKS_META_KEY]
            meta[TASKS_META_KEY] = {n: per_task[n] for n in names if n in per_task}
        index = torch.tensor(pos, dtype=torch.long, device=self.labels.device)
        labels = self.labels.index_select(0, index) if pos else self.labels[:0]
        return TaskSet(labels.clone(), names, [self.kinds[p] for p in pos], meta)

    def subset_of_kind(self, kind: str) -> TaskSet:
        """The tasks of one kind (possibly none)."""
        if kind not in TASK_KINDS:
            raise TaskspaceError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")
        return self.select([i for i, k in enumerate(self.kinds) if k == kind])

    def renamed(self, names: Sequence[str] | None = None, *, prefix: str = "") -> TaskSet:
        """A copy with new ``names`` (or the old ones with ``prefix`` prepended)."""
        new = list(names) if names is not None else [prefix + n for n in self.names]
        if len(new) != len(self):
            raise TaskspaceError(f"{len(new)} new names for {len(self)} tasks")
        meta = copy.deepcopy(self.meta)
        if TASKS_META_KEY in meta:
            old = meta[TASKS_META_KEY]
            meta[TASKS_META_KEY] = {b: old[a] for a, b in zip(self.names, new) if a in old}
        return TaskSet(self.labels.clone(), new, list(self.kinds), meta)

    def with_kind(self, kind: str) -> TaskSet:
        """A copy in which every task has kind ``kind``."""
        return TaskSet(self.labels.clone(), list(self.names), [kind] * len(self), self.meta)

    @classmethod
    def concat(cls, *sets: TaskSet) -> TaskSet:
        """Stack task sets over the same images into one.

        Set-level metadata keys on which all parts agree stay set-level; the others are
        copied into the per-task entries of the part they came from.
        """
        if not sets:
            raise TaskspaceError("TaskSet.concat needs at least one task set")
        n = {s.num_images for s in sets}
        if len(n) > 1:
            raise TaskspaceError(
                f"cannot combine task sets over different images (label counts {sorted(n)})"
            )
        keys = {k for s in sets for k in s.meta if k != TASKS_META_KEY}
        shared = {
            k
            for k in keys
            if all(k in s.meta for s in sets) and all(s.meta[k] == sets[0].meta[k] for s in sets)
        }
        meta: dict[str, Any] = {k: copy.deepcopy(sets[0].meta[k]) for k in sorted(shared)}
        per_task: dict[str, dict[str, Any]] = {}
        for s in sets:
            own = {k: v for k, v in s.meta.items() if k != TASKS_META_KEY and k not in shared}
            entries = s.meta.get(TASKS_META_KEY, {})
            for name in s.names:
                entry = copy.deepcopy(own)
                entry.update(copy.deepcopy(entries.get(name, {})))
                if entry:
                    per_task[name] = entry
        if per_task:
            meta[TASKS_META_KEY] = per_task
        devices = {s.labels.device for s in sets}
        device = sets[0].labels.device if len(devices) == 1 else torch.device("cpu")
        labels = torch.cat([s.labels.to(device) for s in sets], dim=0)
        names = [n for s in sets for n in s.names]
        kinds = [k for s in sets for k in s.kinds]
        return cls(labels, names, kinds, meta)


def validate_tasks(
    tasks: TaskSet, dataset: ImageDataset, train_split: str | None = "train"
) -> None:
    """Check that ``tasks`` can be trained on ``dataset``; raise TaskspaceError otherwise.

    Every task must label exactly the dataset's images, must have labels on the training
    split (see :meth:`TaskSet.unlabelled_splits`), and must have at least two classes among
    the labels of the training split (``None``: all images), since a one-class task has
    nothing to learn and its agreement score is trivially 1.
    """
    if tasks.num_images != len(dataset):
        raise TaskspaceError(
            f"task file has {tasks.num_images} labels per task but the dataset "
            f"{dataset.name!r} has {len(dataset)} images; use tasks made for this dataset"
        )
    if len(tasks) == 0:
        return
    for k in range(len(tasks)):
        if train_split is not None and train_split in tasks.unlabelled_splits(k):
            raise TaskspaceError(
                f"task {tasks.names[k]!r} has no labels on the {train_split} split of dataset "
                f"{dataset.name!r}; it cannot be trained on"
            )
    if train_split is None:
        labels, where = tasks.labels, "the dataset"
    else:
        idx = dataset.split(train_split).to(tasks.labels.device)
        labels, where = tasks.labels.index_select(1, idx), f"the {train_split} split"
    if labels.shape[1] == 0:
        raise TaskspaceError(f"{where} of dataset {dataset.name!r} is empty")
    lo = labels.min(dim=1).values
    hi = labels.max(dim=1).values
    one = (lo == hi).nonzero().flatten()
    if len(one):
        k = int(one[0])
        more = f" (and {len(one) - 1} more)" if len(one) > 1 else ""
        raise TaskspaceError(
            f"task {tasks.names[k]!r} has only one class in {where}{more}; "
            "drop it or relabel so both classes occur"
        )
