"""The "can you guess the task" quiz: example images of each class, then held-back images.

For each chosen binary task the page shows ``examples`` training images of class 0 and of
class 1, then ``questions`` held-back images one at a time (half of each class, seeded);
the reader answers 0 or 1 and the page scores the answers against the task's labels. A
human task is easy to guess from a few examples, a random one is not, and a discovered task
shows where it sits between them. Everything is embedded in the page; nothing is sent.
"""

from __future__ import annotations

from typing import Any

import torch

from taskspace.data import ImageDataset
from taskspace.tasks import TaskSet

__all__ = ["quiz_data"]


def _pick(pool: torch.Tensor, labels: torch.Tensor, c: int, n: int, g: torch.Generator) -> list:
    of_class = pool[labels[pool] == c]
    return of_class[torch.randperm(len(of_class), generator=g)[:n]].tolist()


def quiz_data(
    dataset: ImageDataset,
    tasks: TaskSet,
    pool_key: str,
    *,
    per_kind: int = 3,
    examples: int = 4,
    questions: int = 10,
    seed: int = 0,
) -> tuple[dict[str, Any], list[int]]:
    """The quiz's JSON data and the dataset indices it shows.

    Tasks: the first ``per_kind`` binary tasks of each kind with both classes present.
    Examples come from the ``train`` split, questions from ``heldout`` (else ``test``, else
    every image not shown as an example), ``questions // 2`` of each class.
    """
    g = torch.Generator().manual_seed(int(seed))
    names = set(dataset.splits)
    train = dataset.split("train") if "train" in names else torch.arange(len(dataset))
    held = next((dataset.split(s) for s in ("heldout", "test") if s in names), None)
    out: list[dict[str, Any]] = []
    shown: list[int] = []
    taken: dict[str, int] = {}
    for k in range(len(tasks)):
        kind, labels = tasks.kinds[k], tasks.labels[k]
        if taken.get(kind, 0) >= per_kind or int(labels.max()) != 1 or int(labels.min()) != 0:
            continue
        ex = {c: _pick(train, labels, c, examples, g) for c in (0, 1)}
        used = set(ex[0] + ex[1])
        pool = held if held is not None else torch.arange(len(dataset))
        pool = pool[torch.tensor([int(i) not in used for i in pool.tolist()], dtype=torch.bool)]
        qs = [(i, c) for c in (0, 1) for i in _pick(pool, labels, c, questions // 2, g)]
        order = torch.randperm(len(qs), generator=g).tolist()
        if min(len(ex[0]), len(ex[1])) == 0 or not qs:
            continue
        out.append(
            {
                "name": tasks.names[k],
                "kind": kind,
                "classes": [0, 1],
                "examples": {"0": ex[0], "1": ex[1]},
                "questions": [{"i": int(qs[j][0]), "label": int(qs[j][1])} for j in order],
            }
        )
        shown += ex[0] + ex[1] + [int(i) for i, _ in qs]
        taken[kind] = taken.get(kind, 0) + 1
    return {"pool": pool_key, "tasks": out}, shown
