"""TAG inter-task affinity and gradient cosine similarity (CS), measured while training.

Fifty et al. (NeurIPS 2021, "Efficiently Identifying Task Groupings"): train all tasks in
one network and, at a step with batch X and shared parameters theta_s, take for each
*source* i a lookahead step of the shared parameters on i's loss alone, heads fixed,

    theta'_s = theta_s - lr * grad_{theta_s} L_i(X)            (``lookahead="sgd"``)

and score how it changes every *target* j's loss on the same batch,

    Z[i -> j] = 1 - L_j(X; theta'_s, theta_j) / L_j(X; theta_s, theta_j)

(Z > 0: i helps j), divided by the current lr (``scale_by_lr=True``, both originals).
CS scores the cosine of the per-task gradients over the shared kernels instead. Both are
:class:`~taskspace.engine.TaskWeighting` objects that wrap an inner weighting doing the
actual training step (default: equal weights, TAG's ``mtl`` method), so they train
through ``fit_many`` with ``MultiTask(weighting=TagAffinity(...))``; one forward graph
per step serves the n extra per-task gradients (``retain_graph``) and the step itself,
plus n no-grad forwards for TAG's lookahead.

Switches (``[faithful]`` marks the originals' value; defaults are named per switch):

- ``lookahead``: ``"sgd"`` (default, the paper's definition); ``"optimizer"`` mirrors the
  optimiser's next step with g_i as the gradient: SGD with momentum ``theta' = theta -
  lr * (mu * buf + g_i)`` (+ weight decay, Nesterov as the recipe), plain on the first
  step [CelebA notebook, Keras SGD: ``theta + (mu * v - lr * g)``; the two agree while the
  lr is constant; here the engine's torch-style buffer is mirrored, as that is the step
  the training takes]; ``"taskonomy_bug"``: plain SGD plus weight decay, ``theta - lr *
  (g_i + wd * theta)`` [the Taskonomy patch, whose momentum buffer lookup never finds the
  buffer].
- ``scale_by_lr``: divide Z by the current lr (default True [both]).
- ``every``: compute on every k-th step of each epoch (the epoch's first step included;
  default 1 [CelebA]; 10 [Taskonomy]).
- ``order``: sources: ``1`` (default [CelebA's ``order=1``]): the tasks plus their sum;
  ``-1``: every non-empty subset (the flag's default there, 2^n - 1 forwards); ``0``: the
  tasks only. A subset's gradient is the sum of its members' (one gradient per task).
- ``shared``: which shared tensors the lookahead steps: ``"trunk"`` (default: every
  parameter outside the heads, BN included [CelebA]) or a sequence of parameter-name
  prefixes (Taskonomy's ``encoder_only``: the rest of the trunk is not stepped).
- ``bn_lookahead``: ``"functional"`` (default: batch statistics, running buffers untouched
  [CelebA]) or ``"train_mode_mutating"`` (running statistics updated once per lookahead
  forward, n extra times per step [Taskonomy]).

Aggregation: per model, the epoch's value is ``sum Z / N`` with N the steps of the epoch
where Z was computed (per source and target: a target with no labelled example in a batch
(:data:`~taskspace.engine.objectives.MISSING`) gives no Z there and is not counted); over
epochs :func:`aggregate_epochs` sums (``epoch_agg="sum"`` [both]) or averages (``"mean"``;
they select identically) after dropping the last ``drop_after_best`` epochs (10 [CelebA]:
its early stopping restores the epoch 10 before the last, and the table drops the epochs
after it; default 0).

State (one row per model in the objective state, so the batched and the per-model paths
agree and checkpoints keep it): ``{tag,cs}_epoch_sum / _epoch_count [M, S, T]``, ``_last
[M, S, T]`` (the last computed step's scores), ``_computed [M]`` (steps computed),
``_epoch_step [M]``, ``_loss_sum / _loss_count [M, T]`` (the epoch's per-task training
losses). :class:`AffinityHistory` (a hook) records each epoch's means. Matrices are
``Z[source, target]``: row i, column j is i's effect on j (the diagonal is kept and
ignored by selection); "onto t from o" reads ``Z[o, t]``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.engine import (
    Batch,
    Ensemble,
    FitData,
    Hook,
    MultiTask,
    Recipe,
    SharedParams,
    StaticWeights,
    TaskWeighting,
    fit_many,
    get_recipe,
)
from taskspace.engine.hooks import epoch_ends
from taskspace.engine.objectives import MISSING, ObjectiveState
from taskspace.errors import TaskspaceError
from taskspace.tasks import TaskSet

__all__ = [
    "DEFAULT_RECIPE",
    "LOOKAHEADS",
    "AffinityHistory",
    "AffinityResult",
    "GradientCosine",
    "TagAffinity",
    "affinity_sources",
    "aggregate_epochs",
    "task_affinity",
]

LOOKAHEADS = ("sgd", "optimizer", "taskonomy_bug")
EPOCH_AGGS = ("sum", "mean")
BN_LOOKAHEADS = ("functional", "train_mode_mutating")
KINDS = ("tag", "cs")
MAX_SUBSET_TASKS = 12

#: ``task_affinity``'s default training: SGD with momentum (as both originals), a CPU-sized
#: batch and lr (CelebA used lr 5e-4 and batch 256 at 64x64).
DEFAULT_RECIPE = Recipe(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128, epochs=10)


def affinity_sources(num_tasks: int, order: int = 1) -> list[tuple[int, ...]]:
    """The sources (tuples of task indices) for ``order`` 1, -1 or 0: the single tasks
    first, then the sum of all tasks (1) or every subset of 2 or more by size (-1)."""
    if order not in (1, -1, 0):
        raise TaskspaceError(f"affinity order must be 1, -1 or 0, got {order!r}")
    if num_tasks < 1:
        raise TaskspaceError("affinity needs at least one task")
    singles: list[tuple[int, ...]] = [(t,) for t in range(num_tasks)]
    if order == 0:
        return singles
    if order == 1:
        return [*singles, tuple(range(num_tasks))]
    if num_tasks > MAX_SUBSET_TASKS:
        raise TaskspaceError(
            f"order=-1 with {num_tasks} tasks needs {2**num_tasks - 1} lookaheads per step; "
            f"use order=1 (at most {MAX_SUBSET_TASKS} tasks for all subsets)"
        )
    subsets = [
        c for k in range(2, num_tasks + 1) for c in itertools.combinations(range(num_tasks), k)
    ]
    return singles + subsets


def _source_matrix(sources: Sequence[tuple[int, ...]], num_tasks: int) -> torch.Tensor:
    """``[S, T]`` 0/1: which tasks each source sums."""
    m = torch.zeros(len(sources), num_tasks)
    for s, members in enumerate(sources):
        m[s, list(members)] = 1.0
    return m


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``[M]`` -> ``[M, 1, ...]`` in ``like``'s dtype and device."""
    return v.to(like.device, like.dtype).view(-1, *[1] * (like.dim() - 1))


