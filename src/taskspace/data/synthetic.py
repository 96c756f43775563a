"""Offline attribute datasets with a planted spurious correlation, built from scikit-learn.

Both generators start from scikit-learn's bundled 8x8 digits (1,797 images, values 0..16)
and need no download. Every image has two 0/1 attributes: the target ``large`` =
``y = 1{digit >= 5}`` and a spurious ``a`` drawn into the image, so the grouping strings are
``large:blue`` and ``large:flower`` (group ``g = 2y + a``).

**Coloured digits** (``coloured_digits``, the SpuCoMNIST idea): an 8x8 RGB image; the digit
in gray (``round(v * 255 / 16)`` on all three channels, as the ``digits`` dataset) and, on
the background pixels only (``v == 0``), a colour scaled by ``strength`` (default 0.5):
red ``(1, 0, 0)`` for ``a = 0`` (``blue = 0``), blue ``(0, 0, 1)`` for ``a = 1``. Digit pixels
stay gray, so the colour says nothing but ``a``.

**Waterdigits** (``waterdigits``, Waterbirds-like): the digit upsampled to 16x16 (Kronecker
x2) and drawn in white (alpha ``v / 16``) over a random 16x16 crop of scikit-learn's
``china.jpg`` (``a = 0``, ``flower = 0``) or ``flower.jpg`` (``a = 1``), both 427x640 photos
bundled with scikit-learn (``load_sample_images``, needs Pillow).

**Splits and sizes.** ``train`` / ``val`` / ``test`` hold disjoint digits (default 1,200 /
297 / 300, all 1,797; the sizes must sum to at most 1,797, so no digit is seen in two
splits). ``val`` and ``test`` are drawn first, class-balanced (``ceil(n/2)`` with ``y = 0``,
``floor(n/2)`` with ``y = 1``), then ``train`` takes the next digits of the same seeded
permutation in their natural class mix.

**The correlation** ``rho = P(a = y)`` (default 0.97 for coloured digits, 0.95 for
waterdigits) is planted exactly, not by coin flips: in each class of ``train``,
``round(rho * n_c)`` images (picked by the seed) get ``a = y`` and the rest ``a = 1 - y``.
``val`` and ``test`` use ``rho = 0.5``, so with their balanced classes every group holds a
quarter of the split (within one image): the planted correlation then varies with neither
the seed nor the split, and a model that reads ``a`` gains nothing there.

Everything (the digits drawn, the attributes, the background crops) comes from one
``numpy.random.default_rng(seed)``, so a seed gives the same dataset on every machine.
Images are stored train, then val, then test (each split in its drawn order); ``classes``
are the digits 0-9 and ``ids`` their row numbers in scikit-learn's digits (``"0000"`` ..).
Mean/std are computed over all images of the dataset.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.data.imagefolder import channel_stats
from taskspace.errors import TaskspaceError

__all__ = [
    "COLOURED_DIGITS_CORRELATION",
    "SYNTHETIC_SIZES",
    "WATERDIGITS_CORRELATION",
    "load_coloured_digits",
    "load_waterdigits",
]

#: Default train correlation P(a = y) of coloured digits.
COLOURED_DIGITS_CORRELATION = 0.97
#: Default train correlation P(a = y) of waterdigits.
WATERDIGITS_CORRELATION = 0.95
#: Default train / val / test sizes (all 1,797 digits, each used once).
SYNTHETIC_SIZES = (1200, 297, 300)
#: Colour of the background for a = 0 (red) and a = 1 (blue).
_COLOURS = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
_SPLITS = ("train", "val", "test")


def _sklearn() -> Any:
    """scikit-learn's ``datasets`` module (imported on use: it slows every start-up)."""
    try:
        from sklearn import datasets
    except ImportError:  # a declared dependency; say so instead of a traceback
        raise TaskspaceError(
            "the synthetic digit datasets need scikit-learn: pip install scikit-learn"
        ) from None
    return datasets


