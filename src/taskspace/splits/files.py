"""Split files: native ``.npz``, CelebA-layout partition CSVs, the reference's ``.torch`` files.

- ``.npz`` (:func:`save_split` / :func:`load_split`): ``train_idx`` and ``test_idx``
  (``int64``), ``meta`` (a JSON string holding name, kind and the split's meta), optional
  ``target_labels`` (``uint8 [N]``) and ``version``. Read with ``allow_pickle=False``.
- CelebA layout (:func:`export_partition` / :func:`import_partition`): header
  ``image_id,partition``, one row per image, partition 0/1/2 = train/val/test. On export the
  split's train side is 0, its test side 1 ("val", the held-out adversarial part, as in the
  reference's ``list_eval_partition_adv_split.csv``) and every other image 2.
- Reference ``.torch`` files (:func:`load_reference_splits`): ``torch.load(weights_only=True)``
  of a dict ``{target: [(train_idx, test_idx), ...]}`` or a pair ``[train_idx, test_idx]`` of
  tensors or numpy ``int64`` arrays; only numpy's array-rebuild functions are allowed on top
  of torch's safe set, so a file with any other object is refused, never executed.

:func:`split_balance` reports each side's class counts and target positive rate.
"""

from __future__ import annotations

import csv
import json
import pickle
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    from numpy import dtypes as np_dtypes
except ImportError:  # numpy < 1.25 has no numpy.dtypes (and no DType classes to allow)
    np_dtypes = None  # type: ignore[assignment]

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write
from taskspace.splits.builders import Split
from taskspace.tasks.layout import dataset_index_of

#: Version of the native split ``.npz`` layout.
SPLIT_NPZ_VERSION = 1

#: CelebA partition codes.
PARTITION_CODES = {"train": 0, "val": 1, "test": 2}


# ----------------------------------------------------------------------------- native npz
def save_split(path: str | Path, split: Split) -> Path:
    """Write ``split`` to ``path`` (``.npz``) atomically."""
    try:
        meta = json.dumps(
            {"name": split.name, "kind": split.kind, "meta": split.meta}, sort_keys=True
        )
    except (TypeError, ValueError) as err:
        raise TaskspaceError(f"split {split.name!r} meta is not JSON-serialisable: {err}") from None
    arrays: dict[str, Any] = {
        "train_idx": split.train_idx.numpy().astype(np.int64),
        "test_idx": split.test_idx.numpy().astype(np.int64),
        "meta": np.array(meta),
        "version": np.array(SPLIT_NPZ_VERSION),
    }
    if split.target_labels is not None:
        arrays["target_labels"] = split.target_labels.numpy().astype(np.uint8)

    def _write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, _write)


