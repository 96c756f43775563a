"""Task2Vec runs (``taskspace embed``): the clustered distance matrix, each task's nearest
tasks, the distances between kinds of tasks and the probe's fit per task."""

from __future__ import annotations

from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register


def is_embed(run: RunView) -> bool:
    return "probe" in run.config and "distances" in run.config


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    figures = [
        (uri, p.stem.replace("_", " "))
        for p in sorted(run.path.glob("distance_matrix*.png"))
        if (uri := ctx.figure_file(p))
    ]
    if figures:
        body.append(ctx.render("figures.html.j2", figures=figures))
    captions = {
        "by_kind.csv": "each task's mean distance to every kind of task "
        f"({run.option('distances')})",
        "nearest_by_kind.csv": "each task's nearest task of every kind",
        "nearest.csv": "each task's nearest tasks",
        "tasks.csv": "per task: the refit head's training accuracy (a low one: the probe "
        "does not fit the task) and the norm of its Fisher embedding",
    }
    for name, caption in captions.items():
        rows = run.csv(name)
        if rows:
            body.append(ctx.table(rows, list(rows[0]), caption=caption))
    if not body:
        return ctx.render("note.html.j2", text="No task has been embedded yet.")
    return "\n".join(str(b) for b in body)


register(SectionType("embed", "Task embeddings (Task2Vec)", is_embed, render))
