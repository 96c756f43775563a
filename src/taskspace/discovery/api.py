"""Task discovery as library calls, with no run directory and no command line.

- :func:`train_encoder`: run (or resume from an optional checkpoint file) the
  meta-training of a :class:`MetaTrainer` up to ``meta_steps``;
- :func:`discovered_taskset`: the hard labels of every head of an encoder, with the sign
  convention in the task set's meta;
- :func:`discover_tasks`: both, from a dataset and a few options; works in a notebook.

Sign convention: task ``k`` labels ``x`` with ``1[w_k . h(x) > 0]`` (``flip=True``
inverts every label).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.discovery.artifacts import encoder_embeddings, hard_labels
from taskspace.discovery.encoder import TaskEncoder
from taskspace.discovery.inner import InnerLearners
from taskspace.discovery.metatrain import MetaSettings, MetaTrainer
from taskspace.progress import progress_bar
from taskspace.tasks import TaskSet

__all__ = ["Discovery", "discover_tasks", "discovered_taskset", "train_encoder"]


def train_encoder(
    trainer: MetaTrainer,
    meta_steps: int,
    *,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    stop_after: int | None = None,
    progress: bool = False,
    on_checkpoint: Callable[[MetaTrainer], object] | None = None,
) -> MetaTrainer:
    """Meta-train until ``trainer.step == meta_steps`` (or ``stop_after`` more steps).

    With ``checkpoint`` the trainer resumes from that file when it exists and saves it
    every ``checkpoint_every`` steps and at the end (then ``on_checkpoint(trainer)`` runs,
    e.g. to write the log), so a killed run continues exactly where it stopped.
    """
    if checkpoint is not None and Path(checkpoint).exists():
        trainer.load(checkpoint)
        print(f"resuming meta-training at step {trainer.step}/{meta_steps}")
    bar = progress_bar(meta_steps, "meta-steps", progress, initial=trainer.step)

    def save() -> None:
        if checkpoint is not None:
            trainer.save(checkpoint)
        if on_checkpoint is not None:
            on_checkpoint(trainer)

    done_here = 0
    while trainer.step < meta_steps:
        if stop_after is not None and done_here >= stop_after:
            break
        log = trainer.meta_step()
        done_here += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(proxy_as=f"{log['proxy_as']:.3f}", loss=f"{log['loss']:.3f}")
        if trainer.step % checkpoint_every == 0 or trainer.step == meta_steps:
            save()
    if bar is not None:
        bar.close()
    save()
    return trainer


def discovered_taskset(
    enc: TaskEncoder,
    ds: ImageDataset,
    *,
    label_bn: str = "running",
    flip: bool = False,
    prefix: str = "discovered",
    meta: dict[str, Any] | None = None,
) -> tuple[TaskSet, torch.Tensor]:
    """Hard labels of every head over all images (``[K, N]``) and the scores ``[N, K]``.

    ``meta`` is added to the task set's meta (what made the encoder: dataset, seeds, ...).
    """
    h = encoder_embeddings(enc, ds, label_bn)
    scores = h @ enc.heads.float().cpu().t()
    labels = hard_labels(scores, flip)
    names = [f"{prefix}-{k:02d}" for k in range(enc.num_tasks)]
    info = {
        "sign": "label = 1[w_k . h(x) <= 0]" if flip else "label = 1[w_k . h(x) > 0]",
        "flip": bool(flip),
        "d": enc.dim,
        "encoder_arch": enc.arch,
        "label_bn": label_bn,
        **(meta or {}),
        "tasks": {n: {"head": k} for k, n in enumerate(names)},
    }
    return TaskSet(labels, names, ["discovered"] * len(names), info), scores


@dataclass
class Discovery:
    """What :func:`discover_tasks` returns: the tasks, their scores, the encoder, the logs."""

    tasks: TaskSet
    scores: torch.Tensor
    encoder: TaskEncoder
    logs: list[dict] = field(default_factory=list)


def discover_tasks(
    dataset: ImageDataset,
    *,
    model: str = "mlp",
    model_kwargs: dict | None = None,
    encoder: str | None = None,
    encoder_kwargs: dict | None = None,
    d: int = 16,
    K: int = 16,
    meta_steps: int = 40,
    settings: MetaSettings | None = None,
    label_bn: str = "running",
    flip: bool = False,
    seed: int = 0,
    head_seed: int = 0,
    device: str = "cpu",
    progress: bool = False,
    checkpoint: str | Path | None = None,
) -> Discovery:
    """Meta-train a task encoder on ``dataset`` and return its ``K`` tasks.

    ``model`` is the learner (the inner learners), ``encoder`` the encoder's backbone
    (default: the learner's architecture, as in the reference). ``settings`` are the
    meta-optimisation's (:class:`MetaSettings`; its ``seed`` is set to ``seed``).
    Example: ``discover_tasks(load_dataset("digits"), model_kwargs={"widths": [256, 64]},
    meta_steps=20).tasks``.
    """
    settings = settings or MetaSettings()
    settings.seed = seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = TaskEncoder(
            encoder or model,
            in_channels=dataset.channels,
            image_size=dataset.image_size,
            dim=d,
            num_tasks=K,
            head_seed=head_seed,
            model_kwargs=encoder_kwargs,
        )
    learners = InnerLearners(
        model,
        in_channels=dataset.channels,
        image_size=dataset.image_size,
        model_kwargs=model_kwargs,
    )
    trainer = MetaTrainer(enc, learners, dataset, settings, device=device)
    train_encoder(trainer, meta_steps, checkpoint=checkpoint, progress=progress)
    enc = trainer.enc.float().cpu()
    tasks, scores = discovered_taskset(
        enc,
        dataset,
        label_bn=label_bn,
        flip=flip,
        meta={"dataset": dataset.name, "seed": seed, "head_seed": head_seed},
    )
    return Discovery(tasks, scores, enc, trainer.logs)
