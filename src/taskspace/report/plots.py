"""Plots written into run directories (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.io import atomic_write
from taskspace.report.mpl import pyplot

KIND_ORDER = ["discovered", "human", "original", "table", "attribute", "random"]


def plot_agreement_by_kind(rows: Sequence[dict], path: str | Path, split: str = "heldout") -> Path:
    """AS of every task (mean over pairs), one column of points and a box per task kind."""
    plt = pyplot()
    per_task: dict[tuple[str, int], list[float]] = {}
    splits = {r["split"] for r in rows}
    if split not in splits and splits:
        split = sorted(splits)[0]
    for r in rows:
        if r["split"] == split:
            per_task.setdefault((r["kind"], int(r["task_index"])), []).append(float(r["agreement"]))
    kinds = sorted(
        {k for k, _ in per_task}, key=lambda k: (KIND_ORDER.index(k) if k in KIND_ORDER else 99, k)
    )
    data = [[sum(v) / len(v) for (k, _), v in per_task.items() if k == kind] for kind in kinds]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * max(1, len(kinds)), 3.6))
    if data:
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(kinds) + 1), kinds)
        for i, vals in enumerate(data, start=1):
            jitter = [i + 0.08 * ((j * 7919) % 11 - 5) / 5 for j in range(len(vals))]
            ax.scatter(jitter, vals, s=12, alpha=0.7)
    ax.set_ylabel(f"agreement score ({split})")
    ax.set_ylim(0.4, 1.0)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return Path(path)


def _save(fig, path: str | Path) -> Path:  # noqa: ANN001
    plt = pyplot()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_similarity(sim: torch.Tensor, names: Sequence[str], path: str | Path) -> Path:
    """Heatmap of the folded similarity matrix (range 0.5 - 1)."""
    plt = pyplot()
    k = sim.shape[0]
    fig, ax = plt.subplots(figsize=(2 + 0.3 * k, 1.6 + 0.3 * k))
    im = ax.imshow(sim.numpy(), vmin=0.5, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(k), [n.split("-")[-1] for n in names], fontsize=6)
    ax.set_yticks(range(k), [n.split("-")[-1] for n in names], fontsize=6)
    off = sim[~torch.eye(k, dtype=torch.bool)]
    ax.set_title(
        f"folded similarity (mean off-diagonal {float(off.mean()):.3f})"
        if k > 1
        else "folded similarity",
        fontsize=8,
    )
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return _save(fig, path)


def plot_gallery(
    ds: ImageDataset,
    scores: torch.Tensor,
    idx: torch.Tensor,
    path: str | Path,
    *,
    title: str = "",
    n: int = 10,
) -> Path:
    """Two rows: the ``n`` images of ``idx`` with the highest score (label 1, ``s > 0``) and
    the ``n`` with the lowest (label 0), de-normalised from the stored uint8 pixels."""
    plt = pyplot()
    order = torch.argsort(scores[idx], descending=True)
    n = min(n, len(idx) // 2)
    rows = [("label 1 (highest s)", idx[order[:n]]), ("label 0 (lowest s)", idx[order.flip(0)[:n]])]
    fig, axes = plt.subplots(2, n, figsize=(0.9 * n, 2.3), squeeze=False)
    for r, (label, ii) in enumerate(rows):
        for c in range(n):
            ax = axes[r][c]
            img = ds.images[ii[c]].float() / 255.0
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(img.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(label, fontsize=6)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_headline(summary: list[dict], path: Path, title: str = "") -> Path:
    """Bars of mean test accuracy (± std) per setting, random vs adversarial."""
    plt = pyplot()
    settings = list(dict.fromkeys(r["setting"] for r in summary))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(settings), 3.4))
    width = 0.38
    for j, (typ, color) in enumerate((("random", "#7a9cc6"), ("adversarial", "#d0605e"))):
        xs, ms, ss = [], [], []
        for i, st in enumerate(settings):
            r = next((r for r in summary if r["setting"] == st and r["type"] == typ), None)
            if r is not None:
                xs.append(i + (j - 0.5) * width)
                ms.append(float(r["mean"]))
                ss.append(float(r["std"]))
        ax.bar(xs, ms, width, yerr=ss, label=typ, color=color, capsize=3)
        for x, m in zip(xs, ms):
            ax.text(x, 0.03, f"{m:.2f}", ha="center", fontsize=8, color="white")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test-side accuracy")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def training_curves(rows: Sequence[dict], columns: Sequence[str], title: str = "") -> Any:
    """One small plot per column of a training log against its ``step`` column; returns
    the figure (the caller saves or embeds it)."""
    plt = pyplot()
    cols = [c for c in columns if rows and c in rows[0]]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(3.0 * max(1, len(cols)), 2.6))
    axes = list(axes) if len(cols) > 1 else [axes]
    steps = [float(r["step"]) for r in rows]
    for ax, c in zip(axes, cols):
        ys = [float(r[c]) if r[c] not in ("", None) else float("nan") for r in rows]
        ax.plot(steps, ys, lw=1.2)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
