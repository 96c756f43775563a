"""Tasks: labellings of a fixed set of images, as task sets with names, kinds and metadata.

- :class:`TaskSet` (``labels [K, N]`` + names + kinds + meta) and :func:`validate_tasks`;
- builders: :func:`human_tasks` (balanced class partitions, the reference's 126 CIFAR-10
  5-vs-5 tasks), :func:`random_tasks`, :func:`class_subset_tasks`;
- files: :func:`save_tasks` / :func:`load_tasks` (``.npz``, ``.npy`` + JSON sidecar, CSV;
  ``format=`` one of :data:`TASK_FORMATS`), :func:`parse_task_spec` (``<file>[:<format>]``)
  and :func:`export_tasks_csv` (one column per task);
- layout: where the reference's index-based CIFAR files sit in a dataset
  (:mod:`taskspace.tasks.layout`).
"""

from taskspace.tasks.builders import (
    MAX_HUMAN_TASKS,
    REFERENCE_TARGETS,
    class_subset_tasks,
    human_task_count,
    human_task_name,
    human_task_subset,
    human_task_subsets,
    human_tasks,
    random_tasks,
)
from taskspace.tasks.files import (
    TASK_FORMATS,
    export_tasks_csv,
    load_tasks,
    parse_task_spec,
    save_tasks,
)
from taskspace.tasks.taskset import (
    TASK_KINDS,
    TASKS_META_KEY,
    UNLABELLED_SPLITS_KEY,
    TaskSet,
    validate_tasks,
)

__all__ = [
    "MAX_HUMAN_TASKS",
    "REFERENCE_TARGETS",
    "TASKS_META_KEY",
    "TASK_FORMATS",
    "TASK_KINDS",
    "UNLABELLED_SPLITS_KEY",
    "TaskSet",
    "class_subset_tasks",
    "export_tasks_csv",
    "human_task_count",
    "human_task_name",
    "human_task_subset",
    "human_task_subsets",
    "human_tasks",
    "load_tasks",
    "parse_task_spec",
    "random_tasks",
    "save_tasks",
    "validate_tasks",
]
