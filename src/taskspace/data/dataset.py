"""The in-memory image dataset every capability works on.

Images are kept as one ``uint8 [N, C, H, W]`` tensor (CIFAR-10 is 150 MB), so training
gathers batches by index on the device instead of going through DataLoader workers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from taskspace.errors import TaskspaceError


@dataclass
class ImageDataset:
    """Images plus the metadata a task needs.

    Attributes:
        name: dataset name (``digits``, ``cifar10``, ...).
        images: ``uint8 [N, C, H, W]``.
        mean, std: per-channel normalisation statistics in ``[0, 1]`` pixel units.
        classes: ``int64 [N]`` original class of every image.
        class_names: name of every class, index = class id.
        splits: named ``int64`` index sets (``train``, ``heldout``, ``test``).
        attributes: optional ``[N, A]`` 0/1 attributes, with ``attribute_names``.
        ids: optional stable id per image (e.g. relative file path), in index order.
        split_orders: every split's indices in the seeded permutation order it was drawn in
            (``splits`` holds them sorted); :meth:`first` takes "the first n" from here.
        index_order: what image index ``i`` means: ``torchvision`` (CIFAR python batches:
            torchvision's train images then its test images, so the reference's index-based
            files apply), ``imagefolder`` (canonical tree order: class folder, then file
            name) or ``native`` (the loader's own order, e.g. scikit-learn's digits).
    """

    name: str
    images: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: torch.Tensor
    class_names: list[str]
    splits: dict[str, torch.Tensor] = field(default_factory=dict)
    attributes: torch.Tensor | None = None
    attribute_names: list[str] | None = None
    ids: list[str] | None = None
    split_orders: dict[str, torch.Tensor] = field(default_factory=dict)
    index_order: str = "native"

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise TaskspaceError(
                f"dataset {self.name!r}: images must be uint8 [N, C, H, W], "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.classes.shape != (len(self.images),):
            raise TaskspaceError(
                f"dataset {self.name!r}: {len(self.classes)} class labels for "
                f"{len(self.images)} images"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def split(self, name: str) -> torch.Tensor:
        """Index set of split ``name``; a clear error when the dataset lacks it."""
        if name not in self.splits:
            raise TaskspaceError(
                f"dataset {self.name!r} has no split {name!r} (has: {sorted(self.splits)})"
            )
        return self.splits[name]

    def use_splits(self, splits: dict[str, torch.Tensor]) -> None:
        """Replace the splits (e.g. with those a run directory stored). A split's seeded
        order is kept only where the new split holds the same images."""
        orders = {}
        for name, idx in splits.items():
            old = self.split_orders.get(name)
            if old is not None and torch.equal(old.sort().values, idx.sort().values):
                orders[name] = old
        self.splits, self.split_orders = dict(splits), orders

    def first(self, name: str, n: int, seed: int = 0) -> torch.Tensor:
        """The first ``n`` images of split ``name`` in its seeded order (class-mixed).

        This is the reference's "first batch of the held-out split": its held-out subset is
        in ``random_split``'s permutation order. A split without a recorded order (one read
        from a file) is put in a seeded random order first, never taken sorted: on a
        class-ordered tree the sorted split starts with a single class.
        """
        idx = self.split(name)
        order = self.split_orders.get(name)
        if order is None:
            order = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(seed))]
        return order[: min(int(n), len(order))]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images (any leading dims) -> float32, mean/std normalised."""
        mean = torch.tensor(self.mean, device=images.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(-1, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, clamped to ``[0, 1]`` (for pictures)."""
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)
