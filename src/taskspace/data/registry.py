"""``load_dataset(name, root, ...)``: one entry point for every dataset.

Names: ``digits`` (bundled, the default), ``cifar10`` / ``cifar100`` (a local folder in
torchvision's python-batch format or a train/test ImageFolder tree), ``imagefolder`` (any
class-per-folder tree). Names are matched ignoring case, ``-`` and ``_`` (``CIFAR-10`` works).

Attribute datasets (images with named 0/1 ``attributes``, splits ``train`` / ``val`` /
``test``): ``celeba`` (any CelebA-layout folder, :mod:`taskspace.data.celeba`),
``coloured_digits`` (also ``colored_digits``) and ``waterdigits`` (offline, seeded, with a
planted spurious correlation, :mod:`taskspace.data.synthetic`), and ``celeba_lite`` (eight
drawn factors with planted correlated pairs, for the spurious-correlation pipeline). Their
own options (``attributes``, ``partition``, ``images``, ``correlation``) are refused by
the other datasets, so a misspelt dataset name never silently ignores them.
"""

from __future__ import annotations

from pathlib import Path

from taskspace.data.celeba import CELEBA_IMAGE_SIZE, load_celeba
from taskspace.data.cifar import load_cifar
from taskspace.data.dataset import ImageDataset
from taskspace.data.digits import load_digits
from taskspace.data.imagefolder import load_imagefolder
from taskspace.data.resize import resize_dataset
from taskspace.data.splits import resolve_count
from taskspace.data.synthetic import (
    CELEBA_LITE_SIZES,
    SYNTHETIC_SIZES,
    load_celeba_lite,
    load_coloured_digits,
    load_waterdigits,
)
from taskspace.errors import TaskspaceError

__all__ = ["ATTRIBUTE_DATASETS", "DATASET_NAMES", "load_dataset"]

