"""Adversarial-split runs: ``taskspace split`` (the splits and a viewer) and
``taskspace split-eval`` (the headline table, per-split results and a viewer that shows the
learner's mistakes)."""

from __future__ import annotations

import numpy as np
import torch
from markupsafe import Markup

from taskspace.data import ImageDataset
from taskspace.report.context import PageContext
from taskspace.report.run_view import RunView
from taskspace.report.section import SectionType, register
from taskspace.report.split_pictures import choose_panels, class_order
from taskspace.splits import Split, read_splits

#: Splits the viewer steps through (adversarial ones first) and images per class and side.
VIEWER_SPLITS = 12
PER_CLASS = 4


def is_split(run: RunView) -> bool:
    return "targets" in run.config and "settings" not in run.config


def is_split_eval(run: RunView) -> bool:
    return "targets" in run.config and "settings" in run.config


def predictions(run: RunView, n_images: int) -> dict[str, torch.Tensor]:
    """Predicted class per dataset index of every ``split|setting`` the parts hold."""
    out: dict[str, torch.Tensor] = {}
    for part in run.parts("npz"):
        with np.load(part, allow_pickle=False) as z:
            for name, row in zip(z["names"].tolist(), z["pred"]):
                if name and len(row) == n_images:
                    out[str(name)] = torch.from_numpy(row.astype(np.int64))
    return out


def viewer(
    run: RunView,
    ctx: PageContext,
    results: list[dict[str, str]] | None,
    preds: bool,
) -> Markup:
    """The split viewer: train side, test side and (with predictions) mistakes per class."""
    ds, key = ctx.dataset(run)
    if ds is None:
        return Markup(ctx.render("note.html.j2", text=f"No split viewer: {key}."))
    splits = read_splits(run.path, len(ds))
    chosen = sorted(splits, key=lambda s: s.kind == "random")[:VIEWER_SPLITS]
    found = predictions(run, len(ds)) if preds else {}
    seed = int(run.option("seed", 0) or 0)
    entries = [
        _split_entry(ds, s, found.get(f"{s.name}|{ds.num_classes}-way"), results, seed, ctx, key)
        for s in chosen
    ]
    data = {"pool": key, "classes": list(ds.class_names), "splits": entries}
    note = (
        f"{len(chosen)} of {len(splits)} splits (adversarial first), {PER_CLASS} images per "
        "class and side, drawn by dataset index."
    )
    return Markup(ctx.render("viewer.html.j2", src=ctx.add_json("splits", data), note=note))


def _split_entry(
    ds: ImageDataset,
    s: Split,
    pred: torch.Tensor | None,
    results: list[dict[str, str]] | None,
    seed: int,
    ctx: PageContext,
    key: str,
) -> dict:
    panels = choose_panels(ds, s, pred, per_class=PER_CLASS, seed=seed)
    order = class_order(s, ds.num_classes)
    counts = {
        "train": torch.bincount(ds.classes[s.train_idx], minlength=ds.num_classes).tolist(),
        "test": torch.bincount(ds.classes[s.test_idx], minlength=ds.num_classes).tolist(),
    }
    if pred is not None:
        test = s.test_idx[(pred[s.test_idx] >= 0) & (pred[s.test_idx] != ds.classes[s.test_idx])]
        counts["mistakes"] = torch.bincount(pred[test], minlength=ds.num_classes).tolist()
    for side in panels.values():
        for idx in side.values():
            ctx.pool(key, ds, idx)
    accs = [
        f"{r['setting']} test acc {float(r['test_acc']):.2f}"
        for r in results or []
        if r["split"] == s.name
    ]
    info = ", ".join([s.kind, f"{len(s.train_idx)} train / {len(s.test_idx)} test", *accs])
    return {
        "name": s.name,
        "kind": s.kind,
        "info": info,
        "positive": [int(c) for c in s.meta.get("positive_classes", [])],
        "panels": {
            side: [[c, panels[side].get(c, []), counts[side][c]] for c in order]
            for side in panels
            if side != "mistakes" or pred is not None
        },
    }


def render_split(run: RunView, ctx: PageContext) -> str:
    rows = run.csv("splits.csv")
    if not rows:
        return ctx.render("note.html.j2", text="No splits yet (splits.csv not written).")
    body = [
        ctx.table(
            rows,
            [c for c in rows[0] if c != "file"],
            limit=300,
            caption="every split: sizes, target positive rate, class counts",
        ),
        viewer(run, ctx, None, preds=False),
    ]
    return "\n".join(str(b) for b in body)


def render_eval(run: RunView, ctx: PageContext) -> str:
    body: list[object] = []
    headline = run.csv("headline.csv")
    if headline:
        body.append(
            ctx.table(
                headline,
                list(headline[0].keys()),
                sortable=False,
                caption="test-side accuracy: random vs adversarial splits",
            )
        )
    fig = ctx.figure_file(run / "headline.png")
    if fig:
        body.append(ctx.render("figures.html.j2", figures=[(fig, "headline")]))
    results = run.rows("results.csv")
    if results:
        body.append(ctx.render("h3.html.j2", text="Per split"))
        body.append(ctx.table(results, list(results[0].keys()), limit=400))
    if run.has("splits.csv"):
        body.append(ctx.render("h3.html.j2", text="Split viewer"))
        body.append(viewer(run, ctx, results, preds=True))
    if not body:
        return ctx.render("note.html.j2", text="Nothing to show yet: no split has finished.")
    return "\n".join(str(b) for b in body)


register(SectionType("split", "Adversarial splits", is_split, render_split))
register(SectionType("split-eval", "Adversarial splits: evaluation", is_split_eval, render_eval))
