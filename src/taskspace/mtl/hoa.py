"""Higher-Order Approximation (HOA, Standley et al. 2020): task affinity from pair trainings.

Train every single task and every pair of tasks as a plain multi-task network (n + n(n-1)/2
networks); task ``t``'s score with partner ``o`` is ``t``'s validation loss (or error) in
the network of the pair ``{t, o}``, and its diagonal score is the single-task network's.
Lower is better. The matrix is ``A[t][o]`` = "onto t (row, the task scored) from o
(column, the partner)", the orientation :func:`taskspace.mtl.selection.select_groups`
reads with ``kind="hoa"`` (no transpose, unlike TAG/CS's ``Z[source, target]``).

Every network trains through the engine's one multi-task trainer: ``fit_many`` with the
:class:`~taskspace.engine.MultiTask` objective (equal weights, the sum of the task
losses: TAG's ``fast_mtl``), all networks with the same number of tasks in one call
(labels ``[M, N, k]``, M = groups x seeds; all pairs in one, all singles in another).
:func:`fit_groups` is that step for any list of groups, and the grouping pipeline
(:mod:`taskspace.mtl.pipeline`) trains its chosen groups with it too.

Switches (faithful values are the defaults):

- ``metric``: ``"loss"`` (the Taskonomy HOA table: validation loss) or ``"error"`` (1 -
  validation accuracy; the CelebA notebook's 100 - accuracy, here as a fraction).
- ``select``: ``"best"`` (each network's parameters at the epoch end with the lowest
  summed validation loss over its tasks, the originals' early-stopping checkpoint) or
  ``"last"`` (the last parameters).
- every network of seed ``s`` starts from ``torch.manual_seed(s)`` and reads the same
  batches (order seed ``s``), so singles and pairs differ only in their tasks.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Evaluate, Hook, Metric, MultiTask, Recipe, fit_many, get_recipe
from taskspace.engine.predict import predict_many
from taskspace.errors import TaskspaceError
from taskspace.tasks.taskset import TaskSet

__all__ = [
    "HOA_METRICS",
    "HoaResult",
    "fit_groups",
    "group_metrics",
    "hoa_affinity",
    "task_labels",
]

HOA_METRICS = ("loss", "error")
SELECTS = ("best", "last")
MISSING = -1


# ------------------------------------------------------------------------------ labels
def task_labels(
    labels: torch.Tensor | TaskSet, names: Sequence[str] | None = None
) -> tuple[torch.Tensor, list[str]]:
    """``labels [N, T]`` int64 (-1 = missing) and task names from a tensor or a TaskSet
    (whose labels are ``[K, N]``)."""
    if isinstance(labels, TaskSet):
        y = labels.labels.T.long()
        out_names = list(labels.names) if names is None else [str(n) for n in names]
    else:
        y = torch.as_tensor(labels).long()
        if y.dim() != 2:
            raise TaskspaceError(f"labels must be [images, tasks], got {tuple(y.shape)}")
        out_names = [f"t{i}" for i in range(y.shape[1])] if names is None else list(names)
    if len(out_names) != y.shape[1]:
        raise TaskspaceError(f"{len(out_names)} task names for {y.shape[1]} tasks")
    if len(set(out_names)) != len(out_names):
        raise TaskspaceError(f"task names {out_names} list a name twice")
    if y.numel() and int(y.min()) < MISSING:
        raise TaskspaceError("labels must be class ids >= 0 or -1 (missing)")
    return y, out_names


def _val_split(dataset: ImageDataset, val_split: str | None) -> str:
    if val_split is not None:
        dataset.split(val_split)  # one line when missing
        return val_split
    for name in ("val", "heldout"):
        if name in dataset.splits:
            return name
    raise TaskspaceError(
        f"dataset {dataset.name!r} has no val or heldout split; pass val_split=..."
    )


# ------------------------------------------------------------------------------ metrics
def group_metrics(
    logits: torch.Tensor, y: torch.Tensor, task_loss: str = "ce"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-model, per-task mean loss and error ``[M, k]`` of multi-head ``logits [M, n,
    outputs]`` against ``y [M, n, k]`` (-1 = missing, left out; NaN for a task with no
    labelled example). ``ce``: k blocks of C logits (arg-max); ``bce``: one logit per task
    (``> 0``)."""
    m, n, k = y.shape
    labelled = y != MISSING
    yc = y.clamp_min(0)
    if task_loss == "bce":
        lg = logits.reshape(m, n, k)
        per = F.binary_cross_entropy_with_logits(lg, yc.float(), reduction="none")
        wrong = (lg > 0).long() != yc
    else:
        lg = logits.reshape(m, n, k, -1)
        per = F.cross_entropy(lg.flatten(0, -2), yc.flatten(), reduction="none").view(m, n, k)
        wrong = lg.argmax(-1) != yc
    count = labelled.sum(1).float()
    loss = torch.where(labelled, per, 0.0).sum(1) / count
    err = (wrong & labelled).sum(1).float() / count
    return loss, err


