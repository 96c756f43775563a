"""Datasets: in-memory ``uint8`` images with classes, ids and seeded splits.

``load_dataset("digits")`` works offline (scikit-learn's bundled 8x8 digits);
``load_dataset("cifar10", root)``, ``"cifar100"`` and ``"imagefolder"`` read local folders,
decoding image trees once into a content-keyed user cache. Splits are index tensors made by
:func:`make_splits` and saved with every run by :func:`save_splits` / :func:`load_splits`.
"""

from taskspace.data.dataset import ImageDataset
from taskspace.data.registry import DATASET_NAMES, load_dataset
from taskspace.data.splits import load_splits, make_splits, save_splits, validate_splits

__all__ = [
    "DATASET_NAMES",
    "ImageDataset",
    "load_dataset",
    "load_splits",
    "make_splits",
    "save_splits",
    "validate_splits",
]
