"""Folders in the CelebA layout: face images with named 0/1 attributes, joined by file name.

A CelebA-layout folder has three parts; only the first two are required:

* **images**: a flat folder of image files (``000001.jpg`` ...). ``images=`` names it,
  relative to ``root`` or absolute; by default ``root`` itself when it holds images, else the
  first of ``img_align_celeba/``, ``img_align_celeba/img_align_celeba/`` (the Kaggle zip),
  ``Img/img_align_celeba/``, ``images/`` that does.
* **attributes**: the official ``list_attr_celeba.txt`` (line 1 the image count, line 2
  the attribute names, then ``file v1 .. vA`` with values -1/1, whitespace separated) or the
  Kaggle CSV variant (``image_id,<names>`` header, then ``file,v1,...``). Any attribute
  names and any number of them work; -1 (and 0) become 0, 1 stays 1. ``attributes=`` names
  the file (a relative path is looked up in ``root`` first, then in the current folder); by
  default ``list_attr_celeba.txt`` or ``.csv`` is searched in ``root``, ``root/Anno``, and
  the folder above ``root``.
* **partition** (``partition=``): a file (``list_eval_partition.txt``: ``file 0|1|2``;
  or the CSV variant ``image_id,partition``), ``official`` (the official index ranges by
  file number: 000001-162770 train, 162771-182637 val, 182638-202599 test), ``seeded``
  (a seeded random 60/20/20 train/val/test split of the joined images) or
  ``seeded:TRAIN/VAL/TEST`` fractions (e.g. ``seeded:0.8/0.1/0.1``). By default a
  ``list_eval_partition.txt`` / ``.csv`` in ``root``, ``root/Eval``, ``root/Anno``, the
  folder above ``root`` or beside the attribute file is used, else ``seeded``.

Files are read as UTF-8 (a BOM is ignored); CRLF line ends, trailing spaces, blank lines
and a missing final newline are all fine. The header count of the TXT file is ignored (a
partial copy of the file keeps the full dataset's count).

**Join on file name, never on row position.** The dataset holds the images that are
present *and* have an attribute row *and* (for a partition file) a partition row, sorted by
file name; everything else is dropped and the counts are logged in one line (logger
``taskspace.data.celeba``; a warning when anything was dropped). :func:`join_celeba`
returns the same counts without decoding an image (``ImageDataset`` has no field for them).
``strict=True`` turns an attribute row without its image into an error.

**Images.** Each image is cropped to the centred square of its own short side (CelebA's
178x218 gives 178x178, a half-size 89x109 copy gives 89x89: nothing is hard-coded, so
nothing is zero-padded) and resized to ``image_size`` (default 64) with Pillow's
antialiased bilinear filter, as RGB. The decoded tensor is stored in the content-keyed user
cache of :mod:`taskspace.data.cache` (never inside the data folder), keyed by the joined
files and ``image_size``.

**The dataset.** ``attributes`` is ``int64 [N, A]`` 0/1 with ``attribute_names`` in file
order; ``ids`` are the file names; splits are ``train`` / ``val`` / ``test`` (a split with
no image is left out, e.g. ``val`` and ``test`` for a subset of the official train part
under ``partition=official``). CelebA has no class label: ``classes`` are all 0 (one class
``face``); tasks come from the attributes.

Errors are one-line :class:`TaskspaceError` s and nothing is written: a missing folder or
file, a row with the wrong number of columns (its line is named), a value that is not
-1/0/1, a repeated file name, a partition file that matches none of the images, an
unknown partition value.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from taskspace.data.cache import FileRecord, cached_build, file_progress_bar
from taskspace.data.dataset import ImageDataset
from taskspace.data.imagefolder import _is_image, _open_error, check_root, decode_chunks
from taskspace.data.splits import make_split_orders
from taskspace.errors import TaskspaceError

__all__ = [
    "CELEBA_IMAGE_SIZE",
    "OFFICIAL_RANGES",
    "SEEDED_FRACTIONS",
    "SPLIT_NAMES",
    "AttributeTable",
    "CelebaJoin",
    "join_celeba",
    "load_celeba",
    "read_attribute_file",
    "read_partition_file",
]

LOGGER = logging.getLogger("taskspace.data.celeba")

#: Default side of the square images.
CELEBA_IMAGE_SIZE = 64
#: Split names, index = partition value (0 train, 1 val, 2 test).
SPLIT_NAMES = ("train", "val", "test")
#: Official CelebA partition by file number: (first, last) of train, val, test.
OFFICIAL_RANGES = ((1, 162770), (162771, 182637), (182638, 202599))
#: Train/val/test fractions of ``partition=seeded``.
SEEDED_FRACTIONS = (0.6, 0.2, 0.2)
#: Names the crop/resize decoder in cache keys; change it when decoding changes.
DECODER_SALT = "celeba-square-v1"
#: Joins with at least this many images are decoded in worker processes (when possible).
_PARALLEL_MIN_FILES = 2048
_ATTRIBUTE_FILES = ("list_attr_celeba.txt", "list_attr_celeba.csv")
_PARTITION_FILES = ("list_eval_partition.txt", "list_eval_partition.csv")
_IMAGE_FOLDERS = (
    "img_align_celeba", "img_align_celeba/img_align_celeba", "Img/img_align_celeba", "images",
)  # fmt: skip
_PARTITION_WORDS = {
    "0": 0, "1": 1, "2": 2, "train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2,
}  # fmt: skip
_HEADER_WORDS = {"image_id", "image", "filename", "file", "name", "img", "id"}


# ---------------------------------------------------------------------------- text files


@dataclass
class AttributeTable:
    """An attribute file: ``values [R, A]`` (``int8`` 0/1) for the file name of every row."""

    path: Path
    names: list[str]
    files: list[str]
    values: np.ndarray


def _read_lines(path: Path, what: str) -> list[str]:
    """The lines of a text file (any line ends, BOM dropped), or a one-line error."""
    if not path.exists():
        raise TaskspaceError(f"{what} not found: {path}")
    if not path.is_file():
        raise TaskspaceError(f"{what} is a folder, not a file: {path}")
    try:
        return path.read_bytes().decode("utf-8-sig").splitlines()
    except OSError as e:
        raise TaskspaceError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise TaskspaceError(f"{what} {path} is not a UTF-8 text file") from None


def _is_csv(lines: Sequence[str]) -> bool:
    """Whether the first non-blank line is comma separated."""
    return "," in next((s for s in lines if s.strip()), "")


def _check_names(names: list[str], path: Path) -> None:
    if not names:
        raise TaskspaceError(f"attribute file {path} names no attributes")
    if any(not n for n in names):
        raise TaskspaceError(f"attribute file {path} has an empty attribute name")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TaskspaceError(f"attribute file {path} names {', '.join(dup)} more than once")


def _check_unique(files: Sequence[str], lines: Sequence[int], path: Path, what: str) -> None:
    """A one-line error naming the first file name that appears on two rows."""
    seen: dict[str, int] = {}
    for name, line in zip(files, lines):
        if name in seen:
            raise TaskspaceError(
                f"{what} {path}: {name} appears twice (lines {seen[name]} and {line})"
            )
        seen[name] = line


def _is_value(token: str) -> bool:
    """Whether an attribute value reads as -1, 0 or 1."""
    try:
        return int(token) in (-1, 0, 1)
    except ValueError:
        return False


def _parse_values(
    rests: list[str], lines: list[int], names: list[str], path: Path, sep: str
) -> np.ndarray:
    """The ``-1/0/1`` value strings of every row as ``int8`` 0/1 ``[R, A]``."""
    n_attr = len(names)
    joined = sep.join(rests)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # fromstring stopping early warns
        try:
            flat = np.fromstring(joined, dtype=np.int64, sep=sep) if rests else np.zeros(0)
        except (DeprecationWarning, ValueError):
            flat = np.zeros(0)
    if flat.size != len(rests) * n_attr or not np.isin(flat, (-1, 0, 1)).all():
        for rest, line in zip(rests, lines):  # find the offending value, for the message
            tokens = rest.split(",") if sep == "," else rest.split()
            for name, token in zip(names, tokens):
                if not _is_value(token):
                    raise TaskspaceError(
                        f"attribute file {path}, line {line}: value {token.strip()!r} of "
                        f"{name} is not -1 or 1 (or 0)"
                    )
        raise TaskspaceError(f"attribute file {path}: cannot read the attribute values")
    return (flat.reshape(len(rests), n_attr) > 0).astype(np.int8)


def read_attribute_file(path: str | Path) -> AttributeTable:
    """Read ``list_attr_celeba.txt`` or its CSV variant (formats: see the module doc).

    Raises:
        TaskspaceError: a missing or unreadable file, no attribute names, a row whose
            column count differs from the header's (the line is named), a value other than
            -1/0/1, a file name on two rows.
    """
    path = Path(path).expanduser()
    text = _read_lines(path, "attribute file")
    numbered = [(i + 1, s) for i, s in enumerate(text) if s.strip()]
    if not numbered:
        raise TaskspaceError(f"attribute file {path} is empty")
    files: list[str] = []
    rests: list[str] = []
    lines: list[int] = []
    if _is_csv(text):
        rows = list(csv.reader([s for _, s in numbered]))
        names = [c.strip() for c in rows[0][1:]]
        _check_names(names, path)
        for (line, _), row in zip(numbered[1:], rows[1:]):
            if len(row) != len(names) + 1:
                raise TaskspaceError(
                    f"attribute file {path}, line {line}: {len(row)} columns, expected "
                    f"{len(names) + 1} (file name and {len(names)} attributes)"
                )
            files.append(row[0].strip())
            rests.append(",".join(c.strip() for c in row[1:]))
            lines.append(line)
        sep = ","
    else:
        first = numbered[0][1].split()
        start = 1 if len(first) == 1 and first[0].isdigit() else 0  # the image-count line
        if start >= len(numbered):
            raise TaskspaceError(f"attribute file {path} has no attribute-name line")
        names = numbered[start][1].split()
        if names and names[0].lower() in _HEADER_WORDS:  # a header naming the file column
            names = names[1:]
        _check_names(names, path)
        for line, s in numbered[start + 1 :]:
            parts = s.split(None, 1)
            rest = parts[1] if len(parts) == 2 else ""
            count = len(rest.split())
            if count != len(names):
                raise TaskspaceError(
                    f"attribute file {path}, line {line}: {count + 1} columns, expected "
                    f"{len(names) + 1} (file name and {len(names)} attributes)"
                )
            files.append(parts[0])
            rests.append(rest)  # numpy's " " separator matches any run of whitespace
            lines.append(line)
        sep = " "
    _check_unique(files, lines, path, "attribute file")
    values = _parse_values(rests, lines, names, path, sep)
    return AttributeTable(path=path, names=names, files=files, values=values)


def read_partition_file(path: str | Path) -> dict[str, int]:
    """Read ``list_eval_partition.txt`` or its CSV variant: ``{file name: 0|1|2}``.

    Values may also be written ``train`` / ``val`` / ``test``. A first line whose value is
    not one of those (``image_id,partition``) is a header.

    Raises:
        TaskspaceError: a missing file, a row that is not two columns, an unknown value, a
            file name on two rows.
    """
    path = Path(path).expanduser()
    text = _read_lines(path, "partition file")
    comma = _is_csv(text)
    out: dict[str, int] = {}
    lines: dict[str, int] = {}
    first = True
    for i, s in enumerate(text):
        if not s.strip():
            continue
        parts = [p.strip() for p in s.split(",")] if comma else s.split()
        if len(parts) != 2:
            raise TaskspaceError(
                f"partition file {path}, line {i + 1}: {len(parts)} columns, expected 2 "
                "(file name and partition 0, 1 or 2)"
            )
        value = _PARTITION_WORDS.get(parts[1].lower())
        if value is None:
            if first and (comma or parts[0].lower() in _HEADER_WORDS):
                first = False
                continue
            raise TaskspaceError(
                f"partition file {path}, line {i + 1}: unknown partition value {parts[1]!r} "
                "(expected 0, 1 or 2 = train, val, test)"
            )
        first = False
        if parts[0] in out:
            raise TaskspaceError(
                f"partition file {path}: {parts[0]} appears twice "
                f"(lines {lines[parts[0]]} and {i + 1})"
            )
        out[parts[0]] = value
        lines[parts[0]] = i + 1
    if not out:
        raise TaskspaceError(f"partition file {path} has no rows")
    return out


# ---------------------------------------------------------------------------- finding files


def _resolve_file(value: str | Path, root: Path) -> Path:
    """A user-given file path: relative paths are looked up in ``root`` first."""
    path = Path(value).expanduser()
    if not path.is_absolute() and (root / path).exists():
        return root / path
    return path


def _search(root: Path, names: Sequence[str], subdirs: Sequence[str]) -> Path | None:
    """The first of ``names`` in ``root``, ``root/<subdir>`` or the folder above ``root``."""
    for folder in (root, *(root / s for s in subdirs), root.resolve().parent):
        for name in names:
            if (folder / name).is_file():
                return folder / name
    return None


def _list_images(folder: Path) -> list[FileRecord]:
    """The image files directly in ``folder`` (not below it), sorted by name."""
    try:
        entries = list(os.scandir(folder))
    except OSError as e:
        raise TaskspaceError(f"cannot list folder {folder}: {e.strerror or e}") from None
    out = []
    for entry in entries:
        if _is_image(entry.name) and entry.is_file():
            st = entry.stat()
            out.append(FileRecord(entry.name, st.st_size, st.st_mtime_ns))
    out.sort(key=lambda r: r.relpath)
    return out


def _image_folder(root: Path, images: str | Path | None) -> tuple[Path, list[FileRecord]]:
    """The images folder (see the module doc) and its image files."""
    if images is not None:
        folder = Path(images).expanduser()
        folder = folder if folder.is_absolute() else root / folder
        if not folder.is_dir():
            raise TaskspaceError(f"images folder not found: {folder} (images=...)")
        found = _list_images(folder)
        if not found:
            raise TaskspaceError(f"no image files (.jpg, .png, ...) in images folder {folder}")
        return folder, found
    for sub in ("", *_IMAGE_FOLDERS):
        folder = root / sub if sub else root
        if folder.is_dir():
            found = _list_images(folder)
            if found:
                return folder, found
    raise TaskspaceError(
        f"no image files in {root} or its {', '.join(_IMAGE_FOLDERS)} folders; "
        "pass images=SUBFOLDER"
    )


def _parse_partition(partition: str | Path | None, root: Path, attributes: Path) -> tuple[str, Any]:
    """``("file", path)``, ``("official", None)`` or ``("seeded", (train, val, test))``."""
    if partition is None:
        found = _search(root, _PARTITION_FILES, ("Eval", "Anno"))
        if found is None:
            beside = [attributes.parent / n for n in _PARTITION_FILES]
            found = next((p for p in beside if p.is_file()), None)
        return ("file", found) if found is not None else ("seeded", SEEDED_FRACTIONS)
    text = str(partition).strip()
    if text.lower() == "official":
        return "official", None
    if text.lower() == "seeded":
        return "seeded", SEEDED_FRACTIONS
    if text.lower().startswith("seeded:"):
        parts = re.split(r"[/,]", text.split(":", 1)[1])
        try:
            fr = tuple(float(p) for p in parts)
        except ValueError:
            fr = ()
        if (
            len(fr) != 3
            or not all(math.isfinite(f) and 0 <= f < 1 for f in fr)
            or fr[0] <= 0
            or abs(sum(fr) - 1) > 1e-6
        ):
            raise TaskspaceError(
                f"partition={text!r}: write seeded:TRAIN/VAL/TEST with three fractions "
                "that sum to 1, e.g. seeded:0.6/0.2/0.2"
            )
        return "seeded", fr
    path = _resolve_file(text, root)
    if not path.is_file():
        raise TaskspaceError(
            f"partition file not found: {path} (partition= takes a file, official, "
            "seeded or seeded:TRAIN/VAL/TEST)"
        )
    return "file", path


# ---------------------------------------------------------------------------- the join


@dataclass
class CelebaJoin:
    """What :func:`join_celeba` kept and dropped.

    ``files`` (sorted) are the kept images, ``rows`` their rows in ``table``, ``parts``
    their partition (0/1/2) or ``None`` for a seeded split. The counts say how many rows
    of each source found no partner.
    """

    images_dir: Path
    records: list[FileRecord]
    table: AttributeTable
    rows: np.ndarray
    parts: np.ndarray | None
    partition: str
    seeded_fractions: tuple[float, ...] | None
    images_found: int
    attribute_rows: int
    partition_rows: int | None
    images_without_attributes: int
    attribute_rows_without_image: int
    without_partition: int
    partition_rows_unused: int

    @property
    def files(self) -> list[str]:
        return [r.relpath for r in self.records]

    @property
    def dropped(self) -> int:
        """Rows or images of any source left out of the dataset."""
        return (
            self.images_without_attributes
            + self.attribute_rows_without_image
            + self.without_partition
            + self.partition_rows_unused
        )

    def message(self) -> str:
        """One line: what was joined and what was dropped."""
        parts = [
            _count(self.attribute_rows_without_image, "attribute row", "without an image"),
            _count(self.images_without_attributes, "image", "without an attribute row"),
        ]
        if self.partition_rows is not None:
            parts.append(_count(self.without_partition, "image", "without a partition row"))
            parts.append(_count(self.partition_rows_unused, "partition row", "without an image"))
        elif self.partition == "official":
            parts.append(_count(self.without_partition, "image", "outside the official ranges"))
        return (
            f"celeba: {len(self.records):,} images kept ({self.images_found:,} image files, "
            f"{self.attribute_rows:,} attribute rows, partition {self.partition}); "
            f"dropped {', '.join(parts)}"
        )


def _count(n: int, noun: str, rest: str) -> str:
    """``"3 images without ..."`` / ``"1 image without ..."``."""
    return f"{n:,} {noun}{'' if n == 1 else 's'} {rest}"


def _official_parts(files: Sequence[str]) -> np.ndarray:
    """Official partition (0/1/2, or -1 outside the ranges) of numbered file names."""
    out = np.full(len(files), -1, dtype=np.int64)
    for i, name in enumerate(files):
        stem = name.rsplit(".", 1)[0]
        if not stem.isdigit():
            raise TaskspaceError(
                f"partition=official needs file names numbered like 000001.jpg; got {name!r} "
                "(use a partition file or partition=seeded)"
            )
        num = int(stem)
        for part, (lo, hi) in enumerate(OFFICIAL_RANGES):
            if lo <= num <= hi:
                out[i] = part
    return out


def join_celeba(
    root: str | Path | None,
    *,
    attributes: str | Path | None = None,
    partition: str | Path | None = None,
    images: str | Path | None = None,
    strict: bool = False,
) -> CelebaJoin:
    """Find and read the files of a CelebA-layout folder and join them by file name.

    Arguments as :func:`load_celeba`. No image is decoded. ``strict=True`` makes an
    attribute row whose image is missing an error instead of a dropped row.
    """
    path = check_root(root, "celeba")
    images_dir, records = _image_folder(path, images)
    if attributes is None:
        attr_path = _search(path, _ATTRIBUTE_FILES, ("Anno",))
        if attr_path is None:
            raise TaskspaceError(
                f"no attribute file ({' or '.join(_ATTRIBUTE_FILES)}) in {path}, {path}/Anno "
                "or the folder above; pass attributes=PATH"
            )
    else:
        attr_path = _resolve_file(attributes, path)
    kind, arg = _parse_partition(partition, path, attr_path)
    table = read_attribute_file(attr_path)

    row_of = {name: i for i, name in enumerate(table.files)}
    present = [r for r in records if r.relpath in row_of]
    if not present:
        raise TaskspaceError(
            f"attribute file {attr_path} matches none of the {len(records):,} images in "
            f"{images_dir} (rows start with e.g. {table.files[0] if table.files else '-'}, "
            f"images are e.g. {records[0].relpath})"
        )
    without_image = len(table.files) - len(present)
    if strict and without_image:
        have = {r.relpath for r in records}
        missing = next(f for f in table.files if f not in have)
        raise TaskspaceError(
            f"{without_image:,} rows of {attr_path} have no image in {images_dir} "
            f"(e.g. {missing}); drop strict to use the images present"
        )
    parts: np.ndarray | None = None
    partition_rows: int | None = None
    unused = without = 0
    label = kind
    if kind == "file":
        table_parts = read_partition_file(arg)
        partition_rows = len(table_parts)
        label = f"file {arg}"
        kept = [r for r in present if r.relpath in table_parts]
        if not kept:
            raise TaskspaceError(
                f"partition file {arg} matches none of the {len(present):,} images with "
                f"attributes (rows start with e.g. {next(iter(table_parts))}, images are e.g. "
                f"{present[0].relpath})"
            )
        without, unused = len(present) - len(kept), partition_rows - len(kept)
        present = kept
        parts = np.array([table_parts[r.relpath] for r in present], dtype=np.int64)
    elif kind == "official":
        official = _official_parts([r.relpath for r in present])
        inside = official >= 0
        if not inside.any():
            raise TaskspaceError(
                f"none of the {len(present):,} images is numbered inside the official CelebA "
                "ranges 000001-202599; use partition=seeded"
            )
        without = int((~inside).sum())
        present = [r for r, k in zip(present, inside.tolist()) if k]
        parts = official[inside]
    else:
        label = "seeded " + "/".join(f"{f:g}" for f in arg)
    return CelebaJoin(
        images_dir=images_dir,
        records=present,
        table=table,
        rows=np.array([row_of[r.relpath] for r in present], dtype=np.int64),
        parts=parts,
        partition=label,
        seeded_fractions=arg if kind == "seeded" else None,
        images_found=len(records),
        attribute_rows=len(table.files),
        partition_rows=partition_rows,
        images_without_attributes=len(records) - (len(present) + without),
        attribute_rows_without_image=without_image,
        without_partition=without,
        partition_rows_unused=unused,
    )


# ---------------------------------------------------------------------------- decoding


def _decode_square_chunk(folder: str, names: list[str], size: int) -> tuple[np.ndarray, str | None]:
    """Decode, centre-crop to the short side and resize some images to ``uint8 [n, S, S, 3]``.

    Runs in worker processes, so it returns the chunk's first problem as a one-line message
    instead of raising it.
    """
    out = np.zeros((len(names), size, size, 3), dtype=np.uint8)
    for i, name in enumerate(names):
        path = Path(folder) / name
        try:
            with Image.open(io.BytesIO(path.read_bytes())) as im:
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                w, h = rgb.size
                m = min(w, h)
                left, top = (w - m) // 2, (h - m) // 2
                square = rgb.crop((left, top, left + m, top + m))
                if m != size:
                    square = square.resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(square)
        except Exception as e:  # any decoder failure is the file's fault: name it
            return out, _open_error(path, e)
    return out, None


def _decode_squares(folder: Path, names: list[str], size: int, progress: bool) -> dict[str, Any]:
    """Decode every image of the join into the cache payload (``images``, ``ids``)."""
    n = len(names)
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    step = max(128, min(2048, math.ceil(n / 64)))
    bar = file_progress_bar(n, f"decoding {folder.name or folder}", progress)

    def store(start: int, result: tuple[np.ndarray, str | None]) -> None:
        arr, err = result
        if err is not None:
            raise TaskspaceError(err)
        images[start : start + len(arr)] = arr
        if bar is not None:
            bar.update(len(arr))

    try:
        decode_chunks(
            n,
            step,
            _decode_square_chunk,
            lambda s: (str(folder), names[s : s + step], size),
            store,
            bar,
            _PARALLEL_MIN_FILES,
        )
    finally:
        if bar is not None:
            bar.close()
    mean, std = _histogram_stats(images)  # stored: a cached load then skips this pass
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return {"images": tensor, "ids": list(names), "mean": list(mean), "std": list(std)}


def _histogram_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and population std in ``[0, 1]`` of ``uint8 [N, H, W, C]`` images,
    from exact value histograms (no float copy of the images), rounded as
    :func:`~taskspace.data.imagefolder.channel_stats` rounds them."""
    levels = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.float64)
        total = counts.sum()
        mean = float((counts * levels).sum() / total)
        var = float((counts * (levels - mean) ** 2).sum() / total)
        means.append(round(mean, 4))
        stds.append(round(math.sqrt(max(var, 0.0)), 4))
    return tuple(means), tuple(stds)


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise TaskspaceError(f"image_size must be a positive whole number, got {image_size!r}")
    return image_size


