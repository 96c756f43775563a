"""Multi-task group robustness: several groupings trained in one network.

mml-robustness's MTL setting: a list of groupings (``["Blond_Hair:Male",
"Heavy_Makeup:Male"]``) makes ONE network with a shared trunk and one head per grouping's
target, labels ``[M, N, T]`` (one model per seed, T tasks), a per-task loss (BCE with one
logit per task, the reference; or 2-way cross-entropy, ``task_loss="ce"``) combined by a
task weighting, and group metrics per task on val and test (each task under its own
grouping). Everything trains through the engine's ``fit_many`` with
:class:`~taskspace.engine.MultiTask`, all seeds in one batched call.

**Task weighting.** ``weighting="static"``: fixed ``task_weights`` in grouping order,
either all 1 (the default) or summing to 1 (:func:`~taskspace.engine.check_task_weights`,
compared with a tolerance where the original used float ``==``). ``weighting="lbtw"``:
Loss-Balanced Task Weighting (:class:`~taskspace.engine.LBTW`: ``w_t = (L_t / L0_t) **
alpha`` with ``L0`` the first batch of the epoch; ``normalize=True`` is the official
``w <- T w / sum(w)``, ``False`` mml-robustness's unnormalised form), static weights all 1.
``force_lbtw=True`` reproduces the original's latest entry point, which forces
``task_weights = [1] * T`` and unnormalised LBTW on for every run (a single grouping
included, where it acts as a hidden learning-rate schedule); it is off by default.

**Model selection.** At every epoch end every model is evaluated on val and test; the
parameters with the best validation *mean over tasks of the worst-group accuracy*
(``select="average"``), the best validation *minimum over tasks* of it
(``"best-worst"``), or the last ones (``"last"``) are returned (mml-robustness's
``find_best_ckpt.py`` modes; its ``per-task`` mode would need one network per task and is
not offered: train each grouping with :func:`~taskspace.robustness.fit_robust`).

**Methods.**

- ``erm``: as above.
- ``jtt``: stage 1 is the same multi-task ERM for ``jtt_epochs`` epochs (last
  parameters); each task t has its error set ``E_t = {i in train : pred_t(i) != y_t(i)}``
  (keyed by dataset index); the sets are merged into per-index weights ``w`` and each
  index gets ``int(w * lambda_up - 1)`` extra copies (the original's MTL merge, so an
  index with ``w = 1`` appears ``lambda_up`` times in total; ``MethodConfig.jtt_copies``
  does not apply). ``mtl_join="xor"``: the original's chained symmetric difference
  ``E_1 ^ E_2 ^ ...``, ``w = 1`` for an index in an odd number of error sets (for two
  tasks: exactly one); ``"inv"``: ``w = 1 / (number of error sets holding the index)``.
  The original's ``"task"`` join (weights from normalised validation losses) reads a key
  that its logger never writes (``loss_{task}`` for ``{task}_loss``), so it never ran; it
  is refused here. Stage 2 trains a freshly initialised network on the upsampled list.
- ``rwy`` / ``suby``: per-example weights ``w`` with every task's weighted positive rate
  1/2 (:func:`mtl_instance_weights`; mml-robustness solves ``min ||Y w - 1/2||`` s.t.
  ``sum w = 1, w >= 0`` with cvxpy, a problem with many exact solutions: here the
  maximum-entropy one, unique and explicit), divided by ``max(w)``; RWY draws with
  replacement by ``w`` (N draws an epoch), SUBY keeps example i with probability
  ``w_i / max(w)`` (seeded per model), as the original.
- ``rwg`` / ``subg``: refused; with several groupings the original silently falls back to
  all-1 weights (RWG) or class weights (SUBG).
- ``dro``: refused; Group DRO has no MTL form in the reference.

Methods that are refused here train per grouping with ``fit_robust``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import (
    LBTW,
    Ensemble,
    Evaluate,
    Hook,
    IndexLists,
    Metric,
    MultiTask,
    Permutation,
    Sampler,
    StaticWeights,
    TaskWeighting,
    WeightedWithReplacement,
    check_task_weights,
    fit_many,
    predict_many,
)
from taskspace.errors import TaskspaceError
from taskspace.robustness.groups import Grouping, group_counts
from taskspace.robustness.methods import (
    _ORDER,
    _STAGE2,
    PRESETS,
    MethodConfig,
    _as_grouping,
    method_config,
)
from taskspace.robustness.metrics import GroupMetrics, count_correct
from taskspace.seeding import derive_seed

__all__ = [
    "MTL_JOINS",
    "mtl_instance_weights",
    "MTLResult",
    "fit_mtl",
    "jtt_mtl_error_sets",
    "jtt_mtl_merge",
    "jtt_mtl_upsample",
    "mtl_predictions",
]

MTL_JOINS = ("xor", "inv")
#: Seed stream of MTL SUBY's draws (fixed forever: changing it changes results).
_SUBSAMPLE_MTL = 53

MTLSelect = Literal["average", "best-worst", "last"]

_REFUSED = {
    "rwg": "RWG has no multi-task form (the original silently used all-1 weights with "
    "several groupings); use fit_robust(method='rwg') per grouping",
    "subg": "SUBG has no multi-task form (the original silently used class weights with "
    "several groupings); use fit_robust(method='subg') per grouping",
    "dro": "Group DRO has no multi-task form in the reference; use fit_robust(method='dro') "
    "per grouping",
}


# ---------------------------------------------------------------------------------------
# multi-task instance weights (RWY / SUBY)


def mtl_instance_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-example weights ``[n]`` for 0/1 labels ``[T, n]``: every task's weighted positive
    rate is 1/2, divided by ``max(w)`` (so the largest weight is 1).

    Of the many exact solutions of the original's problem (``Y w = 1/2``, ``sum w = 1``,
    ``w >= 0``) this is the one of maximum entropy, ``w_i ~ exp(lambda . (y_i - 1/2))``,
    with ``lambda`` from the convex dual ``min log sum_i exp(lambda . (y_i - 1/2))``. Raises
    a one-line error when no weights balance every task (a task with one class present).
    """
    # scipy is imported on use, like scikit-learn elsewhere: it slows every start-up
    from scipy.optimize import minimize
    from scipy.special import logsumexp, softmax

    y = labels.double().numpy() - 0.5  # [T, n]
    if y.ndim != 2 or y.shape[1] == 0:
        raise TaskspaceError(f"instance weights need labels [tasks, n], got {tuple(labels.shape)}")
    if bool(((y > 0).all(1) | (y < 0).all(1)).any()):
        raise TaskspaceError("no instance weights balance a task with one class in train")

    def dual(lam: np.ndarray) -> tuple[float, np.ndarray]:
        z = lam @ y
        return float(logsumexp(z)), y @ softmax(z)

    res = minimize(dual, np.zeros(y.shape[0]), jac=True, method="BFGS", options={"gtol": 1e-10})
    w = softmax(res.x @ y)
    if float(np.abs(y @ w).max()) > 1e-4:
        raise TaskspaceError(
            "no instance weights give every task a weighted positive rate of 1/2 (the "
            f"closest leaves {float(np.abs(y @ w).max()):.3g}); train per grouping instead"
        )
    return torch.from_numpy(w / w.max())


