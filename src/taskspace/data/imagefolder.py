"""Class-per-folder image trees (``ImageFolder`` layout), decoded once and cached.

Two layouts are recognised at ``root``:

* **split**: ``root/train/<class>/...`` and ``root/test/<class>/...`` (``val/`` stands in for
  a missing ``test/``). The official train part comes first, then the test part. Other
  folders next to ``train/`` and ``test/`` are ignored.
* **single**: ``root/<class>/...``: one part, split by seed.

Canonical index: parts in that order; within a part, classes in sorted (alphabetical)
folder-name order, which gives the class ids (as torchvision's ``ImageFolder``); within a
class, image files sorted by their path below the class folder (subfolders are searched).
``ids`` are the ``/``-separated paths relative to ``root`` (``train/airplane/0000.jpg``).
Hidden files and folders are skipped; image files are recognised by extension
(:data:`IMAGE_EXTENSIONS`). Images are never resized: they must all have the same size.
They are stored as RGB, or as one gray channel when every image is grayscale.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from taskspace.data.cache import FileRecord, cached_build, file_progress_bar
from taskspace.data.dataset import ImageDataset
from taskspace.data.splits import make_split_orders, official_splits
from taskspace.errors import TaskspaceError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageTree",
    "TreeListing",
    "channel_stats",
    "load_imagefolder",
    "load_tree",
    "scan_tree",
]

#: File name endings (lower case) treated as images.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)  # fmt: skip
#: Pillow modes stored as one gray channel.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
#: Names the decoder version in cache keys; change it when decoding changes.
DECODER_SALT = "imagetree-v1"
#: Trees with at least this many files are decoded in worker processes (when possible).
_PARALLEL_MIN_FILES = 8192
_LAYOUT_HINT = "expected ROOT/<class>/<image> or ROOT/train/<class>/ and ROOT/test/<class>/"


@dataclass
class TreeListing:
    """The files of an image tree in canonical order (no image decoded yet)."""

    root: Path
    parts: list[str]
    part_sizes: list[int]
    class_names: list[str]
    files: list[FileRecord]
    classes: list[int]


@dataclass
class ImageTree:
    """A decoded image tree: ``uint8 [N, C, H, W]`` images and their metadata."""

    images: torch.Tensor
    classes: torch.Tensor
    class_names: list[str]
    ids: list[str]
    parts: list[str]
    part_sizes: list[int]
    content_hash: str | None = None


def _is_image(name: str) -> bool:
    """Whether a file name is a visible image file (by extension)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _walk_images(folder: Path, prefix: str) -> list[FileRecord]:
    """Image files below ``folder`` (recursive), sorted by their path below it."""
    found: list[tuple[tuple[str, ...], FileRecord]] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(folder, ())]
    while stack:
        here, rel = stack.pop()
        try:
            entries = list(os.scandir(here))
        except OSError as e:
            raise TaskspaceError(f"cannot list folder {here}: {e.strerror or e}") from None
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                stack.append((Path(entry.path), (*rel, entry.name)))
            elif _is_image(entry.name) and entry.is_file():
                st = entry.stat()
                key = (*rel, entry.name)
                relpath = prefix + "/".join(key)
                found.append((key, FileRecord(relpath, st.st_size, st.st_mtime_ns)))
    found.sort(key=lambda item: item[0])
    return [rec for _, rec in found]


def _class_dirs(folder: Path) -> list[str]:
    """Sorted names of the visible subfolders of ``folder``."""
    try:
        return sorted(e.name for e in os.scandir(folder) if e.is_dir() and e.name[0] != ".")
    except OSError as e:
        raise TaskspaceError(f"cannot list folder {folder}: {e.strerror or e}") from None


def check_root(root: str | Path | None, name: str) -> Path:
    """``root`` as an existing folder, or a one-line :class:`TaskspaceError`."""
    if root is None:
        raise TaskspaceError(f"dataset {name!r} needs a data folder: pass root=PATH")
    path = Path(root).expanduser()
    if not path.exists():
        raise TaskspaceError(f"data folder not found: {path} (pass root=... an existing folder)")
    if not path.is_dir():
        raise TaskspaceError(f"data folder is a file, not a folder: {path} (pass root=...)")
    return path


