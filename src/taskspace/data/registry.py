"""``load_dataset(name, root, ...)``: one entry point for every dataset.

Names: ``digits`` (bundled, the default), ``cifar10`` / ``cifar100`` (a local folder in
torchvision's python-batch format or a train/test ImageFolder tree), ``imagefolder`` (any
class-per-folder tree). Names are matched ignoring case, ``-`` and ``_`` (``CIFAR-10`` works).
"""

from __future__ import annotations

from pathlib import Path

from taskspace.data.cifar import load_cifar
from taskspace.data.dataset import ImageDataset
from taskspace.data.digits import load_digits
from taskspace.data.imagefolder import load_imagefolder
from taskspace.errors import TaskspaceError

__all__ = ["DATASET_NAMES", "load_dataset"]

#: Every name :func:`load_dataset` accepts.
DATASET_NAMES = ("digits", "cifar10", "cifar100", "imagefolder")


def load_dataset(
    name: str = "digits",
    root: str | Path | None = None,
    *,
    split_seed: int = 0,
    heldout: int | float | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Load dataset ``name`` with seeded ``train`` / ``heldout`` / ``test`` splits.

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: the data folder (required for all but ``digits``, which takes none).
        split_seed: seed of the split permutation (and of the ``train_size`` /
            ``test_size`` subsets).
        heldout: held-out count (``int``, or a whole ``float`` like ``5000.0``) or fraction
            (``float`` in ``[0, 1)``). Defaults: 297 for digits; a tenth of the official
            train part (5,000 for CIFAR) for datasets with an official test set; 10% for a
            single-part image tree.
        train_size: for datasets with an official test set, keep a seeded class-stratified
            subset of this many official train images (the pool split into ``train`` and
            ``heldout``; ``heldout`` then defaults to ``train_size // 10``).
        test_size: likewise, a class-stratified subset of the official test images.
        cache: reuse / store decoded image trees in the user cache (see
            :mod:`taskspace.data.cache`); it never writes inside ``root``.
        progress: progress bars (stderr) while decoding large trees.

    Returns:
        An :class:`ImageDataset`; images are in the dataset's canonical order (see each
        loader), subsetted when ``train_size`` / ``test_size`` are given.
    """
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in DATASET_NAMES:
        raise TaskspaceError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    if key == "digits":
        if root is not None:
            raise TaskspaceError(
                f"digits is bundled with scikit-learn and takes no data folder (got root={root})"
            )
        if train_size is not None or test_size is not None:
            raise TaskspaceError(
                "digits has no official test set (split 1200/297/300 by split_seed); drop "
                "train_size/test_size and use heldout=... to size the held-out set"
            )
        return load_digits(split_seed=split_seed, heldout=heldout)
    if key in ("cifar10", "cifar100"):
        return load_cifar(
            key, root, split_seed=split_seed, heldout=heldout, train_size=train_size,
            test_size=test_size, cache=cache, progress=progress,
        )  # fmt: skip
    return load_imagefolder(
        root, split_seed=split_seed, heldout=heldout, train_size=train_size,
        test_size=test_size, cache=cache, progress=progress,
    )  # fmt: skip
