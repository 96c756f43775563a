"""Group metrics from integer counts, for many models at once.

Everything is computed from integer ``(correct, total)`` counts per group, accumulated
over a whole split (never averages of batch means), for M models at once (predictions
``[M, n]``):

| metric | definition |
| --- | --- |
| ``acc_g`` | ``correct_g / total_g``; NaN if the group is empty |
| worst group | min of ``acc_g`` over the non-empty groups (may be a majority group) |
| plain average | ``sum_g correct_g / sum_g total_g`` (mml-robustness's ``{task}_avg_acc``) |
| weighted average | ``sum_g p_g^train acc_g`` over the non-empty groups (``p`` renormalised) |
| class accuracy | pooled over the groups with the same ``y`` |

The weighted average is what papers report on group-balanced val/test sets (Waterbirds);
the original logged only the plain one, so both are reported here. Confidence intervals
are **Wilson score intervals** (95 % by default) on the pooled counts.

:func:`final_table` turns per-method, per-split metrics into the "final table": mean and
standard deviation over seeds (population std, ``ddof=0``, as ``numpy.std``) of the plain
and weighted averages, the worst group and every group's accuracy, with group counts and
Wilson intervals on the counts pooled over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Ensemble, predict_many
from taskspace.engine.metrics import predictions
from taskspace.errors import TaskspaceError
from taskspace.robustness.groups import Grouping

__all__ = [
    "Z95",
    "GroupMetrics",
    "count_correct",
    "evaluate_ensemble",
    "final_table",
    "group_metrics",
    "wilson_interval",
]

#: ``Phi^-1(0.975)``: the z of a two-sided 95 % interval.
Z95 = 1.959963984540054


def count_correct(
    pred: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, num_groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Correct predictions per model and group, and examples per group.

    ``pred`` is ``[M, n]`` (or ``[n]`` for one model) predicted labels, ``y [n]`` the
    targets and ``groups [n]`` the group ids; returns ``correct int64 [M, G]`` and
    ``total int64 [G]`` (padded to ``num_groups``).
    """
    if pred.dim() == 1:
        pred = pred[None]
    n = y.shape[0]
    if pred.shape[1] != n or groups.shape != (n,):
        raise TaskspaceError(
            f"predictions {tuple(pred.shape)}, targets {tuple(y.shape)} and groups "
            f"{tuple(groups.shape)} must cover the same examples"
        )
    g = groups.long()
    if n and (int(g.min()) < 0 or int(g.max()) >= num_groups):
        raise TaskspaceError(f"group ids must lie in [0, {num_groups})")
    hit = (pred.long() == y.long()[None]).long()  # [M, n]
    correct = torch.zeros(pred.shape[0], num_groups, dtype=torch.long)
    correct.index_add_(1, g, hit)
    return correct, torch.bincount(g, minlength=num_groups)