#: Every name :func:`load_dataset` accepts.
DATASET_NAMES = (
    "digits", "cifar10", "cifar100", "imagefolder", "celeba", "coloured_digits", "waterdigits",
    "celeba_lite",
)  # fmt: skip
#: Datasets with attributes (``train`` / ``val`` / ``test`` splits).
ATTRIBUTE_DATASETS = ("celeba", "coloured_digits", "waterdigits", "celeba_lite")
#: Normalised spelling (lower case, no ``-`` / ``_``) -> dataset name.
_KEYS = {n.replace("_", ""): n for n in DATASET_NAMES} | {"coloreddigits": "coloured_digits"}


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    *,
    split_seed: int = 0,
    heldout: int | float | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    image_size: int | None = None,
    attributes: str | Path | None = None,
    partition: str | Path | None = None,
    images: str | Path | None = None,
    correlation: float | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Load dataset ``name`` with seeded ``train`` / ``heldout`` / ``test`` splits (attribute
    datasets: ``train`` / ``val`` / ``test``).

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: the data folder (required for all but ``digits`` and the synthetic datasets,
            which take none).
        split_seed: seed of the split permutation (and of the ``train_size`` /
            ``test_size`` subsets). ``celeba``: seed of ``partition=seeded``; synthetic
            datasets: the seed of the whole dataset (digits drawn, attributes, backgrounds).
        heldout: held-out count (``int``, or a whole ``float`` like ``5000.0``) or fraction
            (``float`` in ``[0, 1)``). Defaults: 297 for digits; a tenth of the official
            train part (5,000 for CIFAR) for datasets with an official test set; 10% for a
            single-part image tree. Synthetic datasets: the ``val`` count (default 297).
        train_size: for datasets with an official test set, keep a seeded class-stratified
            subset of this many official train images (the pool split into ``train`` and
            ``heldout``; ``heldout`` then defaults to ``train_size // 10``). Synthetic
            datasets: the ``train`` count (default 1,200).
        test_size: likewise, a class-stratified subset of the official test images.
            Synthetic datasets: the ``test`` count (default 300).
        image_size: resize every image to this square size (:func:`resize_dataset`, cached);
            ``celeba``: crop to the short side, then resize (default 64).
        attributes: ``celeba``: the attribute file (default: searched, see
            :mod:`taskspace.data.celeba`).
        partition: ``celeba``: a partition file, ``official``, ``seeded`` or
            ``seeded:TRAIN/VAL/TEST`` (default: a ``list_eval_partition`` file found next
            to the attribute file, else ``seeded`` 0.6/0.2/0.2).
        images: ``celeba``: the images folder, relative to ``root`` (default: searched).
        correlation: synthetic datasets: train ``P(a = y)`` (default 0.97 for
            ``coloured_digits``, 0.95 for ``waterdigits``); ``celeba_lite``: the copula
            correlation of its planted pairs (default 0.95, all splits).
        cache: reuse / store decoded image trees in the user cache (see
            :mod:`taskspace.data.cache`); it never writes inside ``root``.
        progress: progress bars (stderr) while decoding large trees.

    Returns:
        An :class:`ImageDataset`; images are in the dataset's canonical order (see each
        loader), subsetted when ``train_size`` / ``test_size`` are given.
    """
    key = _KEYS.get(str(name).lower().replace("-", "").replace("_", ""))
    if key is None:
        raise TaskspaceError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    _refuse(key, "attributes", attributes, ("celeba",))
    _refuse(key, "partition", partition, ("celeba",))
    _refuse(key, "images", images, ("celeba",))
    _refuse(key, "correlation", correlation, ("coloured_digits", "waterdigits", "celeba_lite"))
    if key == "celeba":
        if heldout is not None or train_size is not None or test_size is not None:
            raise TaskspaceError(
                "celeba takes no heldout/train_size/test_size; size its splits with "
                "partition=seeded:TRAIN/VAL/TEST fractions (default 0.6/0.2/0.2)"
            )
        return load_celeba(
            root, attributes=attributes, partition=partition, images=images,
            image_size=CELEBA_IMAGE_SIZE if image_size is None else image_size,
            split_seed=split_seed, cache=cache, progress=progress,
        )  # fmt: skip
    if key in ("coloured_digits", "waterdigits"):
        if root is not None:
            raise TaskspaceError(
                f"{key} is made from scikit-learn's bundled digits and takes no data folder "
                f"(got root={root})"
            )
        sizes = (
            SYNTHETIC_SIZES[0] if train_size is None else train_size,
            SYNTHETIC_SIZES[1] if heldout is None else resolve_count(heldout, 1797, "heldout"),
            SYNTHETIC_SIZES[2] if test_size is None else test_size,
        )
        loader = load_coloured_digits if key == "coloured_digits" else load_waterdigits
        ds = loader(correlation=correlation, seed=split_seed, sizes=sizes)
    elif key == "celeba_lite":
        if root is not None:
            raise TaskspaceError(
                f"celeba_lite is drawn on the fly and takes no data folder (got root={root})"
            )
        val = CELEBA_LITE_SIZES[1]
        if heldout is not None:  # a count, or a fraction of the default total
            n = max(sum(CELEBA_LITE_SIZES), int(heldout) if float(heldout) >= 1 else 0)
            val = resolve_count(heldout, n, "heldout")
        sizes = (
            CELEBA_LITE_SIZES[0] if train_size is None else train_size,
            val,
            CELEBA_LITE_SIZES[2] if test_size is None else test_size,
        )
        ds = load_celeba_lite(correlation=correlation, seed=split_seed, sizes=sizes)
    elif key == "digits":
        if root is not None:
            raise TaskspaceError(
                f"digits is bundled with scikit-learn and takes no data folder (got root={root})"
            )
        if train_size is not None or test_size is not None:
            raise TaskspaceError(
                "digits has no official test set (split 1200/297/300 by split_seed); drop "
                "train_size/test_size and use heldout=... to size the held-out set"
            )
        ds = load_digits(split_seed=split_seed, heldout=heldout)
    elif key in ("cifar10", "cifar100"):
        ds = load_cifar(
            key, root, split_seed=split_seed, heldout=heldout, train_size=train_size,
            test_size=test_size, cache=cache, progress=progress,
        )  # fmt: skip
    else:
        ds = load_imagefolder(
            root, split_seed=split_seed, heldout=heldout, train_size=train_size,
            test_size=test_size, cache=cache, progress=progress,
        )  # fmt: skip
    return ds if image_size is None else resize_dataset(ds, image_size)


def _refuse(key: str, option: str, value: object, owners: tuple[str, ...]) -> None:
    """A one-line error for an option that only ``owners`` take."""
    if value is not None and key not in owners:
        raise TaskspaceError(
            f"{option}={value} applies to {' and '.join(owners)} only, not to {key}"
        )
