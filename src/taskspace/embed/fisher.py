"""The Monte-Carlo Fisher of Task2Vec (reference section 2) and the pieces around it.

For one probe and ``K`` tasks over the same images this module computes:

- the image subset (:func:`select_subset`): ``subset="first_batches"`` is the original's
  first ``floor(max_samples / 64) - 1`` unshuffled batches (1,000 -> 896 images, 10,000
  -> 9,920); ``subset="random"`` (default) a seeded random ``max_samples`` images;
- the cached inputs of ``layers[skip]`` and of ``layers[-1]`` (:func:`cache_inputs`);
- the head refit on the cached ``layers[-1]`` inputs (:func:`fit_heads`), two ways
  (``head_fit``):

  * ``"adam"`` (faithful): Adam, lr 4e-4, weight decay 1e-4, 10 epochs of 10,000
    class-balanced draws with replacement (weight ``1 / (n_c * C)``), batch 64,
    ``drop_last`` (156 steps). ``K`` heads are fitted together as one stacked
    ``[K, C, F]`` tensor; each task keeps its own seeded init and draws, so a task's head
    does not depend on which others are fitted with it;
  * ``"lbfgs"`` (default): the same objective (class-balanced cross-entropy plus an L2
    term ``weight_decay / 2 * |W|^2``, what Adam's weight decay differentiates) minimised to
    convergence by full-batch L-BFGS, one task at a time. The objective is convex, so the
    head no longer depends on its random init or on how many steps were taken: the Fisher
    is meant at the head's optimum, and 1,560 Adam steps from a random init stop short of
    it. Its weight decay defaults to 1e-3 rather than the original's 1e-4: the original's
    early stop is what regularises its head, and at the optimum of the 1e-4 objective a
    task the features separate gets a head of huge norm, whose Fisher rests on the few
    images near its boundary (see :data:`HEAD_WEIGHT_DECAY`; the README measures both);
- the diagonal Fisher of the trunk ``layers[skip:-1]`` (:func:`montecarlo_fisher`), with
  labels drawn from the model (softmax, or Bernoulli of the sigmoids when ``bernoulli``):

  * ``estimator="batch_mean_sq"`` (faithful): per batch, the square of the gradient of
    the batch-mean loss, averaged over batches; it estimates ``diag F / B``;
  * ``estimator="per_sample"`` (default): the true Fisher, the mean over samples of the
    squared gradient of each sample's loss (``torch.func.vmap`` over samples of a ``vjp``,
    itself vmapped over the ``K`` tasks' output cotangents, so one forward serves all
    tasks). It needs per-sample independence, so it refuses train-mode BatchNorm;

- the layout (:func:`fisher_layout`): ``named_modules`` in order, classifier skipped;
  conv / linear weights give the per-filter mean of ``grad**2`` (reshaped ``(out, -1)``),
  normalisation layers their gamma per channel (``"bn_gamma"``, when
  ``include_bn_gamma``, default True as in the original), interleaved in module order;
  weights that get no gradient (``layers[:skip]``) are dropped. The scale is ones.

The head's fit on the task is measured (:func:`head_fit_report`): training accuracy,
balanced accuracy and the majority-class rate; :data:`FIT_MARGIN` decides the warning
that the probe does not fit the task (users asked whether a random probe's embedding
means anything: it does not, the Fisher needs a near-optimum).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

from taskspace.embed.probe import new_head, run_layers
from taskspace.errors import TaskspaceError
from taskspace.seeding import derive_seed

__all__ = [
    "BATCH_SIZE",
    "BN_MODES",
    "ESTIMATORS",
    "FISHER_SAMPLERS",
    "FIT_MARGIN",
    "HEAD_FITS",
    "HEAD_WEIGHT_DECAY",
    "SUBSETS",
    "FisherResult",
    "Heads",
    "balanced_draws",
    "cache_inputs",
    "fisher_layout",
    "fit_heads",
    "head_fit_report",
    "montecarlo_fisher",
    "select_subset",
    "task_seed",
]

ESTIMATORS = ("per_sample", "batch_mean_sq")
BN_MODES = ("eval", "train")
SUBSETS = ("random", "first_batches")
#: ``head_fit``: ``lbfgs`` (default, the head's objective minimised to convergence) or
#: ``adam`` (faithful: the original's 10 epochs of Adam).
HEAD_FITS = ("lbfgs", "adam")
#: The head's default L2 weight decay per ``head_fit``: the original's 1e-4 for its Adam
#: run; 1e-3 at the optimum, where 1e-4 lets a separable task's head grow without bound.
HEAD_WEIGHT_DECAY = {"adam": 1e-4, "lbfgs": 1e-3}
#: ``subset``: every image of the subset once (default); ``balanced``: the original's
#: 10,000 class-balanced draws with replacement per epoch, batch 64, ``drop_last``, from the
#: cached ``layers[skip]`` inputs when ``skip > 0`` and from the whole split otherwise.
FISHER_SAMPLERS = ("subset", "balanced")
BATCH_SIZE = 64
#: The head fits the task when its balanced accuracy exceeds chance (1/C) by this much.
FIT_MARGIN = 0.05

# Salts of the seed streams of this module (fixed: changing one changes results).
_HEAD_INIT, _HEAD_DRAWS, _FISHER_LABELS, _FISHER_DRAWS, _SUBSET = 101, 103, 107, 109, 113
_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def task_seed(seed: int, stream: int, task: str) -> int:
    """Seed of ``stream`` for ``task`` (by name, so it does not depend on the task's
    position or on which other tasks are embedded with it)."""
    return derive_seed(int(seed), int(stream), zlib.crc32(task.encode()))


def task_generator(seed: int, stream: int, task: str) -> torch.Generator:
    return torch.Generator().manual_seed(task_seed(seed, stream, task))


# ---------------------------------------------------------------------- subset
def first_batches_count(max_samples: int, total: int, batch_size: int = BATCH_SIZE) -> int:
    """Images the original keeps: ``min(floor(max/B) - 1, ceil(N/B))`` unshuffled batches."""
    batches = min(math.floor(max_samples / batch_size) - 1, math.ceil(total / batch_size))
    if batches <= 0:
        raise TaskspaceError(
            f"max_samples={max_samples} with subset=first_batches keeps no batch (the "
            f"original takes floor(max_samples/{batch_size}) - 1 batches); use max_samples "
            f">= {2 * batch_size} or subset=random"
        )
    return min(batches * batch_size, total)


def select_subset(
    indices: torch.Tensor,
    max_samples: int | None,
    subset: str = "random",
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """The images (dataset indices, in dataset order) the embedding is computed on.

    ``max_samples=None`` keeps all of ``indices``. ``first_batches`` (faithful): the first
    ``floor(max_samples / 64) - 1`` batches of 64 in dataset order (1,000 -> 896).
    ``random`` (default): ``max_samples`` images drawn without replacement, seeded.
    """
    if subset not in SUBSETS:
        raise TaskspaceError(f"subset must be one of {SUBSETS}, got {subset!r}")
    ordered = indices.sort().values
    if max_samples is None:
        return ordered
    if isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1:
        raise TaskspaceError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    if subset == "first_batches":
        return ordered[: first_batches_count(max_samples, len(ordered), batch_size)]
    if max_samples >= len(ordered):
        return ordered
    g = torch.Generator().manual_seed(derive_seed(int(seed), _SUBSET))
    pick = torch.randperm(len(ordered), generator=g)[:max_samples]
    return ordered[pick.sort().values]


# ---------------------------------------------------------------------- caching
def cache_inputs(
    probe: nn.Module,
    batches: Iterable[torch.Tensor],
    skip_layers: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs of ``layers[skip]`` and of ``layers[-1]`` over ``batches`` (probe's own mode).

    Runs ``layers[:-1]`` once per batch without gradients; in train mode BatchNorm running
    statistics drift meanwhile, as in the original.
    """
    n_layers = len(probe.layers)  # type: ignore[arg-type]
    at_skip: list[torch.Tensor] = []
    at_last: list[torch.Tensor] = []
    with torch.no_grad():
        for x in batches:
            h = run_layers(probe, x, 0, skip_layers)
            at_skip.append(h)
            at_last.append(run_layers(probe, h, skip_layers, n_layers - 1))
    if not at_last:
        raise TaskspaceError("no images to embed (empty subset)")
    last = torch.cat(at_last)
    if last.dim() != 2:
        raise TaskspaceError(
            f"the classifier's input must be [N, F], got shape {tuple(last.shape)}; the "
            "probe's layers[-2] must flatten"
        )
    return torch.cat(at_skip), last


