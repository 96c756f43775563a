"""CIFAR-10 and CIFAR-100 from a local folder, in either of two layouts.

1. **torchvision's python batches** (the official download): ``root`` contains
   ``cifar-10-batches-py/`` (or is that folder) with ``data_batch_1`` .. ``data_batch_5``,
   ``test_batch`` and ``batches.meta``; for CIFAR-100, ``cifar-100-python/`` with ``train``,
   ``test`` and ``meta`` (``fine_labels``). Order: the train batches in order, then the test
   batch: exactly torchvision's ``CIFAR10(train=True)`` indices followed by ``train=False``,
   so the reference's index-based files apply. ``ids`` are ``<batch file>/<row>``.
2. **an ImageFolder tree** ``root/train/<class>/*`` + ``root/test/<class>/*`` (e.g. the
   CIFAR-10 JPEGs in ``shared/external/cifar10-yoongikim``), in the canonical tree order of
   :mod:`taskspace.data.imagefolder` (train then test, classes alphabetical, files by name;
   ``ids`` like ``train/airplane/0000.jpg``), decoded once and cached.

The batches are pickles, the official format. They are read with a restricted unpickler
that only rebuilds numpy arrays (and plain dicts, lists, strings, numbers): a pickle asking
for any other callable is rejected, so loading never runs foreign code. ``latin1`` decoding
is what numpy documents for Python-2 pickles of arrays (torchvision does the same).

Splits (both layouts): :func:`taskspace.data.splits.official_splits`; by default the 50,000
official train images are split 45,000 ``train`` / 5,000 ``heldout`` by
``randperm(50000, generator=manual_seed(split_seed))`` (last 5,000 positions held out, as the
reference), and ``test`` is the 10,000 official test images. Normalisation: the standard
CIFAR-10 statistics for ``cifar10``; for ``cifar100``, computed over the official train part.
"""

from __future__ import annotations

import _codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.data.imagefolder import (
    ImageTree,
    channel_stats,
    check_root,
    load_tree,
    split_layout,
    tree_dataset,
)
from taskspace.errors import TaskspaceError