class _GroupLoss(Metric):
    """The Evaluate hook's metric: a group network's summed (or one task's) validation
    loss, from labels ``[M_all, N, k]`` (computed once per evaluation)."""

    def __init__(self, labels: torch.Tensor, task_loss: str, task: int | None = None) -> None:
        self.labels, self.task_loss, self.task = labels, task_loss, task

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
        y = self.labels[torch.tensor(members)][:, idx]
        loss, _ = group_metrics(logits.float(), y.to(logits.device), self.task_loss)
        return loss.nansum(1) if self.task is None else loss[:, self.task]


# ------------------------------------------------------------------------------ training
@dataclass
class GroupFit:
    """Networks trained by :func:`fit_groups`.

    ``rows``: one per group, seed, task and split: ``group`` (index into ``groups``),
    ``members`` (task names joined by ``+``), ``size``, ``seed``, ``task``, ``split``,
    ``loss``, ``error``, ``epoch`` (of the parameters kept). ``history``: per-epoch summed
    validation loss of every network (``group``, ``seed``, ``epoch``, ``val_loss``).
    ``seconds``: wall time of the trainings; ``networks``: how many were trained.
    """

    groups: list[tuple[int, ...]]
    names: list[str]
    seeds: list[int]
    rows: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    networks: int = 0

    def value(self, group: int, task: int, split: str, what: str = "loss") -> torch.Tensor:
        """``what`` of task ``task`` in group ``group`` on ``split``, per seed ``[S]``."""
        name = self.names[task]
        vals = [
            float(r[what])
            for r in self.rows
            if r["group"] == group and r["task"] == name and r["split"] == split
        ]
        if len(vals) != len(self.seeds):
            raise TaskspaceError(f"no {split} result of task {name} in group {group}")
        return torch.tensor(vals, dtype=torch.float64)


def _check_groups(groups: Sequence[Sequence[int]], t: int) -> list[tuple[int, ...]]:
    out = []
    for g in groups:
        gt = tuple(int(i) for i in g)
        if not gt or len(set(gt)) != len(gt) or min(gt) < 0 or max(gt) >= t:
            raise TaskspaceError(f"group {list(g)} must list distinct task indices < {t}")
        out.append(gt)
    return out