# ---------------------------------------------------------------------- heads
@dataclass
class Heads:
    """``K`` linear heads stacked: ``weight [K, C, F]``, ``bias [K, C]``; task ``k`` uses
    the first ``num_classes[k]`` rows (the rest are padding, masked out)."""

    weight: torch.Tensor
    bias: torch.Tensor
    num_classes: list[int]

    def __len__(self) -> int:
        return len(self.num_classes)

    @property
    def mask(self) -> torch.Tensor:
        """``bool [K, C]``: which rows are real classes."""
        c = self.weight.shape[1]
        n = torch.tensor(self.num_classes, device=self.weight.device)
        return torch.arange(c, device=self.weight.device)[None, :] < n[:, None]

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``[K, B, C]`` logits (padding at ``-inf``) of ``features [B, F]`` or ``[K, B, F]``."""
        if features.dim() == 2:
            out = torch.einsum("bf,kcf->kbc", features, self.weight)
        else:
            out = torch.bmm(features, self.weight.transpose(1, 2))
        out = out + self.bias[:, None, :]
        return out.masked_fill(~self.mask[:, None, :], float("-inf"))

    def select(self, k: int) -> Heads:
        c = self.num_classes[k]
        return Heads(self.weight[k : k + 1, :c], self.bias[k : k + 1, :c], [c])

    def linear(self, k: int) -> nn.Linear:
        """Head ``k`` as an ``nn.Linear`` (a copy)."""
        c = self.num_classes[k]
        lin = nn.Linear(self.weight.shape[2], c).to(self.weight)
        with torch.no_grad():
            lin.weight.copy_(self.weight[k, :c])
            lin.bias.copy_(self.bias[k, :c])
        return lin


def balanced_draws(
    labels: torch.Tensor, num_draws: int, generator: torch.Generator
) -> torch.Tensor:
    """``num_draws`` indices drawn with replacement, weight ``1 / (n_c * C)`` per example
    (``WeightedRandomSampler`` as the original builds it)."""
    labels = labels.cpu()
    counts = torch.bincount(labels).double()
    present = int((counts > 0).sum())
    weights = 1.0 / counts[labels] / present
    return torch.multinomial(weights / weights.sum(), num_draws, True, generator=generator)


def fit_heads(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: Sequence[int],
    task_names: Sequence[str],
    *,
    seed: int = 0,
    head_fit: str = "lbfgs",
    epochs: int = 10,
    lr: float = 4e-4,
    weight_decay: float | None = None,
    draws: int = 10_000,
    batch_size: int = BATCH_SIZE,
    max_iter: int = 1000,
) -> Heads:
    """Fit ``K`` fresh linear heads on ``features [N, F]`` for ``labels [K, N]``.

    ``head_fit="adam"`` (faithful): each epoch draws ``draws`` class-balanced indices per
    task (its own generator) and takes ``draws // batch_size`` steps of Adam on the sum of
    the tasks' mean cross-entropies (Adam is elementwise, so this is each task's own Adam
    run). ``head_fit="lbfgs"`` (default): each task's expected objective under those draws
    (cross-entropy weighted ``1 / (n_c * C)``, plus ``weight_decay / 2`` times the squared
    norm of weight and bias) minimised by L-BFGS in float64 from the same init, at most
    ``max_iter`` iterations (``epochs``, ``lr``, ``draws`` and ``batch_size`` unused).
    ``weight_decay=None`` takes :data:`HEAD_WEIGHT_DECAY` of the fit.
    """
    if head_fit not in HEAD_FITS:
        raise TaskspaceError(f"head_fit must be one of {HEAD_FITS}, got {head_fit!r}")
    if weight_decay is None:
        weight_decay = HEAD_WEIGHT_DECAY[head_fit]
    k_tasks, n = labels.shape
    fdim = features.shape[1]
    cmax = max(num_classes)
    weight = torch.zeros(k_tasks, cmax, fdim, dtype=features.dtype, device=features.device)
    bias = torch.zeros(k_tasks, cmax, dtype=features.dtype, device=features.device)
    for k, (c, name) in enumerate(zip(num_classes, task_names)):
        head = new_head(fdim, c, task_generator(seed, _HEAD_INIT, name))
        weight[k, :c] = head.weight.detach().to(weight)
        bias[k, :c] = head.bias.detach().to(bias)
    heads = Heads(weight, bias, list(num_classes))
    if head_fit == "lbfgs":
        for k, c in enumerate(num_classes):
            w, b = _lbfgs_head(
                features, labels[k], weight[k, :c], bias[k, :c], weight_decay, max_iter
            )
            weight[k, :c], bias[k, :c] = w.to(weight), b.to(bias)
        return heads
    adam = _Adam([weight, bias], lr=lr, weight_decay=weight_decay)
    gens = [task_generator(seed, _HEAD_DRAWS, name) for name in task_names]
    steps = draws // batch_size
    rows = torch.arange(k_tasks, device=features.device)[:, None]
    for _ in range(epochs):
        idx = torch.stack([balanced_draws(labels[k], draws, gens[k]) for k in range(k_tasks)])
        idx = idx.to(features.device)
        for s in range(steps):
            ib = idx[:, s * batch_size : (s + 1) * batch_size]  # [K, B]
            xb = features[ib]  # [K, B, F]
            # gradient of each task's mean cross-entropy w.r.t. its logits, by hand
            delta = torch.softmax(heads.logits(xb), dim=-1)  # [K, B, C]
            delta[rows, torch.arange(ib.shape[1], device=ib.device)[None, :], labels[rows, ib]] -= 1
            delta /= ib.shape[1]
            adam.step([torch.bmm(delta.transpose(1, 2), xb), delta.sum(dim=1)])
    return heads


def _lbfgs_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight_decay: float,
    max_iter: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One head at the minimum of the class-balanced, L2-regularised cross-entropy."""
    x = features.detach().double()
    y = labels.to(x.device)
    counts = torch.bincount(y, minlength=weight.shape[0]).double()
    sample_weight = 1.0 / counts[y] / int((counts > 0).sum())
    w = weight.detach().double().clone().requires_grad_(True)
    b = bias.detach().double().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [w, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        ce = F.cross_entropy(x @ w.T + b, y, reduction="none")
        loss = (ce * sample_weight).sum() + weight_decay / 2 * (w.pow(2).sum() + b.pow(2).sum())
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


class _Adam:
    """Adam with L2 weight decay, as ``torch.optim.Adam`` computes it (elementwise, so a
    stacked tensor of ``K`` heads is ``K`` independent runs)."""

    def __init__(
        self,
        params: list[torch.Tensor],
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        self.t += 1
        b1, b2 = self.betas
        bc1, bc2 = 1 - b1**self.t, 1 - b2**self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            g = g + self.wd * p
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / bc1)


def head_fit_report(
    heads: Heads, features: torch.Tensor, labels: torch.Tensor
) -> list[dict[str, float | bool]]:
    """Per task: ``head_accuracy`` (on the cached images), ``head_balanced_accuracy``,
    ``majority_rate`` and ``probe_fits`` (balanced accuracy > 1/C + :data:`FIT_MARGIN`
    and accuracy above the majority-class rate)."""
    with torch.no_grad():
        pred = heads.logits(features).argmax(dim=-1).cpu()  # [K, N]
    out: list[dict[str, float | bool]] = []
    for k in range(len(heads)):
        y = labels[k].cpu()
        hit = (pred[k] == y).double()
        counts = torch.bincount(y)
        present = counts > 0
        per_class = torch.zeros(len(counts), dtype=torch.float64).index_add_(0, y, hit)
        balanced = float((per_class[present] / counts[present]).mean())
        acc, majority = float(hit.mean()), float(counts.max()) / len(y)
        chance = 1.0 / int(present.sum())
        fits = balanced > chance + FIT_MARGIN and acc > majority
        out.append(
            {
                "head_accuracy": acc,
                "head_balanced_accuracy": balanced,
                "majority_rate": majority,
                "probe_fits": bool(fits),
            }
        )
    return out


# ---------------------------------------------------------------------- layout
def _trunk(probe: nn.Module, skip_layers: int) -> nn.Sequential:
    layers: Any = probe.layers
    return nn.Sequential(*list(layers)[skip_layers:-1])


def fisher_layout(
    probe: nn.Module, param_ids: set[int], include_bn_gamma: bool = True
) -> list[tuple[str, str, nn.Parameter]]:
    """``(module_name, kind, weight)`` of every embedded module, in ``named_modules`` order.

    A module is embedded when its own ``weight`` is in ``param_ids`` (it gets a gradient)
    and it is not the classifier; kind ``bn_gamma`` for normalisation layers (skipped when
    ``include_bn_gamma`` is False), ``filter`` otherwise.
    """
    classifier = probe.classifier
    out: list[tuple[str, str, nn.Parameter]] = []
    for name, module in probe.named_modules():
        if module is classifier:
            continue
        w = module._parameters.get("weight")
        if w is None or id(w) not in param_ids:
            continue
        kind = "bn_gamma" if isinstance(module, _NORMS) else "filter"
        if kind == "bn_gamma" and not include_bn_gamma:
            continue
        out.append((name, kind, w))
    return out


# ---------------------------------------------------------------------- Fisher
@dataclass
class FisherResult:
    """``hessian [K, D]`` (float64), ``layout`` rows ``[module, kind, count]``, the labels
    drawn from the model (``[K, n]``, all batches in order; ``[K, n, C]`` for Bernoulli)
    and the number of samples / batches the estimate averages."""

    hessian: np.ndarray
    layout: list[list[Any]]
    drawn: torch.Tensor
    num_samples: int
    num_batches: int


def _stack_drawn(drawn: list[list[torch.Tensor]], width: int, bernoulli: bool) -> torch.Tensor:
    """``[K, n]`` drawn labels (Bernoulli: ``[K, n, C]``, zero-padded to the widest head)."""
    rows = [torch.cat(d) for d in drawn]
    if bernoulli:
        rows = [F.pad(r, (0, width - r.shape[1])) for r in rows]
    return torch.stack(rows)


def _draw(logits: torch.Tensor, gen: torch.Generator, bernoulli: bool) -> torch.Tensor:
    """Labels drawn from the model for one task's ``logits [B, C]`` (on the CPU)."""
    z = logits.detach().double().cpu()
    if bernoulli:
        return torch.bernoulli(torch.sigmoid(z), generator=gen)
    return torch.multinomial(torch.softmax(z, dim=-1), 1, generator=gen).view(-1)


def _output_cotangent(
    logits: torch.Tensor, drawn: torch.Tensor, weight: torch.Tensor, bernoulli: bool
) -> torch.Tensor:
    """Gradient of each sample's loss w.r.t. the classifier input, ``[B, F]``.

    Cross-entropy: ``W^T (softmax(z) - e_y)``; Bernoulli (BCE with logits, mean over the
    ``C`` outputs): ``W^T (sigmoid(z) - t) / C``.
    """
    z = logits.detach()
    if bernoulli:
        delta = (torch.sigmoid(z) - drawn.to(z)) / z.shape[-1]
    else:
        delta = torch.softmax(z, dim=-1) - F.one_hot(drawn.to(z.device), z.shape[-1]).to(z)
    return delta @ weight


def _has_train_batchnorm(module: nn.Module) -> bool:
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training for m in module.modules()
    )


