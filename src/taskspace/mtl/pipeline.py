"""The grouping pipeline (TAG, section 6): affinity -> selection -> group training -> table.

1. An affinity run: TAG or CS (:func:`taskspace.mtl.affinity.task_affinity`, ``Z[source,
   target]``, read by selection transposed: ``A = Z.T``, "onto t from o") or HOA
   (:func:`taskspace.mtl.hoa.hoa_affinity`, already ``A[t][o]``).
2. Exact network selection for every budget B (default 1..n):
   :func:`taskspace.mtl.selection.select_groups_all`.
3. Every chosen network, and the two baselines, *all tasks in one network* and *one network
   per task*, trained as plain multi-task networks (equal weights) through
   :func:`taskspace.mtl.hoa.fit_groups`: one ``fit_many`` call per group size, all seeds
   batched; a network chosen for several budgets trains once. HOA's singles and pairs are
   reused when the group training uses HOA's learner and seeds.
4. Each task is reported from the network that serves it (its best chosen network, as the
   selection says), on the validation and test splits (loss and error), with the total
   over tasks: :func:`comparison_rows`, the paper's comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Recipe
from taskspace.errors import TaskspaceError
from taskspace.mtl.affinity import AffinityResult, task_affinity
from taskspace.mtl.hoa import GroupFit, HoaResult, fit_groups, hoa_affinity, task_labels
from taskspace.mtl.selection import Selection, select_groups_all
from taskspace.tasks.taskset import TaskSet

__all__ = [
    "ALL_IN_ONE",
    "COMPARISON_COLUMNS",
    "GroupingResult",
    "ONE_PER_TASK",
    "arms",
    "comparison_rows",
    "group_tasks",
    "networks_to_train",
    "onto_matrix",
    "selections_for",
]

ALL_IN_ONE = "all-in-one"
ONE_PER_TASK = "one-per-task"
KINDS = ("tag", "cs", "hoa")
COMPARISON_COLUMNS = [
    "arm",
    "budget",
    "networks",
    "task",
    "group",
    "val_loss",
    "val_loss_std",
    "val_error",
    "test_loss",
    "test_loss_std",
    "test_error",
    "seeds",
]


def onto_matrix(result: AffinityResult | HoaResult) -> torch.Tensor:
    """The matrix selection reads, ``A[t][o]`` = "onto t from o": ``Z.T`` for TAG/CS
    (stored ``Z[source, target]``), HOA's matrix as it is."""
    if isinstance(result, HoaResult) or result.kind == "hoa":
        return result.matrix.double()
    return result.matrix.T.double()


def selections_for(
    A: torch.Tensor, kind: str, names: Sequence[str], budgets: Sequence[int] | None = None
) -> dict[int, Selection]:
    """Exact selections for every budget (default 1..n), ``kind`` tag|cs|hoa."""
    if kind not in KINDS:
        raise TaskspaceError(f"kind must be tag, cs or hoa, got {kind!r}")
    bs = list(range(1, len(names) + 1)) if budgets is None else [int(b) for b in budgets]
    bad = [b for b in bs if b < 1]
    if bad or not bs:
        raise TaskspaceError(f"budgets must be integers >= 1, got {bs}")
    sel_kind = "hoa" if kind == "hoa" else "affinity"
    return select_groups_all(A.numpy(), sorted(set(bs)), kind=sel_kind, names=list(names))


def arms(
    selections: Mapping[int, Selection], names: Sequence[str]
) -> dict[str, list[tuple[tuple[int, ...], list[int]]]]:
    """Every arm of the comparison: ``{arm: [(network task indices, tasks it serves)]}``
    for ``B=<b>`` per selection, :data:`ALL_IN_ONE` and :data:`ONE_PER_TASK`."""
    index = {n: i for i, n in enumerate(names)}
    out: dict[str, list[tuple[tuple[int, ...], list[int]]]] = {}
    for b, sel in sorted(selections.items()):
        nets = []
        for gi, g in enumerate(sel.groups):
            served = [index[t] for t in sel.serves(gi)]
            if served:
                nets.append((tuple(sorted(index[t] for t in g)), served))
        out[f"B={b}"] = nets
    t = len(names)
    out[ALL_IN_ONE] = [(tuple(range(t)), list(range(t)))]
    out[ONE_PER_TASK] = [((i,), [i]) for i in range(t)]
    return out


