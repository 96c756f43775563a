"""Task files: the native ``.npz``, ``.npy`` + JSON sidecar, and the reference's CSV layout.

Formats (see ``reference/task-discovery.md`` section 9):

- ``.npz`` (native, :func:`save_tasks`): ``labels`` ``uint8 [K, N]`` (``int64`` when some
  task has 256+ classes), ``names`` and ``kinds`` (unicode arrays), ``meta`` (a JSON
  string) and ``version``. Round-trips a :class:`TaskSet` exactly.
- ``.npy``: ``[K, N]`` integer labels (a 1-D array is one task), optionally with a JSON
  sidecar ``<file>.npy.json`` or ``<stem>.json`` holding ``names``, ``kinds`` (a list, or
  one string for all), ``meta``; any other sidecar keys (dataset, index order, encoder,
  sign convention, seeds) are added to ``meta``.
- ``.csv``: one column per task, one row per image in dataset order. With an index
  column (header ``,name1,name2,...`` and an unnamed index ``0..N-1``, as pandas writes
  and as the reference's ``ssl_tasks.csv``), or without (``name1,name2,...``, the
  reference's ``discovered.csv``, read there with ``index_col=False``).

What the rows mean (``format=`` of :func:`load_tasks`, ``tasks=<file>:<format>`` on the
command line, :data:`TASK_FORMATS`):

- ``labels``: one label per image of the dataset, in its index order (``[K, N]``).
- ``torchvision_train``: the reference's CIFAR layout (``ssl_tasks.csv``, ``discovered.csv``):
  one row per official *training* image, 50,000, in torchvision's ``CIFAR10(train=True)``
  order. Placed on a dataset loaded from torchvision's python batches through its image ids
  (:mod:`taskspace.tasks.layout`), so ``train_size`` subsets work; the test images get no
  labels (``meta["unlabelled_splits"] = ["test"]``), so their AS is not scored. Refused,
  with the reason, on an ImageFolder tree, whose order is not torchvision's.
- ``class_subsets``: row ``j`` lists the positive class ids of binary task ``j`` (the
  reference's ``tiny_imagenet_binary_tasks.npy``, int64 ``[5, 100]`` out of 200 classes);
  built with :func:`class_subset_tasks` over the dataset's classes, kind ``human``.

Without ``format`` it is read from the shape, and a shape that fits two readings is an
error asking for the format: a bare ``.npy`` (no sidecar) in which no row repeats a value
could be class subsets or labels; on a torchvision-layout dataset, a file with 50,000 rows
is ``torchvision_train`` unless the dataset itself has 50,000 images (then it is ambiguous).
Otherwise the rows are ``labels``.

Loading never unpickles (``np.load(allow_pickle=False)``) and every unreadable input raises
:class:`TaskspaceError` naming the file (and line, for CSV). Every write is atomic.
"""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write, write_json
from taskspace.tasks.builders import class_subset_tasks
from taskspace.tasks.layout import (
    REFERENCE_TRAIN_IMAGES,
    reference_positions,
    unlabelled_split_names,
)
from taskspace.tasks.taskset import TASK_KINDS, UNLABELLED_SPLITS_KEY, TaskSet

#: Version of the native ``.npz`` layout, stored in the file.
NPZ_VERSION = 1

#: Header names of a first CSV column that is an index when its values are ``0..N-1``.
INDEX_COLUMN_NAMES = ("", "index", "idx")

_SUFFIXES = (".npz", ".npy", ".csv")

#: What a task file's rows mean (see the module doc): ``load_tasks(format=...)``.
TASK_FORMATS = ("labels", "torchvision_train", "class_subsets")


def _labels_array(tasks: TaskSet) -> np.ndarray:
    """Labels as ``uint8`` when every value fits, else ``int64`` (CPU numpy)."""
    labels = tasks.labels.detach().cpu()
    small = labels.numel() == 0 or int(labels.max()) < 256
    return labels.numpy().astype(np.uint8 if small else np.int64)


