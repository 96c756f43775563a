"""Discovered tasks as spurious attributes (issue #13 part 5).

Task discovery finds labellings of the images that networks learn alike; a spurious
attribute (background colour, a photo's backdrop) is exactly such a labelling. This module
uses discovered tasks where the robustness methods expect a *labelled* attribute, so no
attribute label is needed for training:

- **matching** (:func:`match_attribute`, :func:`best_match`): how well each discovered task
  reproduces a known attribute, by the *folded* agreement ``max(agree, 1 - agree)`` (a
  task's sign is arbitrary: head ``w`` and ``-w`` are the same split of the images);
- **deltas** (:func:`task_deltas`): the spurious-ID delta (reference section 5,
  :func:`~taskspace.robustness.spurious.delta_from_counts`) of a target model under the
  groupings ``target:task`` for every discovered task, i.e. every task treated as a
  candidate shortcut of the model;
- **group inference** (:func:`inferred_groups`, :func:`fit_robust_inferred`): groups
  ``g_hat = 2 y + a_hat`` from the target and a discovered task, used to *train* Group DRO
  (or RWG / SUBG) in place of the attribute's groups, while evaluation and model selection
  still use the true grouping (so the numbers are comparable with attribute-trained
  methods).

Discovery's code reads its held-out batch from a split named ``heldout`` (the CIFAR /
digits convention), while the attribute datasets call it ``val``; :func:`with_heldout`
gives a copy of a dataset with ``heldout`` added as another name of ``val`` (the data layer
is left alone). This module takes discovered tasks as a :class:`~taskspace.tasks.TaskSet`
and never imports :mod:`taskspace.discovery` (a sibling in the same layer).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Ensemble, predict_many
from taskspace.engine.metrics import predictions
from taskspace.errors import TaskspaceError
from taskspace.robustness.groups import Grouping, parse_grouping
from taskspace.robustness.methods import MethodConfig, RobustResult, fit_robust
from taskspace.robustness.metrics import Z95, count_correct
from taskspace.robustness.spurious import DeltaMatrix, shrink_group_accuracy
from taskspace.tasks import TaskSet

__all__ = [
    "best_match",
    "fit_robust_inferred",
    "inferred_groups",
    "match_attribute",
    "task_deltas",
    "task_row",
    "with_heldout",
]


def with_heldout(dataset: ImageDataset, heldout: str = "val") -> ImageDataset:
    """A shallow copy of ``dataset`` whose splits add ``"heldout"`` = split ``heldout``
    (what task discovery reads its held-out batches from); images and attributes are
    shared, the original's splits are untouched."""
    out = copy.copy(dataset)
    out.use_splits({**dataset.splits, "heldout": dataset.split(heldout)})
    out.split_orders = {**dataset.split_orders}
    if heldout in dataset.split_orders:
        out.split_orders["heldout"] = dataset.split_orders[heldout].clone()
    return out


def _binary(x: torch.Tensor, what: str, n: int | None = None) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dtype.is_floating_point or t.dtype.is_complex:
        raise TaskspaceError(f"{what} must be 0/1 integers or bools, got {t.dtype}")
    t = t.long()
    if t.dim() != 1 or (n is not None and len(t) != n):
        want = "[N]" if n is None else f"[{n}]"
        raise TaskspaceError(f"{what} must be {want}, got {tuple(t.shape)}")
    if bool(((t != 0) & (t != 1)).any()):
        raise TaskspaceError(f"{what} must be 0/1")
    return t


