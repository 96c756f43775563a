"""Affinity runs (``taskspace affinity``): heatmaps of the affinity matrices, the chosen
groups per budget and the comparison of the groupings with all tasks in one network and
one network per task."""

from __future__ import annotations

from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register

_ORIENT = {
    "tag": "TAG lookahead affinity Z[source, target] (row = source; > 0: the source helps)",
    "cs": "gradient cosine similarity, summed over epochs (symmetric)",
    "hoa": "HOA: the column task's validation score when trained with the row task "
    "(diagonal: alone; lower is better)",
}


def is_affinity(run: RunView) -> bool:
    return "lookahead" in run.config and "budgets" in run.config


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    kind = str(run.option("kind", "tag"))
    figures = [
        (uri, cap)
        for uri, cap in (
            (ctx.figure_file(run / "affinity.png"), _ORIENT.get(kind, kind) + ", mean over seeds"),
            (ctx.figure_file(run / "affinity_seeds.png"), "every seed's matrix"),
            (ctx.figure_file(run / "groups.png"), "network serving each task, per budget"),
            (ctx.figure_file(run / "comparison.png"), "total validation loss per arm"),
        )
        if uri
    ]
    if figures:
        body.append(ctx.render("figures.html.j2", figures=figures))
    comparison = run.csv("comparison.csv")
    if comparison:
        totals = [r for r in comparison if r.get("task") == "total"]
        cols = [
            "arm",
            "networks",
            "val_loss",
            "val_loss_std",
            "val_error",
            "test_loss",
            "test_error",
        ]
        body.append(
            ctx.table(
                totals,
                cols,
                caption="totals over tasks (mean over seeds): the chosen "
                "groupings per budget B against all-in-one and one-per-task",
            )
        )
        body.append(
            ctx.table(
                comparison,
                list(comparison[0]),
                caption="per task, from the network that serves it",
            )
        )
    matrix = run.csv("affinity.csv")
    if matrix:
        body.append(ctx.table(matrix, list(matrix[0]), caption=_ORIENT.get(kind, kind)))
    if not body:
        return ctx.render("note.html.j2", text="No stage has finished yet.")
    return "\n".join(str(b) for b in body)


register(SectionType("affinity", "Task affinity and grouping", is_affinity, render))
