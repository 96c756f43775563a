"""Multi-task weighting methods: equal weights, uncertainty weighting, GradNorm, PCGrad.

Each is a :class:`~taskspace.engine.TaskWeighting` (LibMTL's ``backward(losses,
shared_params)`` idea): :meth:`backward` writes every parameter's ``.grad`` for the per-task
losses ``[M, T]`` and returns the task weights ``[M, T]`` it used. Learned weights (UW's
``s``, GradNorm's ``w``) live in the objective state, one row per model, so many models
trained together under vmap each keep their own, a checkpoint restores them, and the
batched path equals the per-model loop; they are stepped inside :meth:`backward` by their
own rule, with the values of the step's start used for the network (as the originals, which
take every gradient from one tape / graph).

- **EW** (:data:`EqualWeights`): ``sum_t L_t`` = :class:`~taskspace.engine.StaticWeights`
  with no values (TAG's ``fast_mtl``; LibMTL's EW also uses weight 1, although its
  docstring says 1/T).
- :class:`UncertaintyWeighting` (Kendall et al. 2018), variants ``kendall`` (default),
  ``tag_celeba``, ``libmtl``.
- :class:`GradNorm` (Chen et al. 2018), variants ``tag_celeba`` (default) and ``libmtl``.
- :class:`PCGrad` (Yu et al. 2020), ``order="shuffle"`` (default) or ``"fixed"``, on top of
  an ``inner`` weighting (TAG's CelebA PCGrad: ``PCGrad(order="fixed",
  inner=UncertaintyWeighting("tag_celeba"))``).

**The learned weights' optimiser.** The originals step ``s`` / ``w`` with the main
optimiser. Here a weighting's ``optimizer`` / ``lr`` / ``momentum`` / ``betas`` / ``eps``
set it; ``None`` (the default) takes the fit's: the step's learning rate (schedule
included) and the recipe's optimiser when the trainer passes them in
:class:`~taskspace.engine.SharedParams` (``lrs``, ``recipe``), otherwise TAG CelebA's
recipe: SGD, lr 5e-4, momentum 0.9. SGD is ``buf <- momentum * buf + g; p <- p - lr * buf``
(``buf`` starting at 0): ``tf.compat.v1``'s MomentumOptimizer (TAG's PCGrad) and, for a
constant lr, Keras's ``v <- m v - lr g`` (TAG's UW and GradNorm; after an lr change Keras
keeps the old lr inside ``v``). Adam is torch's. No weight decay is applied to the
weighting's own parameters.

:func:`make_weighting` builds one by name (``equal``, ``static``, ``lbtw``, ``uw``,
``gradnorm``, ``pcgrad``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import torch

from taskspace.engine import LBTW, Batch, FitData, SharedParams, StaticWeights, TaskWeighting
from taskspace.errors import TaskspaceError
from taskspace.seeding import derive_seed

__all__ = [
    "WEIGHTINGS",
    "EqualWeights",
    "GradNorm",
    "PCGrad",
    "UncertaintyWeighting",
    "make_weighting",
]

State = dict[str, torch.Tensor]

#: EW: every task weight 1 (``StaticWeights()``; no separate class).
EqualWeights = StaticWeights

#: TAG CelebA's optimiser, used for the learned weights when nothing else is known.
_TAG_LR, _TAG_MOMENTUM = 5e-4, 0.9

WEIGHTINGS = ("equal", "static", "lbtw", "uw", "gradnorm", "pcgrad")


def _rows(batch: Batch, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(batch.members, device=like.device)


def _act(batch: Batch, like: torch.Tensor) -> torch.Tensor:
    """``active [M]`` as a bool tensor on ``like``'s device."""
    return batch.active.to(like.device).bool()


def _need_shared(shared: SharedParams, who: str) -> None:
    if not shared.tensors:
        raise TaskspaceError(
            f"{who} needs shared (trunk) parameters, but this model has none: every "
            "parameter is in the head; use a model with a backbone"
        )


def _flat(grads: list[torch.Tensor]) -> torch.Tensor:
    """``[M, D]``: one model's gradients of every tensor, flattened and concatenated."""
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], 1)


