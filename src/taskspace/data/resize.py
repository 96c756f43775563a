"""Resize a dataset's images once, and keep the result in the user cache.

A CPU user with 64x64 or 178x218 images may want to train at 32x32: the resized ``uint8``
tensor is computed once (bilinear with antialiasing, square output) and stored under
``<cache>/resized/<key>.pt``, keyed by a digest of the source pixels and the target size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import torch
import torch.nn.functional as F

from taskspace.data.cache import cache_dir
from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write

__all__ = ["resize_dataset"]


def _digest(images: torch.Tensor, size: int) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str((tuple(images.shape), size)).encode())
    h.update(images.contiguous().numpy().tobytes())
    return h.hexdigest()


def _resize(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    out = []
    for i in range(0, len(images), chunk):
        x = images[i : i + chunk].float()
        y = F.interpolate(
            x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(y.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def resize_dataset(ds: ImageDataset, size: int, *, cache: bool = True) -> ImageDataset:
    """``ds`` with every image resized to ``size x size`` (the same object if it already is)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TaskspaceError(f"image_size must be a positive whole number, got {size!r}")
    if tuple(ds.images.shape[-2:]) == (size, size):
        return ds
    path = cache_dir() / "resized" / f"{_digest(ds.images, size)}.pt" if cache else None
    images = None
    if path is not None and path.is_file():
        try:
            images = torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001  (a broken cache entry is rebuilt)
            images = None
    if images is None or images.shape != (len(ds), ds.channels, size, size):
        images = _resize(ds.images, size)
        if path is not None:
            with contextlib.suppress(OSError):  # an unwritable cache only costs time
                atomic_write(path, lambda p: torch.save(images, p))
    return dataclasses.replace(ds, images=images)
