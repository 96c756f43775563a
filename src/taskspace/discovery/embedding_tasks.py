"""Baseline tasks on a task encoder's embedding ``h``: random hyperplanes and K-way sectors.

They answer "is it the encoder or the trained heads?": the same embedding ``h`` of a
(meta-trained) encoder, cut by random linear functions instead of the fixed heads.

- **K-way random linear tasks** (reference ``utils.random_k_way_linear_task``): the first
  two rows ``b0, b1`` of a seeded Haar-orthogonal ``d x d`` matrix span a plane; ``K`` unit
  directions ``u_i = sin(a_i) b0 + cos(a_i) b1`` with ``a_i = 360 deg * i / K`` start at
  ``(0, 1)`` in that plane (the reference rotates ``(0, 1)`` as a row vector); an image is
  labelled ``argmax_i u_i . h(x)``, i.e. by the angular sector of ``h`` projected on the plane.
- **Random hyperplanes** (reference ``emb_lin_task=random``, which is the K-way construction
  with ``K = 2``: directions ``b1`` and ``-b1``): the label is ``1[b1 . h(x) > 0]`` in
  ``taskspace``'s sign convention (``flip`` inverts), i.e. ``1 - `` the ``K = 2`` sector
  label, whose class 0 is the reference's ``argmax [s, -s]`` side ``s > 0``.

Seeds. Task ``i`` uses the Haar matrix of seed ``derive_seed(seed, Stream.EMBEDDING_TASK,
i)``, one per task as the reference's ``seed = task_idx``, but hashed:
:func:`haar_orthogonal` with the raw seed 0 is also the default head matrix
(``head_seed=0``), and task ``i``'s hyperplane would then be a trained head. The matrices
are drawn by QR (:func:`haar_orthogonal`), the reference's by numpy's Householder
construction: same distribution, different numbers.

Both return a :class:`TaskSet` of kind ``discovered`` (labellings by an encoder; there is
no kind for random heads) with the variant (``emb-random`` or ``emb-<K>way``) in
``meta["variant"]``; ``taskspace discover emb_baselines=N`` reports them under that name.
"""

from __future__ import annotations

import math

import torch

from taskspace.discovery.encoder import haar_orthogonal
from taskspace.errors import TaskspaceError
from taskspace.seeding import Stream, derive_seed
from taskspace.tasks import TaskSet

__all__ = [
    "embedding_baselines",
    "check_embedding_baselines",
    "kway_directions",
    "kway_tasks",
    "plane_seed",
    "random_hyperplane_tasks",
    "sector_labels",
]


def plane_seed(seed: int, task: int) -> int:
    """Seed of task ``task``'s Haar matrix (hashed, so never a head matrix's raw seed)."""
    return derive_seed(seed, Stream.EMBEDDING_TASK, task)


def kway_directions(d: int, num_classes: int, seed: int) -> torch.Tensor:
    """``[K, d]`` unit directions at ``360 deg * i / K`` from ``b1`` towards ``b0`` in the
    plane of the first two rows of ``haar_orthogonal(d, seed)``."""
    check_embedding_baselines(1, num_classes, d)
    basis = haar_orthogonal(d, seed)[:2].double()  # b0, b1
    angles = torch.arange(num_classes, dtype=torch.float64) * (2 * math.pi / num_classes)
    coords = torch.stack([angles.sin(), angles.cos()], dim=1)  # (0, 1) rotated: [K, 2]
    return (coords @ basis).float()


def sector_labels(h: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """``int64 [N]``: index of the direction with the largest projection of each row of ``h``
    (ties go to the lower index, as ``argmax``)."""
    return (h.double() @ directions.double().t()).argmax(dim=1)


def check_embedding_baselines(count: int, num_classes: int, d: int) -> None:
    """Raise :class:`TaskspaceError` unless ``count >= 0`` tasks of ``num_classes >= 2``
    classes can be drawn on a ``d``-dimensional embedding (a plane needs ``d >= 2``)."""
    if count < 0:
        raise TaskspaceError(f"the number of embedding baseline tasks must be >= 0, got {count}")
    if num_classes < 2:
        raise TaskspaceError(f"embedding baseline tasks need >= 2 classes, got {num_classes}")
    if d < 2:
        raise TaskspaceError(f"random linear tasks need an embedding of d >= 2, got d={d}")


def _check_h(h: torch.Tensor) -> None:
    if h.dim() != 2:
        raise TaskspaceError(f"embedding h must be [N, d], got shape {tuple(h.shape)}")


def _names(prefix: str, count: int) -> list[str]:
    width = max(2, len(str(count - 1)))
    return [f"{prefix}-{i:0{width}d}" for i in range(count)]


def kway_tasks(h: torch.Tensor, count: int, num_classes: int, *, seed: int = 0) -> TaskSet:
    """``count`` K-way random linear tasks (angular sectors) on the embedding ``h [N, d]``.

    Task ``i`` is :func:`sector_labels` of :func:`kway_directions` with
    :func:`plane_seed` ``(seed, i)``; names ``emb-<K>way-00``, ...
    """
    _check_h(h)
    check_embedding_baselines(count, num_classes, h.shape[1])
    variant = f"emb-{num_classes}way"
    names = _names(variant, count)
    seeds = [plane_seed(seed, i) for i in range(count)]
    rows = [sector_labels(h, kway_directions(h.shape[1], num_classes, s)) for s in seeds]
    labels = torch.stack(rows) if rows else torch.zeros(0, h.shape[0], dtype=torch.long)
    meta = {
        "variant": variant,
        "num_classes": num_classes,
        "seed": seed,
        "label": "argmax_i u_i . h(x), u_i at 360 deg * i / K in a random plane",
        "tasks": {n: {"plane_seed": s} for n, s in zip(names, seeds)},
    }
    return TaskSet(labels, names, ["discovered"] * count, meta)


def random_hyperplane_tasks(
    h: torch.Tensor, count: int, *, seed: int = 0, flip: bool = False
) -> TaskSet:
    """``count`` random-hyperplane tasks on ``h [N, d]``: ``1[b1 . h(x) > 0]`` (``flip``:
    ``1[b1 . h(x) <= 0]``), ``b1`` the ``K = 2`` direction 0 of :func:`kway_directions`;
    names ``emb-random-00``, ... (the reference's ``emb_lin_task=random``)."""
    _check_h(h)
    check_embedding_baselines(count, 2, h.shape[1])
    names = _names("emb-random", count)
    seeds = [plane_seed(seed, i) for i in range(count)]
    rows = [(h.double() @ kway_directions(h.shape[1], 2, s)[0].double() > 0).long() for s in seeds]
    labels = torch.stack(rows) if rows else torch.zeros(0, h.shape[0], dtype=torch.long)
    labels = 1 - labels if flip else labels
    meta = {
        "variant": "emb-random",
        "seed": seed,
        "flip": bool(flip),
        "sign": "label = 1[w . h(x) <= 0]" if flip else "label = 1[w . h(x) > 0]",
        "tasks": {n: {"plane_seed": s} for n, s in zip(names, seeds)},
    }
    return TaskSet(labels, names, ["discovered"] * count, meta)


def embedding_baselines(
    h: torch.Tensor, count: int, num_classes: int = 2, *, seed: int = 0, flip: bool = False
) -> TaskSet:
    """Random hyperplanes (``num_classes == 2``) or K-way sector tasks on ``h``."""
    if num_classes == 2:
        return random_hyperplane_tasks(h, count, seed=seed, flip=flip)
    return kway_tasks(h, count, num_classes, seed=seed)
