"""Pictures of the spurious-correlation pipeline: the delta matrix, per-task heatmaps and
the delta histogram (mml-robustness's ``spurious_matrix.py`` / ``spurious_svd.py``).

Deltas range over [0, 200]; the heatmaps show ``T / 100`` with the colour range fixed to
[0, 1] (so anything at or above 100 is full colour, as the original's plots clipped), and
every axis is labelled with its names and its meaning (task or attribute).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskspace.io import atomic_write
from taskspace.report.mpl import pyplot
from taskspace.robustness.spurious import EPSILON, DeltaHistogram, DeltaMatrix

__all__ = ["plot_delta_heatmap", "plot_delta_histogram", "plot_task_heatmaps"]

_AXIS = {"task": "task (model trained on it)", "attr": "attribute (grouped by)"}


def _save(fig: Any, path: str | Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_delta_heatmap(
    delta: DeltaMatrix,
    path: str | Path,
    *,
    row_order: Sequence[int] | np.ndarray | None = None,
    col_order: Sequence[int] | np.ndarray | None = None,
    annotate: bool | None = None,
    title: str | None = None,
) -> Path:
    """The matrix ``T / 100`` (colour range [0, 1]) with named axes; ``row_order`` /
    ``col_order`` reorder it (e.g. a co-clustering's orders). Cells are annotated with the
    delta when the matrix is small (at most 16 x 16) unless ``annotate`` says otherwise;
    NaN cells are left blank."""
    plt = pyplot()
    rows = np.arange(len(delta.rows)) if row_order is None else np.asarray(row_order)
    cols = np.arange(len(delta.cols)) if col_order is None else np.asarray(col_order)
    v = delta.values.numpy()[rows][:, cols] / 100.0
    r_names = [delta.rows[i] for i in rows]
    c_names = [delta.cols[j] for j in cols]
    size = 0.42
    fig, ax = plt.subplots(
        figsize=(2.4 + size * len(c_names), 1.8 + size * len(r_names)), squeeze=True
    )
    im = ax.imshow(np.ma.masked_invalid(v), cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(c_names)), c_names, rotation=90, fontsize=8)
    ax.set_yticks(range(len(r_names)), r_names, fontsize=8)
    ax.set_xlabel(_AXIS.get(delta.axes[1], delta.axes[1]))
    ax.set_ylabel(_AXIS.get(delta.axes[0], delta.axes[0]))
    if annotate if annotate is not None else max(v.shape) <= 16:
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                if np.isfinite(v[i, j]):
                    ax.text(
                        j,
                        i,
                        f"{100 * v[i, j]:.0f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v[i, j] > 0.6 else "black",
                    )
    fig.colorbar(im, ax=ax, label="delta / 100")
    ax.set_title(title or f"delta = |g0 + g3 - g1 - g2| ({delta.split})", fontsize=9)
    return _save(fig, path)


def plot_task_heatmaps(delta: DeltaMatrix, task: str, out_dir: str | Path) -> list[Path]:
    """Three pictures of one task model, one row per attribute: the shrunk group
    accuracies (%), the group sizes (colour up to the split's size) and the deltas,
    written as ``{task}_group_acc.png``, ``{task}_group_size.png`` and
    ``{task}_delta.png`` in ``out_dir``."""
    plt = pyplot()
    delta = delta.by_task()
    i = delta.rows.index(task)
    attrs = list(delta.cols)
    out = Path(out_dir)
    acc = delta.shrunk[i].numpy()  # [attrs, 4]
    size = delta.total[i].numpy()
    n = int(size[0].sum()) if len(size) else 1
    groups = [f"g{g}\n{task}={g // 2}\nA={g % 2}" for g in range(4)]
    pictures = (
        ("group_acc", acc, 0.0, 100.0, "shrunk group accuracy (%)", "{:.1f}", groups),
        ("group_size", size, 0.0, float(max(n, 1)), "group size", "{:.0f}", groups),
        ("delta", delta.values[i].numpy()[:, None], 0.0, 100.0, "delta", "{:.1f}", ["delta"]),
    )
    paths = []
    for name, v, lo, hi, label, fmt, xt in pictures:
        v = np.asarray(v, dtype=np.float64)
        fig, ax = plt.subplots(figsize=(1.8 + 0.9 * v.shape[1], 1.2 + 0.32 * len(attrs)))
        im = ax.imshow(np.ma.masked_invalid(v), cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        ax.set_xticks(range(v.shape[1]), xt, fontsize=7)
        ax.set_yticks(range(len(attrs)), attrs, fontsize=7)
        ax.set_ylabel("attribute A (grouping task:A)")
        for r in range(v.shape[0]):
            for c in range(v.shape[1]):
                if np.isfinite(v[r, c]):
                    dark = (v[r, c] - lo) / (hi - lo) < 0.4
                    ax.text(
                        c,
                        r,
                        fmt.format(v[r, c]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if dark else "black",
                    )
        fig.colorbar(im, ax=ax, label=label)
        avg = delta.avg_acc.get(task, float("nan"))
        ax.set_title(f"{task} ({delta.split}, avg acc {100 * avg:.1f}%)", fontsize=8)
        paths.append(_save(fig, out / f"{task}_{name}.png"))
    return paths


def plot_delta_histogram(
    hist: DeltaHistogram, path: str | Path, *, threshold: float = EPSILON
) -> Path:
    """The off-diagonal deltas in 1-point bins over [0, 101], stacked by attribute, on a
    log y axis, with the threshold marked (the last bin holds every delta >= 100)."""
    plt = pyplot()
    edges = hist.edges.numpy()
    width = edges[1:] - edges[:-1]
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    bottom = np.zeros(len(width))
    cmap = plt.get_cmap("tab20")
    for j, name in enumerate(hist.attrs):
        counts = hist.by_attr[j].numpy().astype(np.float64)
        if counts.sum() == 0:
            continue
        ax.bar(
            edges[:-1],
            counts,
            width,
            bottom=bottom,
            align="edge",
            color=cmap(j % 20),
            label=name,
        )
        bottom += counts
    ax.axvline(threshold, color="red", ls="--", lw=1.2, label=f"threshold {threshold:g}")
    ax.set_yscale("log")
    ax.set_ylim(bottom=0.5)  # a single cell (a bar from 0 to 1) stays visible on log y
    ax.set_xlim(float(edges[0]), float(edges[-1]))
    ax.set_xlabel("delta (clipped at 100)")
    ax.set_ylabel("cells")
    ax.legend(fontsize=6, ncol=4)
    ax.grid(alpha=0.3)
    return _save(fig, path)