__all__ = ["CIFAR10_MEAN", "CIFAR10_STD", "load_cifar", "read_batch"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# name -> (python-batch folder, train files, test file, meta file, label key, names key, classes)
_FORMATS: dict[str, tuple[str, list[str], str, str, str, str, int]] = {
    "cifar10": (
        "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
        "batches.meta", "labels", "label_names", 10,
    ),
    "cifar100": (
        "cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names", 100,
    ),
}  # fmt: skip


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only callables a CIFAR batch pickle may name: numpy's array rebuilders."""
    reconstruct = np.empty(0).__reduce__()[0]
    scalar = np.float64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _codecs.encode,  # Python-3 protocol-2 pickles of bytes
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = reconstruct
        allowed[(module, "scalar")] = scalar
    return allowed


class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays and refuses every other global."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        """Resolve only allow-listed globals; anything else aborts the load."""
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _text(value: Any) -> str:
    """A pickled name as ``str`` (Python-2 pickles give ``bytes`` or latin-1 ``str``)."""
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def read_batch(path: Path) -> dict[str, Any]:
    """One CIFAR python-batch file as a dict with ``str`` keys (safe unpickling)."""
    if not path.is_file():
        raise TaskspaceError(f"CIFAR file missing: {path} (is the download complete?)")
    try:
        with path.open("rb") as f:
            obj = _BatchUnpickler(f, encoding="latin1").load()
    except Exception as e:  # truncated, foreign or malicious file
        raise TaskspaceError(f"cannot read CIFAR batch {path}: {e}") from None
    if not isinstance(obj, dict):
        raise TaskspaceError(f"cannot read CIFAR batch {path}: not a dict of arrays")
    return {_text(k): v for k, v in obj.items()}


def _batch_arrays(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [n, 3, 32, 32]`` and labels ``int64 [n]`` of one batch file."""
    batch = read_batch(path)
    if "data" not in batch or label_key not in batch:
        raise TaskspaceError(f"CIFAR batch {path} lacks 'data' or {label_key!r}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise TaskspaceError(
            f"CIFAR batch {path}: data must be uint8 [n, 3072], got {data.dtype} {data.shape}"
        )
    if labels.shape != (len(data),):
        raise TaskspaceError(f"CIFAR batch {path}: {len(labels)} labels for {len(data)} images")
    return data.reshape(-1, 3, 32, 32), labels


def _find_batches(root: Path, name: str) -> Path | None:
    """The python-batch folder under (or at) ``root``, if there is one."""
    folder, train_files, _, meta, *_ = _FORMATS[name]
    for cand in (root / folder, root):
        if (cand / meta).is_file() and (cand / train_files[0]).is_file():
            return cand
    return None


def _load_batches(folder: Path, name: str) -> ImageTree:
    """Read the python batches of ``folder`` in torchvision order (train, then test)."""
    _, train_files, test_file, meta_file, label_key, names_key, n_classes = _FORMATS[name]
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    for fname in [*train_files, test_file]:
        data, lab = _batch_arrays(folder / fname, label_key)
        images.append(data)
        labels.append(lab)
        ids.extend(f"{fname}/{i:05d}" for i in range(len(data)))
    meta = read_batch(folder / meta_file)
    names = [_text(x) for x in meta.get(names_key, [])]
    if len(names) != n_classes:
        raise TaskspaceError(
            f"{folder / meta_file}: expected {n_classes} names under {names_key!r}, "
            f"found {len(names)}"
        )
    classes = torch.from_numpy(np.concatenate(labels))
    if len(classes) and (int(classes.min()) < 0 or int(classes.max()) >= n_classes):
        raise TaskspaceError(f"{folder}: labels outside 0..{n_classes - 1}")
    n_train = sum(len(x) for x in images[:-1])
    return ImageTree(
        images=torch.from_numpy(np.concatenate(images)),
        classes=classes,
        class_names=names,
        ids=ids,
        parts=["train", "test"],
        part_sizes=[n_train, len(images[-1])],
    )


def load_cifar(
    name: str,
    root: str | Path | None,
    *,
    split_seed: int = 0,
    heldout: int | float | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """CIFAR-10 (``name="cifar10"``) or CIFAR-100 (``"cifar100"``) from ``root``.

    Layouts, order, splits and statistics: see the module doc. ``train_size`` / ``test_size``
    keep a seeded class-stratified subset of the official train / test images (the
    ``images`` tensor then holds only those, in canonical order; ``ids`` say which), and
    ``heldout`` then defaults to ``train_size // 10``.
    """
    if name not in _FORMATS:
        raise TaskspaceError(f"unknown CIFAR variant {name!r}; use cifar10 or cifar100")
    path = check_root(root, name)
    folder, *_, n_classes = _FORMATS[name]
    batches = _find_batches(path, name)
    if batches is not None:
        tree = _load_batches(batches, name)
    elif split_layout(path) == ("train", "test"):
        tree = load_tree(path, cache=cache, progress=progress)
        if len(tree.class_names) != n_classes:
            raise TaskspaceError(
                f"{path}/train has {len(tree.class_names)} class folders but {name} has "
                f"{n_classes}; use name='imagefolder' for other trees"
            )
    else:
        raise TaskspaceError(
            f"no {name} data in {path}: expected {folder}/ (torchvision's python batches) "
            "or train/<class>/ and test/<class>/ image folders"
        )
    layout = "torchvision" if batches is not None else "imagefolder"
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = (
        (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else None
    )
    if stats is None:
        stats = channel_stats(tree.images[: tree.part_sizes[0]])
    return tree_dataset(
        name, tree, split_seed=split_seed, heldout=heldout, train_size=train_size,
        test_size=test_size, stats=stats, index_order=layout,
    )  # fmt: skip