def _unflat(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, at = [], 0
    for g in like:
        n = g[0].numel()
        out.append(flat[:, at : at + n].reshape(g.shape))
        at += n
    return out


def _model_dim(shared: SharedParams, p: torch.Tensor) -> int:
    """A shared tensor's dimensions for one model (stacked tensors carry a model axis)."""
    return p.dim() - 1 if shared.stacked else p.dim()


# ---------------------------------------------------------------------------------------
# the learned weights' optimiser


@dataclass(frozen=True, eq=False, kw_only=True)
class _Learned(TaskWeighting):
    """Base of weightings with learned per-task parameters (stepped in :meth:`backward`).

    Subclasses implement :meth:`step_weights`: the weights ``[M, T]`` the network uses this
    step (detached), stepping their own parameters for the active models. That is also
    what :class:`PCGrad` calls on its ``inner`` weighting.
    """

    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    momentum: float | None = None
    betas: tuple[float, float] | None = None
    eps: float | None = None

    def _check_optimizer(self) -> None:
        if self.optimizer not in (None, "sgd", "adam"):
            raise TaskspaceError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise TaskspaceError(f"the weighting's lr must be > 0, got {self.lr}")

    def _opt_state(self, key: str, value: torch.Tensor) -> State:
        z = torch.zeros_like(value)
        return {
            key: value,
            f"{key}_buf": z.clone(),
            f"{key}_m": z.clone(),
            f"{key}_v": z.clone(),
            f"{key}_t": torch.zeros(value.shape[0], device=value.device),
        }

    def _settings(self, shared: SharedParams, rows_m: int, device: torch.device) -> tuple:
        recipe = getattr(shared, "recipe", None)
        opt = self.optimizer or (recipe.optimizer if recipe is not None else "sgd")
        if self.lr is not None:
            lr = torch.full((rows_m,), float(self.lr), device=device, dtype=torch.float64)
        elif getattr(shared, "lrs", None) is not None:
            lr = shared.lrs.to(device, torch.float64).reshape(rows_m)  # type: ignore[union-attr]
        elif recipe is not None:
            lr = torch.full((rows_m,), float(recipe.lr), device=device, dtype=torch.float64)
        else:
            lr = torch.full((rows_m,), _TAG_LR, device=device, dtype=torch.float64)
        mom = self.momentum
        if mom is None:
            mom = float(recipe.momentum) if recipe is not None else _TAG_MOMENTUM
        betas = self.betas or (tuple(recipe.betas) if recipe is not None else (0.9, 0.999))
        eps = self.eps if self.eps is not None else (recipe.eps if recipe is not None else 1e-8)
        return opt, lr, mom, betas, eps

    def _step(
        self,
        state: State,
        key: str,
        grad: torch.Tensor,
        rows: torch.Tensor,
        on: torch.Tensor,
        shared: SharedParams,
    ) -> torch.Tensor:
        """One optimiser step of ``state[key][rows]`` with ``grad [M, T]`` for the rows
        ``on [M]``; returns the new values of those rows (others unchanged)."""
        p = state[key][rows]
        g = grad.to(p.dtype)
        opt, lr, mom, (b1, b2), eps = self._settings(shared, len(rows), p.device)
        lr = lr.to(p.dtype)[:, None]
        o = on[:, None]
        if opt == "sgd":
            buf = state[f"{key}_buf"][rows]
            new_buf = mom * buf + g if mom else g
            new = p - lr * new_buf
            state[f"{key}_buf"][rows] = torch.where(o, new_buf, buf)
        else:
            m, v = state[f"{key}_m"][rows], state[f"{key}_v"][rows]
            t = state[f"{key}_t"][rows] + on.to(p.dtype)
            nm, nv = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
            tt = t.clamp_min(1)[:, None]
            step = (nm / (1 - b1**tt)) / ((nv / (1 - b2**tt)).sqrt() + eps)
            new = p - lr * step
            state[f"{key}_m"][rows] = torch.where(o, nm, m)
            state[f"{key}_v"][rows] = torch.where(o, nv, v)
            state[f"{key}_t"][rows] = t
        new = torch.where(o, new, p)
        state[key][rows] = new
        return new

    def step_weights(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> torch.Tensor:
        raise NotImplementedError

    def backward(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> torch.Tensor:
        w = self.step_weights(losses, shared, batch, state)
        act = _act(batch, losses).to(losses.dtype)
        ((losses * w).sum(1) * act).sum().backward()
        return w


# ---------------------------------------------------------------------------------------
# uncertainty weighting

_UW_VARIANTS = ("kendall", "tag_celeba", "libmtl")
_UW_INIT = {"kendall": 0.0, "tag_celeba": 1.0, "libmtl": -0.5}


@dataclass(frozen=True, eq=False)
class UncertaintyWeighting(_Learned):
    """Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018), one ``s`` per task.

    - ``"kendall"`` (the default): ``sum_t L_t / (2 sigma_t^2) + log sigma_t``,
      parametrised by the log variance ``s = log sigma^2`` as the paper trains it:
      ``sum_t L_t / (2 e^{s_t}) + s_t / 2``, ``s = 0`` at the start (``sigma = 1``).
    - ``"tag_celeba"`` (TAG's CelebA notebook): ``sum_t L_t e^{-2 c_t} + c_t`` with
      ``c = clip(s, 0.01, 10)`` inside the loss, so ``s`` gets no gradient outside
      [0.01, 10] (it then stays where it is); ``s = 1`` at the start.
    - ``"libmtl"``: the same loss as ``kendall``, ``s = -0.5`` at the start.

    ``init`` overrides the variant's starting ``s``. The network minimises ``sum_t w_t L_t``
    with the reported weights ``w_t = 1 / (2 e^{s_t})`` (kendall, libmtl) or
    ``e^{-2 c_t}`` (tag_celeba); the ``s`` terms have no network gradient. ``s`` is stepped
    with the gradient of the whole loss (module doc: the optimiser). State: ``uw_s [M, T]``
    and its optimiser's ``uw_s_*``.
    """

    variant: Literal["kendall", "tag_celeba", "libmtl"] = "kendall"
    init: float | None = None

    def __post_init__(self) -> None:
        if self.variant not in _UW_VARIANTS:
            raise TaskspaceError(
                f"uncertainty weighting variant must be one of {', '.join(_UW_VARIANTS)}, "
                f"got {self.variant!r}"
            )
        self._check_optimizer()

    def init_state(self, data: FitData, num_tasks: int, device: torch.device) -> State:
        s0 = _UW_INIT[self.variant] if self.init is None else float(self.init)
        return self._opt_state("uw_s", torch.full((data.num_models, num_tasks), s0, device=device))

    def terms(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w, reg)`` ``[M, T]`` of ``s``: the loss is ``sum_t w_t L_t + reg_t``."""
        if self.variant == "tag_celeba":
            c = s.clamp(0.01, 10.0)
            return torch.exp(-2.0 * c), c
        return 0.5 * torch.exp(-s), 0.5 * s

    def weights(self, losses: torch.Tensor, batch: Batch, state: State) -> torch.Tensor:
        s = state["uw_s"][_rows(batch, state["uw_s"])]
        return self.terms(s)[0].to(losses.dtype)

    def step_weights(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> torch.Tensor:
        rows = _rows(batch, state["uw_s"])
        s = state["uw_s"][rows].clone().requires_grad_(True)
        with torch.enable_grad():
            w, reg = self.terms(s)
            total = (w * losses.detach().to(s.dtype) + reg).sum()
            (g,) = torch.autograd.grad(total, s)
        self._step(state, "uw_s", g, rows, _act(batch, s), shared)
        return w.detach().to(losses.dtype)


# ---------------------------------------------------------------------------------------
# GradNorm

_GN_VARIANTS = ("tag_celeba", "libmtl")


@dataclass(frozen=True, eq=False)
class GradNorm(_Learned):
    """GradNorm (Chen et al., ICML 2018).

    ``G_t = ||grad_W (w_t L_t)||``, ``Gbar = mean_t G_t``, ``r_t = Ltilde_t / mean
    Ltilde`` with ``Ltilde_t = L_t / L_t(0)``; ``L_grad = sum_t |G_t - sg(Gbar r_t^alpha)|``
    steps the weights; the network minimises ``sum_t w_t L_t`` with the weights of the
    step's start.

    - ``"tag_celeba"`` (the default; TAG's CelebA notebook): ``W`` = the last shared tensor
      with more than one dimension (the last trunk conv kernel, Keras's
      ``trainable_weights[-3]``); ``alpha`` 0.1; ``L(0)`` = each model's first batch;
      ``w = 1`` at the start, stepped by the optimiser, then clipped to [0.1, 10] and
      rescaled to ``sum w = T``. State ``gn_w``, ``gn_l0``, ``gn_started``.
    - ``"libmtl"``: ``W`` = all shared parameters; ``alpha`` 1.5; equal weights during each
      model's first epoch, whose mean batch losses are ``L(0)``; then ``w = T
      softmax(logits)`` (logits start at 1). As LibMTL, the heads always get the
      *unweighted* ``sum_t L_t`` gradient and the shared parameters ``sum_t w_t grad L_t``.
      (LibMTL versions that keep ``loss_scale`` in a plain tensor never step it: that is
      equal weights.) State ``gn_logits``, ``gn_epoch``, ``gn_sum``, ``gn_count``,
      ``gn_l0``.

    Refused (one line) on a model without shared parameters. ``min_initial`` bounds
    ``L(0)`` away from 0.
    """

    variant: Literal["tag_celeba", "libmtl"] = "tag_celeba"
    alpha: float | None = None
    clip: tuple[float, float] = (0.1, 10.0)
    min_initial: float = 1e-12

    def __post_init__(self) -> None:
        if self.variant not in _GN_VARIANTS:
            raise TaskspaceError(
                f"GradNorm variant must be 'tag_celeba' or 'libmtl', got {self.variant!r}"
            )
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise TaskspaceError(f"GradNorm alpha must be finite and >= 0, got {self.alpha}")
        self._check_optimizer()

    @property
    def exponent(self) -> float:
        """``alpha``: the given one, else 0.1 (tag_celeba) or 1.5 (libmtl)."""
        if self.alpha is not None:
            return float(self.alpha)
        return 0.1 if self.variant == "tag_celeba" else 1.5

    def init_state(self, data: FitData, num_tasks: int, device: torch.device) -> State:
        m, t = data.num_models, num_tasks
        ones = torch.ones(m, t, device=device)
        if self.variant == "tag_celeba":
            state = self._opt_state("gn_w", ones.clone())
            state["gn_started"] = torch.zeros(m, device=device)
        else:
            state = self._opt_state("gn_logits", ones.clone())
            state["gn_epoch"] = torch.full((m,), -1.0, device=device)
            state["gn_sum"] = torch.zeros(m, t, device=device)
            state["gn_count"] = torch.zeros(m, device=device)
        state["gn_l0"] = ones.clone()
        return state

    def weights(self, losses: torch.Tensor, batch: Batch, state: State) -> torch.Tensor:
        if self.variant == "tag_celeba":
            return state["gn_w"][_rows(batch, state["gn_w"])].to(losses.dtype)
        rows = _rows(batch, state["gn_logits"])
        t = losses.shape[1]
        w = t * torch.softmax(state["gn_logits"][rows], 1)
        first = (state["gn_epoch"][rows] < 1)[:, None]
        return torch.where(first, torch.ones_like(w), w).to(losses.dtype)

    def last_kernel(self, shared: SharedParams) -> int:
        """Index of ``W`` for ``tag_celeba``: the last shared tensor with ndim > 1."""
        _need_shared(shared, "GradNorm")
        for i in range(len(shared.tensors) - 1, -1, -1):
            if _model_dim(shared, shared.tensors[i]) > 1:
                return i
        raise TaskspaceError(
            "GradNorm variant 'tag_celeba' needs a shared kernel (a trunk tensor with more "
            "than one dimension); this model has none"
        )

    def _balance_loss(
        self, g: torch.Tensor, norms: torch.Tensor, losses: torch.Tensor, l0: torch.Tensor
    ) -> torch.Tensor:
        """``L_grad [M]`` for ``G = |g| * norms`` (``g`` carries the gradient)."""
        big_g = g.abs() * norms
        gbar = big_g.mean(1, keepdim=True)
        lt = losses / l0
        r = lt / lt.mean(1, keepdim=True)
        target = (gbar * r.pow(self.exponent)).detach()
        return (big_g - target).abs().sum(1)

    def step_weights(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> torch.Tensor:
        return self._advance(losses, shared, batch, state)[0]

    def _advance(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]] | None, torch.Tensor]:
        """Weights used this step, the per-task shared gradients when computed (libmtl)
        and the rows where GradNorm is on (libmtl: past the first epoch)."""
        _need_shared(shared, "GradNorm")
        if self.variant == "tag_celeba":
            return self._advance_tag(losses, shared, batch, state)
        return self._advance_libmtl(losses, shared, batch, state)

    def _advance_tag(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> tuple[torch.Tensor, None, torch.Tensor]:
        w_all = state["gn_w"]
        rows, act = _rows(batch, w_all), _act(batch, w_all)
        lo = losses.detach().to(w_all.dtype)
        started = state["gn_started"][rows].bool()[:, None]
        l0 = torch.where(started, state["gn_l0"][rows], lo.clamp_min(self.min_initial))
        state["gn_l0"][rows] = torch.where(act[:, None], l0, state["gn_l0"][rows])
        state["gn_started"][rows] = torch.where(act, 1.0, state["gn_started"][rows])
        i = self.last_kernel(shared)
        sub = dataclasses.replace(
            shared, tensors=[shared.tensors[i]], names=shared.names[i : i + 1]
        )
        grads = sub.task_grads(losses)  # [t][0] : [M, ...]
        norms = torch.stack([_flat(g).norm(dim=1) for g in grads], 1).detach().to(w_all.dtype)
        w_old = w_all[rows].clone()
        leaf = w_old.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self._balance_loss(leaf, norms, lo, l0).sum(), leaf)
        new = self._step(state, "gn_w", g, rows, act, shared)
        lo_c, hi_c = self.clip
        new = new.clamp(lo_c, hi_c)
        new = new * (new.shape[1] / new.sum(1, keepdim=True))
        state["gn_w"][rows] = torch.where(act[:, None], new, w_old)
        return w_old.to(losses.dtype), None, act

    def _advance_libmtl(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> tuple[torch.Tensor, list[list[torch.Tensor]] | None, torch.Tensor]:
        logits = state["gn_logits"]
        rows, act = _rows(batch, logits), _act(batch, logits)
        t = losses.shape[1]
        lo = losses.detach().to(logits.dtype)
        start = batch.epoch_start.to(logits.device).bool()
        old_epoch = state["gn_epoch"][rows]
        epoch = old_epoch + (start & act).to(old_epoch.dtype)
        state["gn_epoch"][rows] = epoch
        ends_first = (act & start & (epoch == 1))[:, None]
        mean0 = state["gn_sum"][rows] / state["gn_count"][rows].clamp_min(1)[:, None]
        l0 = torch.where(ends_first, mean0.clamp_min(self.min_initial), state["gn_l0"][rows])
        state["gn_l0"][rows] = l0
        first = act & (epoch < 1)
        state["gn_sum"][rows] += torch.where(first[:, None], lo, 0.0)
        state["gn_count"][rows] += first.to(logits.dtype)
        on = act & (epoch >= 1)
        ones = torch.ones_like(lo)
        if not bool(on.any()):
            return ones.to(losses.dtype), None, on
        grads = shared.task_grads(losses)
        flat = torch.stack([_flat(g) for g in grads], 1).detach().to(logits.dtype)  # [M, T, D]
        norms = flat.norm(dim=2)
        leaf = logits[rows].clone().requires_grad_(True)
        with torch.enable_grad():
            w = t * torch.softmax(leaf, 1)
            lg = self._balance_loss(w, norms, lo, l0)
            (g,) = torch.autograd.grad((lg * on.to(lg.dtype)).sum(), leaf)
        self._step(state, "gn_logits", g, rows, on, shared)
        used = torch.where(on[:, None], w.detach(), ones)
        return used.to(losses.dtype), grads, on

    def backward(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> torch.Tensor:
        if self.variant == "tag_celeba":
            return super().backward(losses, shared, batch, state)
        w, grads, on = self._advance(losses, shared, batch, state)
        act = _act(batch, losses).to(losses.dtype)
        (losses.sum(1) * act).sum().backward()  # heads: unweighted (LibMTL)
        if grads is not None:
            mixed = [
                torch.stack([_bcast(w[:, t], g[p]) * g[p] for t, g in enumerate(grads)]).sum(0)
                for p in range(len(shared.tensors))
            ]
            cur = [g.detach() for g in _shared_current_grads(shared)]
            sel = [torch.where(_bcast(on, c), m.to(c.dtype), c) for m, c in zip(mixed, cur)]
            shared.set_grads(sel)
        return w


def _bcast(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *[1] * (like.dim() - 1))


def _shared_current_grads(shared: SharedParams) -> list[torch.Tensor]:
    out = []
    for p in shared.tensors:
        g = torch.zeros_like(p) if p.grad is None else p.grad
        out.append(g if shared.stacked else g.unsqueeze(0))
    return out


# ---------------------------------------------------------------------------------------
# PCGrad


@dataclass(frozen=True, eq=False)
class PCGrad(TaskWeighting):
    """Projecting conflicting gradients (Yu et al., NeurIPS 2020), per model.

    With ``g_t`` the shared gradient of task t's weighted loss ``w_t L_t`` (``w`` from
    ``inner``; EW by default), for each i: ``g_i' = g_i``, then for each j in turn with
    ``g_i' . g_j < 0``: ``g_i' -= (g_i' . g_j / ||g_j||^2) g_j``, always with the
    *original* ``g_j``. The shared update is ``sum_i g_i'``; the heads get their own task's
    gradient (the gradient of ``sum_t w_t L_t``, whose head-t part comes from ``L_t`` only).

    - ``order="shuffle"`` (the default; the paper, LibMTL): a random order of j for each i
      and step, drawn from ``seed``, the model's number and the step (so a resumed or
      per-model run draws the same orders); ``"fixed"``: j = 0, 1, ..., T-1 (TAG CelebA,
      where the shuffle's result is discarded).
    - ``include_self=True`` (TAG, LibMTL and the original TF code) lets j run over i itself
      too, which only acts when an earlier projection left ``g_i' . g_i < 0``; ``False`` is
      the paper's ``j != i``.
    - ``inner``: the weighting whose weights scale the losses first, and which steps its
      own parameters (:class:`UncertaintyWeighting` ...). TAG CelebA's PCGrad baseline is
      ``PCGrad(order="fixed", inner=UncertaintyWeighting("tag_celeba"))``.

    Refused (one line) on a model without shared parameters.
    """

    order: Literal["shuffle", "fixed"] = "shuffle"
    seed: int = 0
    include_self: bool = True
    inner: TaskWeighting = dataclasses.field(default_factory=StaticWeights)

    def __post_init__(self) -> None:
        if self.order not in ("shuffle", "fixed"):
            raise TaskspaceError(f"PCGrad order must be 'shuffle' or 'fixed', got {self.order!r}")
        if isinstance(self.inner, PCGrad):
            raise TaskspaceError("PCGrad's inner weighting cannot be PCGrad")

    def init_state(self, data: FitData, num_tasks: int, device: torch.device) -> State:
        return self.inner.init_state(data, num_tasks, device)

    def weights(self, losses: torch.Tensor, batch: Batch, state: State) -> torch.Tensor:
        return self.inner.weights(losses, batch, state)

    def orders(self, members: list[int], step: int, num_tasks: int) -> torch.Tensor:
        """``[M, T, K]``: for each model and task i, the order of the j's (K = T, or T - 1
        without ``include_self``)."""
        t = num_tasks
        out = []
        for m in members:
            g = None
            if self.order == "shuffle":
                g = torch.Generator().manual_seed(derive_seed(self.seed, m, step))
            per = []
            for i in range(t):
                js = [j for j in range(t) if self.include_self or j != i]
                if g is not None:
                    js = [js[k] for k in torch.randperm(len(js), generator=g).tolist()]
                per.append(js)
            out.append(per)
        return torch.tensor(out, dtype=torch.long).reshape(len(members), t, -1)

    @staticmethod
    def project(grads: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
        """Projected gradients ``[M, T, D]`` of ``grads [M, T, D]`` in ``orders``."""
        m, t, _ = grads.shape
        ar = torch.arange(m, device=grads.device)
        sq = (grads * grads).sum(-1)  # [M, T]
        out = grads.clone()
        orders = orders.to(grads.device)
        for i in range(t):
            gi = grads[:, i].clone()
            for k in range(orders.shape[2]):
                j = orders[:, i, k]
                gj = grads[ar, j]
                dot = (gi * gj).sum(-1)
                coef = torch.where(dot < 0, dot / sq[ar, j].clamp_min(1e-30), 0.0)
                gi = gi - coef[:, None] * gj
            out[:, i] = gi
        return out

    def backward(
        self, losses: torch.Tensor, shared: SharedParams, batch: Batch, state: State
    ) -> torch.Tensor:
        _need_shared(shared, "PCGrad")
        step = getattr(self.inner, "step_weights", None)
        if step is not None:
            w = step(losses, shared, batch, state)
        else:
            w = self.inner.weights(losses.detach(), batch, state).detach()
        weighted = losses * w
        grads = shared.task_grads(weighted)
        flat = torch.stack([_flat(g) for g in grads], 1)  # [M, T, D]
        proj = self.project(flat, self.orders(batch.members, batch.step, losses.shape[1]))
        act = _act(batch, losses).to(losses.dtype)
        (weighted.sum(1) * act).sum().backward()  # the heads' own gradients
        total = proj.sum(1) * act.to(proj.dtype)[:, None]
        shared.set_grads(_unflat(total, grads[0]))
        return w


# ---------------------------------------------------------------------------------------
# by name

_CLASSES: dict[str, type] = {
    "equal": StaticWeights,
    "static": StaticWeights,
    "lbtw": LBTW,
    "uw": UncertaintyWeighting,
    "gradnorm": GradNorm,
    "pcgrad": PCGrad,
}


def make_weighting(name: str, **opts: Any) -> TaskWeighting:
    """A weighting by name: ``equal`` (no options), ``static`` (``values``), ``lbtw``,
    ``uw``, ``gradnorm``, ``pcgrad`` with their classes' fields as options; for ``pcgrad``
    ``inner`` may be a name (``"uw"``...) whose options are ``inner_opts``. Unknown names
    or options: a one-line :class:`TaskspaceError`."""
    if name not in _CLASSES:
        raise TaskspaceError(f"unknown weighting {name!r}; choose from {', '.join(WEIGHTINGS)}")
    cls = _CLASSES[name]
    opts = dict(opts)
    if name == "pcgrad":
        inner, inner_opts = opts.pop("inner", None), opts.pop("inner_opts", None) or {}
        if isinstance(inner, str):
            if inner == "pcgrad":
                raise TaskspaceError("PCGrad's inner weighting cannot be PCGrad")
            inner = make_weighting(inner, **inner_opts)
        if inner is not None:
            opts["inner"] = inner
    allowed = [] if name == "equal" else [f.name for f in dataclasses.fields(cls)]
    bad = [k for k in opts if k not in allowed]
    if bad:
        shown = ", ".join(allowed) or "none"
        raise TaskspaceError(
            f"weighting {name!r} has no option(s) {', '.join(bad)}; it takes {shown}"
        )
    return cls(**opts)
