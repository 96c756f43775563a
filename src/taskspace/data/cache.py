"""On-disk cache of decoded image folders, keyed by their content.

Decoding the 60,000 CIFAR-10 JPEGs takes seconds; loading one ``uint8`` tensor takes a
fraction of one. So the first load of an image tree stores the decoded payload (images,
classes, class names, ids, ...) in a user cache folder, never inside the data folder:

1. ``$TASKSPACE_CACHE`` if set,
2. else ``$XDG_CACHE_HOME/taskspace``,
3. else ``~/.cache/taskspace``.

Keys. The payload file is named by a **content hash**: SHA-256 over every file's relative
path and a BLAKE2b digest of its bytes (plus a ``salt`` naming the decoder version), so the
same images give the same entry wherever they live. Reading and hashing every byte is too
slow for every load (timings: see the README's benchmark table), so lookups go through a
**fast key** first: a hash over the resolved root, the sorted relative paths, and each
file's size and ``mtime_ns``. ``index/<fast key>`` holds the content hash. A load whose fast
key is known skips hashing; a changed, added, removed or touched file changes the fast key,
which triggers a full content hash (so a copied folder still finds its decoded payload
without decoding again). The fast key trusts that a file whose size and ``mtime_ns`` did not
change still has the same bytes, as ``make`` and ``rsync`` do.

Files are written with ``torch.save`` (plain tensors, lists, strings, ints) through
:func:`taskspace.io.atomic_write` (a temporary file moved into place), and read back with
``torch.load(weights_only=True)``: nothing executable is ever unpickled. An unreadable or
stale entry is ignored and rebuilt; a cache folder that cannot be written only costs speed.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write
from taskspace.progress import progress_bar

__all__ = [
    "CACHE_ENV",
    "FileRecord",
    "cache_dir",
    "cached_build",
    "content_hash",
    "fast_key",
    "file_progress_bar",
]

#: Environment variable naming the cache folder.
CACHE_ENV = "TASKSPACE_CACHE"
#: Bumped whenever the payload layout changes; part of both keys.
CACHE_FORMAT = 1
#: Files per hashing task (threads read files; reading releases the GIL).
_HASH_CHUNK = 2048
#: Trees with fewer files than this get no progress bar.
_BAR_MIN_FILES = 500


@dataclass(frozen=True)
class FileRecord:
    """One file of a tree: path relative to the root (``/``-separated), size, mtime."""

    relpath: str
    size: int
    mtime_ns: int


def cache_dir() -> Path:
    """The user cache folder (``$TASKSPACE_CACHE``, ``$XDG_CACHE_HOME/taskspace``, ``~/.cache``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "taskspace"
    return Path.home() / ".cache" / "taskspace"


def fast_key(root: Path, files: Sequence[FileRecord], salt: str) -> str:
    """Hash of the root, the relative paths, sizes and mtimes (no file is read)."""
    h = hashlib.sha256(f"taskspace-tree-fast/{CACHE_FORMAT}/{salt}\0".encode())
    h.update(str(Path(root).resolve()).encode() + b"\0")
    for rec in files:
        h.update(f"{rec.relpath}\0{rec.size}\0{rec.mtime_ns}\n".encode())
    return h.hexdigest()


def _digest_chunk(root: Path, relpaths: Sequence[str]) -> list[bytes]:
    """BLAKE2b digests of some files' bytes (runs in a worker thread)."""
    out = []
    for rel in relpaths:
        try:
            data = (root / rel).read_bytes()
        except OSError as e:
            raise TaskspaceError(f"cannot read {root / rel}: {e.strerror or e}") from None
        out.append(hashlib.blake2b(data, digest_size=16).digest())
    return out


def content_hash(root: Path, relpaths: Sequence[str], salt: str, progress: bool = True) -> str:
    """SHA-256 over every relative path and the bytes of its file, in the given order."""
    chunks = [relpaths[i : i + _HASH_CHUNK] for i in range(0, len(relpaths), _HASH_CHUNK)]
    bar = file_progress_bar(len(relpaths), f"hashing {root.name or root}", progress)
    h = hashlib.sha256(f"taskspace-tree/{CACHE_FORMAT}/{salt}\0".encode())
    workers = max(1, min(8, (os.cpu_count() or 1) * 2, len(chunks)))
    with ThreadPoolExecutor(workers) as pool:
        for chunk, digests in zip(chunks, pool.map(lambda c: _digest_chunk(root, c), chunks)):
            for rel, d in zip(chunk, digests):
                h.update(rel.encode() + b"\0" + d)
            if bar is not None:
                bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return h.hexdigest()


def file_progress_bar(total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar on stderr for more than a few hundred files, else ``None``."""
    return progress_bar(total, desc, enabled and total >= _BAR_MIN_FILES, unit="img")


def _read_payload(path: Path, chash: str) -> dict[str, Any] | None:
    """The payload stored at ``path`` if it is a valid entry for ``chash``, else ``None``."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: rebuild it
        warnings.warn(f"ignoring unreadable dataset cache {path}: {e}", stacklevel=3)
        return None
    if (
        not isinstance(payload, dict)
        or payload.get("format") != CACHE_FORMAT
        or payload.get("content_hash") != chash
    ):
        return None
    return payload


def _try_write(what: str, path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write a cache file atomically; on failure warn once and go on (the cache only saves
    time). ``write`` gets the temporary file opened for binary writing."""

    def _write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            write(f)

    try:
        atomic_write(path, _write)
    except OSError as e:
        warnings.warn(
            f"could not write the dataset cache ({what} {path}: {e.strerror or e}); "
            f"set {CACHE_ENV} to a writable folder to speed up the next load",
            stacklevel=3,
        )


def cached_build(
    root: Path,
    files: Sequence[FileRecord],
    build: Callable[[], dict[str, Any]],
    *,
    salt: str,
    enabled: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """``build()``'s payload for the tree ``files`` under ``root``, from the cache if there.

    Args:
        root: the data folder; nothing is ever written inside it.
        files: every file the payload depends on, in canonical order.
        build: decodes the tree; returns a dict of tensors, lists, strings and ints.
        salt: names the decoder and its version; a new salt never reuses old entries.
        enabled: ``False`` decodes without reading or writing the cache.
        progress: show tqdm bars on stderr for large trees.

    Returns:
        The payload, with ``"content_hash"`` (the tree's content hash) added.
    """
    if not enabled:
        return build()
    base = cache_dir() / "trees"
    index = base / "index" / fast_key(root, files, salt)
    chash = None
    if index.is_file():
        try:
            chash = index.read_text().strip()
        except OSError:
            chash = None
        if chash:
            payload = _read_payload(base / f"{chash}.pt", chash)
            if payload is not None:
                return payload
    chash = content_hash(root, [f.relpath for f in files], salt, progress=progress)
    target = base / f"{chash}.pt"
    payload = _read_payload(target, chash)
    if payload is None:
        payload = dict(build())
        payload["format"] = CACHE_FORMAT
        payload["content_hash"] = chash
        _try_write("file", target, lambda f: torch.save(payload, f))
    if target.is_file():
        _try_write("index", index, lambda f: f.write(chash.encode()))
    return payload
