"""Sweeps (``taskspace <command> -m ...``): the table of points, sortable by any column."""

from __future__ import annotations

from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register


def is_sweep(run: RunView) -> bool:
    return run.has("sweep.csv") and not run.has("config.yaml")


def render(run: RunView, ctx: PageContext) -> str:
    rows = run.csv("sweep.csv") or []
    if not rows:
        return ctx.render("note.html.j2", text="sweep.csv is empty or unreadable.")
    done = sum(str(r.get("finished")).lower() == "true" for r in rows)
    return str(
        ctx.table(
            rows,
            list(rows[0].keys()),
            caption=f"{len(rows)} points, {done} finished: swept options, run "
            "directory and headline metrics (click a header to sort)",
        )
    )


register(SectionType("sweep", "Sweep", is_sweep, render))