def _meta_json(tasks: TaskSet) -> str:
    try:
        return json.dumps(tasks.meta, sort_keys=True)
    except (TypeError, ValueError) as err:
        raise TaskspaceError(
            f"task metadata is not JSON-serialisable ({err}); keep meta to plain "
            "dicts, lists, strings and numbers"
        ) from err


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise TaskspaceError(
            f"unknown task file type {path.name!r}; use one of {', '.join(_SUFFIXES)}"
        )
    return suffix


def save_tasks(path: str | Path, tasks: TaskSet, *, dataset: ImageDataset | None = None) -> Path:
    """Write ``tasks`` to ``path`` atomically; the suffix picks the format.

    ``.npz`` (native, exact round trip), ``.npy`` (labels + ``<file>.npy.json`` sidecar with
    names, kinds, meta and shape) or ``.csv`` (one column per task, rows as
    :func:`export_tasks_csv` decides with ``dataset``; names only, kinds and meta dropped).
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".csv":
        return export_tasks_csv(path, tasks, dataset=dataset)
    labels = _labels_array(tasks)
    meta = _meta_json(tasks)
    if suffix == ".npy":
        sidecar = {
            "names": tasks.names,
            "kinds": tasks.kinds,
            "meta": json.loads(meta),
            "shape": list(labels.shape),
        }
        write_json(_sidecar_paths(path)[0], sidecar)  # first, so a .npy implies its sidecar

        def _write_npy(tmp: Path) -> None:
            with tmp.open("wb") as fh:  # a file object: np.save adds no suffix
                np.save(fh, labels, allow_pickle=False)

        return atomic_write(path, _write_npy)

    def _write_npz(tmp: Path) -> None:
        with tmp.open("wb") as fh:  # a file object: np.savez adds no suffix
            np.savez(
                fh,
                labels=labels,
                names=np.array(tasks.names, dtype=str),
                kinds=np.array(tasks.kinds, dtype=str),
                meta=np.array(meta),
                version=np.array(NPZ_VERSION),
            )

    return atomic_write(path, _write_npz)


def parse_task_spec(spec: str) -> tuple[str, str | None]:
    """Split a command-line task file spec ``<path>[:<format>]`` into path and format.

    ``tasks=tiny_imagenet_binary_tasks.npy:class_subsets`` names the format
    (:data:`TASK_FORMATS`); a bare path leaves it to :func:`load_tasks`. A ``:`` after a task
    file name that is followed by anything but a format is an error, not part of the path.
    """
    head, sep, tail = spec.rpartition(":")
    if not sep or not head:
        return spec, None
    if tail in TASK_FORMATS:
        return head, tail
    if Path(head).suffix.lower() in _SUFFIXES:
        raise TaskspaceError(
            f"unknown task file format {tail!r} in {spec!r}; use "
            f"<file>:{' or <file>:'.join(TASK_FORMATS)}"
        )
    return spec, None


def load_tasks(
    path: str | Path,
    *,
    kind: str | None = None,
    format: str | None = None,  # noqa: A002 - the user-facing option name
    dataset: ImageDataset | None = None,
) -> TaskSet:
    """Read a task file (``.npz``, ``.npy`` [+ sidecar] or ``.csv``) into a :class:`TaskSet`.

    ``format`` says what the file's rows mean (:data:`TASK_FORMATS`, see the module doc;
    ``None``: from the shape, refusing shapes that fit two readings). With ``dataset`` the
    tasks are placed on its images (``torchvision_train`` rows through its ids,
    ``class_subsets`` over its classes); both need it. ``kind`` overrides every task's
    kind; otherwise it comes from the file (``.npz``, sidecar), is ``human`` for class
    subsets or ``table``. Tasks from CSV and bare ``.npy`` get ``meta["source"]`` = the
    file name; tasks without names in the file are named ``<stem>-000``, ...
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.exists():
        raise TaskspaceError(f"task file {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise TaskspaceError(f"task file {str(path)!r} is not a file")
    if kind is not None and kind not in TASK_KINDS:
        raise TaskspaceError(f"unknown task kind {kind!r}; expected one of {TASK_KINDS}")
    if format is not None and format not in TASK_FORMATS:
        raise TaskspaceError(
            f"unknown task file format {format!r}; use one of {', '.join(TASK_FORMATS)}"
        )
    try:
        if suffix == ".npz":
            tasks = _load_npz(path)
        elif suffix == ".npy":
            tasks = _load_npy(path)
        else:
            tasks = _load_csv(path)
        bare_npy = suffix == ".npy" and not any(p.is_file() for p in _sidecar_paths(path))
        fmt = format or _auto_format(tasks, dataset, bare_npy, path)
        tasks = _place(tasks, fmt, dataset, path)
    except TaskspaceError as err:
        msg = str(err)
        if str(path) in msg:
            raise
        raise TaskspaceError(f"{path}: {msg}") from err
    return tasks.with_kind(kind) if kind is not None else tasks


def _rows_distinct(labels: torch.Tensor) -> bool:
    """True when no row of ``[K, m]`` (``m >= 2``) repeats a value: a set of ids per row."""
    if labels.shape[1] < 2:
        return False
    ordered = labels.sort(dim=1).values
    return not bool((ordered[:, 1:] == ordered[:, :-1]).any())


def _auto_format(tasks: TaskSet, dataset: ImageDataset | None, bare_npy: bool, path: Path) -> str:
    """The format a file's shape implies; an error when it fits two readings."""
    if bare_npy and _rows_distinct(tasks.labels):
        raise TaskspaceError(
            f"{path}: no row repeats a value, so it may hold class subsets (row j = the "
            "positive class ids of task j, like the reference's tiny_imagenet_binary_tasks"
            f".npy) or per-image labels; say which: tasks={path}:class_subsets or "
            f"tasks={path}:labels (load_tasks(..., format=...))"
        )
    if dataset is None or tasks.num_images != REFERENCE_TRAIN_IMAGES:
        return "labels"
    if dataset.index_order not in ("torchvision", "imagefolder"):
        return "labels"
    if len(dataset) != REFERENCE_TRAIN_IMAGES:
        return "torchvision_train"
    if dataset.index_order == "imagefolder":
        return "labels"
    raise TaskspaceError(
        f"{path}: {REFERENCE_TRAIN_IMAGES} rows are both one per image of dataset "
        f"{dataset.name!r} and one per official training image in torchvision order (the "
        f"reference's layout); say which: tasks={path}:labels or tasks={path}:torchvision_train"
    )


def _place(tasks: TaskSet, fmt: str, dataset: ImageDataset | None, path: Path) -> TaskSet:
    """The file's tasks as labels of the dataset's images, read as format ``fmt``."""
    if fmt == "labels":
        return tasks
    if dataset is None:
        raise TaskspaceError(f"{path}: format {fmt} needs the dataset the tasks are for")
    if fmt == "class_subsets":
        return _class_subsets(tasks, dataset, path)
    return _torchvision_train(tasks, dataset, path)


def _class_subsets(tasks: TaskSet, dataset: ImageDataset, path: Path) -> TaskSet:
    """Row ``j`` of the file = the positive class ids of binary task ``j``."""
    ordered = tasks.labels.sort(dim=1).values
    dup = (ordered[:, 1:] == ordered[:, :-1]).nonzero()
    if len(dup):
        j, c = int(dup[0, 0]), int(ordered[dup[0, 0], dup[0, 1]])
        raise TaskspaceError(
            f"{path}: format class_subsets, but row {j} repeats class id {c}; "
            "class subsets list distinct ids (per-image labels? use :labels)"
        )
    out = class_subset_tasks(
        dataset.classes, dataset.num_classes, tasks.labels, names=tasks.names, kind="human"
    )
    out.meta["source"] = path.name
    return out


def _torchvision_train(tasks: TaskSet, dataset: ImageDataset, path: Path) -> TaskSet:
    """One row per official training image (torchvision order), placed through ids."""
    if tasks.num_images != REFERENCE_TRAIN_IMAGES:
        raise TaskspaceError(
            f"{path}: format torchvision_train needs one row per official training image "
            f"({REFERENCE_TRAIN_IMAGES}), the file has {tasks.num_images}"
        )
    pos = reference_positions(dataset, str(path))
    train = (pos >= 0).nonzero().flatten()
    labels = torch.zeros(len(tasks), len(dataset), dtype=torch.int64)
    labels[:, train] = tasks.labels[:, pos[train]]
    meta = {**tasks.meta, "rows": "torchvision_train"}
    unlabelled = unlabelled_split_names(dataset, pos < 0)
    if unlabelled:
        meta[UNLABELLED_SPLITS_KEY] = unlabelled
    return TaskSet(labels, tasks.names, tasks.kinds, meta)


def _str_list(arr: np.ndarray, key: str, path: Path) -> list[str]:
    if arr.ndim != 1 or arr.dtype.kind not in "US":
        raise TaskspaceError(f"{path}: '{key}' must be a 1-D string array")
    return [str(x) for x in arr.tolist()]


def _check_integer_labels(arr: np.ndarray, path: Path) -> torch.Tensor:
    if arr.dtype.kind not in "iub":
        raise TaskspaceError(
            f"{path}: task labels must be integers, got dtype {arr.dtype}; "
            "save class ids (uint8/int64)"
        )
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise TaskspaceError(f"{path}: task labels must be [K, N], got shape {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr).astype(np.int64))


def _check_magic(path: Path, magics: tuple[bytes, ...], what: str) -> None:
    """Refuse files that do not start like ``what``, before numpy guesses (or unpickles)."""
    with path.open("rb") as fh:
        head = fh.read(6)
    if not any(head.startswith(m) for m in magics):
        raise TaskspaceError(
            f"{path}: cannot read task file, it is not a valid {what} (wrong file header); "
            "re-create it with save_tasks"
        )


def _load_npz(path: Path) -> TaskSet:
    _check_magic(path, (b"PK\x03\x04", b"PK\x05\x06"), ".npz archive")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array, not an archive")
        with archive as npz:
            missing = [k for k in ("labels", "names", "kinds", "meta") if k not in npz.files]
            if missing:
                raise TaskspaceError(
                    f"{path}: not a taskspace task file (missing {', '.join(missing)}); "
                    "write it with taskspace.tasks.save_tasks"
                )
            version = int(npz["version"]) if "version" in npz.files else NPZ_VERSION
            if version > NPZ_VERSION:
                raise TaskspaceError(
                    f"{path}: task file format version {version} is newer than this "
                    f"taskspace reads ({NPZ_VERSION}); upgrade taskspace"
                )
            labels = _check_integer_labels(npz["labels"], path)
            names = _str_list(npz["names"], "names", path)
            kinds = _str_list(npz["kinds"], "kinds", path)
            meta_text = str(npz["meta"][()])
    except TaskspaceError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        raise TaskspaceError(
            f"{path}: cannot read task file, it is not a valid .npz ({err}); "
            "re-create it with save_tasks"
        ) from err
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError as err:
        raise TaskspaceError(f"{path}: task metadata is not valid JSON ({err})") from err
    return TaskSet(labels, names, kinds, meta)


def _sidecar_paths(path: Path) -> list[Path]:
    """Candidate JSON sidecars of a ``.npy`` file, in lookup order."""
    return [path.with_name(path.name + ".json"), path.with_suffix(".json")]


def _load_npy(path: Path) -> TaskSet:
    _check_magic(path, (b"\x93NUMPY",), ".npy array")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        hint = "it holds Python objects, which are never unpickled" if "bject" in str(err) else err
        raise TaskspaceError(
            f"{path}: cannot read task file, it is not a valid .npy ({hint})"
        ) from err
    if not isinstance(arr, np.ndarray):
        raise TaskspaceError(f"{path}: expected one array in the .npy file")
    labels = _check_integer_labels(arr, path)
    K = labels.shape[0]
    sidecar_path = next((p for p in _sidecar_paths(path) if p.is_file()), None)
    if sidecar_path is None:
        names = [f"{path.stem}-{k:03d}" for k in range(K)]
        return TaskSet(labels, names, ["table"] * K, {"source": path.name})
    try:
        side = json.loads(sidecar_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TaskspaceError(f"{sidecar_path}: sidecar is not valid JSON ({err})") from err
    if not isinstance(side, dict):
        raise TaskspaceError(f"{sidecar_path}: sidecar must be a JSON object")
    names = side.pop("names", None)
    kinds = side.pop("kinds", side.pop("kind", "table"))
    meta = side.pop("meta", {})
    shape = side.pop("shape", None)
    if not isinstance(meta, dict):
        raise TaskspaceError(f"{sidecar_path}: 'meta' must be a JSON object")
    if shape is not None and list(shape) != list(labels.shape):
        raise TaskspaceError(
            f"{sidecar_path}: sidecar says shape {list(shape)} but {path.name} holds "
            f"{list(labels.shape)}; the two files do not belong together"
        )
    if names is None:
        names = [f"{path.stem}-{k:03d}" for k in range(K)]
    if isinstance(kinds, str):
        kinds = [kinds] * K
    if not isinstance(names, list) or not isinstance(kinds, list):
        raise TaskspaceError(f"{sidecar_path}: 'names' and 'kinds' must be lists")
    if len(names) != K or len(kinds) != K:
        raise TaskspaceError(
            f"{sidecar_path}: {len(names)} names and {len(kinds)} kinds for the {K} tasks "
            f"in {path.name}"
        )
    meta = {**side, **meta}  # extra top-level sidecar keys (dataset, encoder, ...) are meta
    try:
        return TaskSet(labels, names, kinds, meta)
    except TaskspaceError as err:
        raise TaskspaceError(f"{sidecar_path}: {err}") from err


def _parse_int(cell: str) -> int | None:
    """``cell`` as a non-negative integer (``"1"``, ``" 1 "``, ``"1.0"``), else ``None``."""
    text = cell.strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def _load_csv(path: Path) -> TaskSet:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows: list[list[str]] = []
            lines: list[int] = []
            header: list[str] | None = None
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # blank line
                if header is None:
                    header = row
                else:
                    rows.append(row)
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise TaskspaceError(f"{path}: cannot parse CSV ({err})") from err
    if header is None:
        raise TaskspaceError(f"{path}: empty file; expected a header with one column per task")
    if not rows:
        raise TaskspaceError(f"{path}: header but no rows; expected one row per image")
    width = len(header)
    for row, line in zip(rows, lines):
        if len(row) != width:
            raise TaskspaceError(
                f"{path}, line {line}: {len(row)} values but the header has {width} columns"
            )
    try:  # fast path: every cell a plain integer literal
        values = np.array(rows, dtype=np.int64)
    except (ValueError, OverflowError):
        values = np.empty((len(rows), width), dtype=np.int64)
        for i, (row, line) in enumerate(zip(rows, lines)):
            for j, cell in enumerate(row):
                v = _parse_int(cell)
                if v is None:
                    col = header[j] or "(index)"
                    raise TaskspaceError(
                        f"{path}, line {line}, column {col!r}: {cell!r} is not an integer "
                        "label; task CSVs hold one integer class id per cell"
                    ) from None
                values[i, j] = v
    first = header[0].strip()
    n = len(rows)
    in_order = bool(np.array_equal(values[:, 0], np.arange(n)))
    has_index = first == "" or (first.lower() in INDEX_COLUMN_NAMES and in_order)
    if has_index:
        if not in_order:
            bad = int(np.nonzero(values[:, 0] != np.arange(n))[0][0])
            raise TaskspaceError(
                f"{path}, line {lines[bad]}: index column is not 0..N-1 in order (row {bad} "
                f"has index {int(values[bad, 0])}); rows must follow the dataset's image order"
            )
        values, header = values[:, 1:], header[1:]
    names = [h.strip() for h in header]
    if not names:
        raise TaskspaceError(f"{path}: no task columns (only an index column)")
    if any(not nm for nm in names):
        raise TaskspaceError(f"{path}: a task column has an empty name in the header")
    negative = np.argwhere(values < 0)
    if len(negative):
        i, j = (int(x) for x in negative[0])
        raise TaskspaceError(
            f"{path}, line {lines[i]}, column {names[j]!r}: label {int(values[i, j])} is "
            "negative; labels are class ids 0, 1, ..."
        )
    labels = torch.from_numpy(np.ascontiguousarray(values.T))
    return TaskSet(labels, names, ["table"] * len(names), {"source": path.name})


def export_tasks_csv(
    path: str | Path, tasks: TaskSet, index: bool = True, *, dataset: ImageDataset | None = None
) -> Path:
    """Write ``tasks`` as one column per task, one row per image, atomically.

    Rows. With ``dataset`` loaded from torchvision's python batches and holding all 50,000
    official training images (no ``train_size`` subset), the rows are the reference's: one
    per official training image in torchvision order (the test images are left out), so the
    file is a drop-in ``ssl_tasks.csv`` / ``discovered.csv``. Otherwise (no ``dataset``, an
    ImageFolder tree, a subset, another dataset) the rows are the task set's images in the
    dataset's own index order: the file then fits only that dataset with the same options,
    not the reference's code. Tasks without labels on some split (read from a reference
    file) are refused there rather than written with made-up labels; keep them as ``.npz``.

    ``index=True`` writes the header ``,name1,...`` and an unnamed index column ``0..R-1``
    (``ssl_tasks.csv``); ``index=False`` omits the index (``discovered.csv``). Kinds and meta
    are not stored: use ``.npz`` for an exact round trip.
    """
    labels = _csv_rows(tasks, dataset).numpy()  # [R, K]
    header: list[Any] = ([""] if index else []) + list(tasks.names)

    def _write(tmp: Path) -> None:
        with tmp.open("w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(header)
            if index:
                w.writerows([i, *row] for i, row in enumerate(labels.tolist()))
            else:
                w.writerows(labels.tolist())

    return atomic_write(path, _write)


def _csv_rows(tasks: TaskSet, dataset: ImageDataset | None) -> torch.Tensor:
    """``[R, K]`` CPU labels of the CSV rows :func:`export_tasks_csv` writes."""
    labels = tasks.labels.detach().cpu()
    if dataset is not None:
        if tasks.num_images != len(dataset):
            raise TaskspaceError(
                f"tasks label {tasks.num_images} images but dataset "
                f"{dataset.name!r} has {len(dataset)}"
            )
        if dataset.index_order == "torchvision":
            pos = reference_positions(dataset, "tasks")
            train = (pos >= 0).nonzero().flatten()
            if len(train) == REFERENCE_TRAIN_IMAGES:  # every official training image
                return labels[:, train[pos[train].argsort()]].T.contiguous()
    partly = [
        (n, tasks.unlabelled_splits(k))
        for k, n in enumerate(tasks.names)
        if tasks.unlabelled_splits(k)
    ]
    if partly:
        name, where = partly[0]
        raise TaskspaceError(
            f"task {name!r} has no labels on split(s) {', '.join(where)}; a row per image would "
            "write made-up labels there: export with the full torchvision-layout CIFAR as "
            "dataset (the reference's rows) or save the tasks as .npz"
        )
    return labels.T.contiguous()
