"""Pictures of ``taskspace affinity``: heatmaps of the affinity matrices (the mean and every
seed), which network serves each task at each budget, and the total validation loss of
every arm of the comparison.

Matrices are drawn as stored in ``affinity.csv``: rows = the *source* (TAG/CS: the task
whose lookahead step or gradient is applied; HOA: the partner trained with), columns = the
*target* (the task whose loss is measured). TAG/CS use a diverging map centred on 0 with
the diagonal (self-affinity) masked; HOA (losses or errors, lower is better) a sequential
one with its diagonal (single-task results) shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskspace.io import atomic_write
from taskspace.report.mpl import pyplot

__all__ = ["plot_affinity_heatmap", "plot_affinity_seeds", "plot_comparison", "plot_groups"]

_AXES = {
    "tag": ("source (lookahead step on its loss)", "target (loss change)"),
    "cs": ("source (gradient)", "target (gradient)"),
    "hoa": ("partner (trained with)", "task scored"),
}


def _save(fig: Any, path: str | Path) -> Path:
    plt = pyplot()
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def _draw(ax: Any, m: np.ndarray, names: Sequence[str], kind: str, title: str) -> Any:
    v = np.array(m, dtype=float)
    if kind == "hoa":
        im = ax.imshow(v, cmap="viridis_r", aspect="auto")
    else:
        off = v.copy()
        np.fill_diagonal(off, np.nan)
        lim = float(np.nanmax(np.abs(off))) if np.isfinite(off).any() else 1.0
        v = off
        im = ax.imshow(
            np.ma.masked_invalid(v), cmap="RdBu", vmin=-lim, vmax=lim or 1.0, aspect="auto"
        )
    t = len(names)
    ax.set_xticks(range(t), list(names), rotation=90, fontsize=8)
    ax.set_yticks(range(t), list(names), fontsize=8)
    ylab, xlab = _AXES.get(kind, ("row", "column"))
    ax.set_ylabel(ylab, fontsize=8)
    ax.set_xlabel(xlab, fontsize=8)
    ax.set_title(title, fontsize=9)
    if t <= 12:
        for i in range(t):
            for j in range(t):
                if np.isfinite(v[i, j]):
                    ax.text(j, i, f"{v[i, j]:.3g}", ha="center", va="center", fontsize=6)
    return im


def plot_affinity_heatmap(
    matrix: np.ndarray, names: Sequence[str], kind: str, path: str | Path, title: str = ""
) -> Path:
    """One heatmap of ``matrix [source, target]`` with named axes."""
    plt = pyplot()
    t = len(names)
    fig, ax = plt.subplots(figsize=(2.6 + 0.5 * t, 2.2 + 0.45 * t))
    im = _draw(ax, matrix, names, kind, title or f"{kind.upper()} affinity (mean over seeds)")
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _save(fig, path)


def plot_affinity_seeds(
    per_seed: np.ndarray, seeds: Sequence[int], names: Sequence[str], kind: str, path: str | Path
) -> Path:
    """Every seed's matrix side by side (same axes as :func:`plot_affinity_heatmap`)."""
    plt = pyplot()
    k, t = len(seeds), len(names)
    fig, axes = plt.subplots(1, k, figsize=(k * (1.6 + 0.45 * t), 2.2 + 0.45 * t), squeeze=False)
    for i, s in enumerate(seeds):
        _draw(axes[0, i], per_seed[i], names, kind, f"seed {s}")
    return _save(fig, path)


def plot_groups(
    selections: Sequence[dict[str, Any]], names: Sequence[str], path: str | Path
) -> Path:
    """Per budget (rows) and task (columns): the network that serves the task (colour
    and number), from ``selections.json``'s entries."""
    plt = pyplot()
    rows = sorted(selections, key=lambda s: int(s["budget"]))
    grid = np.full((len(rows), len(names)), np.nan)
    for i, sel in enumerate(rows):
        for j, t in enumerate(names):
            if t in sel["served"]:
                grid[i, j] = int(sel["served"][t])
    fig, ax = plt.subplots(figsize=(2.4 + 0.5 * len(names), 1.4 + 0.4 * len(rows)))
    ax.imshow(np.ma.masked_invalid(grid), cmap="tab10", vmin=0, vmax=9, aspect="auto")
    for i in range(len(rows)):
        for j in range(len(names)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, str(int(grid[i, j]) + 1), ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(names)), list(names), rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), [f"B={s['budget']}" for s in rows], fontsize=8)
    ax.set_xlabel("task")
    ax.set_title("network serving each task, per budget", fontsize=9)
    return _save(fig, path)


def plot_comparison(rows: Sequence[dict[str, Any]], path: str | Path, split: str = "val") -> Path:
    """Total ``split`` loss of every arm (mean over seeds, the std as an error bar)."""
    plt = pyplot()
    tot = [r for r in rows if r["task"] == "total"]
    labels = [str(r["arm"]) for r in tot]
    vals = [float(r[f"{split}_loss"]) for r in tot]
    errs = [float(r.get(f"{split}_loss_std") or 0.0) for r in tot]
    fig, ax = plt.subplots(figsize=(1.6 + 0.7 * len(tot), 3.2))
    ax.bar(range(len(tot)), vals, yerr=errs, color="#4c72b0", capsize=3)
    ax.set_xticks(range(len(tot)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"total {split} loss (sum over tasks)")
    finite = [v for v in vals if np.isfinite(v)]
    if finite:
        lo, hi = min(finite), max(finite)
        ax.set_ylim(max(0.0, lo - 0.2 * (hi - lo + 1e-9)), hi + 0.2 * (hi - lo + 1e-9))
    return _save(fig, path)