def _keep_with_probability(idx: torch.Tensor, p: torch.Tensor, seed: int) -> torch.Tensor:
    """MTL SUBY's subset: example i kept with probability ``p_i`` (seeded draw)."""
    g = torch.Generator().manual_seed(derive_seed(seed, _SUBSAMPLE_MTL))
    keep = torch.rand(len(idx), generator=g, dtype=torch.float64) < p
    return idx[keep]


# ---------------------------------------------------------------------------------------
# predictions and per-task metrics


def mtl_predictions(logits: torch.Tensor, num_tasks: int, task_loss: str) -> torch.Tensor:
    """Per-task predicted classes ``[M, n, T]`` of multi-head logits ``[M, n, outputs]``:
    ``logit_t > 0`` for BCE (one output per task), else the arg-max of each task's block of
    ``outputs / T`` logits."""
    m, n, outputs = logits.shape
    if task_loss == "bce":
        return (logits > 0).long()
    return logits.reshape(m, n, num_tasks, outputs // num_tasks).argmax(-1)


def _task_metrics(
    pred: torch.Tensor,
    idx: torch.Tensor,
    ys: torch.Tensor,
    gs: torch.Tensor,
    groupings: Sequence[Grouping],
    props: Sequence[torch.Tensor],
) -> list[GroupMetrics]:
    """One :class:`GroupMetrics` per task of predictions ``[M, n, T]`` on ``idx``."""
    out = []
    for t, g in enumerate(groupings):
        correct, total = count_correct(pred[..., t].cpu(), ys[t, idx], gs[t, idx], g.num_groups)
        out.append(GroupMetrics(correct, total, g.group_class(), props[t]))
    return out


class _TaskCounter:
    """Per-task group metrics of the last logits seen (computed once per evaluation)."""

    def __init__(
        self,
        ys: torch.Tensor,
        gs: torch.Tensor,
        groupings: Sequence[Grouping],
        props: Sequence[torch.Tensor],
        task_loss: str,
    ) -> None:
        self.ys, self.gs, self.groupings, self.props = ys, gs, list(groupings), list(props)
        self.task_loss = task_loss
        self._logits: torch.Tensor | None = None
        self._idx: torch.Tensor | None = None
        self._value: list[GroupMetrics] | None = None

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor) -> list[GroupMetrics]:
        if self._value is None or self._logits is not logits or self._idx is not idx:
            pred = mtl_predictions(logits, len(self.groupings), self.task_loss)
            self._value = _task_metrics(pred, idx, self.ys, self.gs, self.groupings, self.props)
            self._logits, self._idx = logits, idx
        return self._value


