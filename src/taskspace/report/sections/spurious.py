"""Spurious-correlation runs (``taskspace spurious``): the delta matrix and its histogram,
the pairs above the threshold, per-task heatmaps and the clusters."""

from __future__ import annotations

import json
from typing import Any

from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register


def is_spurious(run: RunView) -> bool:
    return "epsilon" in run.config and "gamma" in run.config


def _clusters(run: RunView) -> list[dict[str, Any]]:
    try:
        data = json.loads((run / "clusters.json").read_text())
    except (OSError, ValueError):
        return []
    rows = []
    for key, value in data.items():
        if not isinstance(value, dict):
            continue
        groups = value.get("clusters") or value.get("columns") or {}
        for c, names in groups.items():
            rows.append({"method": key, "cluster": c, "attributes": ", ".join(names)})
    return rows


def render(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    pairs = run.csv("pairs.csv")
    if pairs is not None:
        body.append(
            ctx.table(
                pairs,
                list(pairs[0]) if pairs else ["task", "attr", "delta"],
                caption=f"task:attribute pairs with delta above "
                f"{run.option('epsilon')}, descending",
            )
        )
    figures = [
        (uri, cap)
        for uri, cap in (
            (ctx.figure_file(run / "delta.png"), "delta T[task, attr] / 100"),
            (ctx.figure_file(run / "delta-cocluster.png"), "reordered by co-clustering"),
            (ctx.figure_file(run / "histogram.png"), "off-diagonal deltas, threshold marked"),
        )
        if uri
    ]
    heat = sorted((run / "heatmaps").glob("*.png")) if (run / "heatmaps").is_dir() else []
    figures += [(uri, p.stem) for p in heat if (uri := ctx.figure_file(p))]
    if figures:
        body.append(ctx.render("figures.html.j2", figures=figures))
    clusters = _clusters(run)
    if clusters:
        body.append(
            ctx.table(
                clusters,
                ["method", "cluster", "attributes"],
                caption="clusters of co-clustering (columns) and SVD + KMeans",
            )
        )
    if not body:
        return ctx.render("note.html.j2", text="No stage has finished yet.")
    return "\n".join(str(b) for b in body)


register(SectionType("spurious", "Spurious correlations", is_spurious, render))