def montecarlo_fisher(
    probe: nn.Module,
    batches: Iterable[torch.Tensor],
    heads: Heads,
    task_names: Sequence[str],
    *,
    skip_layers: int = 0,
    estimator: str = "per_sample",
    seed: int = 0,
    bernoulli: bool = False,
    include_bn_gamma: bool = True,
    memory_floats: int = 2**25,
    per_sample_impl: str = "auto",
) -> FisherResult:
    """Diagonal Fisher of ``probe.layers[skip:-1]`` for ``K`` heads at once.

    Args:
        probe: the probe (its mode decides BatchNorm: ``eval`` or ``train``); its own
            classifier is not used, ``heads`` replace it.
        batches: inputs of ``layers[skip_layers]``, one tensor per batch.
        heads: the ``K`` fitted heads.
        task_names: names seeding each task's label draws.
        estimator: ``per_sample`` (default, true Fisher) or ``batch_mean_sq`` (faithful).
        memory_floats: bound on the per-sample gradients held at once (chunking).
        per_sample_impl: ``auto`` (default): per-sample gradients of Conv2d / Linear /
            eval-mode BatchNorm weights from one forward and one activation backward per
            task (layer inputs times output gradients, as BackPACK does), ``torch.func``
            (``vmap`` over samples of a ``vjp``) for any other layer; ``vmap``: always the
            latter. Both give the same numbers (tested).

    Returns:
        :class:`FisherResult`; ``hessian[k]`` follows ``layout``.
    """
    if estimator not in ESTIMATORS:
        raise TaskspaceError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    trunk = _trunk(probe, skip_layers)
    if estimator == "per_sample" and _has_train_batchnorm(trunk):
        raise TaskspaceError(
            "estimator=per_sample needs bn_mode=eval (train-mode BatchNorm couples the "
            "samples of a batch); use estimator=batch_mean_sq with bn_mode=train"
        )
    candidates = {id(w) for _, _, w in fisher_layout(probe, set(map(id, trunk.parameters())))}
    names = {id(p): n for n, p in trunk.named_parameters()}
    params: dict[str, torch.Tensor] = {
        names[i]: p for i, p in ((id(p), p) for p in trunk.parameters()) if i in candidates
    }
    gens = [task_generator(seed, _FISHER_LABELS, name) for name in task_names]
    sums = {n: torch.zeros((len(heads), *p.shape), dtype=torch.float64) for n, p in params.items()}
    used: set[str] = set()
    drawn: list[list[torch.Tensor]] = [[] for _ in task_names]
    n_samples = n_batches = 0
    if per_sample_impl not in ("auto", "vmap"):
        raise TaskspaceError(f"per_sample_impl must be auto or vmap, got {per_sample_impl!r}")
    step: Callable[..., StepResult] = _batch_mean_step
    if estimator == "per_sample":
        fast = per_sample_impl == "auto" and _hooks_supported(trunk, params)
        step = _per_sample_step_hooks if fast else _per_sample_step
    for x in batches:
        squares, got_grad, labels = step(trunk, params, x, heads, gens, bernoulli, memory_floats)
        for n, sq in squares.items():
            sums[n] += sq
        used |= got_grad
        for k in range(len(heads)):
            drawn[k].append(labels[k])
        n_samples += len(x)
        n_batches += 1
    if n_batches == 0:
        raise TaskspaceError("no images to compute the Fisher on (empty subset)")
    denom = n_samples if estimator == "per_sample" else n_batches
    keep = {id(params[n]) for n in used}
    layout = fisher_layout(probe, keep, include_bn_gamma)
    inv = {id(p): n for n, p in params.items()}
    blocks = []
    for _, _, w in layout:
        acc = sums[inv[id(w)]] / denom
        blocks.append(acc.reshape(len(heads), acc.shape[1], -1).mean(dim=2))
    hessian = torch.cat(blocks, dim=1).numpy() if blocks else np.zeros((len(heads), 0))
    return FisherResult(
        hessian=hessian,
        layout=[[name, kind, int(w.shape[0])] for name, kind, w in layout],
        drawn=_stack_drawn(drawn, max(heads.num_classes), bernoulli),
        num_samples=n_samples,
        num_batches=n_batches,
    )