def match_attribute(
    tasks: TaskSet, attribute: torch.Tensor, idx: torch.Tensor | None = None
) -> list[tuple[str, float]]:
    """``(task name, folded agreement)`` for every task, best first.

    The folded agreement ``max(agree, 1 - agree)`` of a task's labels with ``attribute
    [N]`` (0/1) over the images ``idx`` (default: all; e.g. the validation split, where
    the attribute is balanced against the target) lies in ``[0.5, 1]``: 1 means the task
    *is* the attribute up to its arbitrary sign. Only binary tasks are compared (a task
    with another label raises). Ties keep the task order.
    """
    n = tasks.labels.shape[1]
    a = _binary(attribute, "attribute", n)
    sel = torch.arange(n) if idx is None else torch.as_tensor(idx).long()
    if len(sel) == 0:
        raise TaskspaceError("match_attribute: no images to compare on (idx is empty)")
    lab = tasks.labels[:, sel]
    if bool(((lab != 0) & (lab != 1)).any()):
        raise TaskspaceError("match_attribute compares binary tasks only (labels 0/1)")
    agree = (lab == a[sel][None]).double().mean(1)
    folded = torch.maximum(agree, 1 - agree)
    order = sorted(range(len(tasks)), key=lambda k: -float(folded[k]))
    return [(tasks.names[k], float(folded[k])) for k in order]


def best_match(
    tasks: TaskSet, attribute: torch.Tensor, idx: torch.Tensor | None = None
) -> tuple[str, float]:
    """The task that best reproduces ``attribute`` and its folded agreement
    (:func:`match_attribute`'s first entry)."""
    if len(tasks) == 0:
        raise TaskspaceError("best_match: the task set is empty")
    return match_attribute(tasks, attribute, idx)[0]


def task_row(tasks: TaskSet | torch.Tensor, name: str | None = None) -> torch.Tensor:
    """One task's 0/1 labels ``[N]``: row ``name`` of a task set (or its only row), or a
    label tensor ``[N]`` given directly."""
    if isinstance(tasks, TaskSet):
        if name is None:
            if len(tasks) != 1:
                raise TaskspaceError(
                    f"the task set has {len(tasks)} tasks; name the one to use (name=)"
                )
            row = tasks.labels[0]
        else:
            if name not in tasks.names:
                raise TaskspaceError(f"no task {name!r} in the task set")
            row = tasks.labels[tasks.names.index(name)]
    else:
        row = torch.as_tensor(tasks)
    return _binary(row, "task labels")


