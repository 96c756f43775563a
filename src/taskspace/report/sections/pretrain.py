"""SimCLR pre-training runs (``taskspace pretrain``): the loss curve and final metrics."""

from __future__ import annotations

from taskspace.report.context import PageContext
from taskspace.report.plots import training_curves
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register


def is_pretrain(run: RunView) -> bool:
    return "simclr" in run.config and "encoder" not in run.config


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    if run.metrics:
        body.append(ctx.table([run.metrics], list(run.metrics), sortable=False))
    log = run.csv("log.csv")
    if log:
        fig = ctx.figure(training_curves(log, ["loss"]))
        body.append(ctx.render("figures.html.j2", figures=[(fig, "SimCLR loss")]))
    else:
        body.append(ctx.render("note.html.j2", text="No training log yet (log.csv)."))
    return "\n".join(str(b) for b in body)


register(SectionType("pretrain", "SimCLR pre-training", is_pretrain, render))