def _check_correlation(rho: float, name: str) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise TaskspaceError(f"{name}: correlation must be a number in [0, 1], got {rho!r}")
    if not (math.isfinite(float(rho)) and 0.0 <= float(rho) <= 1.0):
        raise TaskspaceError(f"{name}: correlation must lie in [0, 1], got {rho!r}")
    return float(rho)


def _check_sizes(sizes: tuple[int, int, int], total: int, name: str) -> tuple[int, int, int]:
    for split, n in zip(_SPLITS, sizes):
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise TaskspaceError(f"{name}: {split} size must be a whole number >= 0, got {n!r}")
    if sizes[0] < 1:
        raise TaskspaceError(f"{name}: the train split needs at least one image")
    if sum(sizes) > total:
        raise TaskspaceError(
            f"{name}: train/val/test sizes {'/'.join(map(str, sizes))} need {sum(sizes)} "
            f"digits, but there are {total} (each digit is used in one split only)"
        )
    return int(sizes[0]), int(sizes[1]), int(sizes[2])


def _draw_splits(
    y: np.ndarray, sizes: tuple[int, int, int], rng: np.random.Generator, name: str
) -> dict[str, np.ndarray]:
    """Disjoint digit indices per split: class-balanced ``test`` and ``val``, then ``train``
    (each split then put in a fresh seeded order)."""
    perm = rng.permutation(len(y))
    free = np.ones(len(y), dtype=bool)
    out: dict[str, np.ndarray] = {}
    for split, n in (("test", sizes[2]), ("val", sizes[1])):
        picks = []
        for c, want in ((0, (n + 1) // 2), (1, n // 2)):
            pool = perm[free[perm] & (y[perm] == c)]
            if len(pool) < want:
                raise TaskspaceError(
                    f"{name}: a class-balanced {split} split of {n} needs {want} digits with "
                    f"large={c}, but only {len(pool)} are left; ask for a smaller one"
                )
            picks.append(pool[:want])
        idx = np.concatenate(picks)
        free[idx] = False
        out[split] = idx
    out["train"] = perm[free[perm]][: sizes[0]]
    # Each split in a fresh seeded order: the leftovers after the balanced picks start with a
    # run of one class, and "the first n images" of a split must be class-mixed.
    return {s: out[s][rng.permutation(len(out[s]))] for s in _SPLITS}


def _plant(y: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """``a`` for labels ``y``: exactly ``round(rho * n_c)`` of each class get ``a = y``."""
    a = np.empty_like(y)
    for c in (0, 1):
        members = np.flatnonzero(y == c)
        agree = int(math.floor(rho * len(members) + 0.5))
        order = members[rng.permutation(len(members))]
        a[order[:agree]] = c
        a[order[agree:]] = 1 - c
    return a


def _attribute_dataset(
    name: str,
    sizes: tuple[int, int, int],
    rho: float,
    seed: int,
    draw: Any,
    attribute: str,
) -> ImageDataset:
    """Shared part of both generators; ``draw(values, a, rng)`` paints ``uint8 [n, 3, H, W]``."""
    bunch = _sklearn().load_digits()
    values = np.rint(bunch.images).astype(np.int64)  # [1797, 8, 8], 0..16
    digits = bunch.target.astype(np.int64)
    y_all = (digits >= 5).astype(np.int64)
    sizes = _check_sizes(sizes, len(digits), name)
    rho = _check_correlation(rho, name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TaskspaceError(f"{name}: seed must be a whole number, got {seed!r}")
    rng = np.random.default_rng(int(seed))
    chosen = _draw_splits(y_all, sizes, rng, name)
    idx = np.concatenate([chosen[s] for s in _SPLITS])
    y = y_all[idx]
    a = np.concatenate(
        [_plant(y_all[chosen[s]], rho if s == "train" else 0.5, rng) for s in _SPLITS]
    )
    images = torch.from_numpy(np.ascontiguousarray(draw(values[idx], a, rng)))
    bounds = np.cumsum([0, *(len(chosen[s]) for s in _SPLITS)])
    splits = {
        s: torch.arange(int(bounds[i]), int(bounds[i + 1]))
        for i, s in enumerate(_SPLITS)
        if bounds[i + 1] > bounds[i]
    }
    mean, std = channel_stats(images)
    return ImageDataset(
        name=name,
        images=images,
        mean=mean,
        std=std,
        classes=torch.from_numpy(digits[idx]),
        class_names=[str(int(c)) for c in bunch.target_names],
        splits=splits,
        attributes=torch.from_numpy(np.stack([y, a], axis=1)),
        attribute_names=["large", attribute],
        ids=[f"{int(i):04d}" for i in idx],
        split_orders={s: v.clone() for s, v in splits.items()},
    )


def load_coloured_digits(
    *,
    correlation: float | None = None,
    seed: int = 0,
    sizes: tuple[int, int, int] = SYNTHETIC_SIZES,
    strength: float = 0.5,
) -> ImageDataset:
    """Coloured digits (module doc): ``uint8 [N, 3, 8, 8]``, attributes ``large``, ``blue``.

    Args:
        correlation: train ``P(a = y)``; ``None`` means 0.97.
        seed: fixes the digits drawn, the attributes and so the whole dataset.
        sizes: train / val / test counts (sum at most 1,797).
        strength: background colour intensity in ``[0, 1]`` (0 hides the attribute).
    """
    if isinstance(strength, bool) or not isinstance(strength, (int, float)):
        raise TaskspaceError(f"coloured_digits: strength must be a number, got {strength!r}")
    if not 0.0 <= float(strength) <= 1.0:
        raise TaskspaceError(f"coloured_digits: strength must lie in [0, 1], got {strength!r}")
    level = int(math.floor(float(strength) * 255 + 0.5))

    def draw(values: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        gray = (values * 255 + 8) // 16  # as the digits dataset: round(v * 255 / 16)
        out = np.repeat(gray[:, None], 3, axis=1)
        background = values == 0
        paint = (_COLOURS[a] * level).astype(np.int64)  # [n, 3]
        out = np.where(background[:, None], paint[:, :, None, None], out)
        return out.clip(0, 255).astype(np.uint8)

    rho = COLOURED_DIGITS_CORRELATION if correlation is None else correlation
    return _attribute_dataset("coloured_digits", sizes, rho, seed, draw, "blue")


def load_waterdigits(
    *,
    correlation: float | None = None,
    seed: int = 0,
    sizes: tuple[int, int, int] = SYNTHETIC_SIZES,
) -> ImageDataset:
    """Waterdigits (module doc): ``uint8 [N, 3, 16, 16]``, attributes ``large``, ``flower``.

    Args:
        correlation: train ``P(a = y)``; ``None`` means 0.95.
        seed: fixes the digits drawn, the attributes and the background crops.
        sizes: train / val / test counts (sum at most 1,797).
    """
    bunch = _sklearn().load_sample_images()
    photos: dict[str, np.ndarray] = {}
    for fname, img in zip(bunch.filenames, bunch.images):
        photos[str(fname).replace("\\", "/").rsplit("/", 1)[-1]] = np.asarray(img)
    if not {"china.jpg", "flower.jpg"} <= set(photos):
        raise TaskspaceError(
            "waterdigits: scikit-learn's sample images china.jpg and flower.jpg are missing "
            "(reinstall scikit-learn)"
        )
    backgrounds = [photos["china.jpg"], photos["flower.jpg"]]

    def draw(values: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        alpha = np.kron(values / 16.0, np.ones((1, 2, 2)))  # [n, 16, 16]
        out = np.empty((len(values), 16, 16, 3), dtype=np.float64)
        for i, attr in enumerate(a.tolist()):
            photo = backgrounds[attr]
            top = int(rng.integers(0, photo.shape[0] - 16 + 1))
            left = int(rng.integers(0, photo.shape[1] - 16 + 1))
            out[i] = photo[top : top + 16, left : left + 16] / 255.0
        out = alpha[..., None] + (1.0 - alpha[..., None]) * out
        return np.rint(out * 255).clip(0, 255).astype(np.uint8).transpose(0, 3, 1, 2)

    rho = WATERDIGITS_CORRELATION if correlation is None else correlation
    return _attribute_dataset("waterdigits", sizes, rho, seed, draw, "flower")