def _combine_worst(per_task: list[GroupMetrics], how: str) -> torch.Tensor:
    """Mean (``"average"``) or min (``"best-worst"``) over tasks of the worst-group
    accuracy ``[M]``; NaN tasks (every group empty) are left out."""
    worst = torch.stack([gm.worst_group for gm in per_task], 1)  # [M, T]
    if how == "average":
        return worst.nanmean(1)
    low = worst.nan_to_num(nan=float("inf")).amin(1)
    return torch.where(torch.isinf(low), float("nan"), low)


class _TaskStat(Metric):
    """One statistic for the ``Evaluate`` hook: a task's ``avg_acc``, ``weighted_avg_acc``,
    ``worst_group_acc`` or ``g{j}_acc``, or (``task`` None) the mean / min over tasks of
    the worst-group accuracy."""

    def __init__(self, counter: _TaskCounter, task: int | None, stat: str) -> None:
        self.counter, self.task, self.stat = counter, task, stat

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
        per_task = self.counter(logits, idx)
        if self.task is None:
            return _combine_worst(per_task, self.stat)
        gm = per_task[self.task]
        if self.stat == "avg_acc":
            return gm.average
        if self.stat == "weighted_avg_acc":
            return gm.weighted_average
        if self.stat == "worst_group_acc":
            return gm.worst_group
        return gm.acc[:, int(self.stat[1:].split("_", 1)[0])]


_ALL = {"average": "mean_worst_group_acc", "best-worst": "min_worst_group_acc"}


def _stats(counter: _TaskCounter, groupings: Sequence[Grouping]) -> dict[str, Metric]:
    """Metric names ``"{t}|{stat}"`` per task and ``"*|{mean,min}_worst_group_acc"``."""
    stats: dict[str, Metric] = {}
    for t, g in enumerate(groupings):
        names = ["avg_acc", "weighted_avg_acc", "worst_group_acc"]
        names += [f"g{j}_acc" for j in range(g.num_groups)]
        for s in names:
            stats[f"{t}|{s}"] = _TaskStat(counter, t, s)
    for how, name in _ALL.items():
        stats[f"*|{name}"] = _TaskStat(counter, None, how)
    return stats


