"""``taskspace robust``: group-robust training (ERM, JTT, RWY, RWG, SUBY, SUBG, Group DRO).

Trains a classifier for the grouping's target (``grouping=Task:Attr[,Attr2]``, e.g.
``Blond_Hair:Male`` on CelebA or ``large:blue`` on coloured digits) with every method in
``methods``, all ``seeds`` of a method in one batched fit, selecting each model at the
epoch end with the best validation worst-group accuracy (``select=worst``; ``avg``: best
plain average; ``last``). Writes into its run directory:

- ``results.csv``: one row per method, seed (and grid point) and split (val, test): plain
  and train-weighted average, worst group, every group's accuracy, count and Wilson 95 %
  interval;
- ``summary.csv``: the final table, per method and split, mean and std over seeds, group
  counts and intervals pooled over seeds; ``group_counts.csv`` (train/val/test);
- ``epochs.csv``: per-epoch group metrics of every model on val and test;
- ``group_accuracy.png`` (test accuracy of every group per method) and
  ``worst_group.png`` (validation worst-group accuracy over epochs);
- ``models/<method>.*`` (the selected models, an ``Ensemble``) and, for JTT,
  ``models/jtt-stage1.*`` (reused on a rerun);
- ``anchors.csv``: the published numbers for the grouping, when there are any (CelebA
  ``Blond_Hair:Male``), printed beside the table.

Methods are independent parts: a killed run resumes at the first unfinished method.
``preset=reference`` takes the reference's hyper-parameters (CelebA ResNet-50,
mml-robustness's configs) and ``preset=digits`` the CPU values for coloured digits; the
default is ``digits`` on the synthetic digit sets and ``reference`` elsewhere. ``method.*``
overrides a preset's values for every method in the list (``method.lr=1e-3``,
``method.lambda_up=20``). ``grid.lr=[...] grid.weight_decay=[...]`` trains every
(lr, wd) point x seed of a method as ONE batched fit and reports the best point by
validation worst-group accuracy; ``taskspace robust -m method.lr=... seeds=[0,1]`` sweeps
with one run per point instead.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskspace.commands.report import write_run_report
from taskspace.config import option, to_dict
from taskspace.data import ImageDataset
from taskspace.data.config import DataConfig, load_data
from taskspace.engine import Ensemble
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv
from taskspace.report.robust_plots import plot_group_accuracy, plot_worst_over_epochs
from taskspace.robustness import (
    METHODS,
    PRESETS,
    Grouping,
    RobustResult,
    final_table,
    fit_grid,
    fit_robust,
    method_config,
    parse_grouping,
    require_groups,
)
from taskspace.runs import RunDir

__all__ = ["RobustConfig", "main", "run_robust"]

#: Datasets whose default preset is ``digits`` (the CPU values).
DIGIT_SETS = ("coloured_digits", "colored_digits", "waterdigits")
#: Default grouping per dataset.
DEFAULT_GROUPING = {
    "coloured_digits": "large:blue",
    "colored_digits": "large:blue",
    "waterdigits": "large:flower",
    "celeba": "Blond_Hair:Male",
}
#: Published test numbers (%, avg / worst) for a grouping (reference/robustness.md sec. 7).
ANCHORS = {
    "Blond_Hair:Male": [
        ("ERM", "95.6", "47.2", "Liu et al. 2021 (JTT), Table 1"),
        ("JTT", "88.0", "81.1", "JTT Table 1; Kirichenko et al. 2023 (DFR) Table 2"),
        ("Group DRO (strong l2)", "92.9", "88.9", "Sagawa et al. 2020, as cited by JTT/DFR"),
        ("SUBG", "", "85.6 +- 2.3", "Idrissi et al. 2022, via DFR"),
        ("DFR", "91.3 +- 0.3", "88.3 +- 1.1", "DFR Table 2"),
    ]
}
#: Per-epoch metrics kept in ``epochs.csv`` (besides ``g{j}_acc``).
EPOCH_METRICS = ("avg_acc", "weighted_avg_acc", "worst_group_acc")


@dataclass
class RobustModel:
    """The learner: a registry name and its overrides (default: the preset's)."""

    name: str | None = option(None, "architecture (default: the preset's: digits mlp)")
    kwargs: dict[str, Any] | None = option(None, "architecture overrides (default: preset's)")


@dataclass
class MethodOverrides:
    """Overrides of the preset's hyper-parameters, applied to every method in the list."""

    lr: float | None = option(None, "learning rate")
    weight_decay: float | None = option(None, "weight decay")
    batch_size: int | None = option(None, "batch size")
    epochs: float | None = option(None, "epochs (of the method's own training list)")
    optimizer: str | None = option(None, "sgd or adam")
    momentum: float | None = option(None, "SGD momentum")
    loss: str | None = option(None, "ce (2-way cross-entropy) or bce (the reference's logit)")
    jtt_epochs: float | None = option(None, "JTT: ERM epochs of stage 1 (T)")
    lambda_up: int | None = option(None, "JTT: copies of an error example in total")
    jtt_copies: str | None = option(None, "JTT: total (the paper) or extra (mml-robustness)")
    reweight: str | None = option(None, "RWY/RWG: sample (with replacement) or loss")
    eta_q: float | None = option(None, "Group DRO: step size of q")
    adjustment: float | None = option(None, "Group DRO: C of the size adjustment C/sqrt(n_g)")
    balanced: bool | None = option(None, "Group DRO: group-balanced sampler")


@dataclass
class GridOptions:
    """A learning-rate x weight-decay grid trained as one batched fit per method."""

    lr: list[float] | None = option(None, "learning rates, e.g. [1e-3,1e-2]")
    weight_decay: list[float] | None = option(None, "weight decays, e.g. [1e-4,1e-2]")


@dataclass
class RobustConfig:
    """Options of ``taskspace robust``."""

    data: DataConfig = option(
        factory=lambda: DataConfig(name="coloured_digits"),
        selector="name",
        help="images with 0/1 attributes (coloured_digits, waterdigits, celeba)",
    )
    grouping: str | None = option(
        None, "Task:Attr[,Attr2] (default: large:blue, large:flower, Blond_Hair:Male)"
    )
    eval_grouping: str | None = option(None, "grouping of evaluation (default: grouping)")
    methods: str = option("erm,jtt,rwg,subg,dro", f"comma-separated, of {', '.join(METHODS)}")
    preset: str | None = option(
        None, "reference, digits or celeba_cpu (default: digits on digit sets, else reference)"
    )
    method: MethodOverrides = option(factory=MethodOverrides, help="preset overrides")
    grid: GridOptions = option(factory=GridOptions, help="a batched lr x wd grid")
    model: RobustModel = option(factory=RobustModel, help="the learner")
    select: str = option("worst", "model selection on val: worst, avg or last")
    seeds: list[int] = option(factory=lambda: [0, 1, 2], help="one model per seed")
    device: str = option("cpu", "cpu or cuda")
    batched: bool | None = option(None, "force vmap (true) or the per-model loop (false)")
    chunk_size: int | None = option(None, "models per batched chunk (default: by memory)")
    out: str | None = option(None, "run directory (default runs/robust-<data>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


NON_RESULT_KEYS = {"out", "progress", "device", "batched", "chunk_size", "report"}
#: The metric a sweep of this command selects its best point by (higher is better).
SWEEP_SELECT = "val_worst"


@dataclass
class Plan:
    """What a run trains: the dataset, groupings, methods and their configs."""

    dataset: ImageDataset
    grouping: Grouping
    eval_grouping: Grouping
    preset: str
    methods: list[str]
    overrides: dict[str, Any]
    points: list[dict[str, float]]


def plan(cfg: RobustConfig) -> Plan:
    """Validate every option before anything is written (one line per mistake)."""
    methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if not methods or unknown:
        raise TaskspaceError(
            f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from "
            f"{', '.join(METHODS)}"
        )
    if len(set(methods)) != len(methods):
        raise TaskspaceError(f"methods lists a method twice: {cfg.methods}")
    if cfg.select not in ("worst", "avg", "last"):
        raise TaskspaceError(f"select must be worst, avg or last, got {cfg.select!r}")
    if not cfg.seeds:
        raise TaskspaceError("seeds must name at least one seed")
    preset = cfg.preset or ("digits" if cfg.data.name in DIGIT_SETS else "reference")
    if preset not in PRESETS:
        raise TaskspaceError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    overrides = {k: v for k, v in to_dict(cfg.method).items() if v is not None}
    for m in methods:
        method_config(m, preset, **overrides)  # checks every value
    none: list[float | None] = [None]
    lrs: list[float | None] = list(cfg.grid.lr) if cfg.grid.lr else none
    wds: list[float | None] = list(cfg.grid.weight_decay) if cfg.grid.weight_decay else none
    points = [
        {k: v for k, v in (("lr", lr), ("weight_decay", wd)) if v is not None}
        for lr, wd in itertools.product(lrs, wds)
    ]
    points = [p for p in points if p]
    dataset = load_data(cfg.data, progress=cfg.progress)
    if dataset.attributes is None or dataset.attribute_names is None:
        raise TaskspaceError(
            f"dataset {cfg.data.name!r} has no attributes; use coloured_digits, "
            "waterdigits or celeba"
        )
    for split in ("train", "val"):
        dataset.split(split)  # a clear line when the dataset lacks it
    spec = cfg.grouping or DEFAULT_GROUPING.get(cfg.data.name)
    if spec is None:
        raise TaskspaceError("give grouping=Task:Attr (e.g. grouping=Blond_Hair:Male)")
    grouping = parse_grouping(spec, dataset.attribute_names)
    eval_g = parse_grouping(cfg.eval_grouping or spec, dataset.attribute_names)
    counts = grouping.group_counts(dataset, "train")
    classes = grouping.class_counts(dataset, "train")
    for m in methods:  # e.g. RWG, SUBG, Group DRO refuse an empty training group
        require_groups(method_config(m, preset, **overrides), grouping, counts, classes)
    return Plan(dataset, grouping, eval_g, preset, methods, overrides, points)


def _fit(cfg: RobustConfig, p: Plan, method: str, rd: RunDir) -> list[RobustResult]:
    """One method: every seed (and grid point) of it, batched."""
    models = rd / "models"
    kw: dict[str, Any] = dict(
        preset=p.preset,
        seeds=cfg.seeds,
        model=cfg.model.name,
        model_kwargs=cfg.model.kwargs,
        eval_grouping=p.eval_grouping,
        test_split="test" if "test" in p.dataset.splits else None,
        select=cfg.select,
        device=cfg.device,
        batched=cfg.batched,
        chunk_size=cfg.chunk_size,
        progress=cfg.progress,
        **p.overrides,
    )
    if method == "jtt":
        stage1 = models / "jtt-stage1.json"
        if stage1.exists() and not p.points:
            kw["stage1"] = Ensemble.load(stage1)
        elif not p.points:
            kw["stage1_save_to"] = stage1
    if p.points:
        return fit_grid(p.dataset, p.grouping, method, p.points, **kw)
    return [fit_robust(p.dataset, p.grouping, method, **kw)]


def _rows(results: list[RobustResult], grid: bool) -> tuple[list[dict], list[dict], list[dict]]:
    """Final rows (per seed and split), summary rows (the final table: mean and std over
    seeds, pooled intervals) and per-epoch rows of one method's results."""
    final, summary, epochs = [], [], []
    keep = set(EPOCH_METRICS) | {f"g{j}_acc" for j in range(results[0].eval_grouping.num_groups)}
    for r in results:
        point = {"lr": r.config.lr, "weight_decay": r.config.weight_decay} if grid else {}
        for row in r.rows():
            row.pop("model", None)
            final.append({**row, **point})
        for row in final_table({r.method: r.metrics}, list(r.metrics)):
            summary.append({"method": row.pop("method"), **point, **row})
        for h in r.history:
            if h["metric"] in keep:
                epochs.append(
                    {
                        "method": r.method,
                        **point,
                        "seed": h["seed"],
                        "epoch": h["epoch"],
                        "split": h["set"],
                        "metric": h["metric"],
                        "value": h["value"],
                    }
                )
    return final, summary, epochs


def run_robust(cfg: RobustConfig) -> Path:
    """Run (or resume) ``taskspace robust``; returns the run directory."""
    rd = RunDir.for_config(cfg, "robust", NON_RESULT_KEYS, cfg.out, [cfg.data.name])
    rd.check(cfg)
    if rd.finished():
        return rd.path
    p = plan(cfg)
    rd.start(cfg)
    grid = bool(p.points)
    for i, method in enumerate(p.methods):
        if rd.part(i).exists():
            continue
        results = _fit(cfg, p, method, rd)
        final, summary, epochs = _rows(results, grid)
        if not grid:
            results[0].ensemble.save(rd / "models" / f"{method}.json")
        write_csv(rd.part(i, "epochs.csv"), epochs, list(epochs[0]) if epochs else ["method"])
        write_csv(rd.part(i, "summary.csv"), summary, list(summary[0]))
        write_csv(rd.part(i), final, list(final[0]))  # the method's finished marker
    merge(rd, p)
    return rd.path


def merge(rd: RunDir, p: Plan) -> None:
    """The run's tables and pictures from its finished parts."""
    n = len(p.methods)
    final = rd.merged_rows(n)
    epochs = [r for i in range(n) for r in read_csv(rd.part(i, "epochs.csv"))]
    summary = [r for i in range(n) for r in read_csv(rd.part(i, "summary.csv"))]
    write_csv(rd / "results.csv", final, list(final[0]))
    write_csv(rd / "epochs.csv", epochs, list(epochs[0]))
    write_csv(rd / "summary.csv", summary, list(summary[0]))
    counts = [
        {
            "split": split,
            **{
                f"g{j} {name}": int(c)
                for j, (name, c) in enumerate(
                    zip(
                        p.eval_grouping.group_names(),
                        p.eval_grouping.group_counts(p.dataset, split),
                    )
                )
            },
        }
        for split in ("train", "val", "test")
        if split in p.dataset.splits
    ]
    write_csv(rd / "group_counts.csv", counts, list(counts[0]))
    anchors = ANCHORS.get(str(p.grouping), [])
    if anchors:
        write_csv(
            rd / "anchors.csv",
            [dict(zip(("method", "avg", "worst", "source"), a)) for a in anchors],
            ["method", "avg", "worst", "source"],
        )
    plot_group_accuracy(summary, p.eval_grouping.group_names(), rd / "group_accuracy.png")
    plot_worst_over_epochs(epochs, rd / "worst_group.png")
    rd.mark_finished({"grouping": str(p.eval_grouping), **headline(summary, p.methods)})


def headline(summary: list[dict], methods: list[str]) -> dict[str, float]:
    """``done.json`` metrics: per method test average, val and test worst group (means
    over seeds; for a grid, at the point with the best validation worst group, and that
    point); with one method also ``val_worst`` / ``test_worst`` (sweep selection)."""
    out: dict[str, float] = {}
    for m in methods:
        rows = [r for r in summary if r["method"] == m]
        val = [r for r in rows if r["split"] == "val"]
        best = max(val, key=lambda r: float(r["worst_group_acc_mean"]))  # a grid's best point
        at = [r for r in rows if r.get("lr") == best.get("lr")]
        at = [r for r in at if r.get("weight_decay") == best.get("weight_decay")]
        for r in at:
            out[f"{m}_{r['split']}_worst"] = round(float(r["worst_group_acc_mean"]), 6)
            if r["split"] == "test":
                out[f"{m}_test_avg"] = round(float(r["avg_acc_mean"]), 6)
        if best.get("lr") not in (None, ""):
            out[f"{m}_best_lr"] = float(best["lr"])
            out[f"{m}_best_weight_decay"] = float(best["weight_decay"])
    if len(methods) == 1:
        m = methods[0]
        for split in ("val", "test"):
            if f"{m}_{split}_worst" in out:
                out[f"{split}_worst"] = out[f"{m}_{split}_worst"]
    return out


def format_table(summary: list[dict], split: str = "test") -> str:
    """Aligned text of the final table on one split."""
    rows = [r for r in summary if r["split"] == split]
    if not rows:
        return ""
    groups = sorted(
        {int(k[1:].split("_")[0]) for k in rows[0] if k.startswith("g") and k.endswith("_count")}
    )
    w = max([8, *(len(_label(r)) + 1 for r in rows)])
    head = f"{'method':<{w}} {'avg':>13} {'w. avg':>13} {'worst':>13}"
    head += "".join(f" {f'g{j}':>13}" for j in groups)
    lines = [f"{split} accuracy, mean +- std over seeds", head]
    for r in rows:
        cells = [
            _pm(r[f"{k}_mean"], r[f"{k}_std"])
            for k in ("avg_acc", "weighted_avg_acc", "worst_group_acc")
        ]
        cells += [_pm(r[f"g{j}_acc_mean"], r[f"g{j}_acc_std"]) for j in groups]
        lines.append(f"{_label(r):<{w}}" + "".join(f" {c:>13}" for c in cells))
    counts = " ".join(f"g{j} {int(rows[0][f'g{j}_count'])}" for j in groups)
    lines.append(f"{'':<{w}} images per group: {counts}")
    return "\n".join(lines)


def _label(r: dict) -> str:
    if "lr" in r and r["lr"] not in ("", None):
        return f"{r['method']} lr={float(r['lr']):g} wd={float(r['weight_decay']):g}"
    return str(r["method"])


def _pm(mean: Any, std: Any) -> str:
    return f"{float(mean):.3f} +- {float(std):.3f}"


def main(cfg: RobustConfig) -> int:
    out = run_robust(cfg)
    summary = read_csv(out / "summary.csv")
    print(format_table(summary, "test" if any(r["split"] == "test" for r in summary) else "val"))
    anchors = read_csv(out / "anchors.csv") if (out / "anchors.csv").exists() else []
    if anchors:
        print(
            "published (test %, avg / worst): "
            + "; ".join(f"{a['method']} {a['avg'] or '-'} / {a['worst']}" for a in anchors)
        )
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