def split_layout(root: Path) -> tuple[str, str] | None:
    """``("train", "test")`` (or ``("train", "val")``) when ``root`` has that layout."""
    if not (root / "train").is_dir():
        return None
    for test in ("test", "val"):
        if (root / test).is_dir():
            return ("train", test)
    return None


def scan_tree(root: Path) -> TreeListing:
    """List the images of the tree at ``root`` in canonical order (see the module doc)."""
    parts = split_layout(root)
    if parts is None and (root / "train").is_dir():
        raise TaskspaceError(
            f"{root} has a train/ folder but no test/ (or val/) folder next to it; "
            "add one, or point root= at a folder of class folders"
        )
    part_list = list(parts) if parts else [""]
    class_names = _class_dirs(root / part_list[0])
    if not class_names:
        raise TaskspaceError(f"no class folders in {root / part_list[0]} ({_LAYOUT_HINT})")
    index = {c: i for i, c in enumerate(class_names)}
    files: list[FileRecord] = []
    classes: list[int] = []
    sizes: list[int] = []
    for part in part_list:
        pdir = root / part if part else root
        names = _class_dirs(pdir) if part != part_list[0] else class_names
        unknown = [c for c in names if c not in index]
        if unknown:
            raise TaskspaceError(
                f"class folder {pdir / unknown[0]} has no matching {part_list[0]}/{unknown[0]} "
                f"folder; every {part}/ class must also be a {part_list[0]}/ class"
            )
        before = len(files)
        for cname in names:
            prefix = f"{part}/{cname}/" if part else f"{cname}/"
            found = _walk_images(pdir / cname, prefix)
            if not found:
                raise TaskspaceError(
                    f"empty class folder: {pdir / cname} has no images "
                    f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...); add images or remove it"
                )
            files.extend(found)
            classes.extend([index[cname]] * len(found))
        sizes.append(len(files) - before)
    return TreeListing(root, [p or "all" for p in part_list], sizes, class_names, files, classes)


def _open_error(path: Path, e: BaseException) -> str:
    """One line naming an undecodable file."""
    detail = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"cannot decode image {path}: {detail} (fix or remove the file)"


def _decode_chunk(
    root: str, relpaths: list[str], size: tuple[int, int], first: str
) -> tuple[np.ndarray, np.ndarray, str | None]:
    """Decode some images to ``uint8 [n, H, W, 3]`` plus a gray flag per image.

    Runs in worker processes, so it returns errors instead of raising them: the first
    problem of the chunk as a one-line message (``None`` when all decoded).
    """
    width, height = size
    out = np.zeros((len(relpaths), height, width, 3), dtype=np.uint8)
    gray = np.zeros(len(relpaths), dtype=bool)
    for i, rel in enumerate(relpaths):
        path = Path(root) / rel
        try:
            # Reading the bytes first is faster than letting Pillow read the file.
            with Image.open(io.BytesIO(path.read_bytes())) as im:
                if im.size != size:
                    w, h = im.size
                    msg = (
                        f"images must all have the same size: {path} is {w}x{h}, but {first} "
                        f"is {width}x{height} (resize them first)"
                    )
                    return out, gray, msg
                im.load()
                if im.mode in GRAY_MODES:
                    gray[i] = True
                    out[i] = np.asarray(im if im.mode == "L" else im.convert("L"))[:, :, None]
                else:
                    out[i] = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
        except Exception as e:  # any decoder failure is the file's fault: name it
            return out, gray, _open_error(path, e)
    return out, gray, None


def _first_size(root: Path, rel: str) -> tuple[int, int]:
    """Size of the first image (header only), which all the others must match."""
    try:
        with Image.open(root / rel) as im:
            return im.size
    except Exception as e:
        raise TaskspaceError(_open_error(root / rel, e)) from None


