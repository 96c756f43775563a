"""Task builders: human (balanced class-partition) tasks, random tasks, class-subset tasks.

Human tasks follow the reference (``models/tasks.py``): for CIFAR-10, task ``i`` is the
``i``-th tuple of the lexicographic ``itertools.combinations(range(10), 5)`` for ``i < 126``;
these are exactly the 5-subsets containing class 0, so every unordered 5-vs-5 partition
appears once, and label = 1 iff the image's class is in the subset.

Partitions are addressed by index without enumerating them (lexicographic unranking), so a
seeded sample of a few tasks works even for 100 classes, where there are ~5e28 partitions.
"""

from __future__ import annotations

import itertools
import math
import random
import sys
from collections.abc import Sequence
from typing import Any

import torch

from taskspace.errors import TaskspaceError
from taskspace.tasks.taskset import TASK_KINDS, TASKS_META_KEY, TaskSet

#: Reference CIFAR-10 target tasks (indices into :func:`human_task_subsets` for 10 classes).
REFERENCE_TARGETS: tuple[int, ...] = (0, 11, 18, 27, 31, 38, 40)

#: Building more human tasks than this needs an explicit ``max_tasks`` (memory guard).
MAX_HUMAN_TASKS = 10_000


def _check_num_classes(num_classes: int) -> None:
    if int(num_classes) < 2:
        raise TaskspaceError(f"human tasks need at least 2 classes, got {num_classes}")


