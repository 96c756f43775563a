"""Pictures of a robustness run: group accuracies per method, worst group over epochs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from taskspace.io import atomic_write
from taskspace.report.mpl import pyplot

__all__ = ["plot_group_accuracy", "plot_worst_over_epochs"]


def _label(r: dict) -> str:
    if r.get("lr") not in (None, ""):
        return f"{r['method']}\nlr {float(r['lr']):g} wd {float(r['weight_decay']):g}"
    return str(r["method"])


def plot_group_accuracy(
    summary: Sequence[dict], group_names: Sequence[str], path: str | Path, split: str = "test"
) -> Path:
    """Bars of every group's accuracy (mean +- std over seeds) per method, and the worst
    group as a marker."""
    plt = pyplot()
    rows = [r for r in summary if r["split"] == split] or list(summary)
    g = len(group_names)
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * len(rows) * max(1, g) / 4 + 1.2, 3.6))
    width = 0.8 / max(1, g)
    for j, name in enumerate(group_names):
        xs = [i + (j - (g - 1) / 2) * width for i in range(len(rows))]
        ms = [float(r.get(f"g{j}_acc_mean", "nan") or "nan") for r in rows]
        ss = [float(r.get(f"g{j}_acc_std", 0) or 0) for r in rows]
        ax.bar(xs, ms, width, yerr=ss, capsize=2, label=f"g{j} {name}")
    worst = [float(r["worst_group_acc_mean"]) for r in rows]
    ax.scatter(
        range(len(rows)), worst, marker="_", s=400, color="black", zorder=3, label="worst group"
    )
    ax.set_xticks(range(len(rows)), [_label(r) for r in rows], fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{split} accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def plot_worst_over_epochs(epochs: Sequence[dict], path: str | Path, split: str = "val") -> Path:
    """Worst-group accuracy on ``split`` after every epoch, one line per method (and grid
    point), the mean over seeds."""
    plt = pyplot()
    curves: dict[str, dict[float, list[float]]] = {}
    for r in epochs:
        if r["split"] != split or r["metric"] != "worst_group_acc":
            continue
        curves.setdefault(_label(r).replace("\n", " "), {}).setdefault(
            float(r["epoch"]), []
        ).append(float(r["value"]))
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for name, by_epoch in curves.items():
        xs = sorted(by_epoch)
        ax.plot(xs, [sum(by_epoch[x]) / len(by_epoch[x]) for x in xs], lw=1.3, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{split} worst-group accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)