def _pool() -> ProcessPoolExecutor | None:
    """A forked process pool for decoding, or ``None`` where that is not available.

    Decoding small images is dominated by Python overhead under the GIL (threads measured
    slower than one thread), so large trees use processes. ``fork`` is used because it needs
    no re-import of the caller's main module (``spawn`` would break unguarded scripts);
    the workers only run Pillow and numpy.
    """
    cpus = os.cpu_count() or 1
    if cpus < 2 or "fork" not in mp.get_all_start_methods():
        return None
    try:
        return ProcessPoolExecutor(min(cpus, 8), mp_context=mp.get_context("fork"))
    except (OSError, RuntimeError, ValueError):
        return None


def decode_chunks(
    n: int,
    step: int,
    decode: Callable[..., Any],
    args_of: Callable[[int], tuple],
    store: Callable[[int, Any], None],
    bar: Any = None,
    parallel_min: int = _PARALLEL_MIN_FILES,
) -> None:
    """Decode ``n`` files in chunks of ``step``: ``decode(*args_of(start))`` for every
    chunk start, in forked worker processes when ``n >= parallel_min`` (a module-level
    ``decode``, picklable), else here; ``store(start, result)`` in chunk order. A pool that
    breaks (a killed worker) is replaced by decoding here, from the first chunk."""
    starts = list(range(0, n, step))
    pool = _pool() if n >= parallel_min else None
    if pool is not None:
        try:
            with warnings.catch_warnings():
                # Python >= 3.12 warns about fork() in a multi-threaded process; the
                # forked workers only decode with Pillow, so the warning does not apply.
                warnings.simplefilter("ignore", DeprecationWarning)
                futures = [pool.submit(decode, *args_of(s)) for s in starts]
                for s, fut in zip(starts, futures):
                    store(s, fut.result())
            return
        except (OSError, RuntimeError, AssertionError):  # broken pool: decode here
            if bar is not None:
                bar.reset()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    for s in starts:
        store(s, decode(*args_of(s)))


def decode_tree(listing: TreeListing, progress: bool = True) -> dict[str, Any]:
    """Decode every image of ``listing`` into the cache payload (see :class:`ImageTree`)."""
    root = listing.root
    relpaths = [f.relpath for f in listing.files]
    n = len(relpaths)
    size = _first_size(root, relpaths[0])
    first = str(root / relpaths[0])
    images = np.empty((n, size[1], size[0], 3), dtype=np.uint8)
    gray = np.empty(n, dtype=bool)
    step = max(256, min(4096, math.ceil(n / 64)))
    bar = file_progress_bar(n, f"decoding {root.name or root}", progress)

    def store(start: int, result: tuple[np.ndarray, np.ndarray, str | None]) -> None:
        """Copy one decoded chunk into place, or raise the chunk's error."""
        arr, flags, err = result
        if err is not None:
            raise TaskspaceError(err)
        images[start : start + len(arr)] = arr
        gray[start : start + len(arr)] = flags
        if bar is not None:
            bar.update(len(arr))

    try:
        decode_chunks(
            n,
            step,
            _decode_chunk,
            lambda s: (str(root), relpaths[s : s + step], size, first),
            store,
            bar,
        )
    finally:
        if bar is not None:
            bar.close()
    tensor = torch.from_numpy(images[..., :1] if gray.all() else images)
    return {
        "images": tensor.permute(0, 3, 1, 2).contiguous(),
        "classes": torch.tensor(listing.classes, dtype=torch.int64),
        "class_names": list(listing.class_names),
        "ids": relpaths,
        "parts": list(listing.parts),
        "part_sizes": list(listing.part_sizes),
    }


