"""Tasks: labellings of a fixed set of images, as task sets with names, kinds and metadata.

- :class:`TaskSet` (``labels [K, N]`` + names + kinds + meta) and :func:`validate_tasks`;
- builders: :func:`human_tasks` (balanced class partitions, the reference's 126 CIFAR-10
  5-vs-5 tasks), :func:`random_tasks`, :func:`class_subset_tasks`;
- files: :func:`save_tasks` / :func:`load_tasks` (``.npz``, ``.npy`` + JSON sidecar, CSV)
  and :func:`export_tasks_csv` (the reference's one-column-per-task CSV).
"""

from taskspace.tasks.builders import (
    MAX_HUMAN_TASKS,
    REFERENCE_TARGETS,
    class_subset_tasks,
    human_task_count,
    human_task_subset,
    human_task_subsets,
    human_tasks,
    random_tasks,
)
from taskspace.tasks.files import export_tasks_csv, load_tasks, save_tasks
from taskspace.tasks.taskset import TASK_KINDS, TASKS_META_KEY, TaskSet, validate_tasks

__all__ = [
    "MAX_HUMAN_TASKS",
    "REFERENCE_TARGETS",
    "TASKS_META_KEY",
    "TASK_KINDS",
    "TaskSet",
    "class_subset_tasks",
    "export_tasks_csv",
    "human_task_count",
    "human_task_subset",
    "human_task_subsets",
    "human_tasks",
    "load_tasks",
    "random_tasks",
    "save_tasks",
    "validate_tasks",
]
