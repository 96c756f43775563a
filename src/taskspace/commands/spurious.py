"""``taskspace spurious``: which attributes are spuriously correlated with which tasks.

Three resumable stages (``stages=train,matrix,extract``; each reads what the one before
wrote, and refuses to run without it):

1. ``train``: one ERM model per task attribute (default: every attribute), batched, each
   kept at its best validation plain average; saved to ``models/attributes.*`` with
   ``history.csv``. ``launch.per_job=N`` splits the attributes into parts of N that train
   as separate jobs (``launch=local`` processes or a ``launch=slurm`` array), resumed part
   by part; a model's seed depends on its attribute's position, not on the split, so the
   parts give the models one fit would.
2. ``matrix``: every task model evaluated under every ``Task:Attr`` grouping on the
   validation split from the same predictions; Agresti-Coull shrinkage; ``delta = |g0 + g3
   - g1 - g2|``. Writes ``delta.csv`` (rows: tasks, columns: attributes, ``T[task, attr]``),
   ``delta.json``, ``pairs.csv`` (cells above ``epsilon``, descending), ``histogram.csv``,
   ``delta.png``, ``histogram.png`` and per-task heatmaps (group accuracy, size, delta) of
   the tasks in the top pairs under ``heatmaps/``.
3. ``extract``: spectral co-clustering of the binary, row-normalised and cosine inputs and
   SVD + KMeans of the attribute association; ``clusters.json``, reordered heatmaps
   ``delta-cocluster.png``, and task pairings (``pairings.json``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.data import ImageDataset
from taskspace.data.config import DataConfig, load_data
from taskspace.engine import Ensemble, Recipe
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_json
from taskspace.report.spurious_plots import (
    plot_delta_heatmap,
    plot_delta_histogram,
    plot_task_heatmaps,
)
from taskspace.robustness import (
    EPSILON,
    SPURIOUS_RECIPE,
    AttributeModels,
    DeltaMatrix,
    association,
    cocluster,
    delta_matrix,
    fit_attribute_models,
    svd_kmeans,
    task_pairings,
)
from taskspace.runs import LaunchOptions, RunDir, run_jobs

__all__ = ["SpuriousConfig", "main", "run_spurious"]

STAGES = ("train", "matrix", "extract")
MODELS = "models/attributes.json"


@dataclass
class SpuriousModel:
    """The per-attribute learner."""

    name: str = option("mlp", "architecture of every task model")
    kwargs: dict[str, Any] = option(factory=lambda: {"widths": [32]}, help="architecture overrides")


@dataclass
class SpuriousRecipe:
    """Training of the task models (defaults: the module's SPURIOUS_RECIPE)."""

    lr: float = option(SPURIOUS_RECIPE.lr, "SGD learning rate")
    weight_decay: float = option(SPURIOUS_RECIPE.weight_decay, "weight decay")
    batch_size: int = option(SPURIOUS_RECIPE.batch_size, "batch size")
    epochs: float = option(SPURIOUS_RECIPE.epochs or 6.0, "epochs")


@dataclass
class SpuriousConfig:
    """Options of ``taskspace spurious``."""

    data: DataConfig = option(
        factory=lambda: DataConfig(name="celeba_lite"),
        selector="name",
        help="images with 0/1 attributes (celeba_lite, celeba, coloured_digits, ...)",
    )
    tasks: str | None = option(None, "task attributes, comma-separated (default: all)")
    model: SpuriousModel = option(factory=SpuriousModel, help="the task models")
    recipe: SpuriousRecipe = option(factory=SpuriousRecipe, help="their training")
    stages: str = option("train,matrix,extract", "stages to run, comma-separated")
    epsilon: float = option(EPSILON, "delta threshold of the pair list")
    clusters: int | None = option(
        None, "clusters (default: half the attributes, at most 16: the reference's 16 on CelebA)"
    )
    normalize: str = option("zscore", "row normalisation of co-clustering: zscore or softmax")
    gamma: float = option(0.9, "share of squared singular values SVD keeps")
    svd_input: str = option(
        "association",
        "rows of SVD + KMeans: association ((T + T^T)/100 + I, puts planted pairs "
        "together) or rows (the rows of T, as the reference)",
    )
    n_init: int = option(20, "k-means starts of co-clustering and KMeans")
    heatmaps: int = option(5, "per-task heatmaps of the tasks in the top pairs")
    launch: LaunchOptions = option(
        factory=LaunchOptions,
        selector="kind",
        help="where parts of the attributes train (launch.per_job attributes each)",
    )
    seed: int = option(0, "seed of the models, co-clustering, KMeans and pairings")
    device: str = option("cpu", "cpu or cuda")
    out: str | None = option(None, "run directory (default runs/spurious-<data>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


#: Options that do not change the trained models: the matrix and extract stages rerun with
#: new values on the same models (their files record the values used).
NON_RESULT_KEYS = {
    "launch",
    "out",
    "progress",
    "device",
    "report",
    "stages",
    "heatmaps",
    "epsilon",
    "clusters",
    "normalize",
    "gamma",
    "svd_input",
    "n_init",
}


def _stages(cfg: SpuriousConfig) -> list[str]:
    stages = [s.strip() for s in cfg.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if not stages or bad:
        raise TaskspaceError(
            f"unknown stage(s) {', '.join(bad) or '(none)'}; choose from {', '.join(STAGES)}"
        )
    if cfg.normalize not in ("zscore", "softmax"):
        raise TaskspaceError(f"normalize must be zscore or softmax, got {cfg.normalize!r}")
    if cfg.svd_input not in ("association", "rows"):
        raise TaskspaceError(f"svd_input must be association or rows, got {cfg.svd_input!r}")
    if not 0 < cfg.gamma < 1:
        raise TaskspaceError(f"gamma must lie in (0, 1), got {cfg.gamma}")
    return stages


def _tasks(cfg: SpuriousConfig, ds: ImageDataset) -> list[str]:
    if ds.attribute_names is None:
        raise TaskspaceError(f"dataset {cfg.data.name!r} has no attributes")
    return [t.strip() for t in cfg.tasks.split(",")] if cfg.tasks else list(ds.attribute_names)


def run_spurious(cfg: SpuriousConfig) -> Path:
    """Run (or resume) the stages of ``cfg``; returns the run directory."""
    stages = _stages(cfg)
    rd = RunDir.for_config(cfg, "spurious", NON_RESULT_KEYS, cfg.out, [cfg.data.name])
    rd.check(cfg)
    if "train" not in stages and not (rd / MODELS).exists():
        raise TaskspaceError(
            f"stage {stages[0]} needs the task models of stage train, and {rd.path} has "
            "none; run stages=train first"
        )
    if "extract" in stages and "matrix" not in stages and not (rd / "delta.json").exists():
        raise TaskspaceError("stage extract needs the delta matrix; run stages=matrix first")
    ds = load_data(cfg.data, progress=cfg.progress)
    tasks = _tasks(cfg, ds)
    _attribute_check(ds, tasks)
    rd.start(cfg)
    if "train" in stages and not (rd / MODELS).exists():
        per = cfg.launch.per_job or len(tasks)
        if per < 1:
            raise TaskspaceError(f"launch.per_job must be >= 1, got {per}")
        parts = [list(range(i, min(i + per, len(tasks)))) for i in range(0, len(tasks), per)]
        pending = [i for i in range(len(parts)) if not rd.part(i, "json").exists()]
        jobs = [(str(rd.path), i, parts[i][0], [tasks[j] for j in parts[i]]) for i in pending]
        run_jobs(train_part, jobs, cfg.launch, rd / "jobs", progress=cfg.progress)
        ens = Ensemble.concat([Ensemble.load(rd.part(i, "json")) for i in range(len(parts))])
        history = [r for i in range(len(parts)) for r in read_csv(rd.part(i, "history.csv"))]
        write_csv(rd / "history.csv", history, list(history[0]))
        ens.save(rd / MODELS)  # the stage's finished marker, written last
    if "matrix" in stages:
        models = AttributeModels(tasks, Ensemble.load(rd / MODELS), [], {})
        delta = delta_matrix(models, ds, device=cfg.device)
        write_matrix(rd, delta, cfg)
    if "extract" in stages:
        extract(rd, cfg)
    if all((rd / f).exists() for f in (MODELS, "delta.json", "clusters.json")):
        rd.mark_finished(headline(rd))
    return rd.path


def train_part(run_dir: str, part: int, first: int, tasks: list[str]) -> str:
    """One job of the train stage: the models of ``tasks`` (positions ``first`` on, so
    their seeds do not depend on how the attributes were split into parts)."""
    rd = RunDir(run_dir, NON_RESULT_KEYS)
    cfg: SpuriousConfig = rd.config(SpuriousConfig)
    ds = load_data(cfg.data, progress=False)
    models = fit_attribute_models(
        ds,
        tasks,
        model=cfg.model.name,
        model_kwargs=cfg.model.kwargs,
        recipe=_recipe(cfg),
        seed=cfg.seed,
        device=cfg.device,
        progress=cfg.progress,
        first_index=first,
    )
    write_csv(rd.part(part, "history.csv"), models.history, list(models.history[0]))
    return str(models.save(rd.part(part, "json")))  # the part's marker, written last


def _recipe(cfg: SpuriousConfig) -> Recipe:
    return Recipe(
        optimizer="sgd",
        lr=cfg.recipe.lr,
        momentum=0.9,
        weight_decay=cfg.recipe.weight_decay,
        batch_size=cfg.recipe.batch_size,
        epochs=cfg.recipe.epochs,
    )


def _attribute_check(ds: ImageDataset, tasks: list[str]) -> None:
    """One line for a task that is not an attribute of the dataset (before any write)."""
    known = list(ds.attribute_names or [])
    missing = [t for t in tasks if t not in known]
    if missing:
        raise TaskspaceError(
            f"dataset {ds.name!r} has no attribute(s) {', '.join(missing)}; "
            f"known: {', '.join(known)}"
        )


def write_matrix(rd: RunDir, delta: DeltaMatrix, cfg: SpuriousConfig) -> None:
    """The matrix stage's tables and pictures (``delta.json`` last: its finished marker)."""
    rows = [
        {"task": t, **{a: float(delta.values[i, j]) for j, a in enumerate(delta.cols)}}
        for i, t in enumerate(delta.rows)
    ]
    write_csv(rd / "delta.csv", rows, ["task", *delta.cols])
    pairs = delta.pairs(cfg.epsilon)
    write_csv(rd / "pairs.csv", pairs, list(pairs[0]) if pairs else ["task", "attr", "delta"])
    hist = delta.histogram()
    write_csv(
        rd / "histogram.csv",
        [{"delta_from": i, "cells": int(c)} for i, c in enumerate(hist.counts.tolist())],
        ["delta_from", "cells"],
    )
    plot_delta_heatmap(delta, rd / "delta.png", title="delta T[task, attr] / 100")
    plot_delta_histogram(hist, rd / "histogram.png", threshold=cfg.epsilon)
    for task in list(dict.fromkeys(p["task"] for p in pairs))[: cfg.heatmaps]:
        plot_task_heatmaps(delta, task, rd / "heatmaps")
    write_json(rd / "delta.json", delta.to_json())


def _load_delta(rd: RunDir) -> DeltaMatrix:
    return DeltaMatrix.from_json(json.loads((rd / "delta.json").read_text()))


def extract(rd: RunDir, cfg: SpuriousConfig) -> None:
    """Co-clustering, SVD + KMeans and task pairings of the stored matrix."""
    delta = _load_delta(rd)
    k = cfg.clusters or min(16, max(2, len(delta.rows) // 2))
    out: dict[str, Any] = {
        "n_clusters": k,
        "epsilon": cfg.epsilon,
        "normalize": cfg.normalize,
        "gamma": cfg.gamma,
        "n_init": cfg.n_init,
        "seed": cfg.seed,
    }
    for matrix in ("binary", "normalized", "cosine_ta", "cosine_tt"):
        try:
            co = cocluster(
                delta,
                k,
                matrix=matrix,
                epsilon=cfg.epsilon,
                normalize="softmax" if cfg.normalize == "softmax" else "zscore",
                n_init=cfg.n_init,
                seed=cfg.seed,
            )
        except (TaskspaceError, ValueError) as err:  # e.g. an all-zero binary matrix
            out[f"cocluster_{matrix}"] = {"error": str(err).splitlines()[0]}
            continue
        out[f"cocluster_{matrix}"] = {
            "rows": {str(c): v for c, v in co.row_clusters().items()},
            "columns": {str(c): v for c, v in co.column_clusters().items()},
        }
        if matrix == "binary":
            plot_delta_heatmap(
                delta,
                rd / "delta-cocluster.png",
                row_order=co.row_order,
                col_order=co.column_order,
                title=f"delta reordered by co-clustering ({k} clusters)",
            )
    if cfg.svd_input == "rows" or list(delta.rows) == list(delta.cols):
        svd = svd_kmeans(
            delta.values.numpy() if cfg.svd_input == "rows" else association(delta),
            min(k, len(delta.rows)),
            names=delta.rows,
            gamma=cfg.gamma,
            n_init=cfg.n_init,
            seed=cfg.seed,
        )
        out["svd_kmeans"] = {
            "input": cfg.svd_input,
            "d": svd.d,
            "clusters": {str(c): v for c, v in svd.clusters().items()},
        }
    pairings: dict[str, Any] = {}
    for kind in ("disjoint", "nondisjoint"):
        try:
            pairings[kind] = task_pairings(delta, kind, seed=cfg.seed)
        except TaskspaceError as err:
            pairings[kind] = {"none": str(err)}
    write_json(rd / "pairings.json", pairings)
    write_json(rd / "clusters.json", out)


def headline(rd: RunDir) -> dict[str, Any]:
    """``done.json``: the number of pairs above the threshold and the top pair."""
    pairs = read_csv(rd / "pairs.csv")
    top = pairs[0] if pairs else {}
    return {
        "pairs": len(pairs),
        "top_pair": f"{top.get('task', '')}:{top.get('attr', '')}" if top else "",
        "top_delta": float(top.get("delta", 0) or 0),
    }


def main(cfg: SpuriousConfig) -> int:
    out = run_spurious(cfg)
    if (out / "pairs.csv").exists():
        pairs = read_csv(out / "pairs.csv")
        print(f"{len(pairs)} task:attribute pairs with delta > {cfg.epsilon:g}")
        w = max([10, *(len(p["task"]) + len(p["attr"]) + 2 for p in pairs[:20])])
        for p in pairs[:20]:
            print(f"  {p['task'] + ':' + p['attr']:<{w}} {float(p['delta']):>6.1f}")
    if (out / "clusters.json").exists():
        svd = json.loads((out / "clusters.json").read_text()).get("svd_kmeans", {})
        for c, names in svd.get("clusters", {}).items():
            print(f"  cluster {c}: {', '.join(names)}")
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
