"""The clustered task-distance matrix (the original's ``plot_distance_matrix``), headless.

The original ran ``squareform(D, checks=False)`` -> ``linkage(method="complete",
optimal_ordering=True)`` -> seaborn ``clustermap`` with that linkage on both axes
(``cmap="viridis_r"``) -> ``plt.show()``. Here the same linkage orders the matrix, drawn
with pure matplotlib (seaborn is not a dependency) as a heatmap with the dendrogram above
and to the left; the figure and the leaf order are returned and nothing is shown. The
figure is a bare :class:`matplotlib.figure.Figure` (Agg canvas, not registered with
pyplot), so it needs no display, no backend choice and no ``close``. ``squareform`` with
``checks=False`` reads the upper triangle, so an asymmetric matrix (``asymmetric_kl``) is
clustered by ``D[i, j]``, ``i < j``, as the original did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write

__all__ = ["cluster_order", "plot_distance_matrix"]


def _check(D: np.ndarray, names: Sequence[str]) -> np.ndarray:
    D = np.asarray(D, dtype=np.float64)
    n = len(names)
    if D.ndim != 2 or D.shape != (n, n):
        raise TaskspaceError(
            f"distance matrix has shape {D.shape}, expected ({n}, {n}) for {n} names"
        )
    if n == 0:
        raise TaskspaceError("no tasks to plot")
    if not np.all(np.isfinite(D)):
        raise TaskspaceError(
            "distance matrix has inf or NaN entries (zero-Fisher dimensions with var_eps=0?); "
            "use var_eps > 0 or the cosine distance"
        )
    return D


def _linkage(D: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    return linkage(squareform(D, checks=False), method="complete", optimal_ordering=True)


def cluster_order(D: np.ndarray, names: Sequence[str]) -> list[int]:
    """The leaf order of the complete-linkage, optimally ordered clustering of ``D``."""
    from scipy.cluster.hierarchy import leaves_list

    D = _check(D, names)
    if len(names) < 2:
        return list(range(len(names)))
    return [int(i) for i in leaves_list(_linkage(D))]


def plot_distance_matrix(
    D: np.ndarray,
    names: Sequence[str],
    path: str | Path | None = None,
    *,
    title: str = "Task2Vec distance (complete linkage)",
    cmap: str = "viridis_r",
    label: str = "distance",
) -> tuple[Any, list[int]]:
    """Draw ``D`` reordered by its clustering, with dendrograms; returns ``(figure, leaf_order)``.

    ``leaf_order[r]`` is the index (into ``names``) of the task drawn in row/column ``r``.
    When ``path`` is given the PNG is written there atomically. Raises
    :class:`TaskspaceError` for a wrong shape or non-finite entries.
    """
    from matplotlib.figure import Figure
    from scipy.cluster.hierarchy import dendrogram

    D = _check(D, names)
    n = len(names)
    Z = _linkage(D) if n >= 2 else None
    order = cluster_order(D, names)
    cell = 0.32 if n <= 40 else max(0.08, 12.8 / n)
    side = 1.2 + cell * n
    fig = Figure(figsize=(side + 3.0, side + 2.2))
    gs = fig.add_gridspec(
        2, 2, width_ratios=[1.2, side], height_ratios=[1.2, side], wspace=0.02, hspace=0.02
    )
    corner = fig.add_subplot(gs[0, 0])  # the colour bar sits here, as in a clustermap
    ax_top = fig.add_subplot(gs[0, 1])
    ax_left = fig.add_subplot(gs[1, 0])
    ax = fig.add_subplot(gs[1, 1])
    if Z is not None:
        style = {"no_labels": True, "link_color_func": lambda _k: "0.3"}
        dendrogram(Z, ax=ax_top, orientation="top", **style)
        dendrogram(Z, ax=ax_left, orientation="left", **style)
        ax_left.invert_yaxis()  # row 0 at the top, as in the heatmap
    for a in (corner, ax_top, ax_left):
        a.set_axis_off()
    M = D[np.ix_(order, order)]
    im = ax.imshow(M, cmap=cmap, aspect="auto", interpolation="nearest")
    labels = [names[i] for i in order]
    fontsize = 8 if n <= 40 else 5
    ax.set_xticks(range(n), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), labels, fontsize=fontsize)
    ax.yaxis.tick_right()
    fig.colorbar(im, cax=corner.inset_axes((0.55, 0.08, 0.12, 0.84)), label=label)
    ax_top.set_title(title, fontsize=10)
    if path is not None:
        atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    return fig, order