class _WeightTrace(Hook):
    """The task weights every model used at each of its steps (the objective state's
    ``task_weights``): LBTW's weights logged; restored with the fit on resume."""

    def __init__(self) -> None:
        self.trace: dict[int, list[torch.Tensor]] = {}

    def on_step_end(self, ctx: Any) -> None:
        batch = ctx.batch
        if batch is None:
            return
        w = ctx.objective_state["task_weights"]
        for j, m in enumerate(ctx.members):
            if bool(batch.active[j]):
                self.trace.setdefault(m, []).append(w[m].detach().cpu().clone())

    def stacked(self) -> dict[int, torch.Tensor]:
        return {m: torch.stack(v) for m, v in sorted(self.trace.items())}

    def state_dict(self) -> dict[str, Any]:
        return {"trace": {str(m): v for m, v in self.stacked().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.trace = {int(m): list(v.unbind(0)) for m, v in state["trace"].items()}


# ---------------------------------------------------------------------------------------
# JTT's multi-task merge


def jtt_mtl_error_sets(
    stage1: Ensemble,
    dataset: ImageDataset,
    labels: torch.Tensor,
    train_idx: torch.Tensor,
    task_loss: str,
    *,
    device: str | torch.device = "cpu",
) -> list[list[torch.Tensor]]:
    """Per stage-1 model, per task: the sorted dataset indices of ``train_idx`` whose task-t
    prediction differs from ``labels [N, T]`` (``pred != label``, keyed by index)."""
    train_idx = train_idx.long()
    logits = predict_many(stage1, dataset, train_idx, device=device)
    pred = mtl_predictions(logits, labels.shape[1], task_loss).cpu()  # [M, n, T]
    wrong = pred != labels.long()[train_idx][None]
    return [[train_idx[w[:, t]].sort().values for t in range(w.shape[1])] for w in wrong]


def jtt_mtl_merge(
    error_sets: Sequence[torch.Tensor], lambda_up: int, join: str = "xor"
) -> torch.Tensor:
    """mml-robustness's MTL merge of per-task error sets: the *extra* copies, sorted.

    ``join="xor"``: ``w = 1`` for the indices of the chained symmetric difference (in an odd
    number of the sets; for two sets, exactly one); ``"inv"``: ``w = 1 / c`` with ``c`` the
    number of sets holding the index. Each index gets ``int(w * lambda_up - 1)`` extra
    copies (none when that is below 1), as the original computes it in float.
    """
    if join == "task":
        raise TaskspaceError(
            "mtl_join='task' is broken in mml-robustness (it reads 'loss_{task}' but logs "
            "'{task}_loss') and is not implemented; use 'xor' or 'inv'"
        )
    if join not in MTL_JOINS:
        raise TaskspaceError(f"mtl_join must be 'xor' or 'inv', got {join!r}")
    if int(lambda_up) != lambda_up or lambda_up < 1:
        raise TaskspaceError(f"lambda_up must be an integer >= 1, got {lambda_up}")
    counts: dict[int, int] = {}
    for e in error_sets:
        ids = [int(i) for i in e.tolist()]
        if len(set(ids)) != len(ids):
            raise TaskspaceError("a JTT error set lists an example twice")
        for i in ids:
            counts[i] = counts.get(i, 0) + 1
    extra: list[int] = []
    for i in sorted(counts):
        c = counts[i]
        w = (1.0 if c % 2 else 0.0) if join == "xor" else 1.0 / c
        extra += [i] * max(0, int(w * lambda_up - 1))
    return torch.tensor(extra, dtype=torch.long)


def jtt_mtl_upsample(
    train_idx: torch.Tensor, error_sets: Sequence[torch.Tensor], lambda_up: int, join: str = "xor"
) -> torch.Tensor:
    """JTT's multi-task training list: ``train_idx`` then the merge's extra copies."""
    train_idx = train_idx.long()
    extra = jtt_mtl_merge(error_sets, lambda_up, join)
    if not bool(torch.isin(extra, train_idx).all()):
        raise TaskspaceError("the JTT error sets hold examples outside the training set")
    return torch.cat([train_idx, extra])


# ---------------------------------------------------------------------------------------
# results


@dataclass
class MTLResult:
    """One multi-task method trained with M seeds (one network per seed, T heads).

    ``metrics[grouping][split]``: the selected networks' :class:`GroupMetrics` of each task
    (keyed by the grouping string) on val and test, so ``final_table(result.metrics)``
    gives one row per task and split; ``history``: per-epoch rows (``model``, ``seed``,
    ``step``, ``epoch``, ``set``, ``task`` (a grouping string, or ``"*"`` for the
    combined selection values), ``metric``, ``value``); metrics per task ``avg_acc``,
    ``weighted_avg_acc``, ``worst_group_acc``, ``g{j}_acc``, and ``*``'s
    ``mean_worst_group_acc`` / ``min_worst_group_acc``; ``best``: each model's selected
    ``(value, step)``; ``task_weights [M, T]``: the weights of each model's last step;
    ``weight_trace[m]``: model m's weights at every step ``[steps, T]``; ``train_counts``:
    training-group counts per task. JTT adds ``stage1``, ``error_sets[m][t]``,
    ``error_counts[m][t]`` (per training group of task t) and ``train_lists``.
    """

    method: str
    config: MethodConfig
    groupings: list[Grouping]
    seeds: list[int]
    ensemble: Ensemble
    metrics: dict[str, dict[str, GroupMetrics]]
    history: list[dict[str, Any]]
    best: dict[int, tuple[float, int]]
    weighting: TaskWeighting
    task_loss: str
    task_weights: torch.Tensor
    weight_trace: dict[int, torch.Tensor]
    train_counts: list[torch.Tensor]
    train_lists: list[torch.Tensor] | None = None
    stage1: Ensemble | None = None
    error_sets: list[list[torch.Tensor]] | None = None
    error_counts: list[list[torch.Tensor]] | None = None

    def worst_group(self, split: str = "test") -> torch.Tensor:
        """Worst-group accuracy per model and task ``[M, T]`` on ``split``."""
        return torch.stack([self.metrics[str(g)][split].worst_group for g in self.groupings], 1)

    def rows(self) -> list[dict[str, Any]]:
        """Per-model final rows (one per seed, task and split): ``method``, ``grouping``,
        ``seed``, ``split`` and :meth:`GroupMetrics.rows`'s columns."""
        out = []
        for name, per_split in self.metrics.items():
            for split, gm in per_split.items():
                out += gm.rows(
                    method=self.method, grouping=name, seed=list(self.seeds), split=split
                )
        return out


# ---------------------------------------------------------------------------------------
# the front door


def _weighting(
    weighting: str | TaskWeighting,
    task_weights: Sequence[float] | None,
    alpha: float,
    normalize: bool,
    force_lbtw: bool,
    num_tasks: int,
) -> TaskWeighting:
    if isinstance(weighting, TaskWeighting):
        if force_lbtw:
            raise TaskspaceError(
                f"force_lbtw=True replaces the weighting by LBTW; drop it to train with "
                f"{type(weighting).__name__}"
            )
        if task_weights is not None:
            raise TaskspaceError(
                "task_weights go with weighting='static'; give a TaskWeighting its own weights"
            )
        return weighting
    if weighting not in ("static", "lbtw"):
        raise TaskspaceError(
            f"weighting must be 'static', 'lbtw' or a TaskWeighting, got {weighting!r}"
        )
    w = None if task_weights is None else check_task_weights(task_weights, num_tasks)
    if force_lbtw or weighting == "lbtw":
        if w is not None and any(v != 1.0 for v in w):
            raise TaskspaceError(
                f"LBTW uses all-1 static task weights (as the reference); got task_weights {w}"
            )
        return LBTW(alpha=alpha, normalize=False if force_lbtw else normalize)
    return StaticWeights(w)


def fit_mtl(
    dataset: ImageDataset,
    groupings: Sequence[Grouping | str],
    method: str | MethodConfig = "erm",
    *,
    weighting: Literal["static", "lbtw"] | TaskWeighting = "static",
    task_weights: Sequence[float] | None = None,
    alpha: float = 0.5,
    normalize: bool = True,
    force_lbtw: bool = False,
    task_loss: Literal["bce", "ce"] = "bce",
    mtl_join: str = "xor",
    preset: str = "reference",
    seeds: Sequence[int] = (0, 1, 2),
    select: MTLSelect = "average",
    model: str | None = None,
    model_kwargs: dict | None = None,
    train_split: str = "train",
    val_split: str = "val",
    test_split: str | None = "test",
    stage1: Ensemble | str | Path | None = None,
    device: str | torch.device = "cpu",
    batched: bool | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
    **overrides: Any,
) -> MTLResult:
    """Train ``method`` on several groupings in one network per seed (module doc).

    Args:
        dataset: images with 0/1 ``attributes`` and ``attribute_names`` and the splits.
        groupings: ``"Task:Attr[,Attr2]"`` strings or :class:`Grouping` objects, one task
            (head) each, in order; one grouping is allowed (single-task through this path).
        method: ``"erm"`` or ``"jtt"`` (the others are refused with the reason), or a
            :class:`MethodConfig`; hyperparameters from ``preset`` with ``overrides``.
        weighting: ``"static"`` (``task_weights``, default all 1), ``"lbtw"``, or any
            :class:`~taskspace.engine.TaskWeighting` instance, used as given (e.g.
            uncertainty weighting, GradNorm or PCGrad from :mod:`taskspace.mtl.weighting`;
            ``task_weights``, ``alpha``, ``normalize`` and ``force_lbtw`` do not apply).
        task_weights: static weights in grouping order, all 1 or summing to 1.
        alpha, normalize: LBTW's exponent and renormalisation (``w <- T w / sum(w)``).
        force_lbtw: mml-robustness's forced setting: unnormalised LBTW with all-1
            weights, whatever ``weighting`` and ``normalize`` say.
        task_loss: ``"bce"`` (one logit per task, the reference) or ``"ce"`` (2 logits
            per task, 2-way cross-entropy as BalancingGroups); recorded in the config.
        mtl_join: JTT's merge of the per-task error sets, ``"xor"`` or ``"inv"``.
        select: ``"average"`` (best val mean over tasks of the worst-group accuracy),
            ``"best-worst"`` (best val min over tasks) or ``"last"``, over epoch ends.
        stage1: JTT only: an existing multi-task stage-1 ensemble (or its path), one model
            for all seeds or one per seed.
        hooks: more engine hooks for the (stage-2) fit, after the evaluation hook.
        overrides: :class:`MethodConfig` fields (``lr=``, ``epochs=``, ``lambda_up=``...).
    """
    if not groupings:
        raise TaskspaceError("fit_mtl needs at least one grouping")
    gs_list = [_as_grouping(g, dataset) for g in groupings]
    names = [str(g) for g in gs_list]
    if len(set(names)) != len(names):
        raise TaskspaceError(f"groupings {names} list a grouping twice")
    if select not in ("average", "best-worst", "last"):
        raise TaskspaceError(f"select must be 'average', 'best-worst' or 'last', got {select!r}")
    if task_loss not in ("bce", "ce"):
        raise TaskspaceError(f"task_loss must be 'bce' or 'ce', got {task_loss!r}")
    if preset not in PRESETS:
        raise TaskspaceError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    name = method.method if isinstance(method, MethodConfig) else method
    if name in _REFUSED:
        raise TaskspaceError(_REFUSED[name])
    if name == "jtt":
        jtt_mtl_merge([], 1, mtl_join)  # validates the join before any training
    if isinstance(method, MethodConfig):
        cfg = method.replace(**overrides) if overrides else method
    else:
        cfg = method_config(method, preset, **overrides)
    cfg = cfg.replace(loss=task_loss)
    t_count = len(gs_list)
    objective = MultiTask(
        task_loss=task_loss,
        weighting=_weighting(weighting, task_weights, alpha, normalize, force_lbtw, t_count),
        num_classes=None if task_loss == "bce" else 2,
    )
    pre = PRESETS[preset]
    model = model or pre.model
    kwargs = dict(pre.model_kwargs if model_kwargs is None else model_kwargs)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise TaskspaceError("fit_mtl needs at least one seed")
    m = len(seeds)
    num_outputs = t_count if task_loss == "bce" else 2 * t_count

    train_idx = dataset.split(train_split)
    ys = torch.stack([g.targets(dataset) for g in gs_list])  # [T, N]
    gids = torch.stack([g.groups(dataset) for g in gs_list])  # [T, N]
    labels = ys.T[None].expand(m, -1, -1).contiguous()  # [M, N, T]
    counts = [group_counts(gids[t, train_idx], g.num_groups) for t, g in enumerate(gs_list)]
    orders = [derive_seed(s, _ORDER) for s in seeds]
    common: dict[str, Any] = dict(
        num_outputs=num_outputs,
        device=device,
        chunk_size=chunk_size,
        batched=batched,
        model_kwargs=kwargs,
        objective=objective,
        progress=progress,
    )

    sampler: Sampler = Permutation()
    fit_idx: torch.Tensor | None = train_idx
    init_seeds = list(seeds)
    stage1_ens: Ensemble | None = None
    error_sets: list[list[torch.Tensor]] | None = None
    error_counts: list[list[torch.Tensor]] | None = None
    lists: list[torch.Tensor] | None = None
    if cfg.method == "jtt":
        if stage1 is None:
            stage1_ens = fit_many(
                model,
                dataset,
                labels,
                cfg.recipe(epochs=cfg.jtt_epochs),
                seeds,
                order_seeds=orders,
                train_idx=train_idx,
                **common,
            )
        else:
            stage1_ens = stage1 if isinstance(stage1, Ensemble) else Ensemble.load(stage1)
        if len(stage1_ens) not in (1, m):
            raise TaskspaceError(
                f"the stage-1 ensemble has {len(stage1_ens)} models; JTT with {m} seeds "
                f"needs 1 or {m}"
            )
        if stage1_ens.num_outputs != num_outputs:
            raise TaskspaceError(
                f"the stage-1 ensemble has {stage1_ens.num_outputs} outputs; these "
                f"{t_count} tasks with task_loss={task_loss!r} need {num_outputs}"
            )
        error_sets = jtt_mtl_error_sets(stage1_ens, dataset, ys.T, train_idx, task_loss)
        if len(error_sets) == 1:
            error_sets = error_sets * m
        error_counts = [
            [group_counts(gids[t, e], gs_list[t].num_groups) for t, e in enumerate(per)]
            for per in error_sets
        ]
        lists = [jtt_mtl_upsample(train_idx, per, cfg.lambda_up, mtl_join) for per in error_sets]
        sampler, fit_idx = IndexLists(lists), None
        init_seeds = [derive_seed(s, _STAGE2) for s in seeds]  # a fresh model
    elif cfg.method in ("rwy", "suby"):
        w = torch.zeros(len(dataset), dtype=torch.float64)
        w[train_idx] = mtl_instance_weights(ys[:, train_idx])
        if cfg.method == "rwy":
            sampler = WeightedWithReplacement(w, num_samples=len(train_idx))
        else:
            lists = [_keep_with_probability(train_idx, w[train_idx], s) for s in seeds]
            sampler, fit_idx = IndexLists(lists), None

    props = [g.proportions(dataset, train_split) for g in gs_list]
    counter = _TaskCounter(ys, gids, gs_list, props, task_loss)
    sets = {"val": dataset.split(val_split)}
    if test_split is not None:
        sets["test"] = dataset.split(test_split)
    sel = None if select == "last" else ("val", f"*|{_ALL[select]}")
    evaluate = Evaluate(sets, _stats(counter, gs_list), select=sel)
    trace = _WeightTrace()
    ens = fit_many(
        model,
        dataset,
        labels,
        cfg.recipe(),
        init_seeds,
        order_seeds=orders,
        train_idx=fit_idx,
        sampler=sampler,
        hooks=[evaluate, trace, *hooks],
        **common,
    )
    history = []
    for r in evaluate.history:
        task, metric = r["metric"].split("|", 1)
        task = "*" if task == "*" else names[int(task)]
        history.append({**r, "seed": seeds[r["model"]], "task": task, "metric": metric})
    metrics: dict[str, dict[str, GroupMetrics]] = {n: {} for n in names}
    for split, idx in sets.items():
        pred = mtl_predictions(predict_many(ens, dataset, idx, device=device), t_count, task_loss)
        for n, gm in zip(names, _task_metrics(pred, idx, ys, gids, gs_list, props)):
            metrics[n][split] = gm
    return MTLResult(
        method=cfg.method,
        config=cfg,
        groupings=gs_list,
        seeds=seeds,
        ensemble=ens,
        metrics=metrics,
        history=history,
        best=dict(evaluate.best),
        weighting=objective.weighting,
        task_loss=task_loss,
        task_weights=ens.objective_state["task_weights"],
        weight_trace=trace.stacked(),
        train_counts=counts,
        train_lists=lists,
        stage1=stage1_ens,
        error_sets=error_sets,
        error_counts=error_counts,
    )
