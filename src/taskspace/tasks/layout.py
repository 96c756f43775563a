"""Which images the reference's index-based files talk about, and where they sit in a dataset.

The reference's CIFAR files (``ssl_tasks.csv``, ``discovered.csv``, ``cifar_splits.torch``;
``reference/task-discovery.md`` section 9) index the 50,000 official *training* images in
torchvision's ``CIFAR10(train=True)`` order. A dataset here holds the training images and
the 10,000 test images, so such a file cannot be applied index for index:

- loaded from torchvision's python batches (``index_order == "torchvision"``), every image
  knows its torchvision training index from its id: ``data_batch_k/<row>`` is
  ``(k - 1) * 10000 + row`` (the official batch files hold 10,000 images each) and
  ``train/<row>`` (CIFAR-100's single file) is ``row``; test images have none. This holds
  also when ``train_size`` / ``test_size`` subsets are kept, since ids survive subsetting.
- an ImageFolder tree (``index_order == "imagefolder"``) is ordered by class folder, then
  file name, which is not torchvision's order, so the files are refused there with the
  reason and the fix (load torchvision's python-batch folder instead).
- any other dataset has its own order (``native``), unrelated to torchvision's.
"""

from __future__ import annotations

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError

#: Rows of a reference-layout file: CIFAR's official training images (torchvision order).
REFERENCE_TRAIN_IMAGES = 50_000

#: Images per official CIFAR-10 batch file (``data_batch_1`` .. ``data_batch_5``).
BATCH_ROWS = 10_000

_FIX = (
    "use torchvision's python-batch download (the folder holding cifar-10-batches-py) as "
    "the data root, whose image order is torchvision's"
)


def torchvision_train_index(image_id: str) -> int | None:
    """Torchvision ``train=True`` index of a python-batch image id, ``None`` for test ids.

    ``data_batch_3/00017`` -> 20017, ``train/00017`` (CIFAR-100) -> 17, ``test_batch/...``
    and ``test/...`` -> ``None``.
    """
    batch, _, row = image_id.partition("/")
    if batch.startswith("data_batch_"):
        return (int(batch[len("data_batch_") :]) - 1) * BATCH_ROWS + int(row)
    if batch == "train":
        return int(row)
    return None


def check_reference_order(dataset: ImageDataset, what: str) -> None:
    """Refuse (one line: why and what to do) a dataset whose images have no torchvision
    training index; ``what`` names the file or object that needs one."""
    if dataset.index_order == "torchvision" and dataset.ids is not None:
        return
    head = (
        f"{what} indexes CIFAR's official training images in torchvision order (the "
        f"reference's layout), but dataset {dataset.name!r}"
    )
    if dataset.index_order == "imagefolder":
        raise TaskspaceError(
            f"{head} is an ImageFolder tree, ordered by class folder then file "
            f"name, not torchvision's order; {_FIX}"
        )
    raise TaskspaceError(
        f"{head} has its own image order ({dataset.index_order}); such files "
        "apply only to CIFAR loaded from torchvision's python batches"
    )


def reference_positions(dataset: ImageDataset, what: str) -> torch.Tensor:
    """``int64 [N]``: each image's torchvision training index, ``-1`` for test images.

    Refuses datasets without torchvision ids (:func:`check_reference_order`).
    """
    check_reference_order(dataset, what)
    pos = [torchvision_train_index(i) for i in dataset.ids or []]
    out = torch.tensor([-1 if p is None else p for p in pos], dtype=torch.int64)
    if len(out) and int(out.max()) >= REFERENCE_TRAIN_IMAGES:
        raise TaskspaceError(
            f"dataset {dataset.name!r} has an image id beyond the "
            f"{REFERENCE_TRAIN_IMAGES} official training images"
        )
    return out


def dataset_index_of(dataset: ImageDataset, what: str) -> torch.Tensor:
    """``int64 [50000]``: dataset index of each torchvision training image, ``-1`` for the
    ones the dataset did not keep (a ``train_size`` subset)."""
    pos = reference_positions(dataset, what)
    inv = torch.full((REFERENCE_TRAIN_IMAGES,), -1, dtype=torch.int64)
    train = (pos >= 0).nonzero().flatten()
    inv[pos[train]] = train
    return inv


def unlabelled_split_names(dataset: ImageDataset, unlabelled: torch.Tensor) -> list[str]:
    """Names of the dataset's splits made only of ``unlabelled`` (``bool [N]``) images.

    A split that mixes labelled and unlabelled images is an error: its scores would be
    partly against made-up labels.
    """
    names = []
    for name, idx in sorted(dataset.splits.items()):
        part = unlabelled[idx]
        if len(part) and bool(part.all()):
            names.append(name)
        elif bool(part.any()):
            raise TaskspaceError(
                f"split {name!r} of dataset {dataset.name!r} mixes official "
                "training and test images; reference-layout files label only "
                "the training images"
            )
    return names


__all__ = [
    "BATCH_ROWS",
    "REFERENCE_TRAIN_IMAGES",
    "check_reference_order",
    "dataset_index_of",
    "reference_positions",
    "torchvision_train_index",
    "unlabelled_split_names",
]
