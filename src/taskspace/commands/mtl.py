"""``taskspace mtl``: several groupings in one network vs one network per grouping.

Trains the groupings of ``groupings`` (``Task:Attr`` each, comma-separated in the order of
the heads) in up to three arms, each a resumable part with all ``seeds`` batched:

- ``stl``: one network per grouping (``fit_robust``, the single-task baseline);
- ``static``: one multi-task network, shared trunk and one head per task, static task
  weights (``task_weights``: all 1 by default, or summing to 1);
- ``lbtw``: the same network with Loss-Balanced Task Weighting (``alpha``, the official
  renormalised form; ``normalize=false`` is mml-robustness's unnormalised one, and
  ``force_lbtw=true`` its forced-on setting);
- ``equal``, ``uw``, ``gradnorm``, ``pcgrad``: the same network with the multi-task
  baselines of :mod:`taskspace.mtl.weighting` (``uw_variant=kendall|tag_celeba|libmtl``,
  ``gradnorm_variant=tag_celeba|libmtl`` and ``gradnorm_alpha``, ``pcgrad_order=shuffle|
  fixed`` on ``pcgrad_inner=equal|uw``, ``weighting_lr`` for the learned weights, default
  the fit's step learning rate).

``weighting=NAME`` trains the multi-task arm with that weighting: the arms become ``stl``
(when listed) and ``NAME``, e.g. ``taskspace mtl weighting=gradnorm``; TAG CelebA's PCGrad
baseline is ``weighting=pcgrad pcgrad_order=fixed pcgrad_inner=uw uw_variant=tag_celeba``.

Writes ``summary.csv`` (per arm, task and split: mean and std over seeds of the plain
and train-weighted average, the worst group and every group), ``results.csv`` (every
network, task and split), ``group_accuracy.png`` and the report. ``method=jtt`` uses JTT
in every arm (the multi-task merge ``mtl_join=xor|inv``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taskspace.commands.report import write_run_report
from taskspace.commands.robust import DIGIT_SETS, RobustModel
from taskspace.config import option
from taskspace.data.config import DataConfig, load_data
from taskspace.engine import check_task_weights
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv
from taskspace.mtl.weighting import WEIGHTINGS, make_weighting
from taskspace.report.robust_plots import plot_group_accuracy
from taskspace.robustness import fit_mtl, fit_robust, parse_grouping
from taskspace.runs import RunDir

__all__ = ["MtlConfig", "main", "run_mtl"]

ARMS = ("stl", *WEIGHTINGS)
#: The arms trained through fit_mtl's own weighting strings.
_BUILTIN = ("static", "lbtw")


@dataclass
class MtlConfig:
    """Options of ``taskspace mtl``."""

    data: DataConfig = option(
        factory=lambda: DataConfig(name="celeba_lite"),
        selector="name",
        help="images with 0/1 attributes",
    )
    groupings: str = option(
        "Square:Red,Large:Red", "Task:Attr groupings, comma-separated (one head each)"
    )
    arms: str = option(
        "stl,static,lbtw", "which of stl, static, lbtw, equal, uw, gradnorm, pcgrad to train"
    )
    weighting: str | None = option(
        None, "train the multi-task arm with this weighting (arms: stl, if listed, and it)"
    )
    method: str = option("erm", "erm or jtt")
    mtl_join: str = option("xor", "JTT's multi-task merge: xor or inv")
    task_weights: list[float] | None = option(None, "static weights: all 1 or summing to 1")
    alpha: float = option(0.5, "LBTW's exponent")
    normalize: bool = option(True, "LBTW renormalised to sum T (official); false: original")
    force_lbtw: bool = option(False, "mml-robustness's forced, unnormalised LBTW")
    uw_variant: str = option("kendall", "uncertainty weighting: kendall, tag_celeba or libmtl")
    gradnorm_variant: str = option("tag_celeba", "GradNorm: tag_celeba or libmtl")
    gradnorm_alpha: float | None = option(None, "GradNorm's alpha (default 0.1 / 1.5)")
    pcgrad_order: str = option("shuffle", "PCGrad's order of projections: shuffle or fixed")
    pcgrad_inner: str = option("equal", "PCGrad's loss weighting first: equal or uw")
    weighting_lr: float | None = option(
        None, "lr of learned task weights (default: the fit's step lr)"
    )
    task_loss: str = option("bce", "bce (the reference) or ce per task")
    preset: str | None = option(None, "reference or digits (default: digits on small sets)")
    select: str = option("average", "average (mean of worst groups), best-worst or last")
    epochs: float | None = option(None, "epochs (default: the preset's)")
    model: RobustModel = option(factory=RobustModel, help="the network (default: preset's)")
    seeds: list[int] = option(factory=lambda: [0, 1, 2], help="one network per seed")
    device: str = option("cpu", "cpu or cuda")
    out: str | None = option(None, "run directory (default runs/mtl-<data>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


NON_RESULT_KEYS = {"out", "progress", "device", "report"}
#: Small synthetic sets train with the CPU preset by default.
SMALL_SETS = (*DIGIT_SETS, "celeba_lite")


def _weighting(cfg: MtlConfig, arm: str) -> Any:
    """The weighting of a multi-task arm outside ``static`` / ``lbtw``."""
    lr = {} if cfg.weighting_lr is None else {"lr": cfg.weighting_lr}
    if arm == "uw":
        return make_weighting("uw", variant=cfg.uw_variant, **lr)
    if arm == "gradnorm":
        return make_weighting(
            "gradnorm", variant=cfg.gradnorm_variant, alpha=cfg.gradnorm_alpha, **lr
        )
    if arm == "pcgrad":
        if cfg.pcgrad_inner not in ("equal", "uw"):
            raise TaskspaceError(f"pcgrad_inner must be 'equal' or 'uw', got {cfg.pcgrad_inner!r}")
        inner = _weighting(cfg, "uw") if cfg.pcgrad_inner == "uw" else make_weighting("equal")
        return make_weighting("pcgrad", order=cfg.pcgrad_order, inner=inner)
    return make_weighting(arm)


def _arms(cfg: MtlConfig) -> list[str]:
    arms = [a.strip() for a in cfg.arms.split(",") if a.strip()]
    if cfg.weighting is not None:
        if cfg.weighting not in WEIGHTINGS:
            make_weighting(cfg.weighting)  # one line listing the names
        arms = [a for a in arms if a == "stl"] + [cfg.weighting]
    bad = [a for a in arms if a not in ARMS]
    if not arms or bad:
        raise TaskspaceError(
            f"unknown arm(s) {', '.join(bad) or '(none)'}; choose from {', '.join(ARMS)}"
        )
    if len(set(arms)) != len(arms):
        raise TaskspaceError(f"arms {', '.join(arms)} list an arm twice")
    for a in arms:
        if a not in ("stl", *_BUILTIN):
            _weighting(cfg, a)  # bad variants: one line before anything runs
    return arms


def _checked(cfg: MtlConfig) -> tuple[list[str], list[str], str]:
    arms = _arms(cfg)
    groupings = [g.strip() for g in cfg.groupings.split(",") if g.strip()]
    if not groupings:
        raise TaskspaceError("give groupings=Task:Attr,Task2:Attr2")
    if cfg.task_weights is not None:
        check_task_weights(cfg.task_weights, len(groupings))
    preset = cfg.preset or ("digits" if cfg.data.name in SMALL_SETS else "reference")
    return arms, groupings, preset


def _arm(cfg: MtlConfig, arm: str, ds: Any, groupings: list[str], preset: str) -> list[dict]:
    """Final rows (per seed, task and split) of one arm."""
    kw: dict[str, Any] = dict(
        preset=preset, seeds=cfg.seeds, device=cfg.device, progress=cfg.progress
    )
    if cfg.epochs is not None:
        kw["epochs"] = cfg.epochs
    kw.update(model=cfg.model.name, model_kwargs=cfg.model.kwargs)
    if arm == "stl":
        rows: list[dict] = []
        for g in groupings:
            r = fit_robust(ds, g, cfg.method, select="worst", loss=cfg.task_loss, **kw)
            rows += [{**x, "arm": arm, "task": g} for x in r.rows()]
        return rows
    res = fit_mtl(
        ds,
        groupings,
        cfg.method,
        weighting=arm if arm in _BUILTIN else _weighting(cfg, arm),  # type: ignore[arg-type]
        task_weights=cfg.task_weights if arm == "static" else None,
        alpha=cfg.alpha,
        normalize=cfg.normalize,
        force_lbtw=cfg.force_lbtw and arm == "lbtw",
        task_loss="ce" if cfg.task_loss == "ce" else "bce",
        mtl_join=cfg.mtl_join,
        select="best-worst"
        if cfg.select == "best-worst"
        else ("last" if cfg.select == "last" else "average"),
        **kw,
    )
    return [{**x, "arm": arm, "task": x["grouping"]} for x in res.rows()]


def run_mtl(cfg: MtlConfig) -> Path:
    """Run (or resume) ``taskspace mtl``; returns the run directory."""
    arms, groupings, preset = _checked(cfg)
    rd = RunDir.for_config(cfg, "mtl", NON_RESULT_KEYS, cfg.out, [cfg.data.name])
    rd.check(cfg)
    if rd.finished():
        return rd.path
    ds = load_data(cfg.data, progress=cfg.progress)
    if ds.attribute_names is None:
        raise TaskspaceError(f"dataset {cfg.data.name!r} has no attributes")
    for g in groupings:
        parse_grouping(g, ds.attribute_names)  # one line for an unknown attribute
    rd.start(cfg)
    for i, arm in enumerate(arms):
        if not rd.part(i).exists():
            rows = _arm(cfg, arm, ds, groupings, preset)
            write_csv(rd.part(i), rows, list(rows[0]))
    rows = rd.merged_rows(len(arms))
    write_csv(rd / "results.csv", rows, list(rows[0]))
    summary = summarize(rows, arms, groupings)
    write_csv(rd / "summary.csv", summary, list(summary[0]))
    plot_group_accuracy(
        [{**r, "method": f"{r['method']}\n{r['task']}"} for r in summary],
        [f"g{j}" for j in range(4)],
        rd / "group_accuracy.png",
    )
    rd.mark_finished(
        {
            f"{r['method']}_{r['task']}_test_worst": float(r["worst_group_acc_mean"])
            for r in summary
            if r["split"] == "test"
        }
    )
    return rd.path


def summarize(rows: list[dict], arms: list[str], groupings: list[str]) -> list[dict]:
    """Mean and std over seeds per arm, task and split (``method`` column = the arm)."""
    out = []
    for arm in arms:
        for g in groupings:
            for split in ("val", "test"):
                sel = [
                    r for r in rows if r["arm"] == arm and r["task"] == g and r["split"] == split
                ]
                if not sel:
                    continue
                row: dict[str, Any] = {"method": arm, "task": g, "split": split, "seeds": len(sel)}
                for k in (
                    "avg_acc",
                    "weighted_avg_acc",
                    "worst_group_acc",
                    *(f"g{j}_acc" for j in range(4)),
                ):
                    vals = [float(r[k]) for r in sel if r.get(k) not in (None, "")]
                    mean = sum(vals) / len(vals) if vals else float("nan")
                    var = sum((v - mean) ** 2 for v in vals) / len(vals) if vals else 0.0
                    row[f"{k}_mean"], row[f"{k}_std"] = mean, var**0.5
                for j in range(4):
                    row[f"g{j}_count"] = sel[0].get(f"g{j}_count", "")
                out.append(row)
    return out


def main(cfg: MtlConfig) -> int:
    out = run_mtl(cfg)
    summary = [r for r in read_csv(out / "summary.csv") if r["split"] == "test"]
    w = max([24, *(len(r["task"]) + 1 for r in summary)])
    print("test worst-group accuracy (mean +- std over seeds)")
    print(f"{'arm':<8} {'task':<{w}} {'worst group':>15} {'average':>15}")
    for r in summary:
        print(
            f"{r['method']:<8} {r['task']:<{w}} "
            f"{float(r['worst_group_acc_mean']):>7.3f} +- {float(r['worst_group_acc_std']):.3f} "
            f"{float(r['avg_acc_mean']):>7.3f} +- {float(r['avg_acc_std']):.3f}"
        )
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
