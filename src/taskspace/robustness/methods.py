"""Group-robust training methods, all through the engine's ``fit_many``.

Every method is plain ERM with one part swapped (the engine's split of a trainer into
sampler, objective and hooks), so all seeds of a method train as ONE batched ``fit_many``
call with one model per seed:

- ``erm``: nothing changes (seeded permutations, :class:`~taskspace.engine.Permutation`);
- ``jtt``: stage 1 is ERM for ``jtt_epochs`` (T) epochs; the error set is E = {dataset
  index i in train : pred_i != y_i}; stage 2 trains a *freshly initialised* model on the
  train set with every error example ``lambda_up`` times in total, read by example index
  through :class:`~taskspace.engine.IndexLists`;
- ``rwy`` / ``rwg``: draws with replacement with weights ``N / count(y_i)`` /
  ``N / count(g_i)``, ``N`` draws per epoch (``reweight="sample"``,
  :class:`~taskspace.engine.WeightedWithReplacement`), or those weights as loss weights
  (``reweight="loss"``, ``fit_many(weights=)``, scaled to mean 1 over train);
- ``suby`` / ``subg``: once, walk a seeded permutation of train and keep an example while
  its class / group count is below the smallest class / group
  (:class:`~taskspace.engine.IndexLists`);
- ``dro``: Group DRO, the engine's :class:`~taskspace.engine.GroupDRO` (``q`` on the
  simplex, ``q_g <- q_g exp(eta_q (l_g + C / sqrt(n_g)))``, loss ``sum_g q_g l_g`` with q
  held constant) with a group-balanced sampler (``balanced``,
  :class:`~taskspace.engine.GroupBalanced`).

**Model selection.** Every model is evaluated at each of its epoch ends on the validation
and test splits (the engine's :class:`~taskspace.engine.Evaluate` hook); the parameters
with the best validation worst-group accuracy (``select="worst"``, BalancingGroups'
rule), best plain average (``"avg"``, mml-robustness's ``avg`` checkpoint) or the last
ones (``"last"``) are returned, with the per-epoch group metrics of both splits as a
history table. Groups of the *evaluation* grouping are used only for evaluation and
selection; JTT, ERM, RWY and SUBY never see the training groups.

**The learner.** Any registered model (``mlp``, ``convnet``, ``resnet50``, ...). The
reference (mml-robustness) uses one logit per task with BCE-with-logits; BalancingGroups
uses 2-way cross-entropy. ``loss="ce"`` (the default here: 2 outputs, cross-entropy, the
engine's fast paths) is that documented choice; ``loss="bce"`` restores the reference's
single BCE logit (predict ``logit > 0``) for every method but Group DRO, whose engine
objective is over cross-entropy.

**Hyperparameters.** :data:`PRESETS` holds two families: ``reference`` (CelebA
ResNet-50: the mml-robustness ``configs/exp/*.yaml`` values, SGD momentum 0.9, plus JTT
T = 1, lambda_up = 50 and Group DRO eta_q = 0.01, C = 0, balanced sampler on as
kohpangwei/group_DRO's ``--reweight_groups``), and ``digits`` (a small MLP on the
coloured-digits set built from scikit-learn's digits, chosen so that every robust method
lifts the worst group far above ERM on a 2-core CPU in seconds). The engine has one
learning rate and weight decay per ``fit_many`` call, so a grid of hyperparameters trains
one batched call per grid point (:func:`fit_grid`), each over all seeds at once.

**Switches for the original's pitfalls.** ``jtt_copies="total"`` (the paper: each error
example appears ``lambda_up`` times in total; ``"extra"`` is mml-robustness's single-task
code, ``lambda_up + 1`` copies); the error set is keyed by dataset index and means
``pred != label`` (BalancingGroups issue #5 had it reversed); subsampling permutations
are seeded; a method that needs every group (RWG, SUBG, Group DRO with the balanced
sampler or the size adjustment) refuses a grouping with an empty training group instead
of silently falling back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import (
    CrossEntropy,
    Ensemble,
    Evaluate,
    GroupBalanced,
    GroupDRO,
    Hook,
    IndexLists,
    Metric,
    MultiTask,
    Objective,
    Permutation,
    Recipe,
    Sampler,
    WeightedWithReplacement,
    fit_many,
    predict_many,
)
from taskspace.engine.metrics import predictions
from taskspace.errors import TaskspaceError
from taskspace.robustness.groups import Grouping, group_counts, parse_grouping
from taskspace.robustness.metrics import GroupMetrics, count_correct, evaluate_ensemble
from taskspace.seeding import derive_seed

__all__ = [
    "METHODS",
    "PRESETS",
    "MethodConfig",
    "MethodParts",
    "Preset",
    "RobustResult",
    "fit_grid",
    "fit_robust",
    "jtt_error_sets",
    "jtt_stage1",
    "jtt_upsample",
    "method_config",
    "method_parts",
    "rebalance_weights",
    "require_groups",
    "subsample",
    "train_group_ids",
]

METHODS = ("erm", "jtt", "rwy", "rwg", "suby", "subg", "dro")

# Seed streams of this module (fixed forever: changing one changes results).
_ORDER = 41  # a model's data order
_SUBSAMPLE = 43  # SUBY/SUBG's permutation
_STAGE2 = 47  # JTT's freshly initialised stage-2 model

Select = Literal["worst", "avg", "last"]


@dataclass(frozen=True)
class MethodConfig:
    """One method's hyperparameters and switches (see the module docstring).

    ``epochs`` counts passes over the method's own training list (the upsampled set for
    JTT stage 2, the subset for SUBY/SUBG, ``N`` draws for RWY/RWG sampling).
    """

    method: str = "erm"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch_size: int = 128
    epochs: float = 25.0
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    loss: Literal["ce", "bce"] = "ce"
    # JTT
    jtt_epochs: float = 1.0
    lambda_up: int = 50
    jtt_copies: Literal["total", "extra"] = "total"
    # RWY / RWG
    reweight: Literal["sample", "loss"] = "sample"
    # Group DRO
    eta_q: float = 0.01
    adjustment: float = 0.0
    balanced: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise TaskspaceError(
                f"unknown method {self.method!r}; choose from {', '.join(METHODS)}"
            )
        if self.loss not in ("ce", "bce"):
            raise TaskspaceError(f"loss must be 'ce' or 'bce', got {self.loss!r}")
        if self.loss == "bce" and self.method == "dro":
            raise TaskspaceError(
                "Group DRO trains with 2-way cross-entropy here (loss='ce'); the engine's "
                "GroupDRO objective has no BCE form"
            )
        if self.reweight not in ("sample", "loss"):
            raise TaskspaceError(f"reweight must be 'sample' or 'loss', got {self.reweight!r}")
        if self.jtt_copies not in ("total", "extra"):
            raise TaskspaceError(f"jtt_copies must be 'total' or 'extra', got {self.jtt_copies!r}")
        if int(self.lambda_up) != self.lambda_up or self.lambda_up < 1:
            raise TaskspaceError(f"lambda_up must be an integer >= 1, got {self.lambda_up}")
        if self.jtt_epochs <= 0:
            raise TaskspaceError(f"jtt_epochs must be > 0, got {self.jtt_epochs}")
        if self.eta_q < 0 or self.adjustment < 0:
            raise TaskspaceError("eta_q and adjustment must be >= 0")
        self.recipe()  # validates lr, batch size, epochs, optimizer

    def recipe(self, epochs: float | None = None) -> Recipe:
        """The engine recipe (no schedule, no augmentation: the reference's setup)."""
        return Recipe(
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            epochs=self.epochs if epochs is None else epochs,
        )

    def replace(self, **changes: Any) -> MethodConfig:
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TaskspaceError(f"unknown method option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True, eq=False)
class Preset:
    """A family of default hyperparameters: one :class:`MethodConfig` per method, and the
    learner they were chosen for."""

    name: str
    description: str
    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    methods: dict[str, MethodConfig] = field(default_factory=dict)


def _ref(method: str, batch: int, lr: float, wd: float, epochs: float, **kw: Any) -> MethodConfig:
    return MethodConfig(method, lr=lr, weight_decay=wd, batch_size=batch, epochs=epochs, **kw)


def _digits(method: str, **kw: Any) -> MethodConfig:
    base: dict[str, Any] = dict(optimizer="sgd", momentum=0.9, lr=0.05, weight_decay=0.03)
    base.update(kw)
    return MethodConfig(method, **base)


def _celeba_cpu(method: str, **kw: Any) -> MethodConfig:
    base: dict[str, Any] = dict(
        optimizer="sgd", momentum=0.9, lr=0.05, weight_decay=1e-4, batch_size=128, epochs=8
    )
    base.update(kw)
    return MethodConfig(method, **base)


#: Default hyperparameters. ``reference``: CelebA ResNet-50 (mml-robustness
#: ``configs/exp/*.yaml``, whose comments quote Idrissi et al.'s best CelebA settings; JTT
#: from anniesch/jtt; Group DRO from kohpangwei/group_DRO), SGD momentum 0.9, no schedule.
#: The reference fine-tunes ImageNet weights; ``taskspace`` never downloads weights, so
#: its ``resnet50`` starts from scratch unless given weights. ``digits``: the coloured
#: digits set (y = digit >= 5, background colour = y with probability 0.97 in train,
#: balanced val/test) with a one-hidden-layer MLP on a CPU. Every method shares the
#: learner and SGD (momentum 0.9, lr 0.05, batch 32, 30 epochs) with strong weight decay
#: 0.03 (strong L2 is what lets the robust methods keep the minority groups, as the
#: reference's wd 0.1 for RWG/JTT); SUBG, whose subset is four times the smallest group,
#: takes batch 16 and 100 epochs; JTT keeps the reference's T = 1 and lambda_up = 50;
#: Group DRO takes eta_q = 0.1 (BalancingGroups' value) with C = 0 and the balanced
#: sampler.
PRESETS: dict[str, Preset] = {
    "reference": Preset(
        "reference",
        "reference (CelebA ResNet-50): mml-robustness configs/exp/*.yaml defaults",
        "resnet50",
        {},
        {
            "erm": _ref("erm", 128, 1e-4, 1e-4, 25),
            "rwy": _ref("rwy", 4, 10**-4.6, 10**-1.4, 25),
            "rwg": _ref("rwg", 32, 1e-5, 0.1, 15),
            "suby": _ref("suby", 32, 10**-4.4, 10**-1.2, 60),
            "subg": _ref("subg", 4, 10**-4.2, 0.01, 60),
            "jtt": _ref("jtt", 128, 1e-5, 0.1, 50, jtt_epochs=1, lambda_up=50),
            "dro": _ref("dro", 128, 1e-4, 1e-4, 50, eta_q=0.01, adjustment=0.0, balanced=True),
        },
    ),
    "digits": Preset(
        "digits",
        "coloured digits (8x8x3, 1,200 train images, rho 0.97), MLP widths (64,), CPU",
        "mlp",
        {"widths": (64,)},
        {
            "erm": _digits("erm", batch_size=32, epochs=30),
            "rwy": _digits("rwy", batch_size=32, epochs=30),
            "rwg": _digits("rwg", batch_size=32, epochs=30),
            "suby": _digits("suby", batch_size=32, epochs=30),
            "subg": _digits("subg", batch_size=16, epochs=100),
            "jtt": _digits("jtt", batch_size=32, epochs=30, jtt_epochs=1, lambda_up=50),
            "dro": _digits("dro", batch_size=32, epochs=30, eta_q=0.1),
        },
    ),
    "celeba_cpu": Preset(
        "celeba_cpu",
        "CelebA at 32x32 on a 2-core CPU: the small CNN convnet 16-32-64 from scratch, "
        "SGD momentum 0.9, 8 epochs of batch 128",
        "convnet",
        {"widths": (16, 32, 64)},
        {
            "erm": _celeba_cpu("erm"),
            "rwy": _celeba_cpu("rwy"),
            "rwg": _celeba_cpu("rwg"),
            "suby": _celeba_cpu("suby"),
            "subg": _celeba_cpu("subg", batch_size=32, epochs=100),
            "jtt": _celeba_cpu("jtt", epochs=2, jtt_epochs=1, lambda_up=20),
            "dro": _celeba_cpu("dro", eta_q=0.1),
        },
    ),
}


def method_config(method: str, preset: str = "reference", **overrides: Any) -> MethodConfig:
    """The preset's :class:`MethodConfig` for ``method``, with field overrides."""
    if preset not in PRESETS:
        raise TaskspaceError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if method not in PRESETS[preset].methods:
        raise TaskspaceError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    cfg = PRESETS[preset].methods[method]
    return cfg.replace(**overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------
# data changes


def rebalance_weights(keys: torch.Tensor, train_idx: torch.Tensor) -> torch.Tensor:
    """RWY/RWG weights over all N images: ``n / count(keys_i)`` for train examples (``n``
    train examples; ``keys`` = classes for RWY, groups for RWG), 0 elsewhere (float64)."""
    train_idx = train_idx.long()
    k = keys.long()[train_idx]
    counts = torch.bincount(k).double()
    w = torch.zeros(len(keys), dtype=torch.float64)
    w[train_idx] = len(train_idx) / counts[k]
    return w


def subsample(keys: torch.Tensor, train_idx: torch.Tensor, seed: int) -> torch.Tensor:
    """SUBY/SUBG's subset: walk a seeded permutation of ``train_idx`` and keep an example
    while its key's count (class for SUBY, group for SUBG) is below the smallest non-empty
    key's size. Returns the kept dataset indices in the walk's order."""
    train_idx = train_idx.long()
    if len(train_idx) == 0:
        raise TaskspaceError("subsample: the training set is empty")
    k = keys.long()[train_idx]
    counts = torch.bincount(k)
    target = int(counts[counts > 0].min())
    order = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(int(seed)))
    kept = torch.zeros_like(counts)
    keep = []
    for pos in order.tolist():
        key = int(k[pos])
        if int(kept[key]) < target:
            kept[key] += 1
            keep.append(pos)
    return train_idx[torch.tensor(keep, dtype=torch.long)]


def jtt_upsample(
    train_idx: torch.Tensor,
    errors: torch.Tensor,
    lambda_up: int,
    copies: Literal["total", "extra"] = "total",
) -> torch.Tensor:
    """JTT's upsampled training list: ``train_idx`` with every error example repeated so
    that it appears ``lambda_up`` times in total (``copies="total"``, the paper: ``N +
    (lambda_up - 1) |E|`` entries) or ``lambda_up + 1`` times (``"extra"``, mml-robustness's
    single-task code, which appends the error list ``lambda_up`` times)."""
    train_idx, errors = train_idx.long(), errors.long()
    if int(lambda_up) != lambda_up or lambda_up < 1:
        raise TaskspaceError(f"lambda_up must be an integer >= 1, got {lambda_up}")
    if not bool(torch.isin(errors, train_idx).all()):
        raise TaskspaceError("the JTT error set holds examples outside the training set")
    if len(torch.unique(errors)) != len(errors):
        raise TaskspaceError("the JTT error set lists an example twice")
    extra = int(lambda_up) - 1 if copies == "total" else int(lambda_up)
    return torch.cat([train_idx, errors.repeat(extra)])


def jtt_error_sets(
    stage1: Ensemble,
    dataset: ImageDataset,
    labels: torch.Tensor,
    train_idx: torch.Tensor,
    *,
    device: str | torch.device = "cpu",
) -> list[torch.Tensor]:
    """JTT's error sets, one per stage-1 model: the sorted dataset indices ``i`` of
    ``train_idx`` where the model's prediction differs from ``labels[i]`` (``pred !=
    label``; keyed by index, not by position in a shuffled loader)."""
    train_idx = train_idx.long()
    pred = predictions(predict_many(stage1, dataset, train_idx, device=device))  # [M, n]
    wrong = pred != labels.long()[train_idx][None]
    return [train_idx[w].sort().values for w in wrong]


def train_group_ids(
    grouping: Grouping, dataset: ImageDataset, groups: torch.Tensor | None = None
) -> torch.Tensor:
    """The training group ids ``[N]``: the grouping's own, or ``groups`` checked against
    it (one id per image, integers in ``[0, grouping.num_groups)``, so that the group
    counts, the balanced sampler and Group DRO's ``q`` keep their size)."""
    if groups is None:
        return grouping.groups(dataset)
    g = torch.as_tensor(groups)
    if g.dtype.is_floating_point or g.dtype.is_complex:
        raise TaskspaceError(f"training group ids must be integers, got {g.dtype}")
    g = g.long()
    if g.shape != (len(dataset),):
        raise TaskspaceError(
            f"training group ids must be [N] = [{len(dataset)}], got {tuple(g.shape)}"
        )
    if len(g) and (int(g.min()) < 0 or int(g.max()) >= grouping.num_groups):
        raise TaskspaceError(
            f"training group ids must lie in [0, {grouping.num_groups}) (the groups of "
            f"{grouping}), got [{int(g.min())}, {int(g.max())}]"
        )
    return g


def require_groups(
    cfg: MethodConfig, grouping: Grouping, counts: torch.Tensor, class_counts: torch.Tensor
) -> None:
    """Refuse a method that needs every training group (RWG, SUBG, Group DRO with the
    balanced sampler or the size adjustment) or every class (RWY, SUBY) when one is empty
    in the training set (the original silently fell back to other weights)."""
    need_groups = cfg.method in ("rwg", "subg") or (
        cfg.method == "dro" and (cfg.balanced or cfg.adjustment > 0)
    )
    if need_groups:
        empty = (counts == 0).nonzero().flatten().tolist()
        if empty:
            names = grouping.group_names()
            j = empty[0]
            raise TaskspaceError(
                f"{cfg.method.upper()} needs every group of {grouping} in the training set, "
                f"but group g{j} ({names[j]}) is empty; choose another grouping"
            )
    if cfg.method in ("rwy", "suby", "rwg", "subg"):
        empty = (class_counts == 0).nonzero().flatten().tolist()
        if empty:
            raise TaskspaceError(
                f"{cfg.method.upper()} needs both classes of {grouping.task} in the training "
                f"set, but class {grouping.task}={empty[0]} is empty"
            )


# ---------------------------------------------------------------------------------------
# evaluation during training


class _GroupStat(Metric):
    """One statistic of :class:`GroupMetrics` (``avg_acc``, ``g3_acc``, ...) for the
    ``Evaluate`` hook; the counts are computed once per set of logits and shared."""

    def __init__(self, shared: _GroupCounter, stat: str) -> None:
        self.shared, self.stat = shared, stat

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor, members: list[int]) -> torch.Tensor:
        gm = self.shared(logits, idx)
        if self.stat == "avg_acc":
            return gm.average
        if self.stat == "weighted_avg_acc":
            return gm.weighted_average
        if self.stat == "worst_group_acc":
            return gm.worst_group
        j = int(self.stat[1:].split("_", 1)[0])
        if self.stat.endswith("_acc"):
            return gm.acc[:, j]
        return gm.correct[:, j].double()


class _GroupCounter:
    """Group counts of the last logits seen; the logits are kept (not their ``id``), so a
    new evaluation can never be mistaken for the cached one."""

    def __init__(self, y: torch.Tensor, g: torch.Tensor, grouping: Grouping, p: torch.Tensor):
        self.y, self.g, self.grouping, self.p = y, g, grouping, p
        self._logits: torch.Tensor | None = None
        self._idx: torch.Tensor | None = None
        self._value: GroupMetrics | None = None

    def __call__(self, logits: torch.Tensor, idx: torch.Tensor) -> GroupMetrics:
        if self._value is None or self._logits is not logits or self._idx is not idx:
            correct, total = count_correct(
                predictions(logits).cpu(), self.y[idx], self.g[idx], self.grouping.num_groups
            )
            self._value = GroupMetrics(correct, total, self.grouping.group_class(), self.p)
            self._logits, self._idx = logits, idx
        return self._value


def _stat_names(num_groups: int) -> list[str]:
    names = ["avg_acc", "weighted_avg_acc", "worst_group_acc"]
    for j in range(num_groups):
        names += [f"g{j}_acc", f"g{j}_correct_counts"]
    return names


# ---------------------------------------------------------------------------------------
# results


@dataclass
class RobustResult:
    """One method trained with M seeds (one model per seed).

    ``ensemble``: the selected models; ``metrics[split]``: their :class:`GroupMetrics`
    under ``eval_grouping`` (val and test); ``history``: per-epoch rows (``model``,
    ``seed``, ``step``, ``epoch``, ``set``, ``metric``, ``value``) of both splits, metrics
    ``avg_acc``, ``weighted_avg_acc``, ``worst_group_acc``, ``g{j}_acc`` and
    ``g{j}_correct_counts``; ``best``: each model's selected ``(value, step)``;
    ``train_lists``: each model's training list where the method builds one (SUBY/SUBG
    subsets, JTT's upsampled lists); ``train_counts``: training-group counts. JTT adds
    ``stage1`` (an :class:`Ensemble`, reusable), ``error_sets`` and ``error_counts`` (per
    model and training group); Group DRO's final ``q`` is in
    ``ensemble.objective_state["q"]``.
    """

    method: str
    config: MethodConfig
    grouping: Grouping
    eval_grouping: Grouping
    seeds: list[int]
    ensemble: Ensemble
    metrics: dict[str, GroupMetrics]
    history: list[dict[str, Any]]
    best: dict[int, tuple[float, int]]
    train_counts: torch.Tensor
    train_lists: list[torch.Tensor] | None = None
    stage1: Ensemble | None = None
    error_sets: list[torch.Tensor] | None = None
    error_counts: torch.Tensor | None = None
    grid: list[dict[str, float]] | None = None

    def points(self) -> list[RobustResult]:
        """A grid result split into one result per point (itself when not a grid)."""
        if not self.grid:
            return [self]
        s = len(self.seeds) // len(self.grid)
        out = []
        for p, point in enumerate(self.grid):
            idx = list(range(p * s, (p + 1) * s))
            pick = {m: j for j, m in enumerate(idx)}
            out.append(
                dataclasses.replace(
                    self,
                    config=self.config.replace(**point),
                    seeds=[self.seeds[m] for m in idx],
                    ensemble=self.ensemble.select(idx),
                    metrics={k: v.select(idx) for k, v in self.metrics.items()},
                    history=[
                        {**r, "model": pick[r["model"]]} for r in self.history if r["model"] in pick
                    ],
                    best={pick[m]: v for m, v in self.best.items() if m in pick},
                    train_lists=None
                    if self.train_lists is None
                    else [self.train_lists[m] for m in idx],
                    stage1=None if self.stage1 is None else self.stage1.select(idx),
                    error_sets=None
                    if self.error_sets is None
                    else [self.error_sets[m] for m in idx],
                    error_counts=None if self.error_counts is None else self.error_counts[idx],
                    grid=None,
                )
            )
        return out

    def rows(self) -> list[dict[str, Any]]:
        """Per-model final rows (one per seed and split): ``method``, ``grouping``,
        ``seed``, ``split`` and :meth:`GroupMetrics.rows`'s columns."""
        out = []
        for split, gm in self.metrics.items():
            out += gm.rows(
                method=self.method,
                grouping=str(self.eval_grouping),
                seed=list(self.seeds),
                split=split,
            )
        return out


def _as_grouping(g: Grouping | str, dataset: ImageDataset) -> Grouping:
    if isinstance(g, Grouping):
        return g
    if dataset.attribute_names is None:
        raise TaskspaceError(f"dataset {dataset.name!r} has no attributes to group by")
    return parse_grouping(g, dataset.attribute_names)


def _load_stage1(stage1: Ensemble | str | Path) -> Ensemble:
    return stage1 if isinstance(stage1, Ensemble) else Ensemble.load(stage1)


def jtt_stage1(
    dataset: ImageDataset,
    grouping: Grouping | str,
    config: MethodConfig | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    model: str | None = None,
    model_kwargs: dict | None = None,
    preset: str = "reference",
    train_split: str = "train",
    save_to: str | Path | None = None,
    device: str | torch.device = "cpu",
    batched: bool | None = None,
    progress: bool = False,
    lrs: Sequence[float] | None = None,
    weight_decays: Sequence[float] | None = None,
) -> Ensemble:
    """JTT's stage 1: ERM for ``config.jtt_epochs`` epochs (the last parameters, no
    selection), one model per seed in one ``fit_many`` call; saved to ``save_to`` when
    given, so that stage 2 (``fit_robust(..., stage1=...)``) can reuse it. ``lrs`` /
    ``weight_decays``: per-model values (a hyperparameter grid)."""
    grouping = _as_grouping(grouping, dataset)
    cfg = config or method_config("jtt", preset)
    pre = PRESETS[preset]
    y = grouping.targets(dataset)
    seeds = [int(s) for s in seeds]
    ens = fit_many(
        model or pre.model,
        dataset,
        _labels(y, len(seeds), cfg.loss),
        cfg.recipe(epochs=cfg.jtt_epochs),
        seeds,
        order_seeds=[derive_seed(s, _ORDER) for s in seeds],
        train_idx=dataset.split(train_split),
        num_outputs=1 if cfg.loss == "bce" else 2,
        device=device,
        batched=batched,
        model_kwargs=dict(pre.model_kwargs if model_kwargs is None else model_kwargs),
        objective=_objective(cfg, grouping),
        progress=progress,
        lrs=lrs,
        weight_decays=weight_decays,
    )
    if save_to is not None:
        ens.save(save_to)
    return ens


def _labels(y: torch.Tensor, m: int, loss: str) -> torch.Tensor:
    labels = y.long()[None].expand(m, -1).contiguous()
    return labels.unsqueeze(-1) if loss == "bce" else labels


def _objective(cfg: MethodConfig, grouping: Grouping) -> Objective:
    if cfg.method == "dro":
        return GroupDRO(eta=cfg.eta_q, adjustment=cfg.adjustment, num_groups=grouping.num_groups)
    if cfg.loss == "bce":
        return MultiTask(task_loss="bce")
    return CrossEntropy()


@dataclass
class MethodParts:
    """What a method hands to ``fit_many``: sampler, objective, loss weights ``[M, N]``,
    groups ``[N]`` (Group DRO only: the other methods never see the groups), training
    indices (None where the sampler lists them), each model's training list (SUBY/SUBG
    subsets, JTT's upsampled lists), and the init and data-order seeds."""

    sampler: Sampler
    objective: Objective
    weights: torch.Tensor | None
    groups: torch.Tensor | None
    train_idx: torch.Tensor | None
    train_lists: list[torch.Tensor] | None
    init_seeds: list[int]
    order_seeds: list[int]


def method_parts(
    dataset: ImageDataset,
    grouping: Grouping | str,
    config: MethodConfig,
    seeds: Sequence[int],
    *,
    train_split: str = "train",
    error_sets: Sequence[torch.Tensor] | None = None,
    groups: torch.Tensor | None = None,
) -> MethodParts:
    """The engine parts of ``config.method`` for one model per seed (JTT's stage 2 needs
    the stage-1 ``error_sets``, one per seed). Refuses a grouping with an empty training
    group where the method needs every group (:func:`require_groups`).

    ``groups [N]``: group ids that replace the grouping's own for training (RWG, SUBG,
    Group DRO), e.g. groups inferred from a discovered task instead of an attribute
    (:func:`train_group_ids` checks them)."""
    grouping = _as_grouping(grouping, dataset)
    cfg, seeds = config, [int(s) for s in seeds]
    m = len(seeds)
    train_idx = dataset.split(train_split)
    y = grouping.targets(dataset)
    g = train_group_ids(grouping, dataset, groups)
    require_groups(
        cfg,
        grouping,
        group_counts(g[train_idx], grouping.num_groups),
        group_counts(y[train_idx], 2),
    )
    parts = MethodParts(
        sampler=Permutation(),
        objective=_objective(cfg, grouping),
        weights=None,
        groups=None,
        train_idx=train_idx,
        train_lists=None,
        init_seeds=list(seeds),
        order_seeds=[derive_seed(s, _ORDER) for s in seeds],
    )
    if cfg.method in ("rwy", "rwg"):
        keys = y if cfg.method == "rwy" else g
        w = rebalance_weights(keys, train_idx)
        if cfg.reweight == "sample":
            parts.sampler = WeightedWithReplacement(w, num_samples=len(train_idx))
        else:  # loss weights, scaled to mean 1 over train (the same lr means the same step)
            k = int((torch.bincount(keys[train_idx].long()) > 0).sum())
            parts.weights = (w / k).float()[None].expand(m, -1).contiguous()
    elif cfg.method in ("suby", "subg"):
        keys = y if cfg.method == "suby" else g
        lists = [subsample(keys, train_idx, derive_seed(s, _SUBSAMPLE)) for s in seeds]
        parts.sampler, parts.train_idx, parts.train_lists = IndexLists(lists), None, lists
    elif cfg.method == "dro":
        parts.groups = g
        if cfg.balanced:
            parts.sampler = GroupBalanced(num_samples=len(train_idx))
    elif cfg.method == "jtt":
        if error_sets is None or len(error_sets) != m:
            raise TaskspaceError(f"JTT's stage 2 needs one stage-1 error set per seed ({m})")
        lists = [jtt_upsample(train_idx, e, cfg.lambda_up, cfg.jtt_copies) for e in error_sets]
        parts.sampler, parts.train_idx, parts.train_lists = IndexLists(lists), None, lists
        parts.init_seeds = [derive_seed(s, _STAGE2) for s in seeds]  # a fresh model
    return parts


def fit_robust(
    dataset: ImageDataset,
    grouping: Grouping | str,
    method: str | MethodConfig = "erm",
    *,
    preset: str = "reference",
    seeds: Sequence[int] = (0, 1, 2),
    model: str | None = None,
    model_kwargs: dict | None = None,
    eval_grouping: Grouping | str | None = None,
    train_split: str = "train",
    val_split: str = "val",
    test_split: str | None = "test",
    select: Select = "worst",
    stage1: Ensemble | str | Path | None = None,
    stage1_save_to: str | Path | None = None,
    device: str | torch.device = "cpu",
    batched: bool | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
    grid: Sequence[Mapping[str, float]] | None = None,
    train_groups: torch.Tensor | None = None,
    **overrides: Any,
) -> RobustResult:
    """Train ``method`` with one model per seed in one batched ``fit_many`` call.

    Args:
        dataset: images with 0/1 ``attributes`` and ``attribute_names``, and the splits
            ``train_split``, ``val_split`` (and ``test_split``).
        grouping: the training grouping, ``"Task:Attr[,Attr2]"`` or a :class:`Grouping`:
            its target is the label; its groups drive RWG, SUBG and Group DRO.
        method: a method name (hyperparameters from ``preset`` with ``overrides``) or a
            :class:`MethodConfig`.
        preset: ``"reference"`` (CelebA ResNet-50, the faithful values) or ``"digits"``
            (CPU, coloured digits); also gives the default ``model`` and
            ``model_kwargs``.
        seeds: one model per seed; the seed sets its initialisation, data order and
            subsample.
        eval_grouping: the grouping of evaluation and model selection (default: the
            training grouping); its target must be the same attribute.
        select: ``"worst"`` (best validation worst-group accuracy), ``"avg"`` (best
            validation plain average) or ``"last"``, over every epoch end.
        stage1: JTT only: an existing stage-1 :class:`Ensemble` (or its saved path), one
            model for all seeds or one per seed; otherwise stage 1 is trained here (and
            saved to ``stage1_save_to`` when given).
        hooks: more engine hooks for the (stage-2) ``fit_many`` call (logging,
            checkpoints), after the evaluation hook.
        grid: learning-rate / weight-decay points (``[{"lr": 1e-3, "weight_decay":
            1e-4}, ...]``): one model per point and seed (point-major), all in the same
            batched call; :meth:`RobustResult.points` splits the result by point.
        train_groups: group ids ``[N]`` in ``[0, grouping.num_groups)`` that replace the
            training grouping's own for training only (RWG, SUBG, Group DRO, and the
            training group counts), e.g. groups inferred from a discovered task; the
            evaluation and selection still use ``eval_grouping`` (default: ``grouping``).
        overrides: :class:`MethodConfig` fields (``lr=``, ``epochs=``, ``lambda_up=``...).
    """
    grouping = _as_grouping(grouping, dataset)
    eval_g = grouping if eval_grouping is None else _as_grouping(eval_grouping, dataset)
    if eval_g.task != grouping.task:
        raise TaskspaceError(
            f"the evaluation grouping {eval_g} has another target than the training "
            f"grouping {grouping}"
        )
    if select not in ("worst", "avg", "last"):
        raise TaskspaceError(f"select must be 'worst', 'avg' or 'last', got {select!r}")
    if preset not in PRESETS:
        raise TaskspaceError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if isinstance(method, MethodConfig):
        cfg = method.replace(**overrides) if overrides else method
    else:
        cfg = method_config(method, preset, **overrides)
    pre = PRESETS[preset]
    model = model or pre.model
    kwargs = dict(pre.model_kwargs if model_kwargs is None else model_kwargs)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise TaskspaceError("fit_robust needs at least one seed")
    points = [cfg.replace(**p) for p in grid] if grid else [cfg]
    if grid and set().union(*grid) - {"lr", "weight_decay"}:
        raise TaskspaceError("a batched grid varies only lr and weight_decay; use fit_grid")
    lrs = [p.lr for p in points for _ in seeds] if grid else None
    wds = [p.weight_decay for p in points for _ in seeds] if grid else None
    seeds = [s for _ in points for s in seeds]
    m = len(seeds)

    train_idx = dataset.split(train_split)
    y = grouping.targets(dataset)
    g = train_group_ids(grouping, dataset, train_groups)
    counts = group_counts(g[train_idx], grouping.num_groups)
    require_groups(cfg, grouping, counts, group_counts(y[train_idx], 2))

    stage1_ens: Ensemble | None = None
    error_sets: list[torch.Tensor] | None = None
    error_counts: torch.Tensor | None = None
    if cfg.method == "jtt":
        if stage1 is None:
            stage1_ens = jtt_stage1(
                dataset,
                grouping,
                cfg,
                seeds,
                model=model,
                model_kwargs=kwargs,
                preset=preset,
                train_split=train_split,
                save_to=stage1_save_to,
                device=device,
                batched=batched,
                progress=progress,
                lrs=lrs,
                weight_decays=wds,
            )
        else:
            stage1_ens = _load_stage1(stage1)
        if len(stage1_ens) not in (1, m):
            raise TaskspaceError(
                f"the stage-1 ensemble has {len(stage1_ens)} models; JTT with {m} seeds "
                f"needs 1 or {m}"
            )
        error_sets = jtt_error_sets(stage1_ens, dataset, y, train_idx, device=device)
        if len(error_sets) == 1:
            error_sets = error_sets * m
        error_counts = torch.stack([group_counts(g[e], grouping.num_groups) for e in error_sets])
    parts = method_parts(
        dataset,
        grouping,
        cfg,
        seeds,
        train_split=train_split,
        error_sets=error_sets,
        groups=train_groups,
    )

    # evaluation on val/test under the evaluation grouping, selection on val
    ey, eg = eval_g.targets(dataset), eval_g.groups(dataset)
    p_train = eval_g.proportions(dataset, train_split)
    counter = _GroupCounter(ey, eg, eval_g, p_train)
    stats = {name: _GroupStat(counter, name) for name in _stat_names(eval_g.num_groups)}
    sets = {"val": dataset.split(val_split)}
    if test_split is not None:
        sets["test"] = dataset.split(test_split)
    sel = {"worst": ("val", "worst_group_acc"), "avg": ("val", "avg_acc"), "last": None}[select]
    hook = Evaluate(sets, stats, select=sel)

    ens = fit_many(
        model,
        dataset,
        _labels(y, m, cfg.loss),
        cfg.recipe(),
        parts.init_seeds,
        order_seeds=parts.order_seeds,
        train_idx=parts.train_idx,
        weights=parts.weights,
        num_outputs=1 if cfg.loss == "bce" else 2,
        device=device,
        chunk_size=chunk_size,
        batched=batched,
        model_kwargs=kwargs,
        groups=parts.groups,
        sampler=parts.sampler,
        objective=parts.objective,
        hooks=[hook, *hooks],
        progress=progress,
        lrs=lrs,
        weight_decays=wds,
    )
    history = [{**r, "seed": seeds[r["model"]]} for r in hook.history]
    metrics = {
        name: evaluate_ensemble(ens, dataset, eval_g, idx, train_proportions=p_train, device=device)
        for name, idx in sets.items()
    }
    return RobustResult(
        method=cfg.method,
        config=cfg,
        grouping=grouping,
        eval_grouping=eval_g,
        seeds=seeds,
        ensemble=ens,
        metrics=metrics,
        history=history,
        best=dict(hook.best),
        train_counts=counts,
        train_lists=parts.train_lists,
        stage1=stage1_ens,
        error_sets=error_sets,
        error_counts=error_counts,
        grid=[dict(p) for p in grid] if grid else None,
    )


def fit_grid(
    dataset: ImageDataset,
    grouping: Grouping | str,
    method: str | MethodConfig,
    points: Sequence[Mapping[str, Any]],
    **kwargs: Any,
) -> list[RobustResult]:
    """:func:`fit_robust` at every hyperparameter point (e.g. ``[{"lr": 1e-3,
    "weight_decay": 1e-4}, ...]``), one result per point.

    Points that vary only the learning rate and weight decay train as ONE batched
    ``fit_many`` call over points x seeds (per-model hyperparameters); other points train
    one call each (all seeds of a point batched)."""
    if points and not set().union(*points) - {"lr", "weight_decay"}:
        return fit_robust(dataset, grouping, method, grid=points, **kwargs).points()
    return [fit_robust(dataset, grouping, method, **kwargs, **dict(p)) for p in points]
