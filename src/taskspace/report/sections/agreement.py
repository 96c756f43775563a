"""Agreement runs (``taskspace agreement``): AS by kind, per-task table, pairs, quiz."""

from __future__ import annotations

from taskspace.agreement.score import summarize
from taskspace.errors import TaskspaceError
from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register
from taskspace.report.sections.common import quiz_block
from taskspace.tasks import load_tasks


def is_agreement(run: RunView) -> bool:
    cfg = run.config
    return "num_tasks" in cfg and "pairs" in cfg and "encoder" not in cfg


def per_task(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    """Mean AS and learner accuracy of each task over its pairs, one column per split."""
    out: dict[str, dict[str, object]] = {}
    sums: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        out.setdefault(r["task"], {"task": r["task"], "kind": r["kind"]})
        sums.setdefault((r["task"], f"AS {r['split']}"), []).append(float(r["agreement"]))
        acc = (float(r["acc_a"]) + float(r["acc_b"])) / 2
        sums.setdefault((r["task"], f"acc {r['split']}"), []).append(acc)
    for (task, col), vals in sums.items():
        out[task][col] = sum(vals) / len(vals)
        out[task]["pairs"] = len(vals)
    return list(out.values())


def render(run: RunView, ctx: PageContext) -> str:
    rows = run.rows("agreement.csv")
    body: list[object] = []
    if not rows:
        return ctx.render("note.html.j2", text="No agreement rows yet (no part has finished).")
    summary = summarize(rows)
    body.append(
        ctx.table(
            summary,
            ["kind", "split", "mean", "std", "count"],
            caption="AS by kind: mean and std over tasks of the per-task mean AS",
        )
    )
    fig = ctx.figure_file(run / "agreement.png")
    if fig:
        body.append(ctx.render("figures.html.j2", figures=[(fig, "AS of every task by kind")]))
    tasks = per_task(rows)
    cols = ["task", "kind", *sorted({k for t in tasks for k in t} - {"task", "kind"})]
    body.append(ctx.render("h3.html.j2", text="Per task and per pair"))
    body.append(ctx.table(tasks, cols, caption="every task: AS and accuracy, mean over pairs"))
    body.append(
        ctx.table(
            rows,
            list(rows[0].keys()),
            limit=400,
            caption="one row per task, pair and split: AS and both models' accuracy",
        )
    )
    if run.has("tasks.npz"):
        try:
            found = load_tasks(run / "tasks.npz")
        except TaskspaceError as err:
            body.append(ctx.render("note.html.j2", text=f"No quiz: {err}"))
        else:
            body.append(quiz_block(run, ctx, found, seed=int(run.option("seed", 0) or 0)))
    return "\n".join(str(b) for b in body)


register(SectionType("agreement", "Agreement score", is_agreement, render))