@dataclass(frozen=True, eq=False)
class _Recorder(TaskWeighting):
    """Shared machinery: per-epoch accumulation of a ``[M, S, T]`` score every ``every``
    steps, the inner weighting doing the step. Subclasses implement :meth:`scores`."""

    inner: TaskWeighting = field(default_factory=StaticWeights)
    every: int = 1
    order: int = 1
    shared: str | Sequence[str] = "trunk"

    prefix = "aff"

    def __post_init__(self) -> None:
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise TaskspaceError(f"affinity every must be an integer >= 1, got {self.every!r}")
        affinity_sources(2, self.order)  # validates the order
        if isinstance(self.shared, str) and self.shared != "trunk":
            raise TaskspaceError(
                f"shared must be 'trunk' or a list of parameter-name prefixes, got {self.shared!r}"
            )

    def key(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def sources(self, num_tasks: int) -> list[tuple[int, ...]]:
        return affinity_sources(num_tasks, self.order)

    def init_state(self, data: FitData, num_tasks: int, device: torch.device) -> ObjectiveState:
        state = dict(self.inner.init_state(data, num_tasks, device))
        m, s = data.num_models, len(self.sources(num_tasks))
        f64 = torch.float64
        for name in ("epoch_sum", "epoch_count", "last"):
            state[self.key(name)] = torch.zeros(m, s, num_tasks, dtype=f64, device=device)
        for name in ("loss_sum", "loss_count"):
            state[self.key(name)] = torch.zeros(m, num_tasks, dtype=f64, device=device)
        state[self.key("computed")] = torch.zeros(m, dtype=torch.long, device=device)
        state[self.key("epoch_step")] = torch.zeros(m, dtype=torch.long, device=device)
        return state

    def weights(self, losses: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        return self.inner.weights(losses, batch, state)

    def stepped(self, shared: SharedParams) -> list[int]:
        """Positions of the shared tensors the scores use."""
        if isinstance(self.shared, str):
            return list(range(len(shared.tensors)))
        prefixes = tuple(self.shared)
        keep = [i for i, n in enumerate(shared.names) if n.startswith(prefixes)]
        if not keep:
            raise TaskspaceError(
                f"no shared parameter starts with {list(prefixes)}; shared ones: "
                f"{', '.join(shared.names[:6])}{', ...' if len(shared.names) > 6 else ''}"
            )
        return keep

    def scores(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, num_tasks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores, valid)``, both ``[M, S, T]`` (``valid`` bool)."""
        raise NotImplementedError

    def backward(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: ObjectiveState
    ) -> torch.Tensor:
        if not shared.tensors:
            raise TaskspaceError(
                f"{type(self).__name__} needs shared parameters; this model has no trunk"
            )
        k = self.key
        dev = state[k("computed")].device
        rows = torch.tensor(batch.members, device=dev)
        act = batch.active.to(dev).bool()
        start = batch.epoch_start.to(dev).bool() & act
        for name in ("epoch_sum", "epoch_count", "loss_sum", "loss_count", "epoch_step"):
            v = state[k(name)]
            old = v[rows]
            v[rows] = torch.where(_bcast(start, old).bool(), torch.zeros_like(old), old)
        y = batch.y if batch.y.dim() == 3 else batch.y.unsqueeze(-1)
        labelled = (y != MISSING).any(1).to(dev) & act[:, None]  # [M, T]
        det = losses.detach().to(dev, torch.float64)
        state[k("loss_sum")][rows] += torch.where(labelled, det, torch.zeros_like(det))
        state[k("loss_count")][rows] += labelled.double()
        due = act & (state[k("epoch_step")][rows] % self.every == 0)
        if bool(due.any()):
            z, valid = self.scores(losses, shared, batch, losses.shape[1])
            z, valid = z.to(dev, torch.float64), valid.to(dev) & due[:, None, None]
            state[k("epoch_sum")][rows] += torch.where(valid, z, torch.zeros_like(z))
            state[k("epoch_count")][rows] += valid.double()
            last = state[k("last")]
            last[rows] = torch.where(due[:, None, None], z, last[rows])
            state[k("computed")][rows] += due.long()
        state[k("epoch_step")][rows] += act.long()
        return self.inner.backward(losses, shared, batch, state)


def _sub(shared: SharedParams, keep: list[int]) -> SharedParams:
    return SharedParams(
        [shared.tensors[i] for i in keep], shared.stacked, [shared.names[i] for i in keep]
    )


def _source_grads(
    grads: list[list[torch.Tensor]], sources: Sequence[tuple[int, ...]]
) -> list[list[torch.Tensor]]:
    """Each source's gradient per tensor: the sum of its tasks' gradients."""
    return [
        [
            sum((grads[t][p] for t in members[1:]), grads[members[0]][p])
            for p in range(len(grads[0]))
        ]
        for members in sources
    ]


@dataclass(frozen=True, eq=False)
class TagAffinity(_Recorder):
    """TAG's lookahead inter-task affinity ``Z[source, target]`` (module docstring).

    Args:
        inner: the weighting that trains (default equal weights: TAG's ``mtl`` step).
        every: compute on every ``every``-th step of each epoch (default 1).
        order: sources ``1`` (tasks + their sum, default), ``-1`` (all subsets), ``0``.
        shared: ``"trunk"`` (default) or parameter-name prefixes (Taskonomy's encoder only).
        lookahead: ``"sgd"`` (default), ``"optimizer"`` or ``"taskonomy_bug"``.
        scale_by_lr: divide by the current lr (default True, faithful).
        bn_lookahead: ``"functional"`` (default) or ``"train_mode_mutating"``.
    """

    lookahead: Literal["sgd", "optimizer", "taskonomy_bug"] = "sgd"
    scale_by_lr: bool = True
    bn_lookahead: Literal["functional", "train_mode_mutating"] = "functional"

    prefix = "tag"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lookahead not in LOOKAHEADS:
            raise TaskspaceError(
                f"lookahead must be one of {', '.join(LOOKAHEADS)}, got {self.lookahead!r}"
            )
        if self.bn_lookahead not in BN_LOOKAHEADS:
            raise TaskspaceError(
                f"bn_lookahead must be one of {', '.join(BN_LOOKAHEADS)}, got {self.bn_lookahead!r}"
            )

    def _step(
        self,
        shared: SharedParams,
        keep: list[int],
        theta: list[torch.Tensor],
        g: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        """The stepped tensors' lookahead values for source gradient ``g`` (``keep`` order)."""
        if shared.lrs is None:
            raise TaskspaceError("TagAffinity needs the trainer's learning rates (fit_many)")
        out = []
        bufs = shared.momentum_buffers() if shared.momentum_buffers is not None else None
        recipe = shared.recipe
        if self.lookahead == "optimizer" and (recipe is None or recipe.optimizer != "sgd"):
            raise TaskspaceError(
                "lookahead='optimizer' mirrors SGD (momentum, weight decay, Nesterov); this "
                "fit's optimiser is not SGD: use lookahead='sgd'"
            )
        for pos, th, gi in zip(keep, (theta[i] for i in keep), g):
            lr = _bcast(shared.lrs, th)
            wd = None if shared.weight_decays is None else _bcast(shared.weight_decays, th)
            if self.lookahead == "sgd":
                d = gi
            elif self.lookahead == "taskonomy_bug":
                d = gi if wd is None else gi + wd * th
            else:
                assert recipe is not None
                d = gi if wd is None else gi + wd * th
                if recipe.momentum:
                    buf = None if bufs is None else bufs[pos]
                    b = d if buf is None else recipe.momentum * buf.to(d.dtype) + d
                    d = d + recipe.momentum * b if recipe.nesterov else b
            out.append(th - lr * d)
        return out

    def scores(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, num_tasks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = self.stepped(shared)
        grads = _sub(shared, keep).task_grads(losses)  # n gradients, graph kept
        theta = shared.values()
        old = losses.detach()
        valid_t = old > 0  # [M, T]: a target with no labelled example has loss 0
        mutate = self.bn_lookahead == "train_mode_mutating"
        zs = []
        for g in _source_grads(grads, self.sources(num_tasks)):
            replacement = list(theta)
            for pos, v in zip(keep, self._step(shared, keep, theta, g)):
                replacement[pos] = v
            new = shared.evaluate(replacement, mutate_buffers=mutate)
            z = 1.0 - new / torch.where(valid_t, old, torch.ones_like(old))
            if self.scale_by_lr:
                assert shared.lrs is not None
                z = z / shared.lrs.to(z.device, z.dtype)[:, None]
            zs.append(torch.where(valid_t, z, torch.zeros_like(z)))
        z_all = torch.stack(zs, 1)  # [M, S, T]
        return z_all, valid_t[:, None, :].expand_as(z_all)


@dataclass(frozen=True, eq=False)
class GradientCosine(_Recorder):
    """Cosine similarity of the per-task gradients over the shared kernels (parameters with
    more than one dimension per model), every ``every`` steps: ``[source, target]``,
    symmetric over the single tasks, diagonal exactly 1 [CelebA ``cosine_sim_train_step``,
    whose sources include the sum of all tasks, as ``order=1`` here]. A task whose gradient
    is zero (no labelled example in the batch) gives no score there."""

    prefix = "cs"

    def scores(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, num_tasks: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keep = self.stepped(shared)
        lead = 1 if shared.stacked else 0
        kernels = [i for i in keep if shared.tensors[i].dim() - lead > 1]
        if not kernels:
            raise TaskspaceError("GradientCosine needs shared kernels (parameters with ndim > 1)")
        grads = _sub(shared, kernels).task_grads(losses)
        flat = torch.stack([torch.cat([g.flatten(1) for g in per], 1) for per in grads], 1)
        srcs = self.sources(num_tasks)
        mix = _source_matrix(srcs, num_tasks).to(flat.device, flat.dtype)
        src = torch.einsum("st,mtp->msp", mix, flat)  # [M, S, P]
        dots = torch.einsum("msp,mtp->mst", src, flat)
        ns, nt = src.norm(dim=2), flat.norm(dim=2)
        denom = ns[:, :, None] * nt[:, None, :]
        valid = denom > 0
        cos = torch.where(valid, dots / torch.where(valid, denom, torch.ones_like(denom)), 0.0)
        for t in range(num_tasks):  # the diagonal: exactly 1
            cos[:, t, t] = 1.0
            valid[:, t, t] = True
        return cos, valid


# ---------------------------------------------------------------------------------------
# per-epoch history


def _task_losses(
    objective: MultiTask, logits: torch.Tensor, y: torch.Tensor, members: list[int]
) -> torch.Tensor:
    """``objective.task_losses`` of logits ``[M, n, outputs]`` against labels ``[M, n, T]``."""
    m = len(members)
    batch = Batch(
        members=members,
        idx=torch.zeros(m, y.shape[1], dtype=torch.long),
        x=torch.empty(0),
        y=y.to(logits.device),
        w=None,
        groups=None,
        shared=True,
        step=0,
        active=torch.ones(m, dtype=torch.bool),
        epoch_start=torch.zeros(m, dtype=torch.bool),
    )
    return objective.task_losses(logits.float(), batch)


class AffinityHistory(Hook):
    """Records, at each model's epoch ends (and its last step), the epoch's mean scores
    ``[S, T]`` (``sum / count`` of the objective state, 0 where nothing was counted), its
    mean per-task training loss ``[T]`` (means of per-batch means) and, with ``val_idx``,
    the per-task validation loss ``[T]`` (eval mode). Continued by checkpoints."""

    def __init__(
        self, prefix: str, val_idx: torch.Tensor | None = None, batch_size: int = 1024
    ) -> None:
        self.prefix, self.batch_size = prefix, int(batch_size)
        self.val_idx = None if val_idx is None else torch.as_tensor(val_idx).long()
        self.scores: dict[int, list[torch.Tensor]] = {}
        self.train_losses: dict[int, list[torch.Tensor]] = {}
        self.val_losses: dict[int, list[torch.Tensor]] = {}

    def on_step_end(self, ctx: Any) -> None:
        batch = ctx.batch
        lengths = ctx.batcher.epoch_lengths[ctx.members]
        due = epoch_ends(ctx.step, ctx.recipe.batch_size, lengths) | (
            ctx.chunk_totals == ctx.step + 1
        )
        due &= batch.active.cpu()
        if not bool(due.any()):
            return
        st = ctx.objective_state
        rows = torch.tensor(ctx.members, device=st[f"{self.prefix}_epoch_sum"].device)
        total, count = st[f"{self.prefix}_epoch_sum"][rows], st[f"{self.prefix}_epoch_count"][rows]
        mean = torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
        lsum, lcount = st[f"{self.prefix}_loss_sum"][rows], st[f"{self.prefix}_loss_count"][rows]
        loss = torch.where(
            lcount > 0, lsum / lcount.clamp_min(1), torch.full_like(lsum, float("nan"))
        )
        val = None
        if self.val_idx is not None:
            logits = ctx.predict(self.val_idx, self.batch_size)
            labels = ctx.data.labels
            y = labels[torch.tensor(ctx.members)][:, self.val_idx]
            y = y if y.dim() == 3 else y.unsqueeze(-1)
            val = _task_losses(ctx.objective, logits, y, list(ctx.members)).double().cpu()
        for j in due.nonzero().flatten().tolist():
            m = ctx.members[j]
            self.scores.setdefault(m, []).append(mean[j].cpu().clone())
            self.train_losses.setdefault(m, []).append(loss[j].cpu().clone())
            if val is not None:
                self.val_losses.setdefault(m, []).append(val[j].clone())

    @staticmethod
    def _stack(d: dict[int, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {str(m): torch.stack(v) for m, v in sorted(d.items())}

    def per_epoch(self, model: int) -> torch.Tensor:
        """Model ``model``'s per-epoch scores ``[E, S, T]``."""
        return torch.stack(self.scores[model])

    def state_dict(self) -> dict[str, Any]:
        return {
            "scores": self._stack(self.scores),
            "train_losses": self._stack(self.train_losses),
            "val_losses": self._stack(self.val_losses),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def unstack(d: dict[str, torch.Tensor]) -> dict[int, list[torch.Tensor]]:
            return {int(m): list(v.unbind(0)) for m, v in d.items()}

        self.scores = unstack(state["scores"])
        self.train_losses = unstack(state["train_losses"])
        self.val_losses = unstack(state["val_losses"])


def aggregate_epochs(
    per_epoch: torch.Tensor, epoch_agg: str = "sum", drop_after_best: int = 0
) -> torch.Tensor:
    """Aggregate per-epoch matrices ``[..., E, S, T]`` over epochs: drop the last
    ``drop_after_best`` epochs (CelebA: 10, the epochs after the restored best), then
    ``"sum"`` (the shipped tables) or ``"mean"``."""
    if epoch_agg not in EPOCH_AGGS:
        raise TaskspaceError(f"epoch_agg must be 'sum' or 'mean', got {epoch_agg!r}")
    if isinstance(drop_after_best, bool) or not isinstance(drop_after_best, int):
        raise TaskspaceError(f"drop_after_best must be an integer >= 0, got {drop_after_best!r}")
    e = per_epoch.shape[-3]
    if drop_after_best < 0 or drop_after_best >= e:
        raise TaskspaceError(
            f"drop_after_best={drop_after_best} leaves no epoch of {e}; use 0 <= value < {e}"
        )
    kept = per_epoch[..., : e - drop_after_best, :, :]
    return kept.sum(-3) if epoch_agg == "sum" else kept.mean(-3)


# ---------------------------------------------------------------------------------------
# the notebook-level function


@dataclass
class AffinityResult:
    """Affinities of T tasks from one multi-task training per seed.

    ``matrix [T, T]``: ``Z[source, target]`` over the single tasks, aggregated over epochs
    and averaged over seeds (row i = i's effect on every task; the diagonal is kept and
    ignored by selection; "onto t from o" is ``matrix[o, t]``); ``per_seed [K, T, T]``;
    ``per_epoch [K, E, T, T]`` (each epoch's mean, before ``drop_after_best``);
    ``sources`` names every source row of ``source_matrix [S, T]`` (mean over seeds) and
    ``per_epoch_sources [K, E, S, T]``: the single tasks then, with ``order=1``, their sum
    (names joined by ``+``); ``train_losses [K, E, T]`` (epoch means of the per-batch
    training losses) and ``val_losses [K, E, T]`` (eval mode, with ``val_split``);
    ``config``: every switch and the recipe.
    """

    kind: str
    names: list[str]
    sources: list[str]
    matrix: torch.Tensor
    per_seed: torch.Tensor
    per_epoch: torch.Tensor
    source_matrix: torch.Tensor
    per_epoch_sources: torch.Tensor
    train_losses: torch.Tensor
    val_losses: torch.Tensor | None
    seeds: list[int]
    config: dict[str, Any]
    ensemble: Ensemble | None = None

    def rows(self) -> list[dict[str, Any]]:
        """Long-form rows of the per-epoch scores: ``seed``, ``epoch`` (1-based),
        ``source``, ``target``, ``value``."""
        out = []
        k, e, s, t = self.per_epoch_sources.shape
        for a in range(k):
            for b in range(e):
                for i in range(s):
                    for j in range(t):
                        out.append(
                            {
                                "seed": self.seeds[a],
                                "epoch": b + 1,
                                "source": self.sources[i],
                                "target": self.names[j],
                                "value": float(self.per_epoch_sources[a, b, i, j]),
                            }
                        )
        return out


def _labels_and_names(
    dataset: ImageDataset, labels: torch.Tensor | TaskSet, names: Sequence[str] | None
) -> tuple[torch.Tensor, list[str]]:
    if isinstance(labels, TaskSet):
        y, default = labels.labels.T, list(labels.names)
    elif isinstance(labels, torch.Tensor):
        y = labels
        default = [f"task{t}" for t in range(y.shape[1])] if y.dim() == 2 else []
    else:
        raise TaskspaceError(
            f"labels must be a tensor [images, tasks] or a TaskSet, got {type(labels).__name__}"
        )
    if y.dim() != 2 or y.shape[0] != len(dataset):
        raise TaskspaceError(
            f"labels must be [images, tasks] with {len(dataset)} images, got {tuple(y.shape)}"
        )
    if y.dtype.is_floating_point:
        raise TaskspaceError("labels must be integer class ids (or -1 for a missing label)")
    if y.shape[1] < 2:
        raise TaskspaceError(f"task affinity needs at least 2 tasks, got {y.shape[1]}")
    out = default if names is None else [str(n) for n in names]
    if len(out) != y.shape[1] or len(set(out)) != len(out):
        raise TaskspaceError(f"need {y.shape[1]} distinct task names, got {out}")
    return y.long(), out


def task_affinity(
    dataset: ImageDataset,
    labels: torch.Tensor | TaskSet,
    *,
    kind: Literal["tag", "cs"] = "tag",
    names: Sequence[str] | None = None,
    model: str = "convnet",
    model_kwargs: dict | None = None,
    recipe: Recipe | str | None = None,
    epochs: float | None = None,
    seeds: Sequence[int] = (0,),
    every: int = 1,
    lookahead: Literal["sgd", "optimizer", "taskonomy_bug"] = "sgd",
    scale_by_lr: bool = True,
    epoch_agg: Literal["sum", "mean"] = "sum",
    drop_after_best: int = 0,
    order: int = 1,
    shared: str | Sequence[str] = "trunk",
    bn_lookahead: Literal["functional", "train_mode_mutating"] = "functional",
    inner: TaskWeighting | None = None,
    task_loss: Literal["ce", "bce"] = "ce",
    split: str = "train",
    val_split: str | None = None,
    device: str | torch.device = "cpu",
    batched: bool | None = None,
    chunk_size: int | None = None,
    progress: bool = False,
    hooks: Sequence[Hook] = (),
) -> AffinityResult:
    """TAG (``kind="tag"``) or CS (``"cs"``) affinities of the tasks in ``labels``.

    Trains one multi-task network per seed (all seeds in one ``fit_many`` call), one head
    per task on the model's trunk, with ``MultiTask(weighting=TagAffinity(...))`` or
    ``GradientCosine(...)`` (module docstring for the switches).

    Args:
        dataset: the images (and splits).
        labels: ``[images, tasks]`` class ids (``-1``: no label for that task there), or a
            :class:`~taskspace.tasks.TaskSet` (names from it).
        names: task names (default the TaskSet's, or ``task0, task1, ...``).
        model, model_kwargs: the network (registry name); its head is split per task.
        recipe: a :class:`Recipe` or preset name (default :data:`DEFAULT_RECIPE`: SGD,
            momentum 0.9, lr 0.05, batch 128, 10 epochs); ``epochs`` overrides its epochs.
        seeds: one network per seed; ``matrix`` is the mean over seeds.
        every, lookahead, scale_by_lr, order, shared, bn_lookahead: the switches (TAG;
            CS uses ``every``, ``order`` and ``shared``).
        epoch_agg, drop_after_best: aggregation over epochs (:func:`aggregate_epochs`).
        inner: the weighting that trains (default equal weights).
        task_loss: ``"ce"`` (C-way cross-entropy per task, as TAG's CelebA) or ``"bce"``.
        split, val_split: training split; optional split for per-epoch validation losses.
        hooks: more engine hooks (e.g. a checkpoint, for a resumable run).
    """
    if kind not in KINDS:
        raise TaskspaceError(f"kind must be 'tag' or 'cs', got {kind!r}")
    y, names_l = _labels_and_names(dataset, labels, names)
    seeds_l = [int(s) for s in seeds]
    if not seeds_l or len(set(seeds_l)) != len(seeds_l):
        raise TaskspaceError(f"seeds must be distinct and at least one, got {seeds_l}")
    if epoch_agg not in EPOCH_AGGS:
        raise TaskspaceError(f"epoch_agg must be 'sum' or 'mean', got {epoch_agg!r}")
    rec = get_recipe(DEFAULT_RECIPE if recipe is None else recipe, epochs=epochs)
    if kind == "tag" and lookahead == "optimizer" and rec.optimizer != "sgd":
        raise TaskspaceError(
            f"lookahead='optimizer' mirrors SGD; the recipe's optimiser is {rec.optimizer!r}: "
            "use lookahead='sgd' or an SGD recipe"
        )
    common: dict[str, Any] = dict(
        inner=inner or StaticWeights(), every=every, order=order, shared=shared
    )
    weighting: _Recorder
    if kind == "tag":
        weighting = TagAffinity(
            **common, lookahead=lookahead, scale_by_lr=scale_by_lr, bn_lookahead=bn_lookahead
        )
    else:
        weighting = GradientCosine(**common)
    objective = MultiTask(task_loss=task_loss, weighting=weighting)
    num_t = y.shape[1]
    srcs = weighting.sources(num_t)
    val_idx = None if val_split is None else dataset.split(val_split)
    history = AffinityHistory(weighting.prefix, val_idx)
    k = len(seeds_l)
    ens = fit_many(
        model,
        dataset,
        y[None].expand(k, -1, -1).contiguous(),
        rec,
        seeds_l,
        train_idx=dataset.split(split),
        objective=objective,
        hooks=[history, *hooks],
        device=device,
        batched=batched,
        chunk_size=chunk_size,
        model_kwargs=model_kwargs,
        progress=progress,
    )
    per_epoch_sources = torch.stack([history.per_epoch(m) for m in range(k)]).float()
    aggregated = aggregate_epochs(per_epoch_sources, epoch_agg, drop_after_best)  # [K, S, T]
    train_losses = torch.stack([torch.stack(history.train_losses[m]) for m in range(k)]).float()
    val_losses = None
    if val_idx is not None:
        val_losses = torch.stack([torch.stack(history.val_losses[m]) for m in range(k)]).float()
    config = {
        "kind": kind,
        "model": model,
        "model_kwargs": dict(model_kwargs or {}),
        "recipe": dataclasses.asdict(rec),
        "seeds": seeds_l,
        "every": every,
        "order": order,
        "shared": shared if isinstance(shared, str) else list(shared),
        "lookahead": lookahead if kind == "tag" else None,
        "scale_by_lr": scale_by_lr if kind == "tag" else None,
        "bn_lookahead": bn_lookahead if kind == "tag" else None,
        "epoch_agg": epoch_agg,
        "drop_after_best": drop_after_best,
        "inner": type(weighting.inner).__name__,
        "task_loss": task_loss,
        "split": split,
        "val_split": val_split,
    }
    return AffinityResult(
        kind=kind,
        names=names_l,
        sources=["+".join(names_l[t] for t in s) for s in srcs],
        matrix=aggregated[:, :num_t].mean(0),
        per_seed=aggregated[:, :num_t],
        per_epoch=per_epoch_sources[:, :, :num_t],
        source_matrix=aggregated.mean(0),
        per_epoch_sources=per_epoch_sources,
        train_losses=train_losses,
        val_losses=val_losses,
        seeds=seeds_l,
        config=config,
        ensemble=ens,
    )