def load_celeba(
    root: str | Path | None,
    *,
    attributes: str | Path | None = None,
    partition: str | Path | None = None,
    images: str | Path | None = None,
    image_size: int = CELEBA_IMAGE_SIZE,
    split_seed: int = 0,
    strict: bool = False,
    cache: bool = True,
    progress: bool = True,
) -> ImageDataset:
    """A CelebA-layout folder as an :class:`ImageDataset` with attributes (see the module doc).

    Args:
        root: the dataset folder.
        attributes: the attribute file (TXT or CSV); default: searched (module doc).
        partition: a partition file, ``official``, ``seeded`` or ``seeded:TR/VA/TE``;
            default: a partition file found next to the attribute file, else ``seeded``.
        images: the images folder (relative to ``root`` or absolute); default: searched.
        image_size: side of the square images (crop to the short side, then resize).
        split_seed: seed of a ``seeded`` split (``make_split_orders`` over the joined
            images in file-name order, ``heldout`` renamed ``val``).
        strict: an attribute row without its image is an error instead of a dropped row.
        cache: keep the decoded images in the user cache (never inside ``root``).
        progress: progress bars (stderr) while hashing and decoding.
    """
    size = _check_size(image_size)
    join = join_celeba(
        root, attributes=attributes, partition=partition, images=images, strict=strict
    )
    LOGGER.log(logging.WARNING if join.dropped else logging.INFO, join.message())
    names = join.files
    payload = cached_build(
        join.images_dir,
        join.records,
        lambda: _decode_squares(join.images_dir, names, size, progress),
        salt=f"{DECODER_SALT}/{size}",
        enabled=cache,
        progress=progress,
    )
    if (
        payload.get("ids") != names
        or tuple(payload["images"].shape[1:]) != (3, size, size)
        or len(payload.get("mean", ())) != 3
        or len(payload.get("std", ())) != 3
    ):
        payload = _decode_squares(join.images_dir, names, size, progress)  # never trust a bad entry
    imgs = payload["images"]
    n = len(names)
    if join.parts is None:
        fr = join.seeded_fractions or SEEDED_FRACTIONS
        drawn = make_split_orders(n, split_seed, float(fr[1]), float(fr[2]))
        orders = {("val" if k == "heldout" else k): v for k, v in drawn.items()}
        splits = {k: v.sort().values for k, v in orders.items()}
    else:
        parts = torch.from_numpy(join.parts)
        splits = {
            name: torch.nonzero(parts == k).flatten()
            for k, name in enumerate(SPLIT_NAMES)
            if bool((parts == k).any())
        }
        orders = {}
    mean, std = tuple(payload["mean"]), tuple(payload["std"])
    return ImageDataset(
        name="celeba",
        images=imgs,
        mean=mean,
        std=std,
        classes=torch.zeros(n, dtype=torch.int64),
        class_names=["face"],
        splits=splits,
        attributes=torch.from_numpy(join.table.values[join.rows].astype(np.int64)),
        attribute_names=list(join.table.names),
        ids=list(names),
        split_orders=orders,
    )