def load_tree(root: Path, *, cache: bool = True, progress: bool = True) -> ImageTree:
    """Scan and decode the tree at ``root``, through the content-keyed cache (``cache.py``)."""
    listing = scan_tree(root)
    payload = cached_build(
        root,
        listing.files,
        lambda: decode_tree(listing, progress),
        salt=DECODER_SALT,
        enabled=cache,
        progress=progress,
    )
    ids = [f.relpath for f in listing.files]
    if payload.get("ids") != ids or payload.get("class_names") != listing.class_names:
        # Cannot happen for a sound cache entry (the keys cover the paths); never trust one.
        payload = decode_tree(listing, progress)
    return ImageTree(
        images=payload["images"],
        classes=payload["classes"],
        class_names=list(payload["class_names"]),
        ids=list(payload["ids"]),
        parts=list(payload["parts"]),
        part_sizes=[int(s) for s in payload["part_sizes"]],
        content_hash=payload.get("content_hash"),
    )


def channel_stats(
    images: torch.Tensor, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of ``uint8 [N, C, H, W]`` images, in ``[0, 1]``.

    Accumulates float64 sums over chunks, so 50,000 CIFAR images need no 1 GB float copy.
    """
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    sq = torch.zeros(c, dtype=torch.float64)
    for s in range(0, len(images), chunk):
        x = images[s : s + chunk].to(torch.float64).transpose(0, 1).reshape(c, -1) / 255.0
        total += x.sum(1)
        sq += (x * x).sum(1)
    count = images.numel() // c
    mean = total / count
    std = (sq / count - mean * mean).clamp_min(0).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def tree_dataset(
    name: str,
    tree: ImageTree,
    *,
    split_seed: int,
    heldout: int | float | None,
    train_size: int | None,
    test_size: int | None,
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
    single_heldout: float = 0.1,
    single_test: float = 0.2,
    index_order: str = "imagefolder",
) -> ImageDataset:
    """Turn a decoded tree into an :class:`ImageDataset` with its splits.

    A split tree (train + test parts) goes through :func:`official_splits`
    (``train_size``/``test_size`` subsets, ``heldout`` default a tenth of the train part).
    A single tree is split by ``make_splits(N, split_seed, heldout or single_heldout,
    single_test)``. ``stats`` (mean, std) defaults to :func:`channel_stats` of the official
    train part (of every image for a single tree), computed before any subsetting so it
    does not depend on the seed or the subset.
    """
    images, classes, ids = tree.images, tree.classes, tree.ids
    if len(tree.parts) == 2:
        n_tr = tree.part_sizes[0]
        if stats is None:
            stats = channel_stats(images[:n_tr])
        keep, splits, orders = official_splits(
            classes[:n_tr], classes[n_tr:], seed=split_seed, heldout=heldout,
            train_size=train_size, test_size=test_size,
        )  # fmt: skip
        if len(keep) != len(images):
            images, classes = images[keep], classes[keep]
            ids = [ids[i] for i in keep.tolist()]
    else:
        if train_size is not None or test_size is not None:
            raise TaskspaceError(
                f"train_size/test_size need a tree with train/ and test/ folders; {name} "
                "has one part, split by split_seed (use heldout=... to size the held-out set)"
            )
        if stats is None:
            stats = channel_stats(images)
        orders = make_split_orders(
            len(images), split_seed, single_heldout if heldout is None else heldout, single_test
        )
        splits = {k: v.sort().values for k, v in orders.items()}
    return ImageDataset(
        name=name,
        images=images,
        mean=stats[0],
        std=stats[1],
        classes=classes,
        class_names=list(tree.class_names),
        splits=splits,
        ids=list(ids),
        split_orders=orders,
        index_order=index_order,
    )


def load_imagefolder(
    root: str | Path | None,
    *,
    split_seed: int = 0,
    heldout: int | float | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    cache: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """Any class-per-folder image tree at ``root`` (layouts and order: see the module doc).

    Splits: with ``train/`` and ``test/``, as CIFAR (see :func:`tree_dataset`); a single tree
    gets a seeded 70/10/20 train/heldout/test split (``heldout`` overrides the 10%).
    """
    path = check_root(root, "imagefolder")
    tree = load_tree(path, cache=cache, progress=progress)
    return tree_dataset(
        "imagefolder", tree, split_seed=split_seed, heldout=heldout,
        train_size=train_size, test_size=test_size,
    )  # fmt: skip
