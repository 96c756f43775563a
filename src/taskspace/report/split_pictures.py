"""Pictures of a split: per-class grids of train images, test images and test mistakes.

Every image is looked up by its *dataset index* (``dataset.images[i]``), and the chosen
indices are returned, so a caller (and the tests) can check that each picture shows an
image of the right class from the right side. The reference's split viewer drew images from
a shuffled loader but labelled them by dataset index (``reference/task-discovery.md``
section 12), so its titles did not match its images; this module never goes through a
loader.

Layout (as the reference site's split browser): ``Train`` and ``Test`` columns are
ground-truth classes (test titles show the prediction); ``Mistakes`` columns are predicted
classes (titles show the ground truth). With a class-partition target the positive group
comes first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.io import atomic_write
from taskspace.report.mpl import pyplot
from taskspace.splits.builders import Split


def class_order(split: Split, num_classes: int) -> list[int]:
    """Classes in display order: the target's positive classes first, if known."""
    pos = [int(c) for c in split.meta.get("positive_classes", [])]
    return pos + [c for c in range(num_classes) if c not in pos]


def choose_panels(
    dataset: ImageDataset,
    split: Split,
    predictions: torch.Tensor | None = None,
    *,
    per_class: int = 6,
    seed: int = 0,
) -> dict[str, dict[int, list[int]]]:
    """Dataset indices to show: ``{"train"|"test"|"mistakes": {column class: [indices]}}``.

    ``train`` / ``test``: up to ``per_class`` images of each ground-truth class from that
    side, a seeded random sample. ``mistakes``: test images whose prediction differs from
    the class (``predictions`` is ``[N]`` predicted class per dataset index, ``-1`` where
    none), grouped by *predicted* class. Without predictions, ``mistakes`` is empty.
    """
    g = torch.Generator().manual_seed(int(seed))
    classes = dataset.classes
    out: dict[str, dict[int, list[int]]] = {"train": {}, "test": {}, "mistakes": {}}
    order = class_order(split, dataset.num_classes)
    for side, idx in (("train", split.train_idx), ("test", split.test_idx)):
        shuffled = idx[torch.randperm(len(idx), generator=g)]
        for c in order:
            out[side][c] = shuffled[classes[shuffled] == c][:per_class].tolist()
    if predictions is not None:
        predictions = torch.as_tensor(predictions).long()
        test = split.test_idx[torch.randperm(len(split.test_idx), generator=g)]
        wrong = test[(predictions[test] >= 0) & (predictions[test] != classes[test])]
        for c in order:
            out["mistakes"][c] = wrong[predictions[wrong] == c][:per_class].tolist()
    return out


def _image(dataset: ImageDataset, i: int) -> Any:
    img = dataset.images[i].float() / 255.0
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def split_picture(
    dataset: ImageDataset,
    split: Split,
    path: str | Path,
    predictions: torch.Tensor | None = None,
    *,
    per_class: int = 6,
    seed: int = 0,
    title: str | None = None,
) -> dict[str, dict[int, list[int]]]:
    """Write ``split-<name>.png``-style grids to ``path``; return the drawn indices.

    See :func:`choose_panels` for what is drawn. Titles name the class (and, on test and
    mistake panels, the other label) of the very image drawn, all looked up by its dataset
    index.
    """
    plt = pyplot()
    panels = choose_panels(dataset, split, predictions, per_class=per_class, seed=seed)
    sections = ["train", "test"] + (["mistakes"] if predictions is not None else [])
    order = class_order(split, dataset.num_classes)
    names = dataset.class_names
    ncols = len(order)
    nrows = len(sections) * (per_class + 1)
    ratios = ([0.45] + [1.0] * per_class) * len(sections)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(0.8 * ncols + 0.4, 0.8 * sum(ratios) + 0.5),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    for ax in axes.flat:
        ax.axis("off")
    heading = {
        "train": f"Train ({len(split.train_idx)} images): columns = true class",
        "test": f"Test ({len(split.test_idx)}): columns = true class, p: prediction",
        "mistakes": "Test mistakes: columns = predicted class, gt: true class",
    }
    positive = {int(c) for c in split.meta.get("positive_classes", [])}
    for s_i, section in enumerate(sections):
        top = s_i * (per_class + 1)
        axes[top, 0].text(
            0.0,
            1.25,
            heading[section],
            fontsize=8,
            fontweight="bold",
            transform=axes[top, 0].transAxes,
        )
        for col, c in enumerate(order):
            mark = "+" if c in positive else ""
            axes[top, col].text(
                0.5,
                0.05,
                f"{mark}{names[c]}"[:10],
                fontsize=7,
                ha="center",
                transform=axes[top, col].transAxes,
            )
            for r, i in enumerate(panels[section][c]):
                ax = axes[top + 1 + r, col]
                ax.imshow(
                    _image(dataset, i),
                    cmap="gray" if dataset.channels == 1 else None,
                    vmin=0,
                    vmax=1,
                )
                if section == "test" and predictions is not None:
                    p = int(predictions[i])
                    ax.set_title(
                        f"p:{names[p]}"[:10] if p >= 0 else "",
                        fontsize=6,
                        pad=1,
                        color="green" if p == int(dataset.classes[i]) else "red",
                    )
                elif section == "mistakes":
                    ax.set_title(f"gt:{names[int(dataset.classes[i])]}"[:10], fontsize=6, pad=1)
    fig.suptitle(title or split.name, fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.95, bottom=0.01, wspace=0.08, hspace=0.3)
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=90))
    plt.close(fig)
    return panels


__all__ = ["choose_panels", "class_order", "split_picture"]