def wilson_interval(
    correct: torch.Tensor, total: torch.Tensor, z: float = Z95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Wilson score interval ``(low, high)`` for ``correct`` successes out of ``total``
    (broadcast; float64; NaN where ``total`` is 0)."""
    c, n = correct.double(), total.double()
    z2 = z * z
    denom = n + z2
    centre = (c + z2 / 2) / denom
    safe_n = n.clamp_min(1)
    half = z / denom * torch.sqrt((c * (n - c) / safe_n).clamp_min(0) + z2 / 4)
    nan = torch.full_like(centre, float("nan"))
    empty = n == 0
    return torch.where(empty, nan, centre - half), torch.where(empty, nan, centre + half)


@dataclass(frozen=True)
class GroupMetrics:
    """Group metrics of M models on one split, all derived from integer counts.

    ``correct [M, G]`` and ``total [G]`` are the counts; ``group_class [G]`` is the class
    ``y`` of each group; ``train_proportions [G]`` (optional) weights the weighted average.
    """

    correct: torch.Tensor
    total: torch.Tensor
    group_class: torch.Tensor
    train_proportions: torch.Tensor | None = None

    @property
    def num_models(self) -> int:
        return int(self.correct.shape[0])

    @property
    def num_groups(self) -> int:
        return int(self.total.shape[0])

    @property
    def acc(self) -> torch.Tensor:
        """Per-group accuracy ``[M, G]`` (float64), NaN for empty groups."""
        n = self.total.double()[None].expand_as(self.correct)
        return torch.where(n > 0, self.correct.double() / n.clamp_min(1), float("nan"))

    @property
    def worst_group(self) -> torch.Tensor:
        """Min accuracy over non-empty groups ``[M]`` (NaN if every group is empty)."""
        acc = self.acc.masked_fill(self.total[None] == 0, float("inf"))
        worst = acc.amin(1)
        return torch.where(torch.isinf(worst), float("nan"), worst)

    @property
    def worst_group_id(self) -> torch.Tensor:
        """The group attaining :attr:`worst_group` ``[M]`` (first on ties; -1 if none)."""
        acc = self.acc.masked_fill(self.total[None] == 0, float("inf"))
        ids = acc.argmin(1)
        return ids if bool((self.total > 0).any()) else torch.full_like(ids, -1)

    @property
    def average(self) -> torch.Tensor:
        """Plain average ``sum correct / sum total`` ``[M]``."""
        n = int(self.total.sum())
        if n == 0:
            return torch.full((self.num_models,), float("nan"), dtype=torch.float64)
        return self.correct.sum(1).double() / n

    @property
    def weighted_average(self) -> torch.Tensor:
        """``sum_g p_g^train acc_g`` ``[M]`` over the non-empty groups (proportions
        renormalised over them); NaN without train proportions."""
        if self.train_proportions is None:
            return torch.full((self.num_models,), float("nan"), dtype=torch.float64)
        p = self.train_proportions.double().clone()
        p[self.total == 0] = 0
        if float(p.sum()) == 0:
            return torch.full((self.num_models,), float("nan"), dtype=torch.float64)
        p = p / p.sum()
        return (self.acc.nan_to_num(0.0) * p[None]).sum(1)

    @property
    def class_correct(self) -> torch.Tensor:
        """Correct counts pooled per class ``[M, C]``."""
        c = int(self.group_class.max()) + 1
        out = torch.zeros(self.num_models, c, dtype=torch.long)
        return out.index_add_(1, self.group_class.long(), self.correct)

    @property
    def class_total(self) -> torch.Tensor:
        """Examples per class ``[C]``."""
        c = int(self.group_class.max()) + 1
        return torch.zeros(c, dtype=torch.long).index_add_(0, self.group_class.long(), self.total)

    @property
    def class_accuracy(self) -> torch.Tensor:
        """Accuracy per class ``[M, C]``, pooled over its groups; NaN for an empty class."""
        n = self.class_total.double()[None].expand(self.num_models, -1)
        return torch.where(n > 0, self.class_correct.double() / n.clamp_min(1), float("nan"))

    def interval(self, z: float = Z95) -> tuple[torch.Tensor, torch.Tensor]:
        """Wilson intervals ``(low, high)`` of every model's group accuracies ``[M, G]``."""
        return wilson_interval(self.correct, self.total[None].expand_as(self.correct), z)

    def select(self, models: Sequence[int] | torch.Tensor) -> GroupMetrics:
        """The metrics of a subset of the models."""
        idx = torch.as_tensor(models, dtype=torch.long)
        return GroupMetrics(self.correct[idx], self.total, self.group_class, self.train_proportions)

    def rows(self, **columns: Any) -> list[dict[str, Any]]:
        """One row per model: ``model``, the given ``columns`` (e.g. ``split``, ``seed``),
        ``avg_acc``, ``weighted_avg_acc``, ``worst_group_acc``, ``worst_group``,
        ``class{c}_acc``, and per group ``g{j}_acc``, ``g{j}_correct_counts``,
        ``g{j}_count``, ``g{j}_ci_low``, ``g{j}_ci_high`` (Wilson 95 %)."""
        acc, low, high = self.acc, *self.interval()
        avg, wavg, worst = self.average, self.weighted_average, self.worst_group
        wid, cls = self.worst_group_id, self.class_accuracy
        out = []
        for m in range(self.num_models):
            row: dict[str, Any] = {"model": m}
            for k, v in columns.items():
                row[k] = v[m] if isinstance(v, (list, tuple)) else v
            row.update(
                avg_acc=float(avg[m]),
                weighted_avg_acc=float(wavg[m]),
                worst_group_acc=float(worst[m]),
                worst_group=int(wid[m]),
            )
            for c in range(cls.shape[1]):
                row[f"class{c}_acc"] = float(cls[m, c])
            for j in range(self.num_groups):
                row[f"g{j}_acc"] = float(acc[m, j])
                row[f"g{j}_correct_counts"] = int(self.correct[m, j])
                row[f"g{j}_count"] = int(self.total[j])
                row[f"g{j}_ci_low"] = float(low[m, j])
                row[f"g{j}_ci_high"] = float(high[m, j])
            out.append(row)
        return out


def group_metrics(
    pred: torch.Tensor,
    y: torch.Tensor,
    groups: torch.Tensor,
    num_groups: int,
    *,
    train_proportions: torch.Tensor | None = None,
    group_class: torch.Tensor | None = None,
) -> GroupMetrics:
    """:class:`GroupMetrics` of predictions ``[M, n]`` (or ``[n]``) against ``y [n]`` with
    group ids ``groups [n]``. ``group_class`` (the class of each group) defaults to the top
    bit of the id (``g >> k`` with ``num_groups = 2^(k+1)``)."""
    correct, total = count_correct(pred, y, groups, num_groups)
    if group_class is None:
        if num_groups < 2 or num_groups & (num_groups - 1):
            raise TaskspaceError(
                f"{num_groups} groups is not 2^(k+1); pass group_class (each group's class)"
            )
        group_class = torch.arange(num_groups) // (num_groups // 2)
    if train_proportions is not None and train_proportions.shape != (num_groups,):
        raise TaskspaceError(
            f"train_proportions must have {num_groups} entries, "
            f"got {tuple(train_proportions.shape)}"
        )
    return GroupMetrics(correct, total, group_class.long(), train_proportions)


def evaluate_ensemble(
    ensemble: Ensemble,
    dataset: ImageDataset,
    grouping: Grouping,
    split: str | torch.Tensor,
    *,
    train_proportions: torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> GroupMetrics:
    """Group metrics of every model of ``ensemble`` on ``split`` under ``grouping``
    (predictions: arg-max, or ``logit > 0`` for one output). ``train_proportions``
    defaults to the grouping's proportions in the dataset's ``train`` split."""
    idx = dataset.split(split) if isinstance(split, str) else torch.as_tensor(split).long()
    if train_proportions is None and "train" in dataset.splits:
        train_proportions = grouping.proportions(dataset, "train")
    pred = predictions(predict_many(ensemble, dataset, idx, device=device))
    return group_metrics(
        pred,
        grouping.targets(dataset)[idx],
        grouping.groups(dataset)[idx],
        grouping.num_groups,
        train_proportions=train_proportions,
        group_class=grouping.group_class(),
    )


def _mean_std(v: torch.Tensor) -> tuple[float, float]:
    v = v.double()
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(unbiased=False))


def final_table(
    results: Mapping[str, Mapping[str, GroupMetrics]],
    splits: Sequence[str] = ("val", "test"),
) -> list[dict[str, Any]]:
    """The final table: one row per method and split.

    ``results[method][split]`` holds that method's :class:`GroupMetrics` with one model per
    seed. Columns: ``method``, ``split``, ``seeds``; ``{avg_acc, weighted_avg_acc,
    worst_group_acc}_{mean,std}``; per group ``g{j}_acc_{mean,std}`` and ``g{j}_count``;
    and Wilson 95 % intervals on the counts pooled over seeds: ``avg_acc_ci_{low,high}``,
    ``g{j}_ci_{low,high}``, and ``worst_group_ci_{low,high}`` for the group with the
    lowest pooled accuracy (``worst_group_pooled``). Stds are population stds (ddof 0).
    """
    rows = []
    for method, per_split in results.items():
        for split in splits:
            if split not in per_split:
                continue
            gm = per_split[split]
            row: dict[str, Any] = {"method": method, "split": split, "seeds": gm.num_models}
            for name, v in (
                ("avg_acc", gm.average),
                ("weighted_avg_acc", gm.weighted_average),
                ("worst_group_acc", gm.worst_group),
            ):
                row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(v)
            acc = gm.acc
            pooled_c = gm.correct.sum(0)
            pooled_n = gm.total * gm.num_models
            low, high = wilson_interval(pooled_c, pooled_n)
            a_low, a_high = wilson_interval(pooled_c.sum(), pooled_n.sum())
            row["avg_acc_ci_low"], row["avg_acc_ci_high"] = float(a_low), float(a_high)
            pooled_acc = torch.where(
                pooled_n > 0, pooled_c.double() / pooled_n.clamp_min(1), float("inf")
            )
            w = int(pooled_acc.argmin()) if bool((pooled_n > 0).any()) else -1
            row["worst_group_pooled"] = w
            row["worst_group_ci_low"] = float(low[w]) if w >= 0 else float("nan")
            row["worst_group_ci_high"] = float(high[w]) if w >= 0 else float("nan")
            for j in range(gm.num_groups):
                row[f"g{j}_acc_mean"], row[f"g{j}_acc_std"] = (
                    _mean_std(acc[:, j]) if int(gm.total[j]) else (float("nan"), float("nan"))
                )
                row[f"g{j}_count"] = int(gm.total[j])
                row[f"g{j}_ci_low"], row[f"g{j}_ci_high"] = float(low[j]), float(high[j])
            rows.append(row)
    return rows
