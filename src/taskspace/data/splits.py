"""Seeded train / held-out / test index splits, and their ``.npz`` files.

A split is a dict ``{name: int64 index tensor}`` over the images of one dataset. Runs save
the splits they used next to their results, so :func:`save_splits` / :func:`load_splits`
must round-trip exactly (same names, same indices, same order, ``int64``).

:func:`make_splits` reproduces the reference's ``random_split`` partition: one
``torch.randperm(n)`` drawn from ``torch.Generator().manual_seed(seed)``; the first positions
are train, then held-out, then test. With ``test=0`` and ``heldout=5000`` on 50,000 images
that is exactly the reference's 45k/5k CIFAR-10 split (first 45,000 positions train, last
5,000 held-out).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write

__all__ = [
    "load_splits",
    "make_split_orders",
    "make_splits",
    "official_splits",
    "resolve_count",
    "save_splits",
    "stratified_subset",
    "validate_splits",
]


def resolve_count(value: int | float, n: int, what: str) -> int:
    """Turn ``value`` (a count, or a fraction of ``n``) into a count in ``[0, n]``.

    An ``int`` is a count. A ``float`` in ``[0, 1)`` is a fraction of ``n`` (rounded). A
    whole-number ``float >= 1`` (``5000.0``, as config files often produce) is a count too.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TaskspaceError(f"{what} must be a count or a fraction, got {value!r}")
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v) or v < 0:
            raise TaskspaceError(f"{what} must be >= 0, got {value!r}")
        if v < 1:
            count = int(round(v * n))
        elif v.is_integer():
            count = int(v)
        else:
            raise TaskspaceError(
                f"{what}={value!r} is neither a fraction in [0, 1) nor a whole count"
            )
    else:
        count = int(value)
    if count < 0 or count > n:
        raise TaskspaceError(f"{what}={value!r} is out of range for {n} images")
    return count


def make_split_orders(
    n: int, seed: int, heldout: int | float, test: int | float = 0
) -> dict[str, torch.Tensor]:
    """The splits of :func:`make_splits` in the seeded permutation's order (not sorted).

    "The first ``m`` held-out images" means these: the reference takes the first batch of
    its held-out ``random_split`` subset in permutation order, which is class-mixed, while
    the sorted split of a class-ordered tree starts with one class.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise TaskspaceError(f"cannot split {n!r} images; need a positive count")
    h = resolve_count(heldout, int(n), "heldout")
    t = resolve_count(test, int(n), "test")
    n_train = int(n) - h - t
    if n_train < 1:
        raise TaskspaceError(
            f"heldout={heldout!r} and test={test!r} leave no training images out of {n}"
        )
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(int(n), generator=g)
    orders = {"train": perm[:n_train]}
    if h:
        orders["heldout"] = perm[n_train : n_train + h]
    if t:
        orders["test"] = perm[n_train + h :]
    return orders


def make_splits(
    n: int, seed: int, heldout: int | float, test: int | float = 0
) -> dict[str, torch.Tensor]:
    """Seeded disjoint ``train`` / ``heldout`` / ``test`` index sets covering ``range(n)``.

    Args:
        n: number of images.
        seed: split seed; the permutation is ``torch.randperm(n, generator=g)`` with
            ``g = torch.Generator().manual_seed(seed)`` (what ``random_split`` does).
        heldout: held-out count, or fraction of ``n`` (see :func:`resolve_count`).
        test: test count or fraction (default none).

    Returns:
        ``{"train", "heldout", "test"}`` sorted ``int64`` tensors. Positions
        ``[0, n - h - t)`` of the permutation are train, the next ``h`` held-out, the last
        ``t`` test. ``heldout`` / ``test`` are left out when their count is 0, so a caller
        asking for a missing split gets a clear error instead of an empty set. The
        permutation order itself: :func:`make_split_orders`.
    """
    return {k: v.sort().values for k, v in make_split_orders(n, seed, heldout, test).items()}


def validate_splits(
    splits: Mapping[str, torch.Tensor | np.ndarray], n: int | None = None, source: str = "splits"
) -> dict[str, torch.Tensor]:
    """Check that ``splits`` are 1-D integer index sets, disjoint, and in ``[0, n)``.

    Returns them as ``int64`` tensors (order preserved). ``source`` names the origin (e.g. a
    file) in the error message.
    """
    if not splits:
        raise TaskspaceError(f"{source}: no splits")
    out: dict[str, torch.Tensor] = {}
    owner: dict[str, np.ndarray] = {}
    for name, idx in splits.items():
        if not isinstance(name, str) or not name:
            raise TaskspaceError(f"{source}: split names must be non-empty strings, got {name!r}")
        arr = idx.detach().cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise TaskspaceError(
                f"{source}: split {name!r} must be a 1-D integer index array, "
                f"got {arr.dtype} {arr.shape}"
            )
        arr = arr.astype(np.int64, copy=False)
        if arr.size and arr.min() < 0:
            raise TaskspaceError(f"{source}: split {name!r} has negative index {arr.min()}")
        if n is not None and arr.size and arr.max() >= n:
            raise TaskspaceError(
                f"{source}: split {name!r} has index {arr.max()} but the dataset has {n} images"
            )
        uniq = np.unique(arr)
        if uniq.size != arr.size:
            raise TaskspaceError(f"{source}: split {name!r} repeats indices")
        for other, seen in owner.items():
            common = np.intersect1d(seen, uniq, assume_unique=True)
            if common.size:
                raise TaskspaceError(
                    f"{source}: splits {other!r} and {name!r} share {common.size} indices "
                    f"(e.g. {common[0]}); splits must be disjoint"
                )
        owner[name] = uniq
        out[name] = torch.from_numpy(arr.copy())
    return out


def save_splits(path: str | Path, splits: Mapping[str, torch.Tensor]) -> Path:
    """Write ``splits`` to ``path`` (``.npz``, one ``int64`` array per split), atomically.

    The splits are validated first (disjoint, non-negative, integer), so a bad split is never
    written. Returns the path written.
    """
    path = Path(path)
    checked = validate_splits(splits, source=f"splits for {path}")
    arrays: dict[str, Any] = {name: idx.numpy() for name, idx in checked.items()}

    def _write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would add ".npz" to a path
            np.savez(f, **arrays)

    return atomic_write(path, _write)


def load_splits(path: str | Path, n: int | None = None) -> dict[str, torch.Tensor]:
    """Read splits written by :func:`save_splits`, validated (and checked against ``n``).

    Never unpickles: the file is read with ``allow_pickle=False``.
    """
    path = Path(path)
    if not path.is_file():
        raise TaskspaceError(f"splits file not found: {path}")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise TaskspaceError(f"{path} is not an .npz splits file (it holds one array)")
        with data:
            arrays = {name: data[name] for name in data.files}
    except TaskspaceError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise TaskspaceError(f"cannot read splits file {path}: {e}") from None
    return validate_splits(arrays, n=n, source=str(path))


def _check_size(value: int | None, limit: int, what: str) -> int | None:
    """Validate an optional subset size against the number of images available."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TaskspaceError(f"{what} must be a whole number of images, got {value!r}")
    if not 0 < int(value) <= limit:
        raise TaskspaceError(f"{what}={value} must be between 1 and {limit} (images available)")
    return int(value)