def fit_groups(
    dataset: ImageDataset,
    labels: torch.Tensor,
    groups: Sequence[Sequence[int]],
    *,
    names: Sequence[str] | None = None,
    model: str = "convnet",
    model_kwargs: dict | None = None,
    recipe: Recipe | str | None = None,
    epochs: float | None = None,
    seeds: Sequence[int] = (0,),
    select: Literal["best", "last"] = "best",
    task_loss: Literal["ce", "bce"] = "ce",
    split: str = "train",
    val_split: str | None = None,
    test_split: str | None = "test",
    device: str | torch.device = "cpu",
    progress: bool = False,
    hooks: Sequence[Hook] = (),
) -> GroupFit:
    """Train every group of tasks as one plain multi-task network per seed.

    Args:
        labels: ``[N, T]`` (-1 = missing for that task).
        groups: task index tuples; groups of one size train in one ``fit_many`` call
            (labels ``[groups x seeds, N, size]``), all seeds batched.
        select: ``best`` (lowest summed validation loss at an epoch end) or ``last``.
        task_loss: ``ce`` (2-way softmax per task, TAG's CelebA heads) or ``bce``.
        val_split: default ``val``, else ``heldout``; ``test_split`` None skips testing.
    """
    y_all, task_names = task_labels(labels, names)
    groups_t = _check_groups(groups, y_all.shape[1])
    if select not in SELECTS:
        raise TaskspaceError(f"select must be best or last, got {select!r}")
    if task_loss not in ("ce", "bce"):
        raise TaskspaceError(f"task_loss must be ce or bce, got {task_loss!r}")
    seeds_l = [int(s) for s in seeds]
    if not seeds_l:
        raise TaskspaceError("give at least one seed")
    rec = get_recipe(recipe or "fast", epochs=epochs)
    vsplit = _val_split(dataset, val_split)
    train_idx = dataset.split(split)
    sets = {"val": dataset.split(vsplit)}
    if test_split is not None:
        sets["test"] = dataset.split(test_split)
    n_classes = 2 if task_loss == "bce" else max(2, int(y_all.max()) + 1)
    out = GroupFit(groups_t, task_names, seeds_l)
    start = time.perf_counter()
    by_size: dict[int, list[int]] = {}
    for gi, g in enumerate(groups_t):
        by_size.setdefault(len(g), []).append(gi)
    for size, members in sorted(by_size.items()):
        lab = torch.stack([y_all[:, groups_t[gi]] for gi in members for _ in seeds_l])
        run_seeds = [s for _ in members for s in seeds_l]
        metric = _GroupLoss(lab, task_loss)
        evaluate = Evaluate(
            {"val": sets["val"]},
            {"loss": metric},
            select=("val", "loss") if select == "best" else None,
            mode="min",
        )
        ens = fit_many(
            model,
            dataset,
            lab,
            rec,
            run_seeds,
            train_idx=train_idx,
            device=device,
            model_kwargs=model_kwargs,
            progress=progress,
            objective=MultiTask(
                task_loss=task_loss, num_classes=None if task_loss == "bce" else n_classes
            ),
            num_outputs=size if task_loss == "bce" else size * n_classes,
            hooks=[evaluate, *hooks],
        )
        out.networks += len(run_seeds)
        epochs_of = _kept_epochs(evaluate, len(run_seeds), select)
        for r in evaluate.history:
            gi, s = members[r["model"] // len(seeds_l)], seeds_l[r["model"] % len(seeds_l)]
            out.history.append(
                {"group": gi, "seed": s, "epoch": r["epoch"], "val_loss": r["value"]}
            )
        for split_name, idx in sets.items():
            logits = predict_many(ens, dataset, idx, device=device)
            loss, err = group_metrics(logits, lab[:, idx], task_loss)
            for m in range(len(run_seeds)):
                gi = members[m // len(seeds_l)]
                for j, t in enumerate(groups_t[gi]):
                    out.rows.append(
                        {
                            "group": gi,
                            "members": "+".join(task_names[i] for i in groups_t[gi]),
                            "size": size,
                            "seed": run_seeds[m],
                            "task": task_names[t],
                            "split": split_name,
                            "loss": float(loss[m, j]),
                            "error": float(err[m, j]),
                            "epoch": epochs_of[m],
                        }
                    )
    out.seconds = time.perf_counter() - start
    return out


def _kept_epochs(evaluate: Evaluate, m: int, select: str) -> list[float]:
    """The epoch of the parameters each network returned (its best, or its last)."""
    last: dict[int, float] = {}
    by_step: dict[tuple[int, int], float] = {}
    for r in evaluate.history:
        last[r["model"]] = max(last.get(r["model"], 0.0), float(r["epoch"]))
        by_step[r["model"], int(r["step"])] = float(r["epoch"])
    if select == "last":
        return [last.get(i, float("nan")) for i in range(m)]
    return [
        by_step.get((i, evaluate.best[i][1]), float("nan")) if i in evaluate.best else float("nan")
        for i in range(m)
    ]


# ------------------------------------------------------------------------------ HOA
@dataclass
class HoaResult:
    """HOA's matrix ``A[t][o]`` (rows: the task scored; columns: its partner; diagonal:
    the single-task network), mean over seeds, and per seed ``[S, T, T]``; lower is
    better. ``test`` holds the same on the test split when it was evaluated. ``fit``: the
    trained networks' rows (:class:`GroupFit`); ``seconds``: HOA's total training time."""

    matrix: torch.Tensor
    per_seed: torch.Tensor
    names: list[str]
    metric: str
    config: dict[str, Any]
    fit: GroupFit
    test: torch.Tensor | None = None
    kind: str = "hoa"

    @property
    def seconds(self) -> float:
        return self.fit.seconds

    @property
    def networks(self) -> int:
        return self.fit.networks


def hoa_groups(t: int) -> list[tuple[int, ...]]:
    """All singles, then all pairs (in ``itertools.combinations`` order)."""
    return [(i,) for i in range(t)] + list(itertools.combinations(range(t), 2))


def _matrix(fit: GroupFit, t: int, split: str, what: str) -> torch.Tensor:
    per = torch.full((len(fit.seeds), t, t), float("nan"), dtype=torch.float64)
    for gi, g in enumerate(fit.groups):
        for task in g:
            partner = task if len(g) == 1 else next(o for o in g if o != task)
            per[:, task, partner] = fit.value(gi, task, split, what)
    return per


def hoa_affinity(
    dataset: ImageDataset,
    labels: torch.Tensor | TaskSet,
    *,
    names: Sequence[str] | None = None,
    model: str = "convnet",
    model_kwargs: dict | None = None,
    recipe: Recipe | str | None = None,
    epochs: float | None = None,
    seeds: Sequence[int] = (0,),
    metric: Literal["loss", "error"] = "loss",
    select: Literal["best", "last"] = "best",
    task_loss: Literal["ce", "bce"] = "ce",
    split: str = "train",
    val_split: str | None = None,
    test_split: str | None = None,
    device: str | torch.device = "cpu",
    progress: bool = False,
    hooks: Sequence[Hook] = (),
) -> HoaResult:
    """HOA's pair matrix (module doc); arguments as :func:`fit_groups`, plus ``metric``
    (``loss`` or ``error``). Needs at least two tasks."""
    if metric not in HOA_METRICS:
        raise TaskspaceError(f"metric must be loss or error, got {metric!r}")
    y, task_names = task_labels(labels, names)
    t = y.shape[1]
    if t < 2:
        raise TaskspaceError(f"HOA needs at least two tasks, got {t}")
    fit = fit_groups(
        dataset,
        y,
        hoa_groups(t),
        names=task_names,
        model=model,
        model_kwargs=model_kwargs,
        recipe=recipe,
        epochs=epochs,
        seeds=seeds,
        select=select,
        task_loss=task_loss,
        split=split,
        val_split=val_split,
        test_split=test_split,
        device=device,
        progress=progress,
        hooks=hooks,
    )
    per = _matrix(fit, t, "val", metric)
    test = _matrix(fit, t, "test", metric).mean(0) if test_split is not None else None
    config = {
        "kind": "hoa",
        "metric": metric,
        "select": select,
        "task_loss": task_loss,
        "model": model,
        "model_kwargs": dict(model_kwargs or {}),
        "epochs": epochs,
        "seeds": [int(s) for s in seeds],
        "split": split,
        "val_split": _val_split(dataset, val_split),
        "orientation": "A[t][o]: rows = task scored (onto), columns = partner (from)",
    }
    return HoaResult(per.mean(0), per, task_names, metric, config, fit, test)
