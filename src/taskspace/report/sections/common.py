"""The quiz block, shared by the agreement and discovery sections."""

from __future__ import annotations

from markupsafe import Markup

from taskspace.report.context import PageContext
from taskspace.report.quiz import quiz_data
from taskspace.report.run_view import RunView
from taskspace.tasks import TaskSet

__all__ = ["quiz_block"]


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
