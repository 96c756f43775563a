"""scikit-learn's bundled 8x8 handwritten digits: the offline default dataset.

1,797 real images of the digits 0-9 (``sklearn.datasets.load_digits``), so every command runs
on a fresh machine without a download. Pixel values 0..16 are scaled to ``uint8`` 0..255
(``round(v * 255 / 16)``, halves up), giving ``images [1797, 1, 8, 8]``.
The order is scikit-learn's; ``ids`` are the row numbers ``"0000"`` .. ``"1796"``.

There is no official test set, so :func:`taskspace.data.splits.make_splits` draws all three
splits from one seeded permutation: 300 ``test``, 297 ``heldout``, 1,200 ``train`` by
default. Mean/std are computed over all 1,797 images (so they do not depend on the seed).
"""

from __future__ import annotations

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.data.imagefolder import channel_stats
from taskspace.data.splits import make_split_orders
from taskspace.errors import TaskspaceError

__all__ = ["DIGITS_HELDOUT", "DIGITS_TEST", "load_digits"]

DIGITS_TEST = 300
DIGITS_HELDOUT = 297


def load_digits(*, split_seed: int = 0, heldout: int | float | None = None) -> ImageDataset:
    """The digits dataset with seeded ``train`` / ``heldout`` / ``test`` splits.

    Args:
        split_seed: seed of the split permutation.
        heldout: held-out count or fraction of all 1,797 images (default 297); the test
            split stays 300 images and train takes the rest.
    """
    # Imported on use, not at the top: scikit-learn (and SciPy under it) would slow down the
    # start of every command, and only the digits data needs it.
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:  # a declared dependency; say so instead of a traceback
        raise TaskspaceError(
            "the digits dataset needs scikit-learn: pip install scikit-learn"
        ) from None
    bunch = sk_load_digits()
    values = torch.from_numpy(bunch.images).round().to(torch.int64)  # [1797, 8, 8], 0..16
    images = ((values * 255 + 8) // 16).clamp(0, 255).to(torch.uint8).unsqueeze(1)
    classes = torch.from_numpy(bunch.target).to(torch.int64)
    mean, std = channel_stats(images)
    orders = make_split_orders(
        len(images), split_seed, DIGITS_HELDOUT if heldout is None else heldout, DIGITS_TEST
    )
    return ImageDataset(
        name="digits",
        images=images,
        mean=mean,
        std=std,
        classes=classes,
        class_names=[str(int(c)) for c in bunch.target_names],
        splits={k: v.sort().values for k, v in orders.items()},
        ids=[f"{i:04d}" for i in range(len(images))],
        split_orders=orders,
    )
