"""A task set named on the command line: ``human``, ``random``, ``original`` and files."""

from __future__ import annotations

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.tasks.builders import human_tasks, random_tasks
from taskspace.tasks.files import load_tasks, parse_task_spec
from taskspace.tasks.taskset import TaskSet

__all__ = ["attribute_tasks", "tasks_from_spec"]


def tasks_from_spec(spec: str, dataset: ImageDataset, *, num_tasks: int, seed: int) -> TaskSet:
    """The task set named by ``spec``, a comma-separated list of ``human``, ``random``,
    ``original``, ``attributes`` and task files ``<path>[:<format>]``.

    ``human``: a seeded sample of ``num_tasks`` balanced class partitions (for 10 classes
    the reference's 126 5-vs-5 tasks); ``random``: ``num_tasks`` seeded random labellings;
    ``original``: the dataset's own classes; ``attributes``: one task per 0/1 attribute of
    an attribute dataset (kind ``attribute``, named after the attribute). A file's
    ``format`` says what its rows mean (:data:`taskspace.tasks.TASK_FORMATS`): ``labels``
    (one per image, dataset order), ``torchvision_train`` (the reference's
    ``ssl_tasks.csv`` / ``discovered.csv``: one per official CIFAR training image in
    torchvision order; their test images are unlabelled, so only ``heldout`` AS is scored)
    or ``class_subsets`` (row j = positive class ids of task j, e.g.
    ``tiny_imagenet_binary_tasks.npy:class_subsets``). Without it the shape decides, and a
    shape that fits two readings is refused.
    """
    parts: list[TaskSet] = []
    for item in [t.strip() for t in spec.split(",") if t.strip()]:
        if item == "human":
            parts.append(
                human_tasks(
                    dataset.classes,
                    dataset.num_classes,
                    max_tasks=num_tasks,
                    seed=seed,
                    include_original=False,
                )
            )
        elif item == "original":
            parts.append(TaskSet(dataset.classes[None].clone(), ["original"], ["original"], {}))
        elif item == "attributes":
            parts.append(attribute_tasks(dataset))
        elif item == "random":
            parts.append(random_tasks(len(dataset), num_tasks, seed=seed))
        else:
            path, fmt = parse_task_spec(item)
            parts.append(load_tasks(path, format=fmt, dataset=dataset))
    if not parts:
        raise TaskspaceError("tasks is empty; use tasks=human,random or a task file path")
    return TaskSet.concat(*parts)


def attribute_tasks(dataset: ImageDataset) -> TaskSet:
    """One task per attribute of ``dataset`` (labels = the 0/1 attribute column)."""
    if dataset.attributes is None or not dataset.attribute_names:
        raise TaskspaceError(
            f"tasks=attributes needs a dataset with attributes (celeba, celeba_lite, "
            f"coloured_digits, waterdigits); {dataset.name!r} has none"
        )
    names = list(dataset.attribute_names)
    return TaskSet(dataset.attributes.T.long().clone(), names, ["attribute"] * len(names), {})
