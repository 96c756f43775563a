"""``taskspace affinity``: which tasks help which (TAG, CS or HOA), and which to train together.

Stages, each resumable part by part (a part per seed; rerunning the same command skips
finished parts, so a killed run loses at most the part it was in):

1. **affinity** (``kind=tag|cs|hoa``): TAG's lookahead affinity or the gradient cosine
   (:func:`taskspace.mtl.affinity.task_affinity`, one multi-task network per seed), or HOA
   (:func:`taskspace.mtl.hoa.hoa_affinity`: every single and pair network per seed).
   Writes ``affinity.csv``, ``per_epoch.csv``, ``affinity.png`` and
   ``affinity_seeds.png``.
2. **evaluate** (``evaluate=true``): exact selection for every budget (``budgets``,
   default 1..n), then every chosen network and the baselines (all tasks in one network,
   one network per task) trained as plain multi-task networks (equal weights), per seed;
   HOA's singles and pairs are reused. Writes ``selections.json``, ``groups.csv`` (every
   network, seed, task and split: loss, error, epoch kept), ``comparison.csv`` (per arm
   ``B=<b>`` / ``all-in-one`` / ``one-per-task``: each task from the network serving it,
   and the total over tasks; mean and std over seeds), ``groups.png`` and
   ``comparison.png``.

**affinity.csv orientation.** Rows are *sources*, columns *targets*, the first column the
row's task name, for every kind: TAG/CS ``Z[source, target]`` (row i = i's effect on each
task); HOA ``[partner, task]``: the value in row o, column t is task t's validation loss
(or error, ``metric=error``) in the network trained on {t, o}, the diagonal t's single-task
network. Selection reads the transpose, ``A[t][o]`` "onto t from o" (``taskspace group
run=...`` does so with its default ``orientation=source_target``); ``config.yaml``'s
``kind`` says how to read it (HOA: lower is better).

Data: ``data=planted`` (default; :mod:`taskspace.mtl.planted`, options ``planted.*``, its
splits sized by ``data.train_size`` / ``data.heldout`` (val) / ``data.test_size``) or any
dataset; tasks from ``tasks=`` (``attributes``: one per 0/1 attribute; ``human``,
``random``, ``original``, task files, as ``taskspace agreement``), optionally narrowed to
``names=[a, b, ...]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.data.config import DataConfig, load_data
from taskspace.data.dataset import ImageDataset
from taskspace.engine import Recipe
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_json
from taskspace.mtl.affinity import task_affinity
from taskspace.mtl.hoa import fit_groups, hoa_affinity
from taskspace.mtl.pipeline import (
    COMPARISON_COLUMNS,
    arms,
    comparison_rows,
    networks_to_train,
    selections_for,
)
from taskspace.mtl.planted import PLANTED_MODEL, PLANTED_SIZES, load_planted
from taskspace.mtl.selection import Selection
from taskspace.report.affinity_plots import (
    plot_affinity_heatmap,
    plot_affinity_seeds,
    plot_comparison,
    plot_groups,
)
from taskspace.runs import RunDir
from taskspace.tasks.spec import tasks_from_spec
from taskspace.tasks.taskset import TaskSet

__all__ = ["AffinityConfig", "main", "run_affinity"]

KINDS = ("tag", "cs", "hoa")
GROUP_COLUMNS = ["group", "members", "size", "seed", "task", "split", "loss", "error", "epoch"]


@dataclass
class PlantedOptions:
    """The planted set's own options (``data=planted`` only)."""

    families: int = option(2, "task families (three tasks each: two signs and their XOR)")
    noise: float = option(1.0, "pixel noise")
    label_noise: float = option(0.0, "fraction of training labels flipped per task")
    image_size: int = option(8, "image side")


@dataclass
class AffinityModel:
    """The learner of every network (affinity run, HOA pairs, group training)."""

    name: str = option(PLANTED_MODEL[0], "architecture (registry name)")
    kwargs: dict[str, Any] = option(
        factory=lambda: dict(PLANTED_MODEL[1]), help="architecture overrides"
    )


