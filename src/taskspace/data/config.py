"""The ``data.*`` options every command shares, and the dataset they name."""

from __future__ import annotations

from dataclasses import dataclass

from taskspace.config import option
from taskspace.data.dataset import ImageDataset
from taskspace.data.registry import load_dataset
from taskspace.data.resize import resize_dataset

__all__ = ["DataConfig", "load_data"]


@dataclass
class DataConfig:
    """Which images: a dataset name, its folder, how it is split, and its image size."""

    name: str = option("digits", "digits (built in), cifar10, cifar100 or imagefolder")
    root: str | None = option(None, "the data folder (all datasets but digits)")
    split_seed: int | None = option(
        None,
        "seed of the train/heldout split and the subsets (default 0; a command's "
        "preset may set another, e.g. discover preset=reference: 42)",
    )
    heldout: float | None = option(None, "held-out count or fraction (default per dataset)")
    train_size: int | None = option(None, "keep a class-stratified subset of the train part")
    test_size: int | None = option(None, "keep a class-stratified subset of the test part")
    image_size: int | None = option(
        None,
        "resize every image to this square size once at "
        "load (cached), e.g. 32 for 64x64 or 178x218 images",
    )


def load_data(cfg: DataConfig, *, progress: bool = True) -> ImageDataset:
    """The dataset of ``cfg`` with its seeded splits (resized when ``image_size`` is set)."""
    ds = load_dataset(
        cfg.name,
        cfg.root,
        split_seed=0 if cfg.split_seed is None else cfg.split_seed,
        heldout=cfg.heldout,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        progress=progress,
    )
    return ds if cfg.image_size is None else resize_dataset(ds, cfg.image_size)
