"""``embed_tasks``: Task2Vec embeddings of many tasks over the same images with one probe.

What the original does per task (a fresh probe, a caching pass, a head fit, a Fisher pass)
is shared here where the result does not change (``bn_mode="eval"``, the default):

- the inputs of ``layers[skip]`` and ``layers[-1]`` are computed once for all tasks (in
  eval mode the trunk does not depend on the task);
- the heads of a group of tasks are fitted together as one stacked tensor;
- the Monte-Carlo Fisher of a group of tasks shares each batch's forward pass (one forward,
  then one backward per task, or per-sample gradients vmapped over the tasks).

Every task's random draws (head init, balanced draws, labels drawn from the model) come
from its own generator seeded by ``(seed, task name)``, so ``embed_tasks`` over many tasks
equals ``embed_task`` on each (checked by the tests). With ``bn_mode="train"`` (faithful)
each task gets the original's own fresh probe and passes.

Switches (faithful -> default): ``bn_mode`` train -> eval; ``estimator`` batch_mean_sq ->
per_sample; ``subset`` first_batches -> random; ``fisher_sampler`` balanced -> subset;
``head_fit`` adam -> lbfgs (with weight decay 1e-4 -> 1e-3); ``include_bn_gamma`` True ->
True. ``min_samples`` (default 32, and at least 2 per class) refuses tasks too small to
embed.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from taskspace.data.dataset import ImageDataset
from taskspace.embed.embedding import Embedding
from taskspace.embed.fisher import (
    BATCH_SIZE,
    BN_MODES,
    ESTIMATORS,
    FISHER_SAMPLERS,
    HEAD_FITS,
    HEAD_WEIGHT_DECAY,
    SUBSETS,
    FisherResult,
    Heads,
    balanced_fisher_batches,
    batches_of,
    cache_inputs,
    fit_heads,
    head_fit_report,
    montecarlo_fisher,
    select_subset,
    task_seed,
)
from taskspace.embed.probe import (
    Probe,
    as_probe,
    fresh_probe,
    load_probe,
    probe_digest,
    probe_name,
)
from taskspace.errors import TaskspaceError
from taskspace.progress import progress_bar
from taskspace.seeding import derive_seed
from taskspace.tasks.taskset import TaskSet

__all__ = ["METHODS", "MIN_SAMPLES", "EmbedOptions", "check_options", "embed_task", "embed_tasks"]

log = logging.getLogger(__name__)

METHODS = ("montecarlo", "variational")
#: Default minimum number of images a task is embedded on (and at least 2 per class).
MIN_SAMPLES = 32
_VARIATIONAL_SEED, _PROBE_SEED = 127, 131


@dataclass
class EmbedOptions:
    """The ``**opts`` of :func:`embed_tasks` (all optional).

    Attributes:
        include_bn_gamma: add BN gamma entries to the Monte-Carlo embedding (True, as the
            original).
        bernoulli: draw labels from per-output Bernoullis (BCE with logits) instead of the
            softmax; the head is still fitted with cross-entropy.
        fisher_sampler: ``subset`` (default: each subset image once) or ``balanced``
            (faithful: ``fisher_draws`` class-balanced draws per epoch, ``drop_last``,
            from the cached ``layers[skip]`` inputs, or the whole split when skip is 0).
        fisher_epochs, fisher_draws: the balanced sampler's epochs (1) and draws (10,000).
        batch_size: 64 everywhere, as the original.
        head_fit: ``lbfgs`` (default: the head's objective minimised to convergence) or
            ``adam`` (faithful: the original's 10 epochs of Adam); see
            :func:`~taskspace.embed.fisher.fit_heads`.
        head_epochs, head_lr, head_draws: the ``adam`` head refit (10, 4e-4, 10,000).
        head_weight_decay: the head's L2 weight decay; ``None`` (default): 1e-3 for
            ``lbfgs``, the original's 1e-4 for ``adam``
            (:data:`~taskspace.embed.fisher.HEAD_WEIGHT_DECAY`).
        min_samples: refuse tasks with fewer images (default :data:`MIN_SAMPLES`).
        weights: a local weights file for a probe given by name.
        probe_kwargs: architecture options for a probe given by name.
        method_opts: options of the variational method (``kl_factor``, ``epochs``...).
        device: where to compute (default: the probe's device).
        task_batch: tasks fitted and differentiated together (memory bound, 32).
        memory_floats: bound on per-sample gradients held at once.
    """

    include_bn_gamma: bool = True
    bernoulli: bool = False
    fisher_sampler: str = "subset"
    fisher_epochs: int = 1
    fisher_draws: int = 10_000
    batch_size: int = BATCH_SIZE
    head_fit: str = "lbfgs"
    head_epochs: int = 10
    head_lr: float = 4e-4
    head_weight_decay: float | None = None
    head_draws: int = 10_000
    min_samples: int = MIN_SAMPLES
    weights: str | Path | None = None
    probe_kwargs: dict[str, Any] = field(default_factory=dict)
    method_opts: dict[str, Any] = field(default_factory=dict)
    device: str | torch.device | None = None
    task_batch: int = 32
    memory_floats: int = 2**25


def check_options(
    method: str = "montecarlo",
    estimator: str = "per_sample",
    bn_mode: str = "eval",
    subset: str = "random",
    skip_layers: int = 0,
    max_samples: int | None = None,
    seed: int = 0,
    **opts: Any,
) -> EmbedOptions:
    """Validate :func:`embed_tasks`'s options without embedding anything (a command calls
    it before it creates its run directory); returns the parsed :class:`EmbedOptions`."""
    if isinstance(skip_layers, bool) or not isinstance(skip_layers, int) or skip_layers < 0:
        raise TaskspaceError(f"skip_layers must be a non-negative integer, got {skip_layers!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise TaskspaceError(f"max_samples must be a positive integer or None, got {max_samples!r}")
    return _options(method, estimator, bn_mode, subset, opts)


def _options(method: str, estimator: str, bn_mode: str, subset: str, opts: dict) -> EmbedOptions:
    known = set(EmbedOptions.__dataclass_fields__)
    opts = dict(opts)
    if method == "variational":
        # options of the variational method may also be given directly (kl_factor=2)
        accepted = inspect.signature(_variational_fisher()).parameters
        moved = {k: opts.pop(k) for k in sorted(set(opts) - known) if k in accepted}
        if moved:
            opts["method_opts"] = {**opts.get("method_opts", {}), **moved}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise TaskspaceError(
            f"embed_tasks got unknown option(s) {', '.join(unknown)}; known: "
            f"{', '.join(sorted(known))}"
        )
    for what, value, allowed in (
        ("method", method, METHODS),
        ("estimator", estimator, ESTIMATORS),
        ("bn_mode", bn_mode, BN_MODES),
        ("subset", subset, SUBSETS),
        ("fisher_sampler", opts.get("fisher_sampler", "subset"), FISHER_SAMPLERS),
        ("head_fit", opts.get("head_fit", "lbfgs"), HEAD_FITS),
    ):
        if value not in allowed:
            raise TaskspaceError(f"{what} must be one of {', '.join(allowed)}, got {value!r}")
    cfg = EmbedOptions(**opts)
    for what in ("batch_size", "head_epochs", "head_draws", "fisher_draws", "task_batch"):
        value = getattr(cfg, what)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskspaceError(f"{what} must be a positive integer, got {value!r}")
    wd = cfg.head_weight_decay
    if wd is not None and (isinstance(wd, bool) or not isinstance(wd, int | float) or wd < 0):
        raise TaskspaceError(f"head_weight_decay must be a number >= 0, got {wd!r}")
    if cfg.head_draws < cfg.batch_size or cfg.fisher_draws < cfg.batch_size:
        raise TaskspaceError("head_draws and fisher_draws must be at least batch_size")
    return cfg


def _resolve_probe(
    probe: str | Path | nn.Module, dataset: ImageDataset, cfg: EmbedOptions, seed: int
) -> nn.Module:
    if isinstance(probe, nn.Module):
        if cfg.weights is not None:
            raise TaskspaceError("weights= applies to a probe given by name, not to a module")
        base = as_probe(probe)
    else:
        # A probe built by name is initialised from the seed (weights, when given, replace
        # the trunk), so embeddings are reproducible and calls with one seed share a probe.
        base = load_probe(
            probe,
            2,
            in_channels=dataset.channels,
            image_size=dataset.image_size,
            weights=cfg.weights,
            seed=derive_seed(int(seed), _PROBE_SEED),
            **cfg.probe_kwargs,
        )
    if cfg.device is not None:
        base = base.to(cfg.device)
    return base


def _check_task(tasks: TaskSet, k: int, split: str, labels: torch.Tensor, cfg: EmbedOptions) -> int:
    """Refuse a task the embedding cannot be computed for; return its class count."""
    name = tasks.names[k]
    if split in tasks.unlabelled_splits(k):
        raise TaskspaceError(f"task {name!r} has no labels on split {split!r}; embed another split")
    counts = torch.bincount(labels)
    present = int((counts > 0).sum())
    if present < 2:
        raise TaskspaceError(
            f"task {name!r} has a single class on the {len(labels)} images embedded; a task "
            "needs at least 2 classes"
        )
    need = max(cfg.min_samples, 2 * present)
    if len(labels) < need:
        raise TaskspaceError(
            f"task {name!r} has {len(labels)} images on split {split!r}, fewer than the "
            f"minimum {need} (min_samples={cfg.min_samples}, 2 per class)"
        )
    return max(tasks.num_classes(k), int(labels.max()) + 1)


@dataclass
class _Run:
    """What every task of one call shares."""

    dataset: ImageDataset
    tasks: TaskSet
    base: nn.Module
    method: str
    split: str
    skip: int
    idx: torch.Tensor
    labels: torch.Tensor  # [K, n] on the subset
    num_classes: list[int]
    estimator: str
    bn_mode: str
    seed: int
    cfg: EmbedOptions
    meta: dict[str, Any]
    device: torch.device
    dtype: torch.dtype

    def images(self, ii: torch.Tensor) -> torch.Tensor:
        """Normalised images at dataset indices ``ii``, on the probe's device and dtype."""
        x = self.dataset.normalize(self.dataset.images[ii.cpu()].to(self.device))
        return x.to(self.dtype)

    def subset_batches(self) -> Any:
        return batches_of(len(self.idx), lambda i: self.images(self.idx[i]), self.cfg.batch_size)


def embed_tasks(
    dataset: ImageDataset,
    tasks: TaskSet,
    probe: str | Path | nn.Module,
    *,
    method: str = "montecarlo",
    split: str = "train",
    skip_layers: int = 0,
    max_samples: int | None = None,
    estimator: str = "per_sample",
    bn_mode: str = "eval",
    subset: str = "random",
    seed: int = 0,
    progress: bool = False,
    on_task: Callable[[int, Embedding], object] | None = None,
    **opts: Any,
) -> list[Embedding]:
    """Embed every task of ``tasks`` with ``probe`` (Task2Vec, reference section 2).

    Args:
        dataset: the images the tasks label.
        tasks: any task set (human, random, table, attribute, discovered...).
        probe: a registry / ``tv:`` / ``timm:`` name or checkpoint path (see
            :func:`~taskspace.embed.probe.load_probe`; built for the dataset's channels and
            size, never downloading), or a module (adapted by ``as_probe``, not modified).
        method: ``montecarlo`` (default) or ``variational``.
        split: the dataset split whose images are used.
        skip_layers: the Fisher covers ``layers[skip_layers:-1]`` (6 = ResNet ``layer3``).
        max_samples: images used (``None``: the whole split), chosen by ``subset``.
        estimator: ``per_sample`` (default, true Fisher) or ``batch_mean_sq`` (faithful).
        bn_mode: ``eval`` (default) or ``train`` (faithful: the original never sets eval).
        subset: ``random`` (default, seeded) or ``first_batches`` (faithful).
        seed: seeds the subset and each task's draws (with its name).
        progress: a progress bar over tasks.
        on_task: called as ``on_task(i, embedding)`` when task ``i`` is done (save it).
        opts: :class:`EmbedOptions` fields.

    Returns:
        One :class:`Embedding` per task, in ``tasks`` order.

    Raises:
        TaskspaceError: a probe without the contract, an unknown option, a task with one
            class or fewer than the minimum number of images.
    """
    run = _prepare(
        dataset, tasks, probe, method, split, skip_layers, max_samples, estimator, bn_mode,
        subset, seed, opts,
    )  # fmt: skip
    bar = progress_bar(len(tasks), "embedding tasks", progress, unit="task")
    out: list[Embedding] = []

    def done(k: int, emb: Embedding) -> None:
        out.append(emb)
        if on_task is not None:
            on_task(k, emb)
        if bar:
            bar.update(1)

    modes = {m: m.training for m in run.base.modules()}
    try:
        if bn_mode == "eval":
            _embed_shared(run, done)
        else:
            for k in range(len(tasks)):
                done(k, _embed_alone(run, k))
    finally:
        for m, training in modes.items():
            m.training = training
        if bar:
            bar.close()
    return out


def embed_task(
    dataset: ImageDataset,
    tasks: TaskSet,
    task: int | str,
    probe: str | Path | nn.Module,
    **kwargs: Any,
) -> Embedding:
    """The embedding of one task of ``tasks`` (equal to its entry in :func:`embed_tasks`)."""
    return embed_tasks(dataset, tasks.select([task]), probe, **kwargs)[0]


def _prepare(
    dataset: ImageDataset,
    tasks: TaskSet,
    probe: str | Path | nn.Module,
    method: str,
    split: str,
    skip_layers: int,
    max_samples: int | None,
    estimator: str,
    bn_mode: str,
    subset: str,
    seed: int,
    opts: dict[str, Any],
) -> _Run:
    """Check everything (before any work) and gather what the tasks share."""
    cfg = _options(method, estimator, bn_mode, subset, opts)
    if not isinstance(tasks, TaskSet):
        raise TaskspaceError(f"tasks must be a TaskSet, got {type(tasks).__name__}")
    if tasks.num_images != len(dataset):
        raise TaskspaceError(
            f"the tasks label {tasks.num_images} images but dataset {dataset.name!r} has "
            f"{len(dataset)}"
        )
    base = _resolve_probe(probe, dataset, cfg, seed)
    n_layers = len(base.layers)  # type: ignore[arg-type]
    if isinstance(skip_layers, bool) or not isinstance(skip_layers, int):
        raise TaskspaceError(f"skip_layers must be an integer, got {skip_layers!r}")
    if not 0 <= skip_layers < n_layers - 1:
        raise TaskspaceError(
            f"skip_layers={skip_layers} out of range: the probe has {n_layers} layers, the "
            f"last is the classifier (use 0..{n_layers - 2})"
        )
    layers: Any = base.layers
    trunk_bn = any(
        isinstance(m, nn.modules.batchnorm._BatchNorm)
        for layer in list(layers)[skip_layers:-1]
        for m in layer.modules()
    )
    if method == "montecarlo" and estimator == "per_sample" and bn_mode == "train" and trunk_bn:
        raise TaskspaceError(
            "estimator=per_sample needs bn_mode=eval (train-mode BatchNorm couples the "
            "samples of a batch); use estimator=batch_mean_sq with bn_mode=train"
        )
    idx = select_subset(dataset.split(split), max_samples, subset, seed, cfg.batch_size)
    labels = tasks.labels[:, idx]
    num_classes = [_check_task(tasks, k, split, labels[k], cfg) for k in range(len(tasks))]
    first = next(base.parameters())
    mc = method == "montecarlo"  # Monte-Carlo-only switches are None for variational
    meta = {
        "probe": probe_name(base) if not isinstance(base, Probe) else base.probe_name,
        "probe_digest": probe_digest(base),
        "method": method,
        "skip_layers": skip_layers,
        "estimator": estimator if mc else None,
        "bn_mode": bn_mode,
        "subset": subset,
        "max_samples": max_samples,
        "include_bn_gamma": cfg.include_bn_gamma if mc else None,
        "bernoulli": cfg.bernoulli if mc else None,
        "fisher_sampler": cfg.fisher_sampler if mc else None,
        "head_fit": cfg.head_fit,
        "head_weight_decay": (
            HEAD_WEIGHT_DECAY[cfg.head_fit]
            if cfg.head_weight_decay is None
            else cfg.head_weight_decay
        ),
        "method_opts": dict(cfg.method_opts) if method == "variational" else {},
        "seed": seed,
        "dataset": dataset.name,
        "split": split,
    }
    return _Run(
        dataset, tasks, base, method, split, skip_layers, idx, labels, num_classes, estimator,
        bn_mode, seed, cfg, meta, first.device, first.dtype,
    )  # fmt: skip


def _fit(run: _Run, features: torch.Tensor, ks: Sequence[int]) -> tuple[Heads, list[dict]]:
    """Fit the heads of tasks ``ks`` on ``features`` and report how well they fit."""
    cfg = run.cfg
    labels = run.labels[list(ks)].to(features.device)
    heads = fit_heads(
        features,
        labels,
        [run.num_classes[k] for k in ks],
        [run.tasks.names[k] for k in ks],
        seed=run.seed,
        head_fit=cfg.head_fit,
        epochs=cfg.head_epochs,
        lr=cfg.head_lr,
        weight_decay=cfg.head_weight_decay,
        draws=cfg.head_draws,
        batch_size=cfg.batch_size,
    )
    reports = head_fit_report(heads, features, labels)
    for k, rep in zip(ks, reports):
        if not rep["probe_fits"]:
            log.warning(
                "task %r: the probe's refitted head does not fit the task (accuracy %.3f, "
                "balanced %.3f, majority rate %.3f); its embedding may not mean much",
                run.tasks.names[k],
                rep["head_accuracy"],
                rep["head_balanced_accuracy"],
                rep["majority_rate"],
            )
    return heads, reports


def _embed_shared(run: _Run, done: Callable[[int, Embedding], None]) -> None:
    """Eval mode: one caching pass, heads and Fisher passes shared by groups of tasks."""
    run.base.eval()
    at_skip, at_last = cache_inputs(run.base, run.subset_batches(), run.skip)
    K, step = len(run.tasks), run.cfg.task_batch
    for start in range(0, K, step):
        ks = list(range(start, min(start + step, K)))
        heads, reports = _fit(run, at_last, ks)
        names = [run.tasks.names[k] for k in ks]
        if run.method == "montecarlo" and run.cfg.fisher_sampler == "subset":
            res = montecarlo_fisher(
                run.base,
                batches_of(
                    len(at_skip), lambda i: at_skip[i.to(at_skip.device)], run.cfg.batch_size
                ),
                heads,
                names,
                skip_layers=run.skip,
                estimator=run.estimator,
                seed=run.seed,
                bernoulli=run.cfg.bernoulli,
                include_bn_gamma=run.cfg.include_bn_gamma,
                memory_floats=run.cfg.memory_floats,
            )
            for j, k in enumerate(ks):
                done(k, _mc_embedding(run, k, res, j, reports[j]))
            continue
        for j, k in enumerate(ks):
            if run.method == "montecarlo":
                res = _balanced_fisher(run, run.base, heads.select(j), k, at_skip)
                done(k, _mc_embedding(run, k, res, 0, reports[j]))
            else:
                probe = _probe_with_head(run, heads, j)
                done(k, _variational(run, probe, k, at_skip, reports[j]))


def _embed_alone(run: _Run, k: int) -> Embedding:
    """Train mode (faithful): the original's per-task fresh probe, caching pass, head fit
    and Fisher pass (BatchNorm batch statistics, running statistics drifting)."""
    name = run.tasks.names[k]
    probe = fresh_probe(run.base, run.num_classes[k]).train()
    at_skip, at_last = cache_inputs(probe, run.subset_batches(), run.skip)
    heads, reports = _fit(run, at_last, [k])
    if run.method == "variational":
        _set_head(probe, heads, 0)
        return _variational(run, probe, k, at_skip, reports[0])
    if run.cfg.fisher_sampler == "balanced":
        res = _balanced_fisher(run, probe, heads, k, at_skip)
    else:
        res = montecarlo_fisher(
            probe,
            batches_of(len(at_skip), lambda i: at_skip[i], run.cfg.batch_size),
            heads,
            [name],
            skip_layers=run.skip,
            estimator=run.estimator,
            seed=run.seed,
            bernoulli=run.cfg.bernoulli,
            include_bn_gamma=run.cfg.include_bn_gamma,
            memory_floats=run.cfg.memory_floats,
        )
    return _mc_embedding(run, k, res, 0, reports[0])


def _balanced_fisher(
    run: _Run, probe: nn.Module, heads: Heads, k: int, at_skip: torch.Tensor
) -> FisherResult:
    """The original's Fisher loader: balanced draws from the cached ``layers[skip]`` inputs
    (skip > 0) or from the whole split's images (skip 0)."""
    name = run.tasks.names[k]
    if run.skip > 0:
        pool_labels = run.labels[k]

        def get(ii: torch.Tensor) -> torch.Tensor:
            return at_skip[ii.to(at_skip.device)]
    else:
        split_idx = run.dataset.split(run.split).sort().values
        pool_labels = run.tasks.labels[k, split_idx]

        def get(ii: torch.Tensor) -> torch.Tensor:
            return run.images(split_idx[ii])

    batches = balanced_fisher_batches(
        pool_labels,
        get,
        name,
        seed=run.seed,
        epochs=run.cfg.fisher_epochs,
        draws=run.cfg.fisher_draws,
        batch_size=run.cfg.batch_size,
    )
    return montecarlo_fisher(
        probe,
        batches,
        heads,
        [name],
        skip_layers=run.skip,
        estimator=run.estimator,
        seed=run.seed,
        bernoulli=run.cfg.bernoulli,
        include_bn_gamma=run.cfg.include_bn_gamma,
        memory_floats=run.cfg.memory_floats,
    )


def _probe_with_head(run: _Run, heads: Heads, j: int) -> nn.Module:
    """A fresh copy of the probe carrying fitted head ``j`` (the variational method
    trains noise on it, so every task needs its own copy)."""
    probe = fresh_probe(run.base, heads.num_classes[j])
    _set_head(probe, heads, j)
    return probe


def _set_head(probe: nn.Module, heads: Heads, j: int) -> None:
    """Copy fitted head ``j`` into the probe's classifier."""
    classifier: Any = probe.classifier
    c = heads.num_classes[j]
    with torch.no_grad():
        classifier.weight.copy_(heads.weight[j, :c])
        classifier.bias.copy_(heads.bias[j, :c])


def _task_meta(run: _Run, k: int, report: dict, num_samples: int, layout: list) -> dict:
    meta = dict(run.meta)
    meta.update(
        {
            "task": run.tasks.names[k],
            "kind": run.tasks.kinds[k],
            "num_classes": run.num_classes[k],
            "num_images": len(run.idx),
            "num_samples": int(num_samples),
            **{key: (bool(v) if isinstance(v, bool) else float(v)) for key, v in report.items()},
            "layout": [list(row) for row in layout],
        }
    )
    return meta


def _mc_embedding(run: _Run, k: int, res: FisherResult, j: int, report: dict) -> Embedding:
    hessian = np.asarray(res.hessian[j], dtype=np.float64)
    meta = _task_meta(run, k, report, res.num_samples, res.layout)
    return Embedding(hessian, np.ones_like(hessian), meta)


def _variational_fisher() -> Any:
    """``taskspace.embed.variational.variational_fisher``, imported when first needed."""
    return importlib.import_module("taskspace.embed.variational").variational_fisher


def _variational(
    run: _Run, probe: nn.Module, k: int, at_skip: torch.Tensor, report: dict
) -> Embedding:
    """Helper B's variational method on the cached ``layers[skip]`` inputs."""
    opts = {"bn_mode": run.bn_mode, **run.cfg.method_opts}
    name = run.tasks.names[k]
    hessian, scale, layout = _variational_fisher()(
        probe,
        at_skip,
        run.labels[k].to(at_skip.device),
        skip_layers=run.skip,
        seed=task_seed(run.seed, _VARIATIONAL_SEED, name),
        **opts,
    )
    meta = _task_meta(run, k, report, len(at_skip), layout)
    return Embedding(np.asarray(hessian), np.asarray(scale), meta)