def human_task_count(num_classes: int) -> int:
    """Number of balanced binary partitions of ``num_classes`` classes.

    Even ``C``: ``comb(C - 1, C/2 - 1)`` (the ``C/2``-subsets containing class 0). Odd
    ``C``: ``comb(C, floor(C/2))`` (every ``floor(C/2)``-subset; its complement is larger,
    so each unordered partition still appears exactly once).
    """
    _check_num_classes(num_classes)
    c = int(num_classes)
    return math.comb(c - 1, c // 2 - 1) if c % 2 == 0 else math.comb(c, c // 2)


def human_task_name(num_classes: int, index: int) -> str:
    """Name of human task ``index``: ``human-011``, zero-padded to the task count's width
    (at least 3 digits), so names sort in index order."""
    width = max(3, len(str(human_task_count(num_classes) - 1)))
    return f"human-{int(index):0{width}d}"


def human_task_subset(num_classes: int, index: int) -> tuple[int, ...]:
    """The positive classes of human task ``index``, without enumerating the others.

    Lexicographic unranking of ``combinations(range(C), C // 2)``; for even ``C`` the
    first :func:`human_task_count` combinations are exactly those containing class 0.
    """
    total = human_task_count(num_classes)
    if not 0 <= index < total:
        raise TaskspaceError(
            f"human task index {index} out of range: {num_classes} classes give {total} tasks"
        )
    c, r = int(num_classes), int(num_classes) // 2
    out: list[int] = []
    x, rest = 0, int(index)
    while r:
        n_with_x = math.comb(c - x - 1, r - 1)  # combinations that take x next
        if rest < n_with_x:
            out.append(x)
            r -= 1
        else:
            rest -= n_with_x
        x += 1
    return tuple(out)


def human_task_subsets(num_classes: int) -> list[tuple[int, ...]]:
    """All human-task subsets (positive classes), in task-index order.

    For 10 classes these are the reference's 126 5-vs-5 tasks. For odd ``C`` the positive
    side is the smaller half, ``floor(C/2)`` classes.
    """
    total = human_task_count(num_classes)
    if total > MAX_HUMAN_TASKS:
        raise TaskspaceError(
            f"{num_classes} classes give {total:.3g} human tasks, too many to list; "
            "use human_task_subset(num_classes, index) or human_tasks(..., max_tasks=...)"
        )
    c = int(num_classes)
    return list(itertools.islice(itertools.combinations(range(c), c // 2), total))


def _check_classes(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    if not isinstance(classes, torch.Tensor) or classes.dim() != 1:
        raise TaskspaceError("classes must be a 1-D tensor with one class id per image")
    if classes.dtype.is_floating_point:
        raise TaskspaceError(f"classes must be integer class ids, got {classes.dtype}")
    classes = classes.long()
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= num_classes):
        raise TaskspaceError(
            f"class ids must lie in [0, {num_classes}), got range "
            f"[{int(classes.min())}, {int(classes.max())}]; check num_classes"
        )
    return classes


def class_subset_tasks(
    classes: torch.Tensor,
    num_classes: int,
    subsets: Sequence[Sequence[int]] | torch.Tensor,
    *,
    names: Sequence[str] | None = None,
    kind: str = "human",
) -> TaskSet:
    """Binary tasks "is the image's class in subset ``j``?" for each subset.

    Also the importer for the reference's ``tiny_imagenet_binary_tasks.npy`` (row ``j`` =
    the positive class ids of task ``j``): ``class_subset_tasks(classes, 200, np.load(p))``.
    Per-task ``positive_classes`` (sorted) go to ``meta["tasks"]``; the class count ``C``
    goes to ``meta["dataset_classes"]``.
    """
    if kind not in TASK_KINDS:
        raise TaskspaceError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")
    classes = _check_classes(classes, num_classes)
    rows = subsets.tolist() if hasattr(subsets, "tolist") else [list(s) for s in subsets]
    rows = [sorted({int(c) for c in row}) for row in rows]
    for j, row in enumerate(rows):
        if not row or row[0] < 0 or row[-1] >= num_classes:
            raise TaskspaceError(
                f"class subset {j} must be a non-empty set of class ids in [0, {num_classes})"
            )
    names = list(names) if names is not None else [f"{kind}-{j:03d}" for j in range(len(rows))]
    member = torch.zeros(len(rows), num_classes, dtype=torch.bool)
    for j, row in enumerate(rows):
        member[j, row] = True
    labels = member[:, classes.cpu()].long().to(classes.device)
    meta = {
        "dataset_classes": int(num_classes),
        TASKS_META_KEY: {n: {"positive_classes": row} for n, row in zip(names, rows)},
    }
    return TaskSet(labels, names, [kind] * len(rows), meta)


def _sample_indices(total: int, count: int, seed: int) -> list[int]:
    """``count`` distinct indices in ``[0, total)``, seeded, sorted (Python ``random``)."""
    rng = random.Random(seed)
    if total <= sys.maxsize:
        return sorted(rng.sample(range(total), count))
    picked: set[int] = set()
    while len(picked) < count:
        picked.add(rng.randrange(total))
    return sorted(picked)


def human_tasks(
    classes: torch.Tensor,
    num_classes: int,
    *,
    max_tasks: int | None = None,
    seed: int = 0,
    include_original: bool = True,
) -> TaskSet:
    """Balanced binary class-partition tasks, plus (optionally) the original labels.

    Args:
        classes: ``[N]`` class id of every image (``dataset.classes``).
        num_classes: ``C`` (``dataset.num_classes``).
        max_tasks: when there are more partitions than this, take a seeded uniform sample of
            ``max_tasks`` of them, in index order. ``None`` takes all (at most
            :data:`MAX_HUMAN_TASKS`).
        seed: seed of that sample (Python ``random.Random``; unused without sampling).
        include_original: append the ``C``-way original task, named and kinded ``original``.

    Task names keep the partition index (``human-011`` is partition 11 also in a sample);
    ``meta["tasks"][name]`` holds ``positive_classes`` and ``partition_index``.
    """
    _check_num_classes(num_classes)
    c = int(num_classes)
    classes = _check_classes(classes, c)
    total = human_task_count(c)
    if max_tasks is not None and max_tasks < 0:
        raise TaskspaceError(f"max_tasks must be >= 0, got {max_tasks}")
    sampled = max_tasks is not None and total > max_tasks
    if sampled and max_tasks is not None:
        indices = _sample_indices(total, int(max_tasks), seed)
    elif total > MAX_HUMAN_TASKS:
        raise TaskspaceError(
            f"{c} classes give {total:.3g} human tasks; pass max_tasks to take a seeded sample"
        )
    else:
        indices = list(range(total))
    names = [human_task_name(c, i) for i in indices]
    subsets = [human_task_subset(c, i) for i in indices]
    tasks = class_subset_tasks(classes, c, subsets, names=names, kind="human")
    for name, i in zip(names, indices):
        tasks.meta[TASKS_META_KEY][name]["partition_index"] = i
    meta: dict[str, Any] = tasks.meta
    meta["total_partitions"] = total
    if sampled:
        meta["sample_seed"] = int(seed)
    if include_original:
        if "original" in names:  # cannot happen with human-NNN names; keeps the check local
            raise TaskspaceError("task name 'original' is taken")
        labels = torch.cat([tasks.labels, classes.unsqueeze(0)], dim=0)
        meta[TASKS_META_KEY]["original"] = {"num_classes": c}
        return TaskSet(labels, [*names, "original"], [*tasks.kinds, "original"], meta)
    return tasks


def random_tasks(
    n_images: int,
    count: int,
    *,
    seed: int = 0,
    num_classes: int = 2,
    balanced: bool = False,
    seed_per_task: bool = False,
) -> TaskSet:
    """``count`` random labellings of ``n_images`` images, reproducible from ``seed``.

    Uniform: ``torch.randint(0, num_classes, (count, n_images), generator)`` with a CPU
    ``torch.Generator`` seeded ``seed``; task 0 with seed 0 and 2 classes equals the
    reference ``check_as.py`` labels (``randint(0, 2, (N,))``, generator seed 0).
    ``balanced=True``: each task is ``arange(N) % num_classes`` permuted by
    ``randperm``, so class counts are equal (differ by at most one when ``num_classes``
    does not divide ``N``). ``seed_per_task=True``: task ``k`` has its own generator seeded
    ``seed + k`` (the reference's Lightning path seeds each task's table with its index),
    so a task does not depend on how many others are drawn.
    """
    if n_images < 1 or count < 0:
        raise TaskspaceError(f"need n_images >= 1 and count >= 0, got {n_images} and {count}")
    if num_classes < 2:
        raise TaskspaceError(f"random tasks need num_classes >= 2, got {num_classes}")
    if balanced and n_images < num_classes:
        raise TaskspaceError(f"cannot balance {num_classes} classes over {n_images} images")

    def draw(g: torch.Generator, k: int) -> torch.Tensor:
        if balanced:
            base = torch.arange(n_images) % num_classes
            return torch.stack([base[torch.randperm(n_images, generator=g)] for _ in range(k)])
        return torch.randint(0, num_classes, (k, n_images), generator=g)

    if seed_per_task:
        rows = [draw(torch.Generator().manual_seed(seed + k), 1) for k in range(count)]
        labels = torch.cat(rows) if rows else torch.zeros(0, n_images, dtype=torch.long)
    else:
        labels = draw(torch.Generator().manual_seed(seed), count)
        if count == 0:
            labels = torch.zeros(0, n_images, dtype=torch.long)
    width = max(3, len(str(count - 1)))
    names = [f"random-{k:0{width}d}" for k in range(count)]
    meta = {
        "seed": int(seed),
        "num_classes": int(num_classes),
        "balanced": bool(balanced),
        "seed_per_task": bool(seed_per_task),
    }
    return TaskSet(labels, names, ["random"] * count, meta)
