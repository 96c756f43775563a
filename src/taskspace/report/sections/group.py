"""Network-selection runs (``taskspace group``): the chosen networks per budget, which tasks
each serves, the objective, and a picture of them (tasks x networks, served cells filled).

:func:`plot_groups` draws that picture; the command writes it as ``groups.png``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from taskspace.io import atomic_write
from taskspace.report.context import PageContext
from taskspace.report.mpl import pyplot
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register

__all__ = ["is_group", "plot_groups", "render"]


def plot_groups(selections: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One panel per selection (``Selection.to_json()`` dicts): rows are the tasks,
    columns the chosen networks; a member is light, the network that serves a task is
    dark and shows the served score; the title gives the budget and the objective."""
    plt = pyplot()
    tasks = list(selections[0]["tasks"])
    widths = [max(1, len(s["groups"])) for s in selections]
    fig, axes = plt.subplots(
        1,
        len(selections),
        figsize=(1.6 + 0.55 * sum(widths) + 0.9 * len(selections), 1.4 + 0.32 * len(tasks)),
        gridspec_kw={"width_ratios": widths},
        squeeze=False,
    )
    for ax, sel in zip(axes[0], selections, strict=True):
        grid = np.zeros((len(tasks), len(sel["groups"])))
        for j, members in enumerate(sel["groups"]):
            for t in members:
                grid[tasks.index(t), j] = 1.0
        for t, j in sel["served"].items():
            grid[tasks.index(t), j] = 2.0
        ax.imshow(grid, cmap="Blues", vmin=0.0, vmax=2.4, aspect="auto")
        for t, j in sel["served"].items():
            score = sel["per_task_score"][t]
            ax.text(j, tasks.index(t), f"{score:.3g}", ha="center", va="center", fontsize=6,
                    color="white")  # fmt: skip
        ax.set_xticks(range(len(sel["groups"])), [f"N{j + 1}" for j in range(len(sel["groups"]))])
        ax.set_yticks(range(len(tasks)), tasks if ax is axes[0][0] else [""] * len(tasks))
        ax.tick_params(labelsize=7)
        label = sel.get("label") or f"B = {sel['budget']}"
        ax.set_title(f"{label}\nobjective {sel['objective']:.4g}", fontsize=8)
    axes[0][0].set_ylabel("task")
    fig.suptitle("chosen networks (columns); dark: the network serving the task", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def is_group(run: RunView) -> bool:
    return "orientation" in run.config and "tie_break" in run.config


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    try:
        data = json.loads((run / "selections.json").read_text())
    except (OSError, ValueError):
        data = {}
    if data:
        kind = data.get("kind", "?")
        goal = "lowest" if kind == "hoa" else "highest"
        body.append(
            ctx.render(
                "note.html.j2",
                text=f"{len(data.get('tasks', []))} tasks, kind {kind} ({goal} served score "
                f"wins), from {data.get('source', '?')}; tie_break {run.option('tie_break')}.",
            )
        )
    rows = run.csv("groups.csv")
    if rows:
        body.append(
            ctx.table(
                rows,
                list(rows[0]),
                caption="chosen networks per budget B: members, the tasks each serves, and "
                "the selection's objective (mean served score)",
            )
        )
    uri = ctx.figure_file(run / "groups.png")
    if uri:
        body.append(ctx.render("figures.html.j2", figures=[(uri, "chosen networks per budget")]))
    if not body:
        return ctx.render("note.html.j2", text="No selection has been written yet.")
    return "\n".join(str(b) for b in body)


register(SectionType("group", "Network selection", is_group, render))