def networks_to_train(
    arm_map: Mapping[str, Sequence[tuple[tuple[int, ...], list[int]]]],
) -> list[tuple[int, ...]]:
    """The distinct networks of every arm, by size then task order."""
    nets = {g for nets in arm_map.values() for g, _ in nets}
    return sorted(nets, key=lambda g: (len(g), g))


def _values(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str, str, int], dict[str, float]]:
    """``(members, task, split, seed) -> {loss, error}`` from group rows."""
    out = {}
    for r in rows:
        key = (str(r["members"]), str(r["task"]), str(r["split"]), int(r["seed"]))
        out[key] = {"loss": float(r["loss"]), "error": float(r["error"])}
    return out


def _mean_std(v: list[float]) -> tuple[float, float]:
    if not v:
        return float("nan"), float("nan")
    m = math.fsum(v) / len(v)
    return m, math.sqrt(math.fsum((x - m) ** 2 for x in v) / len(v))


def comparison_rows(
    arm_map: Mapping[str, Sequence[tuple[tuple[int, ...], list[int]]]],
    group_rows: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    seeds: Sequence[int],
) -> list[dict[str, Any]]:
    """Per arm: one row per task (from the network serving it) and a ``total`` row (sum
    over tasks), each the mean over seeds (``*_std``: the standard deviation over seeds
    of the loss; for the total, of the per-seed totals). Missing splits give NaN."""
    values = _values(group_rows)
    out: list[dict[str, Any]] = []
    for arm, nets in arm_map.items():
        budget = int(arm[2:]) if arm.startswith("B=") else ""
        per_seed_total: dict[tuple[str, str], list[float]] = {}
        task_rows = []
        for g, served in nets:
            members = "+".join(names[i] for i in g)
            for t in served:
                row: dict[str, Any] = {
                    "arm": arm,
                    "budget": budget,
                    "networks": len(nets),
                    "task": names[t],
                    "group": members,
                    "seeds": len(seeds),
                }
                for split in ("val", "test"):
                    for what in ("loss", "error"):
                        v = [
                            values[members, names[t], split, int(s)][what]
                            for s in seeds
                            if (members, names[t], split, int(s)) in values
                        ]
                        mean, std = _mean_std(v)
                        row[f"{split}_{what}"] = mean
                        if what == "loss":
                            row[f"{split}_loss_std"] = std
                        if len(v) == len(seeds):
                            tot = per_seed_total.setdefault((split, what), [0.0] * len(seeds))
                            for i, x in enumerate(v):
                                tot[i] += x
                task_rows.append(row)
        task_rows.sort(key=lambda r: list(names).index(r["task"]))
        total: dict[str, Any] = {
            "arm": arm,
            "budget": budget,
            "networks": len(nets),
            "task": "total",
            "group": "",
            "seeds": len(seeds),
        }
        for split in ("val", "test"):
            for what in ("loss", "error"):
                tot_v = per_seed_total.get((split, what), [])
                complete = len(task_rows) == len(names) and bool(tot_v)
                mean, std = _mean_std(tot_v) if complete else (float("nan"), float("nan"))
                total[f"{split}_{what}"] = mean
                if what == "loss":
                    total[f"{split}_loss_std"] = std
        out += [*task_rows, total]
    return out


