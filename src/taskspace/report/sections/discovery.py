"""Discovery runs (``taskspace discover``): per-head AS and positive rate, AS by kind,
similarity, coverage, training curves, galleries of every task and the quiz."""

from __future__ import annotations

import torch
from markupsafe import Markup

from taskspace.agreement.score import summarize
from taskspace.errors import TaskspaceError
from taskspace.report.context import PageContext
from taskspace.report.plots import training_curves
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register
from taskspace.report.sections.common import quiz_block
from taskspace.tasks import TaskSet, human_tasks, load_tasks, random_tasks

#: Images per side of a task in its gallery.
GALLERY = 8


def is_discovery(run: RunView) -> bool:
    return "encoder" in run.config and "meta" in run.config


def galleries(run: RunView, ctx: PageContext, tasks: TaskSet) -> Markup:
    """Held-out images labelled 1 and 0 by every task (a seeded sample of each side)."""
    ds, key = ctx.dataset(run)
    if ds is None:
        return Markup(ctx.render("note.html.j2", text=f"No galleries: {key}."))
    pool = ds.splits.get("heldout", ds.splits.get("test", torch.arange(len(ds))))
    g = torch.Generator().manual_seed(0)
    rows = []
    for k, name in enumerate(tasks.names):
        labels = tasks.labels[k]
        sides = []
        for c in (1, 0):
            of_c = pool[labels[pool] == c]
            pick = of_c[torch.randperm(len(of_c), generator=g)[:GALLERY]].tolist()
            ctx.pool(key, ds, pick)
            sides.append(pick)
        rate = float(labels.float().mean())
        rows.append({"name": name, "rate": rate, "pos": sides[0], "neg": sides[1]})
    return Markup(ctx.render("galleries.html.j2", rows=rows, pool=key))


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    summary = run.csv("summary.csv")
    if summary:
        body.append(ctx.table(summary, ["metric", "value"], caption="summary", sortable=False))
    heads = run.csv("heads.csv")
    if heads:
        body.append(ctx.render("h3.html.j2", text="Per head: AS and positive rate"))
        body.append(ctx.table(heads, list(heads[0].keys()), caption="every head"))
    rows = run.csv("as_by_kind.csv") or run.rows("agreement.csv")
    figures = [
        (uri, cap)
        for uri, cap in (
            (ctx.figure_file(run / "as_by_kind.png"), "AS by kind under one protocol"),
            (ctx.figure_file(run / "similarity.png"), "folded similarity of the heads"),
        )
        if uri
    ]
    if rows:
        body.append(ctx.render("h3.html.j2", text="AS by kind"))
        body.append(ctx.table(summarize(rows), ["kind", "split", "mean", "std", "count"]))
    log = run.csv("log.csv")
    if log:
        cols = ["loss", "l_ag", "uniformity", "proxy_as"]
        figures.append((ctx.figure(training_curves(log, cols)), "meta-training curves"))
    if figures:
        body.append(ctx.render("figures.html.j2", figures=figures))
    coverage = run.csv("coverage.csv")
    if coverage:
        body.append(ctx.render("h3.html.j2", text="Coverage of the human tasks"))
        acc = [float(r["probe_accuracy"]) for r in coverage]
        body.append(
            ctx.render(
                "note.html.j2",
                text=f"{len(acc)} human tasks: probe accuracy mean {sum(acc) / len(acc):.3f}, "
                f"min {min(acc):.3f}, max {max(acc):.3f}",
            )
        )
        body.append(
            ctx.table(
                coverage,
                ["task", "probe_accuracy"],
                limit=60,
                caption="held-out accuracy of a linear probe from the embedding h",
            )
        )
    if not run.has("tasks.npz"):
        body.append(ctx.render("note.html.j2", text="No tasks yet (tasks.npz not written)."))
        return "\n".join(str(b) for b in body)
    try:
        found = load_tasks(run / "tasks.npz")
    except TaskspaceError as err:
        body.append(ctx.render("note.html.j2", text=f"tasks.npz could not be read: {err}"))
        return "\n".join(str(b) for b in body)
    body.append(ctx.render("h3.html.j2", text="Galleries: held-out images of each task"))
    body.append(galleries(run, ctx, found))
    body.append(
        quiz_block(run, ctx, with_baselines(run, ctx, found), seed=int(run.option("seed", 0) or 0))
    )
    return "\n".join(str(b) for b in body)


def with_baselines(run: RunView, ctx: PageContext, found: TaskSet, n: int = 3) -> TaskSet:
    """The discovered tasks plus ``n`` human and ``n`` random tasks on the run's images."""
    ds, _ = ctx.dataset(run)
    if ds is None:
        return found
    seed = int(run.option("seed", 0) or 0)
    humans = human_tasks(ds.classes, ds.num_classes, max_tasks=n, seed=seed, include_original=False)
    return TaskSet.concat(found, humans, random_tasks(len(ds), n, seed=seed))


register(SectionType("discovery", "Task discovery", is_discovery, render))
