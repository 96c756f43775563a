"""A synthetic multi-task image set with PLANTED task relations (``planted``).

Which tasks help which is known by construction, so TAG, CS and HOA, network selection
and the grouping pipeline can be checked against a ground truth on a CPU in a minute.

**How it is made** (everything from one ``numpy.random.default_rng(seed)``):

- Every image has two independent standard-normal factors per *family* of tasks,
  ``z_f = (z_f1, z_f2)``, ``2 * families`` factors in all.
- The image is a fixed random mixing of all factors plus pixel noise, ``x = M z + noise
  * e``: ``M``'s rows are orthonormal directions of pixel space scaled by
  ``sqrt(pixels / factors)`` (so a pixel carries about one unit of factor variance), and
  every pixel mixes every family's factors: a network has to untangle them. ``x`` is
  stored as ``uint8`` (``128 + 32 x``, clipped), one channel, ``image_size x image_size``
  (default 8 x 8).
- Family ``f`` has three binary tasks: ``f{f}a = 1{z_f1 > 0}``, ``f{f}b = 1{z_f2 > 0}``
  and ``f{f}x = f{f}a XOR f{f}b`` (each positive for about half the images).
  ``label_noise`` flips that fraction of the *training* labels of every task (seeded);
  ``val`` and ``test`` keep the true labels.

**The planted relations.**

- *Helpful partners: the own family.* The XOR task needs exactly the two features its
  family's sign tasks teach (a hint: alone, a network has to discover ``z_f1`` and
  ``z_f2`` from the XOR labels, which say nothing about either one by itself), and the
  sign tasks share the XOR task's features.
- *Harmful partners: the other families.* They depend on disjoint factors that the mixing
  puts on the same pixels; in a network with a narrow trunk (the default learner,
  :data:`PLANTED_MODEL`, an MLP of widths 16 and 16) they compete for its few units.

- *Neither: the sibling sign task.* ``f{f}a`` and ``f{f}b`` share no factor; they are
  related only through the XOR task, so a sign task's helpful partner is its family's
  XOR task, and the XOR task's are both sign tasks.

So the best grouping at B = ``families`` is one network per family: it should beat one
network for all tasks (capacity) and one network per task (no hint for the XOR tasks),
and TAG and CS should score each task's helpful partners above the other families' tasks.

Measured with the defaults (2 families, 3 seeds, ``taskspace affinity kind=tag|cs|hoa
seeds=[0,1,2]``, about 20-35 s each on 2 CPU cores): TAG, CS and HOA all choose the two
families at B = 2, total validation loss 1.872 +- 0.006 against 2.426 +- 0.161 for one
network for all tasks and 1.930 +- 0.017 for one network per task (test: 1.922, 2.481,
2.033); TAG and CS score every task's helpful partners above all of the other family's
tasks, in the mean matrix and in each seed's.

Splits ``train`` / ``val`` / ``test`` (default 300 / 600 / 600 images, drawn
independently). ``attributes [N, 3 * families]`` hold the task labels, named as above, so
the set is also an attribute dataset (``classes`` = the first task).
"""

from __future__ import annotations

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError

__all__ = [
    "PLANTED_MODEL",
    "PLANTED_SIZES",
    "load_planted",
    "planted_families",
    "planted_names",
]

#: Default train / val / test sizes.
PLANTED_SIZES = (300, 600, 600)
#: The learner the planted relations are made for: an MLP with a narrow trunk, in which
#: families compete for capacity (registry name, overrides).
PLANTED_MODEL: tuple[str, dict] = ("mlp", {"widths": [16, 16]})
_SCALE = 32.0
_KINDS = ("a", "b", "x")


def planted_names(families: int = 2) -> list[str]:
    """Task names in dataset order: ``f0a, f0b, f0x, f1a, ...``."""
    return [f"f{f}{k}" for f in range(families) for k in _KINDS]


def planted_families(names: list[str]) -> list[int]:
    """The family of every planted task name (``f1x`` -> 1)."""
    out = []
    for n in names:
        if not (len(n) >= 3 and n[0] == "f" and n[-1] in _KINDS and n[1:-1].isdigit()):
            raise TaskspaceError(f"{n!r} is not a planted task name (f<family><a|b|x>)")
        out.append(int(n[1:-1]))
    return out


def _check(name: str, value: float, low: float, high: float | None = None) -> None:
    if not (value >= low and (high is None or value <= high)):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise TaskspaceError(f"planted: {name} must be {bound}, got {value}")


def load_planted(
    *,
    families: int = 2,
    image_size: int = 8,
    noise: float = 1.0,
    label_noise: float = 0.0,
    sizes: tuple[int, int, int] = PLANTED_SIZES,
    seed: int = 0,
) -> ImageDataset:
    """The planted multi-task set (module doc); task labels in ``attributes [N, T]``."""
    _check("families", families, 1)
    _check("image_size", image_size, 2)
    _check("noise", noise, 0.0)
    _check("label_noise", label_noise, 0.0, 0.5)
    if len(sizes) != 3 or min(int(s) for s in sizes) < 1:
        raise TaskspaceError(f"planted: sizes must be 3 counts >= 1 (train/val/test), got {sizes}")
    k = 2 * families
    pixels = image_size * image_size
    if k > pixels:
        raise TaskspaceError(
            f"planted: {families} families need {k} pixels at least, got {pixels} "
            f"(image_size={image_size})"
        )
    rng = np.random.default_rng(seed)
    mixing = np.linalg.qr(rng.standard_normal((pixels, k)))[0].T * np.sqrt(pixels / k)
    n = int(sum(sizes))
    z = rng.standard_normal((n, families, 2))
    x = z.reshape(n, k) @ mixing + noise * rng.standard_normal((n, pixels))
    images = np.clip(np.rint(128.0 + _SCALE * x), 0, 255).astype(np.uint8)
    sign = z > 0
    y = np.stack([sign[..., 0], sign[..., 1], sign[..., 0] ^ sign[..., 1]], -1)
    y = y.reshape(n, 3 * families).astype(np.int64)
    if label_noise > 0:
        flip = rng.random(y.shape) < label_noise
        flip[int(sizes[0]) :] = False  # training labels only: val and test keep the truth
        y = np.where(flip, 1 - y, y)
    imgs = torch.from_numpy(images).view(n, 1, image_size, image_size)
    f = imgs.float() / 255.0
    bounds = np.cumsum([0, *[int(s) for s in sizes]])
    splits = {
        s: torch.arange(int(bounds[i]), int(bounds[i + 1]))
        for i, s in enumerate(("train", "val", "test"))
    }
    return ImageDataset(
        name="planted",
        images=imgs,
        mean=(float(f.mean()),),
        std=(float(f.std()),),
        classes=torch.from_numpy(y[:, 0].copy()),
        class_names=["0", "1"],
        splits=splits,
        attributes=torch.from_numpy(y),
        attribute_names=planted_names(families),
        split_orders={s: i.clone() for s, i in splits.items()},
    )