def load_split(path: str | Path, n_images: int | None = None) -> Split:
    """Read a split written by :func:`save_split` (checked against ``n_images`` if given)."""
    path = Path(path)
    if not path.is_file():
        raise TaskspaceError(f"split file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("train_idx", "test_idx", "meta") if k not in z.files]
            if missing:
                raise TaskspaceError(f"{path}: not a split file (missing {', '.join(missing)})")
            train, test = z["train_idx"], z["test_idx"]
            info = json.loads(str(z["meta"]))
            target = z["target_labels"] if "target_labels" in z.files else None
    except (OSError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise TaskspaceError(f"{path}: unreadable split file ({err})") from None
    try:
        split = Split(
            torch.from_numpy(train),
            torch.from_numpy(test),
            str(info["name"]),
            str(info["kind"]),
            dict(info.get("meta", {})),
            None if target is None else torch.from_numpy(target.astype(np.int64)),
        )
    except KeyError as err:
        raise TaskspaceError(f"{path}: split meta lacks {err}") from None
    except TaskspaceError as err:
        raise TaskspaceError(f"{path}: {err}") from None
    if n_images is not None:
        try:
            split.validate(n_images)
        except TaskspaceError as err:
            raise TaskspaceError(f"{path}: {err}") from None
    return split


# ----------------------------------------------------------------------------- CelebA layout
def default_image_id(i: int) -> str:
    """CelebA's id of dataset index ``i``: ``000001.jpg`` for index 0."""
    return f"{i + 1:06d}.jpg"


def image_ids(n_images: int, ids: Sequence[str] | Callable[[int], str] | None = None) -> list[str]:
    """The id of every dataset index: ``ids`` (a list, e.g. ``dataset.ids``, or a function
    of the index), by default :func:`default_image_id`."""
    if ids is None:
        return [default_image_id(i) for i in range(n_images)]
    if callable(ids):
        return [str(ids(i)) for i in range(n_images)]
    out = [str(x) for x in ids]
    if len(out) != n_images:
        raise TaskspaceError(f"{len(out)} image ids for {n_images} images")
    if len(set(out)) != len(out):
        raise TaskspaceError("image ids must be unique")
    return out


def export_partition(
    path: str | Path,
    split: Split,
    n_images: int,
    ids: Sequence[str] | Callable[[int], str] | None = None,
) -> Path:
    """Write ``split`` as a CelebA ``list_eval_partition.csv``: train 0, test 1, others 2."""
    split.validate(n_images)
    names = image_ids(n_images, ids)
    part = np.full(n_images, PARTITION_CODES["test"], dtype=np.int64)
    part[split.train_idx.numpy()] = PARTITION_CODES["train"]
    part[split.test_idx.numpy()] = PARTITION_CODES["val"]

    def _write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            fh.write("image_id,partition\n")
            fh.writelines(f"{name},{p}\n" for name, p in zip(names, part.tolist()))

    return atomic_write(path, _write)


def read_partition(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Rows of a CelebA partition CSV: ``(image ids, partition codes int64)``."""
    path = Path(path)
    if not path.is_file():
        raise TaskspaceError(f"partition file not found: {path}")
    ids: list[str] = []
    codes: list[int] = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["image_id", "partition"]:
            raise TaskspaceError(f"{path}: expected header 'image_id,partition', got {header}")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 2 or row[1].strip() not in ("0", "1", "2"):
                raise TaskspaceError(f"{path}:{line}: expected '<image id>,<0|1|2>', got {row}")
            ids.append(row[0].strip())
            codes.append(int(row[1]))
    if len(set(ids)) != len(ids):
        raise TaskspaceError(f"{path}: repeated image ids")
    return ids, np.asarray(codes, dtype=np.int64)


def import_partition(
    path: str | Path,
    n_images: int | None = None,
    ids: Sequence[str] | Callable[[int], str] | None = None,
    *,
    name: str | None = None,
) -> tuple[Split, torch.Tensor]:
    """Read a CelebA partition file as a :class:`Split` (train = 0, test = 1) plus the
    indices of partition 2 (the official test set).

    Ids are mapped to dataset indices through ``ids`` (default :func:`default_image_id`
    over ``n_images``, which defaults to the file's row count). An id that is not in the
    mapping is an error.
    """
    path = Path(path)
    file_ids, codes = read_partition(path)
    n = len(file_ids) if n_images is None else int(n_images)
    index = {x: i for i, x in enumerate(image_ids(n, ids))}
    unknown = [x for x in file_ids if x not in index]
    if unknown:
        raise TaskspaceError(
            f"{path}: {len(unknown)} unknown image ids (e.g. {unknown[0]!r}) "
            f"for a dataset of {n} images; check the id mapping"
        )
    pos = np.asarray([index[x] for x in file_ids], dtype=np.int64)
    meta = {"source": str(path), "n_partition_test": int((codes == 2).sum())}
    split = Split(pos[codes == 0], pos[codes == 1], name or path.stem, "imported", meta)
    return split, torch.from_numpy(np.sort(pos[codes == 2]))


# ----------------------------------------------------------------------------- reference .torch
def _numpy_safe_globals() -> list[Any]:
    """numpy's array-rebuild functions and dtype classes, under old and new module names."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 / 1
    reconstruct = core.multiarray._reconstruct
    allowed: list[Any] = [
        np.ndarray,
        np.dtype,
        reconstruct,
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
    ]
    for name in (
        "Int64DType",
        "Int32DType",
        "Int16DType",
        "Int8DType",
        "UInt8DType",
        "UInt16DType",
        "UInt32DType",
        "UInt64DType",
        "BoolDType",
    ):
        if hasattr(np_dtypes, name):
            allowed.append(getattr(np_dtypes, name))
    return allowed


def _to_index(x: Any, where: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        arr = x.detach().cpu().numpy()
    elif isinstance(x, np.ndarray):
        arr = x
    elif isinstance(x, (list, tuple)):
        arr = np.asarray(x)
    else:
        raise TaskspaceError(f"{where}: expected an index tensor or array, got {type(x).__name__}")
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise TaskspaceError(
            f"{where}: expected a 1-D integer index array, got {arr.dtype} {arr.shape}"
        )
    return torch.from_numpy(arr.astype(np.int64))


def _pair(x: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, (list, tuple)) or len(x) != 2:
        raise TaskspaceError(f"{where}: expected a (train_idx, test_idx) pair")
    return _to_index(x[0], f"{where} train_idx"), _to_index(x[1], f"{where} test_idx")


def _read_reference(path: Path) -> Any:
    """The object of a reference ``.torch`` file, loaded safely (tensors, arrays only)."""
    if not path.is_file():
        raise TaskspaceError(f"split file not found: {path}")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else ""
        raise TaskspaceError(
            f"{path}: refused to load: the file holds objects other than "
            f"index tensors/arrays ({first})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise TaskspaceError(f"{path}: unreadable split file ({str(err)[:200]})") from None


def _reference_items(
    obj: Any, path: Path
) -> list[tuple[str, torch.Tensor, torch.Tensor, dict[str, Any]]]:
    """``(name, train_idx, test_idx, meta)`` of every split in a reference file's object."""
    if isinstance(obj, (list, tuple)):
        tr, te = _pair(obj, str(path))
        return [(path.stem, tr, te, {"source": str(path)})]
    if not isinstance(obj, dict):
        raise TaskspaceError(
            f"{path}: expected a dict of split lists or a [train_idx, "
            f"test_idx] pair, got {type(obj).__name__}"
        )
    items = []
    for target, pairs in obj.items():
        if not isinstance(pairs, (list, tuple)):
            raise TaskspaceError(
                f"{path}: target {target!r} must map to a list of (train_idx, test_idx) pairs"
            )
        meta: dict[str, Any] = {"target": str(target), "source": str(path)}
        if isinstance(target, int) and not isinstance(target, bool):
            meta["target_index"] = target
        for j, item in enumerate(pairs):
            tr, te = _pair(item, f"{path} target {target!r} split {j}")
            items.append((f"target{target}-{j}", tr, te, {**meta, "split_idx": j}))
    return items


def _torchvision_to_dataset(idx: torch.Tensor, inv: torch.Tensor, where: str) -> torch.Tensor:
    """Torchvision training indices -> dataset indices (images not kept are dropped)."""
    if len(idx) and int(idx.max()) >= len(inv):
        raise TaskspaceError(
            f"{where}: index {int(idx.max())} is beyond the {len(inv)} official training images"
        )
    mapped = inv[idx]
    return mapped[mapped >= 0]


def load_reference_splits(
    path: str | Path, n_images: int | None = None, *, dataset: ImageDataset | None = None
) -> list[Split]:
    """Read a reference split file safely (``torch.load(weights_only=True)``).

    A dict ``{target: [(train_idx, test_idx), ...]}`` (``cifar_splits.torch``) gives splits
    named ``target<t>-<j>`` with ``meta = {"target": str(t), "split_idx": j}`` and, for an
    integer key, ``"target_index": t`` (the reference keys by human-task index); a pair
    ``[train_idx, test_idx]`` (``adv-split.torch``) gives one split named after the file.
    Anything else, or a file holding other objects than tensors, arrays, lists, tuples,
    dicts and numbers, raises :class:`TaskspaceError`.

    What the indices mean, with ``dataset``: on a torchvision-layout dataset (CIFAR from the
    python batches) they index torchvision's ``CIFAR10(train=True)`` and are placed through
    the dataset's ids (images a ``train_size`` subset left out are dropped, counted in
    ``meta["dropped"]``). A dict file, the CIFAR layout, is refused on an ImageFolder tree,
    which is ordered by class folder and file name, not as torchvision. Otherwise the
    indices are the dataset's own: a pair file on an ImageFolder tree (the reference's
    ImageNet file indexes ImageFolder order, the train part first, as here), any file on a
    native dataset. Without ``dataset`` they are checked against ``n_images``.
    """
    path = Path(path)
    obj = _read_reference(path)
    items = _reference_items(obj, path)
    inv = None
    if dataset is not None:
        n_images = len(dataset)
        cifar_file = isinstance(obj, dict) and dataset.index_order == "imagefolder"
        if dataset.index_order == "torchvision" or cifar_file:
            inv = dataset_index_of(dataset, str(path))  # refuses the ImageFolder tree
    splits = []
    for name, tr, te, meta in items:
        if inv is not None:
            n_file = len(tr) + len(te)
            tr = _torchvision_to_dataset(tr, inv, f"{path} split {name}")
            te = _torchvision_to_dataset(te, inv, f"{path} split {name}")
            meta = {**meta, "index": "torchvision_train"}
            if len(tr) + len(te) < n_file:
                meta["dropped"] = n_file - len(tr) - len(te)
        splits.append(Split(tr, te, name, "imported", meta))
    if n_images is not None:
        for s in splits:
            try:
                s.validate(n_images)
            except TaskspaceError as err:
                raise TaskspaceError(f"{path}: {err}") from None
    return splits


# ----------------------------------------------------------------------------- balance
def split_balance(
    split: Split,
    classes: torch.Tensor,
    num_classes: int | None = None,
    target: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Class counts and target positive rate of each side.

    Returns ``{"train": {"n", "class_counts", "positive_rate"}, "test": {...}}``;
    ``positive_rate`` is the mean of the target labels (``target`` or the split's own
    ``target_labels``) on that side, ``None`` without a target.
    """
    classes = torch.as_tensor(classes).long()
    c = int(num_classes or (int(classes.max()) + 1 if len(classes) else 0))
    tgt = split.target_labels if target is None else torch.as_tensor(target).long()
    out: dict[str, Any] = {}
    for side, idx in (("train", split.train_idx), ("test", split.test_idx)):
        counts = torch.bincount(classes[idx], minlength=c).tolist() if len(idx) else [0] * c
        rate = float(tgt[idx].float().mean()) if tgt is not None and len(idx) else None
        out[side] = {"n": len(idx), "class_counts": counts, "positive_rate": rate}
    return out


def balance_row(split: Split, classes: torch.Tensor, num_classes: int) -> dict[str, Any]:
    """One flat ``splits.csv`` row: sizes, positive rates, class counts as ``a/b/c``."""
    b = split_balance(split, classes, num_classes)
    row: dict[str, Any] = {
        "split": split.name,
        "kind": split.kind,
        "target": split.meta.get("target", ""),
        "discovered": split.meta.get("discovered", ""),
        "orientation": split.meta.get("orientation", ""),
        "n_train": b["train"]["n"],
        "n_test": b["test"]["n"],
    }
    for side in ("train", "test"):
        rate = b[side]["positive_rate"]
        row[f"{side}_positive_rate"] = "" if rate is None else round(rate, 4)
        row[f"{side}_class_counts"] = "/".join(map(str, b[side]["class_counts"]))
    return row


BALANCE_COLUMNS = [
    "split",
    "kind",
    "target",
    "discovered",
    "orientation",
    "n_train",
    "n_test",
    "train_positive_rate",
    "test_positive_rate",
    "train_class_counts",
    "test_class_counts",
]

__all__ = [
    "BALANCE_COLUMNS",
    "PARTITION_CODES",
    "balance_row",
    "default_image_id",
    "export_partition",
    "image_ids",
    "import_partition",
    "load_reference_splits",
    "load_split",
    "read_partition",
    "save_split",
    "split_balance",
]
