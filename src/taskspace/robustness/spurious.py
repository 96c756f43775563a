"""Spurious-correlation identification: per-attribute models and the delta matrix.

The pipeline (mml-robustness's spurious ID, reference section 5):

1. **Per-attribute models** (:func:`fit_attribute_models`): one plain ERM model per task
   attribute, all trained in ONE ``fit_many`` call (labels row ``m`` = attribute ``m``).
   Every model is evaluated on the validation split at each of its epoch ends (the
   engine's :class:`~taskspace.engine.Evaluate` hook) and the parameters with the best
   validation **plain average** are kept (the original's ``avg`` checkpoint).
2. **Re-grouped evaluation** (:func:`delta_matrix`): every task model predicts the split
   once; for every attribute ``a`` the same predictions are counted under the grouping
   ``Task:a`` (groups ``g = 2y + a``), giving integer ``(correct, total)`` per group.
3. **Agresti-Coull shrinkage** (:func:`shrink_group_accuracy`, 95 %): with ``z = 1.95996``,
   ``n~ = n + z^2``, ``p~ = (c + z^2/2) / n~`` and ``h = z sqrt(p~(1 - p~)/n~)``, a group's
   value is its **class** accuracy clipped into ``[p~ - h, p~ + h]`` (in %). A group that is
   indistinguishable from its class (small, or just like the rest of its class) adds no
   signal; an empty group's interval is ``[0, 1]``, so it takes the class accuracy (the
   diagonal ``Task:Task`` has empty groups 1 and 2 and delta 0).
4. **Delta** ``|g0 + g3 - g1 - g2|`` on the shrunk values (range [0, 200]); NaN only where a
   shrunk value is NaN (an empty class). The matrix has **named axes**
   (:class:`DeltaMatrix`: ``values [tasks, attrs]``, ``tasks``, ``attrs`` and an explicit
   :meth:`DeltaMatrix.transpose`), since the original stored ``T[attr, task]`` at one
   commit and ``T[task, attr]`` at another.
5. The **pair list** (cells above ``epsilon`` = 33, sorted descending) and the **histogram**
   of the off-diagonal cells in 1-point bins over [0, 101] (:func:`delta_histogram`).

A large ``T[task, attr]`` says the task model's errors line up with ``attr``: it predicts
``task = attr`` on the groups where they disagree, i.e. it reads ``attr`` as a shortcut.
The matrix is asymmetric: the model of the easier feature needs no shortcut.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import Accuracy, Ensemble, Evaluate, Hook, Recipe, fit_many, predict_many
from taskspace.engine.metrics import predictions
from taskspace.errors import TaskspaceError
from taskspace.robustness.metrics import Z95, count_correct
from taskspace.seeding import derive_seed

__all__ = [
    "EPSILON",
    "SPURIOUS_RECIPE",
    "AttributeModels",
    "DeltaHistogram",
    "DeltaMatrix",
    "delta_from_counts",
    "delta_histogram",
    "delta_matrix",
    "fit_attribute_models",
    "shrink_group_accuracy",
]

#: The delta threshold of the pair list (reference: 33; task pairing uses 30).
EPSILON = 33.0
#: Default training of the per-attribute models: SGD with momentum, constant rate, a few
#: epochs (a small MLP on CelebA-lite; pass another recipe for real data).
SPURIOUS_RECIPE = Recipe(
    optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=64, epochs=6
)

# Seed streams of this module (fixed forever: changing one changes results).
_INIT = 61  # a task model's initialisation
_ORDER = 67  # a task model's data order


# ---------------------------------------------------------------------------------------
# per-attribute models


@dataclass
class AttributeModels:
    """One selected model per task attribute (``ensemble`` model ``m`` predicts
    ``tasks[m]``), the per-epoch ``history`` rows (``model``, ``task``, ``step``,
    ``epoch``, ``set``, ``metric``, ``value``) and each model's selected ``best``
    ``(val plain average, step)``."""

    tasks: list[str]
    ensemble: Ensemble
    history: list[dict[str, Any]]
    best: dict[str, tuple[float, int]]

    def save(self, path: str | Path) -> Path:
        """Save the ensemble (:meth:`Ensemble.save`, returns the JSON path); model ``m``
        predicts ``tasks[m]``."""
        return self.ensemble.save(path)


def _attribute_columns(dataset: ImageDataset, names: Sequence[str] | None) -> list[int]:
    if dataset.attributes is None or dataset.attribute_names is None:
        raise TaskspaceError(f"dataset {dataset.name!r} has no attributes")
    known = list(dataset.attribute_names)
    names = known if names is None else list(names)
    missing = [n for n in names if n not in known]
    if missing:
        raise TaskspaceError(
            f"dataset {dataset.name!r} has no attribute(s) {', '.join(missing)}; "
            f"known: {', '.join(known)}"
        )
    if len(set(names)) != len(names):
        raise TaskspaceError("an attribute is named twice")
    return [known.index(n) for n in names]


def fit_attribute_models(
    dataset: ImageDataset,
    tasks: Sequence[str] | None = None,
    *,
    model: str = "mlp",
    model_kwargs: dict | None = None,
    recipe: Recipe = SPURIOUS_RECIPE,
    seed: int = 0,
    train_split: str = "train",
    val_split: str = "val",
    device: str | torch.device = "cpu",
    batched: bool | None = None,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
    first_index: int = 0,
) -> AttributeModels:
    """Train one ERM model per task attribute (default: every attribute) in ONE
    ``fit_many`` call and keep each model's parameters with the best validation plain
    average over its epoch ends.

    Model ``m`` learns ``tasks[m]`` (2-way cross-entropy); its initialisation and data
    order come from ``seed`` and ``first_index + m``, so the result is fixed by ``seed``
    (a part of the attributes trained apart passes its first position as
    ``first_index`` and gets the same models). ``hooks`` run after the evaluation hook
    (logging, checkpoints).
    """
    cols = _attribute_columns(dataset, tasks)
    assert dataset.attributes is not None and dataset.attribute_names is not None
    names = [dataset.attribute_names[c] for c in cols]
    labels = dataset.attributes[:, cols].long().T.contiguous()  # [M, N]
    m = len(cols)
    if m == 0:
        raise TaskspaceError("fit_attribute_models needs at least one task attribute")
    hook = Evaluate(
        {"val": dataset.split(val_split)},
        {"avg_acc": Accuracy(labels)},
        select=("val", "avg_acc"),
    )
    ens = fit_many(
        model,
        dataset,
        labels,
        recipe,
        [derive_seed(seed, _INIT, first_index + j) for j in range(m)],
        order_seeds=[derive_seed(seed, _ORDER, first_index + j) for j in range(m)],
        train_idx=dataset.split(train_split),
        num_outputs=2,
        device=device,
        batched=batched,
        model_kwargs=dict(model_kwargs or {}),
        hooks=[hook, *hooks],
        progress=progress,
    )
    history = [{**r, "task": names[r["model"]]} for r in hook.history]
    best = {names[j]: hook.best[j] for j in range(m) if j in hook.best}
    return AttributeModels(names, ens, history, best)


# ---------------------------------------------------------------------------------------
# shrinkage and delta


def shrink_group_accuracy(
    correct: torch.Tensor, total: torch.Tensor, z: float = Z95
) -> torch.Tensor:
    """Agresti-Coull-shrunk group accuracies in %, ``[..., 4]`` for counts ``[..., 4]``
    (groups ``g = 2y + a``).

    Each group's value is its class accuracy (pooled over the class's two groups) clipped
    into the group's interval ``[p~ - h, p~ + h]`` (module doc); NaN where the class is
    empty. An empty group has the interval ``[0, 1]`` and so takes the class accuracy.
    """
    c, n = correct.double(), total.double()
    if c.shape != n.shape or c.shape[-1] != 4:
        raise TaskspaceError(
            f"correct and total must both be [..., 4], got {tuple(c.shape)} and {tuple(n.shape)}"
        )
    z2 = z * z
    n_t = n + z2
    p_t = (c + z2 / 2) / n_t
    h = z * torch.sqrt(p_t * (1 - p_t) / n_t)
    cls_c = torch.stack([c[..., 0] + c[..., 1], c[..., 2] + c[..., 3]], -1)
    cls_n = torch.stack([n[..., 0] + n[..., 1], n[..., 2] + n[..., 3]], -1)
    cls_acc = torch.where(cls_n > 0, cls_c / cls_n.clamp_min(1), float("nan"))
    per_group = cls_acc.repeat_interleave(2, dim=-1)  # [..., 4]: class of g = g // 2
    return 100.0 * torch.minimum(torch.maximum(per_group, p_t - h), p_t + h)


def delta_from_counts(correct: torch.Tensor, total: torch.Tensor, z: float = Z95) -> torch.Tensor:
    """``|g0 + g3 - g1 - g2|`` on the shrunk accuracies (%) of counts ``[..., 4]``;
    NaN where a shrunk accuracy is NaN."""
    s = shrink_group_accuracy(correct, total, z)
    return (s[..., 0] + s[..., 3] - s[..., 1] - s[..., 2]).abs()


# ---------------------------------------------------------------------------------------
# the matrix


@dataclass(frozen=True)
class DeltaHistogram:
    """Counts of deltas in 1-point bins: ``edges [B + 1]`` (0, 1, ..., 101), ``counts
    [B]`` and ``by_attr [attrs, B]`` (the counts split by the attribute axis, for a
    stacked plot). Deltas above the last edge land in the last bin."""

    edges: torch.Tensor
    counts: torch.Tensor
    by_attr: torch.Tensor
    attrs: list[str]


@dataclass(frozen=True)
class DeltaMatrix:
    """The delta matrix with named axes.

    ``values [rows, cols]`` (float64, %) with ``rows`` / ``cols`` naming them and ``axes``
    saying what they are: ``("task", "attr")`` as built (``values [tasks, attrs]``),
    ``("attr", "task")`` after :meth:`transpose`. :attr:`tasks` and :attr:`attrs` give the
    names by meaning whichever way the matrix is turned. ``correct`` / ``total [rows,
    cols, 4]`` are the group counts of grouping ``task:attr`` (groups ``g = 2y + a``),
    ``shrunk [rows, cols, 4]`` the Agresti-Coull values (%), ``avg_acc`` each task
    model's plain average accuracy on ``split``.
    """

    values: torch.Tensor
    rows: list[str]
    cols: list[str]
    correct: torch.Tensor
    total: torch.Tensor
    shrunk: torch.Tensor
    avg_acc: dict[str, float]
    axes: tuple[str, str] = ("task", "attr")
    split: str = "val"

    def __post_init__(self) -> None:
        if tuple(self.axes) not in (("task", "attr"), ("attr", "task")):
            raise TaskspaceError(
                f"axes must be ('task', 'attr') or ('attr', 'task'), got {self.axes}"
            )
        if tuple(self.values.shape) != (len(self.rows), len(self.cols)):
            raise TaskspaceError(
                f"values {tuple(self.values.shape)} do not match {len(self.rows)} row and "
                f"{len(self.cols)} column names"
            )

    @property
    def tasks(self) -> list[str]:
        """The task names (the rows as built)."""
        return self.rows if self.axes[0] == "task" else self.cols

    @property
    def attrs(self) -> list[str]:
        """The attribute names (the columns as built)."""
        return self.cols if self.axes[0] == "task" else self.rows

    def transpose(self) -> DeltaMatrix:
        """The same cells with the axes swapped: ``values.T``, rows and columns swapped,
        ``axes`` reversed."""
        return DeltaMatrix(
            self.values.T.contiguous(),
            list(self.cols),
            list(self.rows),
            self.correct.transpose(0, 1).contiguous(),
            self.total.transpose(0, 1).contiguous(),
            self.shrunk.transpose(0, 1).contiguous(),
            dict(self.avg_acc),
            (self.axes[1], self.axes[0]),
            self.split,
        )

    def by_task(self) -> DeltaMatrix:
        """This matrix with ``axes == ("task", "attr")`` (itself or its transpose)."""
        return self if self.axes[0] == "task" else self.transpose()

    def cell(self, task: str, attr: str) -> float:
        """``delta(task:attr)``, read by meaning whichever way the matrix is turned."""
        d = self.by_task()
        return float(d.values[d.rows.index(task), d.cols.index(attr)])

    def off_diagonal(self) -> torch.Tensor:
        """``[rows, cols]`` bool: cells whose row and column name differ."""
        return torch.tensor([[r != c for c in self.cols] for r in self.rows], dtype=torch.bool)

    def pairs(self, epsilon: float = EPSILON) -> list[dict[str, Any]]:
        """Off-diagonal cells with ``delta > epsilon``, sorted by delta descending (ties in
        task-major order): ``{"task", "attr", "delta"}`` (named by meaning)."""
        d = self.by_task()
        off = d.off_diagonal()
        out = []
        for i, task in enumerate(d.rows):
            for j, attr in enumerate(d.cols):
                v = float(d.values[i, j])
                if bool(off[i, j]) and not math.isnan(v) and v > epsilon:
                    out.append({"task": task, "attr": attr, "delta": v})
        return sorted(out, key=lambda p: -p["delta"])

    def histogram(self) -> DeltaHistogram:
        return delta_histogram(self)

    def row(self, name: str) -> dict[str, float | None]:
        """Row ``name`` as ``{column name: delta}`` (None for NaN: JSON-able)."""
        i = self.rows.index(name)
        return {
            c: None if math.isnan(float(v)) else float(v) for c, v in zip(self.cols, self.values[i])
        }

    def to_json(self) -> dict[str, Any]:
        """``{"axes", "split", "rows", "cols", "values" (None for NaN), "avg_acc"}``."""
        return {
            "axes": list(self.axes),
            "split": self.split,
            "rows": list(self.rows),
            "cols": list(self.cols),
            "values": [list(self.row(r).values()) for r in self.rows],
            "avg_acc": dict(self.avg_acc),
            "correct": self.correct.tolist(),
            "total": self.total.tolist(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], z: float = Z95) -> DeltaMatrix:
        """The matrix :meth:`to_json` wrote (the shrunk values recomputed from the
        counts, so the stored deltas are checked against them)."""
        try:
            correct = torch.tensor(data["correct"], dtype=torch.long)
            total = torch.tensor(data["total"], dtype=torch.long)
            rows, cols = list(data["rows"]), list(data["cols"])
            axes = (str(data["axes"][0]), str(data["axes"][1]))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise TaskspaceError(f"not a delta matrix file ({type(err).__name__}: {err})") from None
        shrunk = shrink_group_accuracy(correct, total, z)
        values = (shrunk[..., 0] + shrunk[..., 3] - shrunk[..., 1] - shrunk[..., 2]).abs()
        return cls(
            values,
            rows,
            cols,
            correct,
            total,
            shrunk,
            dict(data.get("avg_acc", {})),
            axes,
            str(data.get("split", "val")),
        )


def delta_matrix(
    models: AttributeModels | Ensemble,
    dataset: ImageDataset,
    tasks: Sequence[str] | None = None,
    attrs: Sequence[str] | None = None,
    *,
    split: str = "val",
    z: float = Z95,
    device: str | torch.device = "cpu",
) -> DeltaMatrix:
    """The delta matrix ``T[task, attr]`` of the task models on ``split``.

    ``models``: :class:`AttributeModels` (``tasks`` taken from it) or an
    :class:`Ensemble` whose model ``m`` predicts ``tasks[m]``. Every model predicts the
    split once; each attribute only re-groups those predictions. ``attrs`` defaults to
    every attribute of the dataset.
    """
    if isinstance(models, AttributeModels):
        ens, tasks = models.ensemble, models.tasks if tasks is None else tasks
    else:
        ens = models
    if tasks is None:
        raise TaskspaceError("delta_matrix needs the task of every model (tasks=)")
    t_cols = _attribute_columns(dataset, tasks)
    a_cols = _attribute_columns(dataset, attrs)
    assert dataset.attributes is not None and dataset.attribute_names is not None
    if len(ens) != len(t_cols):
        raise TaskspaceError(f"{len(ens)} models for {len(t_cols)} tasks")
    idx = dataset.split(split)
    pred = predictions(predict_many(ens, dataset, idx, device=device))  # [M, n]
    attr = dataset.attributes[idx].long()
    correct = torch.zeros(len(t_cols), len(a_cols), 4, dtype=torch.long)
    total = torch.zeros_like(correct)
    for i, tc in enumerate(t_cols):
        y = attr[:, tc]
        for j, ac in enumerate(a_cols):
            c, n = count_correct(pred[i], y, 2 * y + attr[:, ac], 4)
            correct[i, j], total[i, j] = c[0], n
    shrunk = shrink_group_accuracy(correct, total, z)
    values = (shrunk[..., 0] + shrunk[..., 3] - shrunk[..., 1] - shrunk[..., 2]).abs()
    names = dataset.attribute_names
    avg = {
        names[tc]: float((pred[i] == attr[:, tc]).double().mean()) if len(idx) else math.nan
        for i, tc in enumerate(t_cols)
    }
    return DeltaMatrix(
        values,
        [names[c] for c in t_cols],
        [names[c] for c in a_cols],
        correct,
        total,
        shrunk,
        avg,
        ("task", "attr"),
        split,
    )


def delta_histogram(delta: DeltaMatrix, bins: int = 101) -> DeltaHistogram:
    """Histogram of the off-diagonal, non-NaN deltas in 1-point bins over ``[0, bins]``
    (default [0, 101]); deltas are clipped into the last bin (the original's plots clipped
    at 100), split by attribute for a stacked plot."""
    d = delta.by_task()
    keep = d.off_diagonal() & ~torch.isnan(d.values)
    b = d.values.nan_to_num(0.0).clamp(0, bins - 1e-9).floor().long().clamp(0, bins - 1)
    by_attr = torch.zeros(len(d.cols), bins, dtype=torch.long)
    for j in range(len(d.cols)):
        by_attr[j] = torch.bincount(b[:, j][keep[:, j]], minlength=bins)
    return DeltaHistogram(
        torch.arange(bins + 1, dtype=torch.float64), by_attr.sum(0), by_attr, list(d.cols)
    )