@dataclass
class GroupingResult:
    """What :func:`group_tasks` found: the affinity run, the matrix selection read
    (``A[t][o]``), the selections per budget, the trained networks and the comparison
    rows (:data:`COMPARISON_COLUMNS`)."""

    kind: str
    names: list[str]
    affinity: AffinityResult | HoaResult
    A: torch.Tensor
    selections: dict[int, Selection]
    fit: GroupFit
    rows: list[dict[str, Any]] = field(default_factory=list)

    def totals(self, split: str = "val", what: str = "loss") -> dict[str, float]:
        """``{arm: total}`` of the comparison."""
        return {
            str(r["arm"]): float(r[f"{split}_{what}"]) for r in self.rows if r["task"] == "total"
        }


def group_tasks(
    dataset: ImageDataset,
    labels: torch.Tensor | TaskSet,
    *,
    kind: Literal["tag", "cs", "hoa"] = "tag",
    names: Sequence[str] | None = None,
    budgets: Sequence[int] | None = None,
    model: str = "convnet",
    model_kwargs: dict | None = None,
    recipe: Recipe | str | None = None,
    epochs: float | None = None,
    seeds: Sequence[int] = (0,),
    affinity_recipe: Recipe | str | None = None,
    affinity_epochs: float | None = None,
    affinity_options: Mapping[str, Any] | None = None,
    metric: Literal["loss", "error"] = "loss",
    select: Literal["best", "last"] = "best",
    task_loss: Literal["ce", "bce"] = "ce",
    split: str = "train",
    val_split: str | None = None,
    test_split: str | None = "test",
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> GroupingResult:
    """The whole pipeline (module doc) in one call.

    Args:
        kind: ``tag``, ``cs`` or ``hoa``.
        budgets: the B values (default 1..n).
        model, model_kwargs, recipe, epochs, seeds: the learner of the group training
            (and of HOA's pair trainings).
        affinity_recipe, affinity_epochs: TAG/CS's training (default: ``recipe``,
            ``epochs``); ``affinity_options``: more :func:`task_affinity` switches
            (``every``, ``lookahead``, ``scale_by_lr``, ``epoch_agg``, ...).
        metric: HOA's score, ``loss`` or ``error``.
        select: ``best`` (lowest summed validation loss per network) or ``last``.
    """
    y, task_names = task_labels(labels, names)
    common: dict[str, Any] = dict(
        names=task_names,
        model=model,
        model_kwargs=model_kwargs,
        seeds=seeds,
        task_loss=task_loss,
        split=split,
        device=device,
        progress=progress,
    )
    result: AffinityResult | HoaResult
    if kind == "hoa":
        result = hoa_affinity(
            dataset,
            y,
            recipe=recipe,
            epochs=epochs,
            metric=metric,
            select=select,
            val_split=val_split,
            test_split=test_split,
            **common,
        )
    elif kind in ("tag", "cs"):
        result = task_affinity(
            dataset,
            y,
            kind=kind,
            recipe=affinity_recipe if affinity_recipe is not None else recipe,
            epochs=affinity_epochs if affinity_epochs is not None else epochs,
            **common,
            **dict(affinity_options or {}),
        )
    else:
        raise TaskspaceError(f"kind must be tag, cs or hoa, got {kind!r}")
    A = onto_matrix(result)
    selections = selections_for(A, kind, task_names, budgets)
    arm_map = arms(selections, task_names)
    nets = networks_to_train(arm_map)
    reused: list[dict[str, Any]] = []
    if isinstance(result, HoaResult) and test_split is not None:
        done = {g for g in result.fit.groups}
        reused = [r for r in result.fit.rows]
        nets = [g for g in nets if g not in done]
    fit = fit_groups(
        dataset,
        y,
        nets,
        recipe=recipe,
        epochs=epochs,
        select=select,
        val_split=val_split,
        test_split=test_split,
        **common,
    )
    rows = comparison_rows(arm_map, [*reused, *fit.rows], task_names, [int(s) for s in seeds])
    return GroupingResult(kind, task_names, result, A, selections, fit, rows)
