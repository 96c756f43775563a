"""Objectives: what each model minimises, given a batch's logits.

An objective maps ``(logits [M, B, outputs], batch)`` to one loss per model; the batch
carries labels, example weights, example indices and groups (:class:`~taskspace.engine.
batches.Batch`). Methods with state (Group DRO's ``q``, a loss-weighting method's initial
losses) keep it in a per-model state dict whose tensors have one row per model of the
whole fit; ``fit_many`` saves it in checkpoints and returns it as
``Ensemble.objective_state``. The engine calls :meth:`Objective.backward`, which by default
sums the active models' losses and back-propagates once (each model gets its own
gradient); objectives that need more (per-task gradients of the shared trunk) override it.

- :class:`CrossEntropy`: batch mean of ``w * CE`` (the default; with it, plain MLPs on a
  CPU train with the hand-written step of :mod:`taskspace.engine.mlp_step`);
- :class:`GroupDRO`: Sagawa et al.'s online group DRO over cross-entropy;
- :class:`MultiTask`: labels ``[M, N, T]``, one head per task on a shared trunk, per-task
  cross-entropy or BCE combined by a :class:`TaskWeighting` (:class:`StaticWeights`,
  :class:`LBTW`; LibMTL's ``backward(losses, shared_params)`` is the model for the rest);
  :func:`check_task_weights` is the reference's rule for static task weights. A label
  :data:`MISSING` (-1) means "no label for this task on this example": that task's batch
  loss is the mean over its labelled examples only (0 when the batch has none).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F

from taskspace.engine.batches import Batch, FitData
from taskspace.engine.recipe import Recipe
from taskspace.errors import TaskspaceError

__all__ = [
    "CrossEntropy",
    "GroupDRO",
    "LBTW",
    "MISSING",
    "MultiTask",
    "Objective",
    "ObjectiveState",
    "SharedParams",
    "StaticWeights",
    "TaskWeighting",
    "check_task_weights",
]

ObjectiveState = dict[str, torch.Tensor]
"""Per-model objective state: every tensor has one row per model of the fit."""

MISSING = -1
"""A :class:`MultiTask` label meaning "this example has no label for this task"."""

Forward = Callable[[list[torch.Tensor], bool], torch.Tensor]
"""``forward(replacement, mutate_buffers) -> logits [M, B, outputs]`` of the current batch
with the shared tensors replaced (see :attr:`SharedParams.forward`)."""


@dataclass
class SharedParams:
    """The trunk's parameters (every parameter outside the head) and their ``names``, as
    the leaves the optimiser steps: stacked ``[M, ...]`` on the batched path
    (``stacked``), one model's own tensors on the per-model loop. :meth:`task_grads`,
    :meth:`set_grads`, :meth:`values` and :meth:`evaluate` speak ``[M, ...]`` on both
    paths (M = 1 on the loop), so a gradient-based weighting is written once (and may pick
    a subset by name, e.g. GradNorm's last shared layer).

    What a lookahead method (TAG) needs about the step being taken; the trainers fill it
    in before every call of :meth:`Objective.backward` (``None`` elsewhere):

    - ``forward``: logits ``[M, B, outputs]`` of the current batch with the shared tensors
      replaced and the heads as they are (no gradient; BatchNorm with the batch's
      statistics; running buffers untouched unless ``mutate_buffers``, which updates them
      as one more train-mode forward would: Taskonomy's lookahead);
    - ``loss_of``: per-task losses ``[M, T]`` of such logits (set by :class:`MultiTask`);
    - ``lrs [M]``: each model's learning rate at this step; ``weight_decays [M]``;
      ``recipe``: the optimiser's settings;
    - ``momentum_buffers``: the SGD momentum buffers ``[M, ...]`` of the shared tensors
      (before this step's update; zero rows for models that have not stepped yet), or
      ``None`` per tensor when the optimiser has none yet.
    """

    tensors: list[torch.Tensor]
    stacked: bool
    names: list[str] = field(default_factory=list)
    forward: Forward | None = None
    loss_of: Callable[[torch.Tensor], torch.Tensor] | None = None
    lrs: torch.Tensor | None = None
    weight_decays: torch.Tensor | None = None
    recipe: Recipe | None = None
    momentum_buffers: Callable[[], list[torch.Tensor | None]] | None = None

    def task_grads(self, losses: torch.Tensor) -> list[list[torch.Tensor]]:
        """``grads[t][p]``: gradient ``[M, ...]`` of each model's task-``t`` loss
        (``losses [M, T]``) with respect to shared tensor ``p``; the graph is kept."""
        out = []
        for t in range(losses.shape[1]):
            raw = torch.autograd.grad(
                losses[:, t].sum(), self.tensors, retain_graph=True, allow_unused=True
            )
            gs = [torch.zeros_like(p) if g is None else g for p, g in zip(self.tensors, raw)]
            out.append(gs if self.stacked else [g.unsqueeze(0) for g in gs])
        return out

    def set_grads(self, grads: Sequence[torch.Tensor]) -> None:
        """Overwrite the shared tensors' ``.grad`` with ``grads`` (``[M, ...]`` each)."""
        for p, g in zip(self.tensors, grads):
            p.grad = g if self.stacked else g.squeeze(0)

    def values(self) -> list[torch.Tensor]:
        """The shared tensors' current values, detached, ``[M, ...]`` each."""
        return [p.detach() if self.stacked else p.detach().unsqueeze(0) for p in self.tensors]

    @torch.no_grad()
    def evaluate(
        self, replacement: Sequence[torch.Tensor], mutate_buffers: bool = False
    ) -> torch.Tensor:
        """Per-task losses ``[M, T]`` of the current batch with the shared tensors replaced
        by ``replacement`` (``[M, ...]`` each, in :attr:`names` order), the heads fixed."""
        if self.forward is None or self.loss_of is None:
            raise TaskspaceError(
                "this weighting re-evaluates the batch with changed shared parameters; it "
                "needs the MultiTask objective trained by fit_many"
            )
        return self.loss_of(self.forward(list(replacement), mutate_buffers))


def _active(batch: Batch, like: torch.Tensor) -> torch.Tensor:
    return batch.active.to(like.device, like.dtype)


class Objective:
    """Base class. Subclasses implement :meth:`loss`; stateful ones :meth:`init_state`.
    ``missing_labels``: whether labels :data:`MISSING` (-1) are accepted (``fit_many``
    refuses negative labels otherwise)."""

    missing_labels: ClassVar[bool] = False

    def check(self, labels: torch.Tensor, groups: torch.Tensor | None) -> None:
        """Raise :class:`TaskspaceError` if the fit's labels or groups do not suit."""
        if labels.dim() != 2:
            raise TaskspaceError(
                f"{type(self).__name__} needs labels [models, images], got "
                f"{tuple(labels.shape)}; use MultiTask for labels [models, images, tasks]"
            )

    def num_tasks(self, labels: torch.Tensor) -> int:
        return 1

    def num_outputs(self, labels: torch.Tensor) -> int:
        """Outputs per model when ``fit_many`` is not told (classes in the labels)."""
        return int(labels.max()) + 1

    def init_state(self, data: FitData, device: torch.device) -> ObjectiveState:
        return {}

    def loss(self, logits: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        """Per-model loss ``[M]`` of ``logits [M, B, outputs]``; updates the members' rows
        of ``state`` for active members only."""
        raise NotImplementedError

    def backward(
        self, logits: torch.Tensor, batch: Batch, state: ObjectiveState, shared: SharedParams
    ) -> torch.Tensor:
        """Gradients into ``.grad`` (active models only); returns the detached losses."""
        losses = self.loss(logits, batch, state)
        (losses * _active(batch, losses)).sum().backward()
        return losses.detach()


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy: logits ``[..., C]``, y ``[...]`` -> ``[...]``."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="none").view_as(y)


@dataclass(frozen=True)
class CrossEntropy(Objective):
    """Batch mean of ``w * CE`` per model (``w`` = 1 without example weights)."""

    def per_example(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """``w * CE`` per example, ``[M, B]``."""
        ce = _cross_entropy(logits, batch.y)
        return ce if batch.w is None else ce * batch.w

    def loss(self, logits: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        return self.per_example(logits, batch).mean(dim=1)


def _need_groups(groups: torch.Tensor | None) -> torch.Tensor:
    if groups is None:
        raise TaskspaceError("GroupDRO needs fit_many(groups=...)")
    return groups


@dataclass(frozen=True)
class GroupDRO(CrossEntropy):
    """Online group DRO (Sagawa et al., ICLR 2020) over (weighted) cross-entropy.

    State ``q [M, G]``, uniform at the start. Each step, per model: ``l_g`` = the batch
    mean loss of group g's examples (0 for groups absent from the batch); ``q_g <- q_g *
    exp(eta * (l_g + adjustment / sqrt(n_g)))`` with ``n_g`` the group's count among the
    model's training examples (at least 1), then renormalised; the loss is
    ``sum_g q_g l_g`` with ``q`` (the updated one) held constant. Groups come from
    ``fit_many(groups=...)``; ``num_groups`` defaults to the largest group id + 1.
    """

    eta: float = 0.01
    adjustment: float = 0.0
    num_groups: int | None = None

    def check(self, labels: torch.Tensor, groups: torch.Tensor | None) -> None:
        super().check(labels, groups)
        if groups is None or groups.dim() != 2:
            raise TaskspaceError(
                "GroupDRO needs fit_many(groups=...) of shape [images] or [models, images]"
            )

    def init_state(self, data: FitData, device: torch.device) -> ObjectiveState:
        groups = _need_groups(data.groups).long()
        g = self.num_groups or int(groups.max()) + 1
        counts = torch.stack(
            [torch.bincount(groups[m, p], minlength=g)[:g] for m, p in enumerate(data.pools)]
        )
        q = torch.full((data.num_models, g), 1.0 / g)
        return {"q": q.to(device), "group_counts": counts.float().to(device)}

    def group_losses(
        self, per_example: torch.Tensor, groups: torch.Tensor, num_groups: int
    ) -> torch.Tensor:
        """Per-group batch mean ``[M, G]`` of ``per_example [M, B]``; 0 for absent groups."""
        onehot = F.one_hot(groups.long(), num_groups).to(per_example.dtype)  # [M, B, G]
        sums = torch.bmm(per_example.unsqueeze(1), onehot).squeeze(1)
        return sums / onehot.sum(1).clamp_min(1)

    def loss(self, logits: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        rows = torch.tensor(batch.members, device=state["q"].device)
        q_old = state["q"][rows]
        groups = _need_groups(batch.groups)
        l_g = self.group_losses(self.per_example(logits, batch), groups, q_old.shape[1])
        step = l_g.detach()
        if self.adjustment:
            step = step + self.adjustment / state["group_counts"][rows].clamp_min(1).sqrt()
        q = q_old * torch.exp(self.eta * step)
        q = q / q.sum(1, keepdim=True)
        q = torch.where(_active(batch, q).bool()[:, None], q, q_old)
        state["q"][rows] = q
        return (q * l_g).sum(1)


class TaskWeighting:
    """How :class:`MultiTask` turns per-task losses ``[M, T]`` into gradients.

    Modelled on LibMTL's ``AbsWeighting.backward(losses, **kwargs)``: :meth:`backward`
    writes every parameter's ``.grad`` and returns the task weights ``[M, T]`` it used.
    Loss-based methods (static weights, LBTW, uncertainty weighting) only implement
    :meth:`weights`; gradient-based ones (GradNorm, PCGrad, TAG's lookahead) override
    :meth:`backward` and use ``shared.task_grads(losses)`` / ``shared.set_grads(...)``.
    Per-model state (e.g. LBTW's initial losses) lives in the objective state;
    ``batch.epoch_start`` marks the steps where a per-epoch method resets. Methods with
    learned weights (uncertainty weighting's ``s``, GradNorm's ``w``) keep them in the
    state too and step them inside :meth:`backward` by their own rule, so checkpoints and
    the batched == loop guarantee cover them.
    """

    def init_state(self, data: FitData, num_tasks: int, device: torch.device) -> ObjectiveState:
        return {}

    def weights(self, losses: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        """Task weights ``[M, T]`` for detached ``losses [M, T]`` (no gradient flows)."""
        raise NotImplementedError

    def backward(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: ObjectiveState
    ) -> torch.Tensor:
        """Back-propagate ``sum_t w_t L_t`` of the active models; returns ``w [M, T]``."""
        w = self.weights(losses.detach(), batch, state).detach()
        ((losses * w).sum(1) * _active(batch, losses)).sum().backward()
        return w


@dataclass(frozen=True, eq=False)
class StaticWeights(TaskWeighting):
    """Fixed task weights: ``[T]`` for every model, ``[M, T]`` per model, or all 1 (EW)."""

    values: torch.Tensor | Sequence[float] | None = None

    def weights(self, losses: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        if self.values is None:
            return torch.ones_like(losses)
        w = torch.as_tensor(self.values, dtype=losses.dtype).to(losses.device)
        if w.dim() == 2:
            w = w[torch.tensor(batch.members, device=w.device)]
        if w.shape[-1] != losses.shape[1]:
            raise TaskspaceError(
                f"StaticWeights has {w.shape[-1]} weights for {losses.shape[1]} tasks"
            )
        return w.expand_as(losses)


def check_task_weights(
    values: torch.Tensor | Sequence[float], num_tasks: int | None = None
) -> list[float]:
    """The reference's rule for static task weights (mml-robustness ``task_weights``): one
    finite, non-negative weight per task, in grouping order, either all 1 or summing to 1.

    The sum is compared with ``math.isclose`` (relative and absolute tolerance 1e-6), not
    float ``==`` as in the original (so ``[0.1] * 10`` passes). Returns the weights as
    floats; raises a one-line :class:`TaskspaceError` otherwise. :class:`StaticWeights`
    itself accepts any weights; the MTL layer applies this rule.
    """
    w = [float(v) for v in torch.as_tensor(values, dtype=torch.float64).flatten().tolist()]
    shown = "[" + ", ".join(f"{v:g}" for v in w) + "]"
    if num_tasks is not None and len(w) != num_tasks:
        raise TaskspaceError(f"task_weights {shown} has {len(w)} weights for {num_tasks} tasks")
    if not w or any(not math.isfinite(v) or v < 0 for v in w):
        raise TaskspaceError(f"task_weights {shown} must be finite and non-negative")
    if all(v == 1.0 for v in w) or math.isclose(sum(w), 1.0, rel_tol=1e-6, abs_tol=1e-6):
        return w
    raise TaskspaceError(f"task_weights {shown} must be all 1 or sum to 1 (they sum to {sum(w):g})")


@dataclass(frozen=True, eq=False)
class LBTW(TaskWeighting):
    """Loss-Balanced Task Weighting (Liu, Liang & Gitter, AAAI-19 student abstract).

    Per model and task: on the first batch of each epoch (``batch.epoch_start``) the
    batch mean losses are stored as ``L0`` (detached, clamped to at least ``min_initial``)
    and the weights are 1; on every other batch ``w_t = (L_t / L0_t) ** alpha``, with
    no gradient through ``w``. ``normalize=True`` (the official code,
    chao1224/Loss-Balanced-Task-Weighting) rescales them to ``w <- T w / sum(w)``, so the
    step size does not drift; ``normalize=False`` is mml-robustness's unnormalised form.
    ``alpha = 0`` gives equal weights; a larger ``alpha`` favours the tasks whose loss has
    fallen least since the epoch began.

    State (one row per model, so M models training together each keep their own, and a
    checkpoint restores it): ``lbtw_initial [M, T]`` (``L0``); the weights last used are
    :class:`MultiTask`'s ``task_weights [M, T]``.
    """

    alpha: float = 0.5
    normalize: bool = True
    min_initial: float = 1e-8

    def __post_init__(self) -> None:
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise TaskspaceError(f"LBTW alpha must be finite and >= 0, got {self.alpha}")
        if not self.min_initial > 0:
            raise TaskspaceError(f"LBTW min_initial must be > 0, got {self.min_initial}")

    def init_state(self, data: FitData, num_tasks: int, device: torch.device) -> ObjectiveState:
        return {"lbtw_initial": torch.ones(data.num_models, num_tasks, device=device)}

    def weights(self, losses: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        initial = state["lbtw_initial"]
        rows = torch.tensor(batch.members, device=initial.device)
        active = batch.active.to(losses.device).bool()[:, None]
        start = batch.epoch_start.to(losses.device).bool()[:, None]
        old = initial[rows].to(losses.dtype)
        l0 = torch.where(start, losses.detach().clamp_min(self.min_initial), old)
        w = (losses.detach().clamp_min(0) / l0).pow(self.alpha)
        if self.normalize:
            total = w.sum(1, keepdim=True)
            w = torch.where(total > 0, w.shape[1] * w / total.clamp_min(1e-30), 1.0)
        w = torch.where(start, torch.ones_like(w), w)
        initial[rows] = torch.where(active, l0, old).to(initial.dtype)
        return w


@dataclass(frozen=True)
class MultiTask(Objective):
    """One head per task on a shared trunk: labels ``[M, N, T]`` (``[M, N]`` is T = 1).

    The model's outputs are T consecutive blocks, one per task: C logits each for
    ``task_loss="ce"`` (C = ``num_classes``, default the largest label + 1; outputs
    T x C) or one logit for ``"bce"`` (labels 0/1; outputs T). Task t's loss is the batch
    mean of ``w * loss_t`` over the examples labelled for task t: a label :data:`MISSING`
    (-1) leaves the example out of that task's mean (and its loss is 0 when no example of
    the batch is labelled). ``weighting`` combines them (default: all weights 1, the
    sum). The last weights used are kept in the state as ``task_weights [M, T]``.
    """

    missing_labels: ClassVar[bool] = True

    task_loss: Literal["ce", "bce"] = "ce"
    weighting: TaskWeighting = field(default_factory=StaticWeights)
    num_classes: int | None = None

    def check(self, labels: torch.Tensor, groups: torch.Tensor | None) -> None:
        if labels.dim() not in (2, 3):
            raise TaskspaceError(
                f"labels must be [models, images] or [models, images, tasks], got "
                f"{tuple(labels.shape)}"
            )
        if self.task_loss not in ("ce", "bce"):
            raise TaskspaceError(f"task_loss must be 'ce' or 'bce', got {self.task_loss!r}")
        if labels.numel() and int(labels.min()) < MISSING:
            raise TaskspaceError(
                f"labels must be class ids >= 0, or {MISSING} for a missing label; got "
                f"{int(labels.min())}"
            )
        if self.task_loss == "bce" and int(labels.max()) > 1:
            raise TaskspaceError("task_loss='bce' needs 0/1 labels")

    def num_tasks(self, labels: torch.Tensor) -> int:
        return int(labels.shape[2]) if labels.dim() == 3 else 1

    def num_outputs(self, labels: torch.Tensor) -> int:
        if self.task_loss == "bce":
            return self.num_tasks(labels)
        return self.num_tasks(labels) * (self.num_classes or int(labels.max()) + 1)

    def init_state(self, data: FitData, device: torch.device) -> ObjectiveState:
        t = self.num_tasks(data.labels)
        state = self.weighting.init_state(data, t, device)
        state["task_weights"] = torch.ones(data.num_models, t, device=device)
        return state

    def task_losses(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Per-model, per-task batch mean losses ``[M, T]`` over the labelled examples."""
        y = batch.y if batch.y.dim() == 3 else batch.y.unsqueeze(-1)
        m, b, t = y.shape
        labelled = y != MISSING
        missing = not bool(labelled.all())
        if missing:
            y = y.clamp_min(0)
        if self.task_loss == "ce":
            per = _cross_entropy(logits.reshape(m, b, t, -1), y)
        else:
            per = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")
        if batch.w is not None:
            per = per * batch.w.unsqueeze(-1)
        if not missing:
            return per.mean(dim=1)
        per = torch.where(labelled, per, torch.zeros_like(per))
        return per.sum(dim=1) / labelled.sum(dim=1).clamp_min(1).to(per.dtype)

    def _keep_weights(self, w: torch.Tensor, batch: Batch, state: ObjectiveState) -> None:
        rows = torch.tensor(batch.members, device=state["task_weights"].device)
        old = state["task_weights"][rows]
        state["task_weights"][rows] = torch.where(_active(batch, w).bool()[:, None], w, old)

    def loss(self, logits: torch.Tensor, batch: Batch, state: ObjectiveState) -> torch.Tensor:
        losses = self.task_losses(logits, batch)
        w = self.weighting.weights(losses.detach(), batch, state).detach()
        self._keep_weights(w, batch, state)
        return (losses * w).sum(1)

    def backward(
        self, logits: torch.Tensor, batch: Batch, state: ObjectiveState, shared: SharedParams
    ) -> torch.Tensor:
        losses = self.task_losses(logits, batch)
        shared.loss_of = lambda out: self.task_losses(out.float(), batch)
        w = self.weighting.backward(losses, shared, batch, state)
        self._keep_weights(w, batch, state)
        return (losses.detach() * w).sum(1)
