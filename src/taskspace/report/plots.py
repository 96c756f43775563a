"""Plots written into run directories (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taskspace.io import atomic_write

KIND_ORDER = ["discovered", "human", "original", "table", "attribute", "random"]


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_agreement_by_kind(rows: Sequence[dict], path: str | Path, split: str = "heldout") -> Path:
    """AS of every task (mean over pairs), one column of points and a box per task kind."""
    plt = _plt()
    per_task: dict[tuple[str, int], list[float]] = {}
    splits = {r["split"] for r in rows}
    if split not in splits and splits:
        split = sorted(splits)[0]
    for r in rows:
        if r["split"] == split:
            per_task.setdefault((r["kind"], int(r["task_index"])), []).append(
                float(r["agreement"]))
    kinds = sorted({k for k, _ in per_task}, key=lambda k: (
        KIND_ORDER.index(k) if k in KIND_ORDER else 99, k))
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