@dataclass
class AffinityRecipe:
    """Training of every network."""

    optimizer: str = option("adam", "adam or sgd")
    lr: float = option(3e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum")
    weight_decay: float = option(0.0, "weight decay")
    batch_size: int = option(64, "batch size")
    epochs: float = option(60.0, "epochs of the group (and HOA) networks")
    affinity_epochs: float = option(20.0, "epochs of TAG/CS's all-task network")


@dataclass
class AffinityConfig:
    """Options of ``taskspace affinity``."""

    data: DataConfig = option(
        factory=lambda: DataConfig(name="planted"),
        selector="name",
        help="planted (default: synthetic families of tasks) or any dataset",
    )
    planted: PlantedOptions = option(factory=PlantedOptions, help="the planted set")
    tasks: str = option("attributes", "attributes, human, random, original or task files")
    names: list[str] | None = option(None, "keep only these tasks (by name)")
    num_tasks: int = option(8, "human and random tasks each")
    kind: str = option("tag", "tag (lookahead), cs (gradient cosine) or hoa (pair trainings)")
    model: AffinityModel = option(factory=AffinityModel, help="the learner")
    recipe: AffinityRecipe = option(factory=AffinityRecipe, help="its training")
    seeds: list[int] = option(factory=lambda: [0, 1, 2], help="one network per seed")
    every: int = option(1, "TAG/CS: every k-th step of an epoch (1: CelebA, 10: Taskonomy)")
    lookahead: str = option("sgd", "TAG: sgd, optimizer or taskonomy_bug")
    scale_by_lr: bool = option(True, "TAG: divide by the lr (both originals)")
    epoch_agg: str = option("sum", "TAG/CS over epochs: sum (originals) or mean")
    drop_after_best: int = option(0, "TAG/CS: drop the last k epochs (CelebA: 10)")
    metric: str = option("loss", "HOA's score: loss (Taskonomy) or error (CelebA)")
    select: str = option("best", "every network's epoch: best summed val loss, or last")
    task_loss: str = option("ce", "ce (2-way softmax per task) or bce")
    budgets: list[int] | None = option(None, "budgets B of the selection (default 1..n)")
    evaluate: bool = option(True, "train the chosen groups and the baselines")
    device: str = option("cpu", "cpu or cuda")
    out: str | None = option(None, "run directory (default runs/affinity-<data>-<kind>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


#: Options that do not change the affinity or the trained networks: ``budgets`` and
#: ``evaluate`` only choose which networks the evaluate stage trains (each network's rows
#: are kept, so a rerun with other budgets trains only what is new).
NON_RESULT_KEYS = {"out", "progress", "device", "report", "budgets", "evaluate"}


# ------------------------------------------------------------------------------ inputs
def _check(cfg: AffinityConfig) -> None:
    if cfg.kind not in KINDS:
        raise TaskspaceError(f"kind must be tag, cs or hoa, got {cfg.kind!r}")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise TaskspaceError(f"seeds must be distinct and at least one, got {cfg.seeds}")
    if cfg.budgets is not None and (not cfg.budgets or min(cfg.budgets) < 1):
        raise TaskspaceError(
            f"budgets must be integers >= 1 (B < 1 has no network), got {cfg.budgets}"
        )
    if cfg.metric not in ("loss", "error"):
        raise TaskspaceError(f"metric must be loss or error, got {cfg.metric!r}")
    if cfg.select not in ("best", "last"):
        raise TaskspaceError(f"select must be best or last, got {cfg.select!r}")
    if cfg.task_loss not in ("ce", "bce"):
        raise TaskspaceError(f"task_loss must be ce or bce, got {cfg.task_loss!r}")
    if cfg.every < 1:
        raise TaskspaceError(f"every must be >= 1, got {cfg.every}")
    _recipe(cfg)


def _recipe(cfg: AffinityConfig, epochs: float | None = None) -> Recipe:
    r = cfg.recipe
    if r.optimizer not in ("adam", "sgd"):
        raise TaskspaceError(f"recipe.optimizer must be adam or sgd, got {r.optimizer!r}")
    return Recipe(
        optimizer="sgd" if r.optimizer == "sgd" else "adam",
        lr=r.lr,
        momentum=r.momentum,
        weight_decay=r.weight_decay,
        batch_size=r.batch_size,
        epochs=r.epochs if epochs is None else epochs,
    )


def load_dataset_of(cfg: AffinityConfig) -> ImageDataset:
    """The planted set (``data=planted``) or the dataset ``data`` names."""
    d = cfg.data
    if d.name != "planted":
        return load_data(d, progress=cfg.progress)
    if d.root is not None:
        raise TaskspaceError("the planted set is made on the fly and takes no data.root")
    sizes = (
        PLANTED_SIZES[0] if d.train_size is None else int(d.train_size),
        PLANTED_SIZES[1] if d.heldout is None else int(d.heldout),
        PLANTED_SIZES[2] if d.test_size is None else int(d.test_size),
    )
    p = cfg.planted
    return load_planted(
        families=p.families,
        image_size=p.image_size,
        noise=p.noise,
        label_noise=p.label_noise,
        sizes=sizes,
        seed=0 if d.split_seed is None else d.split_seed,
    )


def task_set(cfg: AffinityConfig, ds: ImageDataset) -> TaskSet:
    """The tasks of the run (``tasks``, narrowed to ``names``); at least two."""
    tasks = tasks_from_spec(cfg.tasks, ds, num_tasks=cfg.num_tasks, seed=0)
    if cfg.names is not None:
        unknown = [n for n in cfg.names if n not in tasks.names]
        if unknown:
            raise TaskspaceError(
                f"unknown task name(s) {', '.join(map(str, unknown))}; known: "
                f"{', '.join(tasks.names)}"
            )
        tasks = tasks.select([str(n) for n in cfg.names])
    if len(tasks) < 2:
        raise TaskspaceError(f"task grouping needs at least two tasks, got {len(tasks)}")
    return tasks


# ------------------------------------------------------------------------------ stage 1
def _part(rd: RunDir, stage: str, seed: int, suffix: str) -> Path:
    return rd / "parts" / f"{stage}-seed{seed}.{suffix}"


def _affinity_part(cfg: AffinityConfig, ds: ImageDataset, tasks: TaskSet, seed: int) -> dict:
    """One seed's affinity: the matrix as ``[source, target]``, per-epoch rows, and
    (HOA) its networks' rows."""
    y = tasks.labels.T.long()
    common: dict[str, Any] = dict(
        names=list(tasks.names),
        model=cfg.model.name,
        model_kwargs=dict(cfg.model.kwargs),
        seeds=[seed],
        task_loss=cfg.task_loss,
        device=cfg.device,
        progress=cfg.progress,
    )
    if cfg.kind == "hoa":
        res = hoa_affinity(
            ds,
            y,
            recipe=_recipe(cfg),
            metric=cfg.metric,  # type: ignore[arg-type]
            select=cfg.select,  # type: ignore[arg-type]
            test_split="test" if "test" in ds.splits else None,
            **common,
        )
        return {
            "matrix": res.per_seed[0].T.tolist(),  # [partner, task]
            "per_epoch": [{**r, "seed": seed} for r in res.fit.history],
            "groups": res.fit.rows,
            "seconds": res.seconds,
            "networks": res.networks,
        }
    res_t = task_affinity(
        ds,
        y,
        kind=cfg.kind,  # type: ignore[arg-type]
        recipe=_recipe(cfg, cfg.recipe.affinity_epochs),
        every=cfg.every,
        lookahead=cfg.lookahead,  # type: ignore[arg-type]
        scale_by_lr=cfg.scale_by_lr,
        epoch_agg=cfg.epoch_agg,  # type: ignore[arg-type]
        drop_after_best=cfg.drop_after_best,
        **common,
    )
    return {
        "matrix": res_t.per_seed[0].tolist(),  # Z[source, target]
        "per_epoch": res_t.rows(),
        "groups": [],
        "networks": 1,
    }


def affinity_stage(cfg: AffinityConfig, rd: RunDir, ds: ImageDataset, tasks: TaskSet) -> dict:
    """Every seed's part (trained when missing), merged: ``affinity.csv`` and pictures."""
    parts = []
    for seed in cfg.seeds:
        path = _part(rd, "affinity", seed, "json")
        if not path.exists():
            write_json(path, _affinity_part(cfg, ds, tasks, seed))
        parts.append(json.loads(path.read_text()))
    names = list(tasks.names)
    per_seed = np.array([p["matrix"] for p in parts], dtype=np.float64)
    mean = per_seed.mean(0)
    corner = "partner" if cfg.kind == "hoa" else "source"
    write_csv(
        rd / "affinity.csv",
        [
            {corner: n, **{t: float(mean[i, j]) for j, t in enumerate(names)}}
            for i, n in enumerate(names)
        ],
        [corner, *names],
    )
    epoch_rows = [r for p in parts for r in p["per_epoch"]]
    if epoch_rows:
        write_csv(rd / "per_epoch.csv", epoch_rows, list(epoch_rows[0]))
    plot_affinity_heatmap(mean, names, cfg.kind, rd / "affinity.png")
    plot_affinity_seeds(per_seed, cfg.seeds, names, cfg.kind, rd / "affinity_seeds.png")
    return {"matrix": mean, "per_seed": per_seed, "parts": parts}


# ------------------------------------------------------------------------------ stage 2
def _have(rd: RunDir, seed: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for p in sorted((rd / "parts").glob(f"groups-seed{seed}-*.csv")):
        rows += read_csv(p)
    return rows


def evaluate_stage(
    cfg: AffinityConfig, rd: RunDir, ds: ImageDataset, tasks: TaskSet, aff: dict
) -> list[dict[str, Any]]:
    """Selections, the networks they need (per seed, only those not trained yet), the
    comparison table and its pictures."""
    names = list(tasks.names)
    A = torch.from_numpy(np.ascontiguousarray(aff["matrix"].T))  # onto t from o
    selections: dict[int, Selection] = selections_for(A, cfg.kind, names, cfg.budgets)
    write_json(
        rd / "selections.json",
        {"kind": cfg.kind, "selections": [s.to_json() for s in selections.values()]},
    )
    arm_map = arms(selections, names)
    nets = networks_to_train(arm_map)
    all_rows: list[dict[str, Any]] = []
    for seed, part in zip(cfg.seeds, aff["parts"]):
        have = [*part["groups"], *_have(rd, seed)]
        done = {str(r["members"]) for r in have}
        todo = [g for g in nets if "+".join(names[i] for i in g) not in done]
        if todo:
            fit = fit_groups(
                ds,
                tasks.labels.T.long(),
                todo,
                names=names,
                model=cfg.model.name,
                model_kwargs=dict(cfg.model.kwargs),
                recipe=_recipe(cfg),
                seeds=[seed],
                select=cfg.select,  # type: ignore[arg-type]
                task_loss=cfg.task_loss,  # type: ignore[arg-type]
                test_split="test" if "test" in ds.splits else None,
                device=cfg.device,
                progress=cfg.progress,
            )
            k = len(list((rd / "parts").glob(f"groups-seed{seed}-*.csv")))
            path = write_csv(
                rd / "parts" / f"groups-seed{seed}-{k:03d}.csv", fit.rows, GROUP_COLUMNS
            )
            have += read_csv(path)  # as stored, so a resumed run sums the same numbers
        all_rows += have
    write_csv(rd / "groups.csv", all_rows, GROUP_COLUMNS)
    rows = comparison_rows(arm_map, all_rows, names, cfg.seeds)
    write_csv(rd / "comparison.csv", rows, COMPARISON_COLUMNS)
    plot_groups([s.to_json() for s in selections.values()], names, rd / "groups.png")
    plot_comparison(rows, rd / "comparison.png")
    return rows


# ------------------------------------------------------------------------------ command
def run_affinity(cfg: AffinityConfig) -> Path:
    """Run (or resume) ``taskspace affinity``; returns the run directory."""
    _check(cfg)
    ds = load_dataset_of(cfg)
    tasks = task_set(cfg, ds)
    if cfg.budgets is not None and max(cfg.budgets) > len(tasks):
        print(f"note: budgets above {len(tasks)} (the task count) add nothing")
    rd = RunDir.for_config(cfg, "affinity", NON_RESULT_KEYS, cfg.out, [cfg.data.name, cfg.kind])
    rd.start(cfg)
    aff = affinity_stage(cfg, rd, ds, tasks)
    headline: dict[str, Any] = {"kind": cfg.kind, "tasks": len(tasks)}
    if cfg.evaluate:
        rows = evaluate_stage(cfg, rd, ds, tasks, aff)
        for r in rows:
            if r["task"] == "total":
                headline[f"val_loss_{r['arm']}"] = round(float(r["val_loss"]), 6)
    rd.mark_finished(headline)
    return rd.path


def _print_summary(out: Path) -> None:
    rows = read_csv(out / "comparison.csv") if (out / "comparison.csv").exists() else []
    sel = out / "selections.json"
    if sel.exists():
        for s in json.loads(sel.read_text())["selections"]:
            groups = "; ".join(
                "{" + ",".join(g) + "}" + (f"->{','.join(v)}" if len(v) != len(g) else "")
                for g, v in zip(s["groups"], s["serves"])
            )
            print(f"B={s['budget']}: {groups}")
    totals = [r for r in rows if r["task"] == "total"]
    if totals:
        print(f"{'arm':<14} {'networks':>8} {'val loss':>17} {'test loss':>10} {'val error':>10}")
        for r in totals:
            print(
                f"{r['arm']:<14} {r['networks']:>8} {float(r['val_loss']):>9.4f} +- "
                f"{float(r['val_loss_std']):.4f} {float(r['test_loss']):>10.4f} "
                f"{float(r['val_error']):>10.4f}"
            )


def main(cfg: AffinityConfig) -> int:
    out = run_affinity(cfg)
    print(f"affinity matrix ({cfg.kind}, rows = sources/partners): {out / 'affinity.csv'}")
    _print_summary(out)
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
