"""Pieces several sections share: the quiz block and the agreement rows of a run."""

from __future__ import annotations

from markupsafe import Markup

from taskspace.report.context import PageContext
from taskspace.report.quiz import quiz_data
from taskspace.report.run_view import RunView
from taskspace.tasks import TaskSet

__all__ = ["agreement_rows", "quiz_block"]


def agreement_rows(run: RunView, table: str = "agreement.csv") -> list[dict[str, str]]:
    """The run's per-pair AS rows: the merged table, else the finished parts so far."""
    rows = run.csv(table)
    if rows is not None:
        return rows
    merged: list[dict[str, str]] = []
    for part in run.parts():
        merged.extend(run.csv(str(part.relative_to(run.path))) or [])
    return merged


def quiz_block(run: RunView, ctx: PageContext, tasks: TaskSet, seed: int = 0) -> Markup:
    """The quiz over ``tasks`` on the run's images (a note when they cannot be loaded)."""
    ds, key = ctx.dataset(run)
    if ds is None:
        return Markup(ctx.render("note.html.j2", text=f"No quiz: {key}."))
    data, shown = quiz_data(ds, tasks, key, seed=seed)
    if not data["tasks"]:
        return Markup(ctx.render("note.html.j2", text="No quiz: the run has no binary tasks."))
    ctx.pool(key, ds, shown)
    return Markup(ctx.render("quiz.html.j2", src=ctx.add_json("quiz", data), data=data))