def inferred_groups(y: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
    """Inferred group ids ``g_hat = 2 y + a_hat`` (int64 ``[N]``) from the target ``y``
    and a discovered task's labels ``a_hat`` (both 0/1 ``[N]``): the groups of the
    grouping ``target:task``, with the task in place of an attribute."""
    y = _binary(y, "targets")
    return 2 * y + _binary(a_hat, "task labels", len(y))


def _as_grouping(g: Grouping | str, dataset: ImageDataset) -> Grouping:
    if isinstance(g, Grouping):
        return g
    if dataset.attribute_names is None:
        raise TaskspaceError(f"dataset {dataset.name!r} has no attributes to group by")
    return parse_grouping(g, dataset.attribute_names)


def task_deltas(
    models: Ensemble | torch.Tensor,
    dataset: ImageDataset,
    target: Grouping | str,
    tasks: TaskSet,
    *,
    split: str = "val",
    z: float = Z95,
    device: str | torch.device = "cpu",
) -> DeltaMatrix:
    """The spurious-ID delta of target models under ``target:task`` for every task.

    ``models``: an :class:`Ensemble` of ``M`` models of the target (each predicts ``split``
    once) or their predictions, ``[n]`` or ``[M, n]`` over ``dataset.split(split)`` in
    its order. ``target``: the target attribute's name (or a grouping whose target is
    used). For model ``m`` and task ``k`` the predictions are counted in the four groups
    ``2 y + t_k`` and the delta ``|g0 + g3 - g1 - g2|`` is taken on the Agresti-Coull-shrunk
    accuracies, exactly as :func:`~taskspace.robustness.spurious.delta_matrix` does for
    attributes. A large delta says the model's errors line up with task ``k``: it reads
    the task as a shortcut. Returns a :class:`DeltaMatrix` with one row per model
    (``target``, or ``target#m`` for several) and one column per task.
    """
    if dataset.attribute_names is None or dataset.attributes is None:
        raise TaskspaceError(f"dataset {dataset.name!r} has no attributes")
    if isinstance(target, Grouping):
        tname = target.task
    elif ":" in target:
        tname = _as_grouping(target, dataset).task
    else:
        tname = target
    if tname not in dataset.attribute_names:
        raise TaskspaceError(f"dataset {dataset.name!r} has no attribute {tname!r}")
    if tasks.labels.shape[1] != len(dataset):
        raise TaskspaceError(
            f"the tasks label {tasks.labels.shape[1]} images, the dataset has {len(dataset)}"
        )
    idx = dataset.split(split)
    if isinstance(models, Ensemble):
        pred = predictions(predict_many(models, dataset, idx, device=device))
    else:
        pred = torch.as_tensor(models).long()
        if pred.dim() == 1:
            pred = pred[None]
        if pred.dim() != 2 or pred.shape[1] != len(idx):
            raise TaskspaceError(
                f"predictions must be [n] or [M, n] with n = {len(idx)} images of split "
                f"{split!r}, got {tuple(pred.shape)}"
            )
    pred = pred.cpu()
    y = dataset.attributes[idx, dataset.attribute_names.index(tname)].long()
    lab = tasks.labels[:, idx]
    if bool(((lab != 0) & (lab != 1)).any()):
        raise TaskspaceError("task_deltas groups by binary tasks only (labels 0/1)")
    m, k = pred.shape[0], len(tasks)
    correct = torch.zeros(m, k, 4, dtype=torch.long)
    total = torch.zeros_like(correct)
    for j in range(k):
        g = 2 * y + lab[j]
        c, n = count_correct(pred, y, g, 4)
        correct[:, j], total[:, j] = c, n[None].expand(m, -1)
    shrunk = shrink_group_accuracy(correct, total, z)
    values = (shrunk[..., 0] + shrunk[..., 3] - shrunk[..., 1] - shrunk[..., 2]).abs()
    rows = [tname] if m == 1 else [f"{tname}#{i}" for i in range(m)]
    avg = {r: float((pred[i] == y).double().mean()) for i, r in enumerate(rows)}
    return DeltaMatrix(
        values, rows, list(tasks.names), correct, total, shrunk, avg, ("task", "attr"), split
    )


def fit_robust_inferred(
    dataset: ImageDataset,
    grouping: Grouping | str,
    task: TaskSet | torch.Tensor,
    method: str | MethodConfig = "dro",
    *,
    name: str | None = None,
    **kwargs: Any,
) -> RobustResult:
    """Train ``method`` on groups inferred from a discovered task, evaluate on the true
    groups.

    ``grouping`` (``"Task:Attr"``) names the target and the *evaluation* grouping: its
    attribute is used only to evaluate and to select models (as ``fit_robust`` does with
    ``eval_grouping``), never to train. ``task``: the discovered task's 0/1 labels ``[N]``,
    or a :class:`TaskSet` with ``name`` the row to use (or one row). The training groups
    are :func:`inferred_groups` ``2 y + a_hat``, so Group DRO (``"dro"``), RWG and SUBG
    balance over the inferred groups; ERM, JTT, RWY and SUBY never see groups and train
    as they would anyway. ``kwargs`` go to :func:`~taskspace.robustness.fit_robust`
    (``preset=``, ``seeds=``, ``select=``, overrides...).
    """
    grouping = _as_grouping(grouping, dataset)
    if grouping.k != 1:
        raise TaskspaceError(
            f"fit_robust_inferred infers one attribute; give a 'Task:Attr' grouping, got {grouping}"
        )
    if "train_groups" in kwargs:
        raise TaskspaceError("fit_robust_inferred sets train_groups itself")
    a_hat = task_row(task, name)
    if len(a_hat) != len(dataset):
        raise TaskspaceError(f"the task labels {len(a_hat)} images, the dataset has {len(dataset)}")
    g_hat = inferred_groups(grouping.targets(dataset), a_hat)
    return fit_robust(dataset, grouping, method, train_groups=g_hat, **kwargs)
