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

**CelebA-lite** (``celeba_lite``, for the spurious-correlation pipeline of
:mod:`taskspace.robustness.spurious`) needs no digits: eight binary factors
(:data:`CELEBA_LITE_ATTRIBUTES`: square/circle, red/blue, size, dark/light background,
top stripe, corner dot, left/right position, frame) are drawn into a 16x16 RGB image
with +-1 px jitter and Gaussian noise (sigma 0.15). The attributes are correlated through
a Gaussian copula whose matrix (:func:`celeba_lite_sigma`) is the ground truth: the
planted pairs :data:`CELEBA_LITE_PLANTED` are correlated, all other attributes are
independent. In each planted pair the core factor is drawn so that it is much harder to
see than its shortcut (square vs circle of equal area differ at the corners only; the dot
is faint and moves), so a model of the core reads the shortcut and the pair's delta is
large in one direction only.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.data.imagefolder import channel_stats
from taskspace.errors import TaskspaceError

__all__ = [
    "CELEBA_LITE_ATTRIBUTES",
    "CELEBA_LITE_CORRELATION",
    "CELEBA_LITE_NOISE",
    "CELEBA_LITE_PLANTED",
    "CELEBA_LITE_PREVALENCE",
    "CELEBA_LITE_SIZES",
    "COLOURED_DIGITS_CORRELATION",
    "SYNTHETIC_SIZES",
    "WATERDIGITS_CORRELATION",
    "celeba_lite_sigma",
    "load_celeba_lite",
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


# ---------------------------------------------------------------------------------------
# CelebA-lite: eight drawn binary factors with a planted correlation structure


#: CelebA-lite's attributes, in column order (each a drawn factor of the 16x16 image).
CELEBA_LITE_ATTRIBUTES = ("Square", "Red", "Large", "LightBG", "Stripe", "Dot", "Left", "Frame")
#: The planted spurious pairs ``(core, shortcut)``: the core is the harder factor to see, so
#: a model of the core leans on the shortcut and ``T[core, shortcut]`` is large while
#: ``T[shortcut, core]`` stays small (the easier feature is the shortcut).
CELEBA_LITE_PLANTED = (("Square", "Red"), ("Dot", "Frame"))
#: Default Gaussian-copula correlation of every planted pair.
CELEBA_LITE_CORRELATION = 0.95
#: Default P(attribute = 1) of every attribute, in :data:`CELEBA_LITE_ATTRIBUTES` order.
CELEBA_LITE_PREVALENCE = (0.5, 0.5, 0.5, 0.5, 0.4, 0.5, 0.5, 0.5)
#: Default train / val / test sizes of CelebA-lite.
CELEBA_LITE_SIZES = (3000, 2000, 2000)
#: Pixel noise standard deviation (pixel values in [0, 1]).
CELEBA_LITE_NOISE = 0.15


def celeba_lite_sigma(correlation: float | None = None) -> np.ndarray:
    """The copula's correlation matrix ``Sigma [8, 8]`` (the ground-truth oracle): the
    identity, with ``correlation`` (default 0.95) at both cells of every planted pair."""
    rho = CELEBA_LITE_CORRELATION if correlation is None else correlation
    rho = _check_correlation(rho, "celeba_lite")
    if rho >= 1.0:
        raise TaskspaceError("celeba_lite: the copula correlation must be below 1")
    names = list(CELEBA_LITE_ATTRIBUTES)
    sigma = np.eye(len(names))
    for core, shortcut in CELEBA_LITE_PLANTED:
        i, j = names.index(core), names.index(shortcut)
        sigma[i, j] = sigma[j, i] = rho
    return sigma


def _draw_celeba_lite(attrs: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Paint ``attrs [n, 8]`` (0/1, :data:`CELEBA_LITE_ATTRIBUTES` order) as ``uint8 [n, 3,
    16, 16]``. The easy factors change many pixels strongly (shape colour, background,
    frame, stripe, position, size); the core ones change few: square vs circle of equal
    area differ only at the corners, and the dot is a faint 2x2 patch that moves by 1 px."""
    n = len(attrs)
    sq, red, large, light, stripe, dot, left, frame = (attrs[:, k] for k in range(8))
    img = np.empty((n, 3, 16, 16))
    img[:] = np.where(light == 1, 0.6, 0.15)[:, None, None, None]
    rows, cols = np.mgrid[0:16, 0:16]
    # the shape: centre left or right, +-1 px jitter in both directions
    cy = 7.5 + rng.integers(-1, 2, n)
    cx = np.where(left == 1, 4.5, 10.5) + rng.integers(-1, 2, n)
    r = np.where(large == 1, 3.6, 2.6)
    dy = rows[None] - cy[:, None, None]
    dx = cols[None] - cx[:, None, None]
    half = (r * math.sqrt(math.pi) / 2)[:, None, None]  # the square of the disc's area
    square = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    disc = dy**2 + dx**2 <= (r**2)[:, None, None]
    mask = np.where(sq[:, None, None] == 1, square, disc)
    colour = np.where(red[:, None] == 1, [0.95, 0.1, 0.1], [0.1, 0.1, 0.95])  # [n, 3]
    img = np.where(mask[:, None], colour[:, :, None, None], img)
    # a yellow stripe along the top, a green frame, a faint jittered dot in the top right
    img[:, :2, 1:3, 3:11] += 0.4 * stripe[:, None, None, None]
    ring = np.zeros((16, 16), dtype=bool)
    ring[0, :] = ring[-1, :] = ring[:, 0] = ring[:, -1] = True
    img[:, 1] += 0.5 * ring[None] * frame[:, None, None]
    oy = 1 + rng.integers(0, 2, n)
    ox = 12 + rng.integers(0, 2, n)
    patch = (rows[None] >= oy[:, None, None]) & (rows[None] < oy[:, None, None] + 2)
    patch &= (cols[None] >= ox[:, None, None]) & (cols[None] < ox[:, None, None] + 2)
    img += 0.15 * (patch * dot[:, None, None])[:, None]
    img += rng.normal(0.0, noise, img.shape)
    return np.rint(img.clip(0.0, 1.0) * 255).astype(np.uint8)


def load_celeba_lite(
    *,
    correlation: float | None = None,
    seed: int = 0,
    sizes: tuple[int, int, int] = CELEBA_LITE_SIZES,
    noise: float = CELEBA_LITE_NOISE,
) -> ImageDataset:
    """CelebA-lite: ``uint8 [N, 3, 16, 16]`` with the 8 attributes of
    :data:`CELEBA_LITE_ATTRIBUTES`, for the spurious-correlation pipeline.

    Attributes are drawn through a Gaussian copula: ``z ~ N(0, Sigma)``
    (:func:`celeba_lite_sigma`: the planted pairs :data:`CELEBA_LITE_PLANTED` correlated,
    the rest independent) and attribute ``k = 1{z_k > Phi^-1(1 - p_k)}`` with ``p`` =
    :data:`CELEBA_LITE_PREVALENCE`. Every split comes from the same distribution (as
    CelebA's official splits), so val holds the planted correlation too and its minority
    groups are small. Each factor is drawn into the image (:func:`_draw_celeba_lite`),
    with +-1 px jitter of the shape and the dot and Gaussian pixel noise.

    Args:
        correlation: the copula correlation of the planted pairs (default 0.95, in [0, 1)).
        seed: fixes the attributes, the jitter and the noise: the whole dataset.
        sizes: train / val / test counts.
        noise: pixel noise standard deviation (values in [0, 1]).
    """
    name = "celeba_lite"
    sizes = _check_sizes(sizes, sum(int(s) for s in sizes), name)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TaskspaceError(f"{name}: seed must be a whole number, got {seed!r}")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise TaskspaceError(f"{name}: noise must be a number >= 0, got {noise!r}")
    sigma = celeba_lite_sigma(correlation)
    rng = np.random.default_rng(int(seed))
    n = sum(sizes)
    z = rng.multivariate_normal(np.zeros(len(sigma)), sigma, size=n, method="cholesky")
    cut = np.array([NormalDist().inv_cdf(1.0 - p) for p in CELEBA_LITE_PREVALENCE])
    attrs = (z > cut[None]).astype(np.int64)
    images = torch.from_numpy(np.ascontiguousarray(_draw_celeba_lite(attrs, rng, float(noise))))
    bounds = np.cumsum([0, *sizes])
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
        classes=torch.from_numpy(attrs[:, 0].copy()),
        class_names=["circle", "square"],
        splits=splits,
        attributes=torch.from_numpy(attrs),
        attribute_names=list(CELEBA_LITE_ATTRIBUTES),
        ids=[f"{i:05d}" for i in range(n)],
        split_orders={s: v.clone() for s, v in splits.items()},
    )
