"""Group-robustness runs (``taskspace robust``): the final table per method, group
counts, group accuracies and worst group over epochs, published anchors, per-seed rows."""

from __future__ import annotations

from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register

#: Columns of the final table shown first (the rest follow in the CSV's order).
HEAD = [
    "method",
    "task",
    "lr",
    "weight_decay",
    "split",
    "seeds",
    "avg_acc_mean",
    "avg_acc_std",
    "weighted_avg_acc_mean",
    "worst_group_acc_mean",
    "worst_group_acc_std",
]


def is_robust(run: RunView) -> bool:
    return "grouping" in run.config and "methods" in run.config


def _grouping(run: RunView) -> str:
    """The grouping as run (a default grouping is recorded in ``done.json``)."""
    return str(
        run.metrics.get("grouping")
        or run.option("grouping")
        or run.option("groupings")
        or "(the dataset's default)"
    )


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    summary = run.csv("summary.csv")
    if summary:
        first = [c for c in HEAD if c in summary[0]]
        groups = [
            c for c in summary[0] if c.startswith("g") and c.endswith(("_acc_mean", "_count"))
        ]
        body.append(
            ctx.table(
                summary,
                first + groups,
                sortable=True,
                caption=f"grouping {_grouping(run)}: accuracy per method (or arm) and split, "
                "mean and std over seeds, and group sizes",
            )
        )
    counts = run.csv("group_counts.csv")
    if counts:
        body.append(
            ctx.table(counts, list(counts[0]), sortable=False, caption="images per group and split")
        )
    figures = [
        (uri, cap)
        for uri, cap in (
            (ctx.figure_file(run / "group_accuracy.png"), "test accuracy of every group"),
            (ctx.figure_file(run / "worst_group.png"), "validation worst group over epochs"),
        )
        if uri
    ]
    if figures:
        body.append(ctx.render("figures.html.j2", figures=figures))
    anchors = run.csv("anchors.csv")
    if anchors:
        body.append(
            ctx.table(
                anchors,
                list(anchors[0]),
                sortable=False,
                caption="published test numbers (%) for this grouping",
            )
        )
    rows = run.rows("results.csv")
    if rows:
        body.append(
            ctx.table(
                rows,
                list(rows[0]),
                limit=400,
                caption="every model: per seed and split, with Wilson 95 % intervals of each group",
            )
        )
    if not body:
        return ctx.render("note.html.j2", text="No method has finished yet.")
    return "\n".join(str(b) for b in body)


def is_mtl(run: RunView) -> bool:
    return "groupings" in run.config and "arms" in run.config


register(SectionType("robust", "Group robustness", is_robust, render))
register(SectionType("mtl", "Multi-task robustness: STL vs MTL", is_mtl, render))
