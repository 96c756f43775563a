"""The ``data.*`` options every command shares, and the dataset they name."""

from __future__ import annotations

from dataclasses import dataclass

from taskspace.config import option
from taskspace.data.dataset import ImageDataset
from taskspace.data.registry import load_dataset

__all__ = ["DataConfig", "load_data"]


@dataclass
class DataConfig:
    """Which images: a dataset name, its folder, how it is split, and its image size."""

    name: str = option(
        "digits",
        "digits (built in), cifar10, cifar100, imagefolder, celeba (a CelebA-layout folder), "
        "coloured_digits, waterdigits or celeba_lite (built in, with attributes)",
    )
    root: str | None = option(
        None, "the data folder (all datasets but digits, coloured_digits and waterdigits)"
    )
    split_seed: int | None = option(
        None,
        "seed of the train/heldout split and the subsets (default 0; a command's "
        "preset may set another, e.g. discover preset=reference: 42); celeba: of "
        "partition=seeded; coloured_digits/waterdigits: of the whole dataset",
    )
    heldout: float | None = option(
        None,
        "held-out count or fraction (default per dataset); coloured_digits/waterdigits: "
        "the val count (default 297)",
    )
    train_size: int | None = option(
        None,
        "keep a class-stratified subset of the train part; coloured_digits/waterdigits: "
        "the train count (default 1200)",
    )
    test_size: int | None = option(
        None,
        "keep a class-stratified subset of the test part; coloured_digits/waterdigits: "
        "the test count (default 300)",
    )
    image_size: int | None = option(
        None,
        "resize every image to this square size once at "
        "load (cached), e.g. 32 for 64x64 or 178x218 images; celeba: crop to the short "
        "side, then resize (default 64)",
    )
    attributes: str | None = option(
        None,
        "celeba: the attribute file, list_attr_celeba.txt or .csv (default: looked for in "
        "root, root/Anno and the folder above root; a relative path is tried in root first)",
    )
    partition: str | None = option(
        None,
        "celeba: a partition file (list_eval_partition.txt or .csv), official (CelebA's index "
        "ranges), seeded (0.6/0.2/0.2 by split_seed) or seeded:TRAIN/VAL/TEST (default: a "
        "partition file found next to the attribute file, else seeded)",
    )
    images: str | None = option(
        None,
        "celeba: the images folder, relative to root (default: root, or its "
        "img_align_celeba/ folder)",
    )
    correlation: float | None = option(
        None,
        "coloured_digits/waterdigits: train correlation P(a = y) of the planted attribute "
        "(default 0.97 / 0.95; val and test are balanced)",
    )


def load_data(cfg: DataConfig, *, progress: bool = True) -> ImageDataset:
    """The dataset of ``cfg`` with its seeded splits (resized when ``image_size`` is set)."""
    return load_dataset(
        cfg.name,
        cfg.root,
        split_seed=0 if cfg.split_seed is None else cfg.split_seed,
        heldout=cfg.heldout,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        image_size=cfg.image_size,
        attributes=cfg.attributes,
        partition=cfg.partition,
        images=cfg.images,
        correlation=cfg.correlation,
        progress=progress,
    )