def _draw_all(
    logits: torch.Tensor, heads: Heads, gens: list[torch.Generator], bernoulli: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per task labels drawn from its logits ``[K, B, C]``, and the output cotangents
    ``[K, B, F]`` of each sample's loss."""
    drawn, cots = [], []
    for k, c in enumerate(heads.num_classes):
        z = logits[k, :, :c]
        y = _draw(z, gens[k], bernoulli)
        drawn.append(y)
        cots.append(_output_cotangent(z, y, heads.weight[k, :c], bernoulli))
    return drawn, torch.stack(cots)


#: ``({param: sum of squared gradients [K, *shape]}, params with a gradient, drawn labels)``
StepResult = tuple[dict[str, torch.Tensor], set[str], list[torch.Tensor]]


def _batch_mean_step(
    trunk: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    heads: Heads,
    gens: list[torch.Generator],
    bernoulli: bool,
    memory_floats: int,
) -> StepResult:
    """Squared gradient of each task's batch-mean loss (one forward, ``K`` backwards)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    feats = functional_call(trunk, {**_constants(trunk), **leaves}, (x,))
    drawn, cots = _draw_all(heads.logits(feats.detach()), heads, gens, bernoulli)
    cots = cots / len(x)
    squares = {
        n: torch.zeros((len(heads), *p.shape), dtype=torch.float64) for n, p in params.items()
    }
    used: set[str] = set()
    names = list(leaves)
    for k in range(len(heads)):
        grads = torch.autograd.grad(
            feats,
            [leaves[n] for n in names],
            cots[k],
            retain_graph=k < len(heads) - 1,
            allow_unused=True,
        )
        for n, g in zip(names, grads):
            if g is not None:
                squares[n][k] = g.detach().double().cpu() ** 2
                used.add(n)
    return squares, used, drawn


def _per_sample_step(
    trunk: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    heads: Heads,
    gens: list[torch.Generator],
    bernoulli: bool,
    memory_floats: int,
) -> StepResult:
    """Sum over the batch of each sample's squared gradient, for every task."""
    frozen = {n: p.detach() for n, p in params.items()}
    consts = _constants(trunk)
    with torch.no_grad():
        feats = functional_call(trunk, {**consts, **frozen}, (x,))
    drawn, cots = _draw_all(heads.logits(feats), heads, gens, bernoulli)  # [K, B, F]
    used = _used(trunk, frozen, x[:1])  # eval mode here: no statistics drift
    per_sample_floats = len(heads) * sum(p.numel() for p in frozen.values())
    chunk = max(1, min(len(x), memory_floats // max(per_sample_floats, 1)))

    def features_of(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return functional_call(trunk, {**consts, **p}, (xi.unsqueeze(0),)).squeeze(0)

    def one(xi: torch.Tensor, cot: torch.Tensor) -> dict[str, torch.Tensor]:
        pull = vjp(lambda p: features_of(p, xi), frozen)[1]
        return vmap(pull)(cot)[0]  # {name: [K, *shape]}

    sums = {n: torch.zeros((len(heads), *p.shape), dtype=torch.float64) for n, p in frozen.items()}
    cots_bk = cots.transpose(0, 1)  # [B, K, F]
    for s in range(0, len(x), chunk):
        g = vmap(one)(x[s : s + chunk], cots_bk[s : s + chunk])
        for n, v in g.items():
            acc = torch.zeros_like(v[0])
            for i in range(v.shape[0]):
                acc.addcmul_(v[i], v[i])
            sums[n] += acc.double().cpu()
    return sums, used, drawn


_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _owner(trunk: nn.Module, name: str) -> nn.Module:
    return trunk.get_submodule(name.rsplit(".", 1)[0]) if "." in name else trunk


def _hooks_supported(trunk: nn.Module, params: dict[str, torch.Tensor]) -> bool:
    """Whether every embedded weight belongs to a layer the hook path handles: Linear,
    Conv2d (numeric padding, zeros padding mode, one group), eval BatchNorm with running
    statistics (exact types: subclasses may lay channels out differently)."""
    for name in params:
        m = _owner(trunk, name)
        if type(m) is nn.Linear:
            continue
        if type(m) is nn.Conv2d:
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                return False
            continue
        if type(m) in _BN_TYPES and not m.training and m.running_mean is not None:
            continue
        return False
    return True


def _per_sample_step_hooks(
    trunk: nn.Module,
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    heads: Heads,
    gens: list[torch.Generator],
    bernoulli: bool,
    memory_floats: int,
) -> StepResult:
    """Per-sample squared gradients from one forward pass shared by all tasks.

    Hooks keep each embedded layer's input ``a`` and output ``o``; per task one backward
    gives ``d<features, c_k>/do`` for the whole batch, and the per-sample weight gradient
    is ``delta x a`` (unfolded for convolutions; ``delta * x_hat`` summed over positions
    for a BatchNorm gamma).
    """
    owners = {name: _owner(trunk, name) for name in params}
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        seen.setdefault(id(module), []).append((args[0].detach(), output))

    handles = [m.register_forward_hook(hook) for m in {id(m): m for m in owners.values()}.values()]
    try:
        with torch.enable_grad():
            feats = trunk(x.detach().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    if any(len(v) != 1 for v in seen.values()):  # a layer used twice: take the general path
        return _per_sample_step(trunk, params, x, heads, gens, bernoulli, memory_floats)
    drawn, cots = _draw_all(heads.logits(feats.detach()), heads, gens, bernoulli)
    names = [n for n in params if id(owners[n]) in seen]
    outs = [seen[id(owners[n])][0][1] for n in names]
    sums = {n: torch.zeros((len(heads), *p.shape), dtype=torch.float64) for n, p in params.items()}
    # output gradients of a group of tasks are held at once: bound the group by memory
    group = max(1, memory_floats // max(sum(o.numel() for o in outs), 1))
    for start in range(0, len(heads), group):
        ks = range(start, min(start + group, len(heads)))
        deltas: list[list[torch.Tensor]] = [[] for _ in names]
        for k in ks:
            last = k == len(heads) - 1
            grads = torch.autograd.grad(
                feats, outs, cots[k], retain_graph=not last, allow_unused=True
            )
            for j, (g, o) in enumerate(zip(grads, outs)):
                deltas[j].append(torch.zeros_like(o) if g is None else g)
        for j, name in enumerate(names):
            module, a = owners[name], seen[id(owners[name])][0][0]
            delta = torch.stack(deltas[j])  # [G, B, ...]
            deltas[j] = []
            sums[name][start : start + len(ks)] = _layer_square_sums(
                module, a, delta, memory_floats
            )
    return sums, set(names), drawn


def _layer_square_sums(
    module: Any, a: torch.Tensor, delta: torch.Tensor, memory_floats: int
) -> torch.Tensor:
    """``sum_i (per-sample weight gradient)**2`` for ``K`` tasks, ``[K, *weight.shape]``."""
    k_tasks, b = delta.shape[:2]
    weight = module.weight
    per = k_tasks * weight.numel()
    chunk = max(1, min(b, memory_floats // max(per, 1)))
    total = torch.zeros((k_tasks, *weight.shape), dtype=torch.float64)
    for s in range(0, b, chunk):
        ai, di = a[s : s + chunk], delta[:, s : s + chunk]
        if isinstance(module, nn.Linear):
            g = torch.einsum(
                "kbto,bti->kboi",
                di.reshape(k_tasks, len(ai), -1, di.shape[-1]),
                ai.reshape(len(ai), -1, ai.shape[-1]),
            )
        elif isinstance(module, nn.Conv2d):
            pad = cast(tuple[int, ...], module.padding)  # numeric: checked by the caller
            cols = F.unfold(ai, module.kernel_size, module.dilation, pad, module.stride)
            g = torch.einsum("kbol,bcl->kboc", di.flatten(3), cols)
        else:  # eval BatchNorm: gamma gradient = sum over positions of delta * x_hat
            shape = (1, -1) + (1,) * (ai.dim() - 2)
            mean = module.running_mean.view(shape)
            std = (module.running_var.view(shape) + module.eps).sqrt()
            x_hat = (ai - mean) / std
            g = (di * x_hat).reshape(k_tasks, len(ai), ai.shape[1], -1).sum(-1)
        acc = torch.zeros_like(g[:, 0])
        for i in range(g.shape[1]):  # in-place adds: far faster than a strided reduction
            acc.addcmul_(g[:, i], g[:, i])
        total += acc.double().reshape(total.shape).cpu()
    return total


def _constants(trunk: nn.Module) -> dict[str, torch.Tensor]:
    """The trunk's parameters, detached (no graph is built for those not differentiated)."""
    return {n: p.detach() for n, p in trunk.named_parameters()}


def _used(trunk: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor) -> set[str]:
    """Names of ``params`` that get a gradient at all (a plain autograd pass on one input)."""
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    out = functional_call(trunk, {**_constants(trunk), **leaves}, (x,))
    grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
    return {n for n, g in zip(leaves, grads) if g is not None}


def batches_of(
    n: int, get: Callable[[torch.Tensor], torch.Tensor], batch_size: int = BATCH_SIZE
) -> Iterable[torch.Tensor]:
    """``get(idx)`` for consecutive index batches ``[0, n)`` (last one partial)."""
    for s in range(0, n, batch_size):
        yield get(torch.arange(s, min(s + batch_size, n)))


def balanced_fisher_batches(
    labels: torch.Tensor,
    get: Callable[[torch.Tensor], torch.Tensor],
    task: str,
    *,
    seed: int = 0,
    epochs: int = 1,
    draws: int = 10_000,
    batch_size: int = BATCH_SIZE,
) -> Iterable[torch.Tensor]:
    """The original's Fisher loader: per epoch ``draws`` class-balanced draws with
    replacement, batches of ``batch_size``, ``drop_last`` (156 batches)."""
    gen = task_generator(seed, _FISHER_DRAWS, task)
    for _ in range(epochs):
        idx = balanced_draws(labels, draws, gen)
        for s in range(draws // batch_size):
            yield get(idx[s * batch_size : (s + 1) * batch_size])