def stratified_subset(classes: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """``size`` indices into ``classes``, keeping each class's share, drawn with ``generator``.

    Class ``c`` with ``n_c`` of ``n`` images gets ``floor(size * n_c / n)`` picks, and the
    leftover picks go to the classes with the largest remainders (ties: lower class id).
    Classes are visited in increasing id; each draws ``torch.randperm(n_c, generator)`` and
    keeps the first picks. Returns sorted ``int64`` indices.
    """
    n = len(classes)
    ids, counts = torch.unique(classes, return_counts=True)
    base = [size * int(c) // n for c in counts]
    rems = [size * int(c) % n for c in counts]
    extra = size - sum(base)
    for j in sorted(range(len(ids)), key=lambda j: (-rems[j], j))[:extra]:
        base[j] += 1
    picks = []
    for cls, count, k in zip(ids.tolist(), counts.tolist(), base):
        members = torch.nonzero(classes == cls).flatten()
        picks.append(members[torch.randperm(count, generator=generator)[:k]])
    return torch.cat(picks).sort().values


def official_splits(
    train_classes: torch.Tensor,
    test_classes: torch.Tensor,
    *,
    seed: int,
    heldout: int | float | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Splits of a dataset with an official train part followed by an official test part.

    1. Subsets (only when asked, for CPU-sized work): a generator seeded with ``seed`` first
       draws ``train_size`` images of the official train part with
       :func:`stratified_subset`, then ``test_size`` of the test part. The kept images stay
       in canonical order (train part first).
    2. The kept train part (the *pool*, ``n_pool`` images) is split by
       ``make_splits(n_pool, seed, heldout)``: a fresh ``randperm(n_pool)`` from
       ``manual_seed(seed)``, first positions ``train``, last ``heldout`` positions
       ``heldout``. ``heldout`` defaults to ``n_pool // 10`` (at least 1; 5,000 of CIFAR-10's
       50,000: the reference's 45k/5k split).
    3. ``test`` is every kept test-part image.

    Returns:
        ``keep``: sorted indices into the concatenated parts (``train`` then ``test``) of the
        images to keep; the splits, as sorted indices into the kept images; and the same
        splits in permutation order (:func:`make_split_orders`; ``test`` in file order).
    """
    n_tr, n_te = len(train_classes), len(test_classes)
    train_size = _check_size(train_size, n_tr, "train_size")
    test_size = _check_size(test_size, n_te, "test_size")
    g = torch.Generator().manual_seed(int(seed))
    tr_keep = torch.arange(n_tr)
    if train_size is not None:
        tr_keep = stratified_subset(train_classes, train_size, g)
    te_keep = torch.arange(n_te)
    if test_size is not None:
        te_keep = stratified_subset(test_classes, test_size, g)
    n_pool = len(tr_keep)
    if heldout is None:
        heldout = max(1, n_pool // 10) if n_pool > 1 else 0
    orders = make_split_orders(n_pool, seed, heldout)
    splits = {k: v.sort().values for k, v in orders.items()}
    if len(te_keep):
        splits["test"] = orders["test"] = torch.arange(n_pool, n_pool + len(te_keep))
    return torch.cat([tr_keep, n_tr + te_keep]), splits, orders
