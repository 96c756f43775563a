"""``taskspace demo``: the main job on the built-in digits data, in three stages.

1. ``agreement``: AS of human 5-vs-5 tasks vs random labellings with the reference MLP (a
   learner agrees with itself on human labellings, not on random ones).
2. ``discover``: task discovery on digits, then AS by kind under one protocol: discovered
   vs human vs random (the paper's central plot, ``discover/as_by_kind.png``).
3. ``split``: adversarial train/test splits from 4 reference targets x 4 discovered tasks,
   trained on adversarial and on random splits of the same sizes: the headline table.
4. ``robust``: group robustness on coloured digits: ERM's worst group vs JTT, RWG, SUBG and
   Group DRO (3 seeds each).

Each stage writes a run directory under ``out`` (``agreement``, ``discover``,
``split-eval``, ``robust``) and resumes when rerun; ``stages=`` selects stages (the split
stage needs the discovery run). The demo ends with one ``report.html`` of every stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskspace.agreement.score import ROW_COLUMNS, agreement_score, summarize
from taskspace.commands.agreement import AgreementConfig, format_summary
from taskspace.commands.agreement import main as agreement_main
from taskspace.commands.discover import DiscoverConfig, eval_recipe, run_discover
from taskspace.commands.robust import RobustConfig, format_table, run_robust
from taskspace.commands.split_eval import SplitEvalConfig, run_eval
from taskspace.config import apply_overrides, option
from taskspace.data import load_splits
from taskspace.data.config import load_data
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv
from taskspace.report.page import build_report
from taskspace.report.plots import plot_agreement_by_kind
from taskspace.runs import RunDir
from taskspace.splits import format_headline
from taskspace.tasks import TaskSet, human_tasks, load_tasks, random_tasks
from taskspace.tasks.builders import REFERENCE_TARGETS

__all__ = ["DemoConfig", "compare_with_baselines", "main"]

STAGES = ("agreement", "discover", "split", "robust")


@dataclass
class DemoConfig:
    """Options of ``taskspace demo``."""

    num_tasks: int = option(16, "human, random and discovered tasks each")
    pairs: int = option(1, "pairs of models per task")
    seed: int = option(0, "base seed")
    stages: str = option("agreement,discover,split,robust", "stages to run, comma-separated")
    out: str = option("runs/demo", "folder of the stages' run directories")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write one report.html of every stage at the end")


def compare_with_baselines(
    run_dir: str | Path,
    num_tasks: int | None = None,
    *,
    pairs: int | None = None,
    progress: bool = False,
) -> list[dict]:
    """AS of a discovery run's tasks vs ``num_tasks`` human and random tasks, one protocol.

    Uses the run's dataset, splits, learner, recipe and seed. Writes ``as_by_kind.csv``,
    ``as_by_kind_summary.csv`` and ``as_by_kind.png`` into the run directory and returns
    the summary rows (kind, split, mean, std, count). Reuses the run's ``agreement.csv``
    when it already holds ``num_tasks`` human and random tasks (a run made with
    ``evaluation.baselines=true``; the untrained heads then appear too, as ``untrained``).
    """
    rd = RunDir(run_dir)
    cfg: DiscoverConfig = rd.config(DiscoverConfig)
    found = load_tasks(rd / "tasks.npz")
    n = num_tasks or len(found)
    rows = _reusable_rows(rd, n, pairs, cfg)
    if rows is None and (rd / "as_by_kind.csv").exists():
        rows = read_csv(rd / "as_by_kind.csv")
    if rows is None:
        ds = load_data(cfg.data, progress=progress)
        ds.use_splits(load_splits(rd / "splits.npz"))
        every = TaskSet.concat(
            found,
            human_tasks(
                ds.classes, ds.num_classes, max_tasks=n, seed=cfg.seed, include_original=False
            ),
            random_tasks(len(ds), n, seed=cfg.seed),
        )
        ev = cfg.evaluation
        rows = agreement_score(
            ds,
            every,
            model=ev.model.name,  # type: ignore[arg-type]
            recipe=eval_recipe(cfg),
            pairs=pairs or ev.pairs,
            seed=cfg.seed,
            device=cfg.device,
            progress=progress,
            model_kwargs=ev.model.kwargs,
        )
    for r in rows:
        r["agreement"] = float(r["agreement"])
    write_csv(rd / "as_by_kind.csv", rows, ROW_COLUMNS)
    summary = summarize(rows)
    write_csv(rd / "as_by_kind_summary.csv", summary, ["kind", "split", "mean", "std", "count"])
    plot_agreement_by_kind(rows, rd / "as_by_kind.png")
    return summary


def _reusable_rows(rd: RunDir, n: int, pairs: int | None, cfg: DiscoverConfig) -> list[dict] | None:
    """The run's own ``agreement.csv`` when it already holds ``n`` human and ``n`` random
    tasks: same protocol, no retraining."""
    if not (rd / "agreement.csv").exists() or pairs not in (None, cfg.evaluation.pairs):
        return None
    rows = read_csv(rd / "agreement.csv")
    counts = {k: len({r["task"] for r in rows if r["kind"] == k}) for k in ("human", "random")}
    return rows if counts["human"] == n and counts["random"] == n else None


def discovery_stage(out: str | Path, num_tasks: int, seed: int, progress: bool) -> list[dict]:
    """Stage 2: discovery on digits (preset digits, ``num_tasks`` heads, baselines), then AS
    by kind. Returns the summary rows of :func:`compare_with_baselines`."""
    cfg = apply_overrides(
        DiscoverConfig(),
        {
            "data.name": "digits",
            "evaluation.baselines": True,
            "evaluation.num_baseline_tasks": num_tasks,
            "encoder.K": num_tasks,
            "encoder.d": max(num_tasks, 16),
            "seed": seed,
            "out": str(out),
            "progress": progress,
        },
    )
    run_discover(cfg)
    return compare_with_baselines(out, num_tasks=num_tasks, progress=progress)


def main(cfg: DemoConfig) -> int:
    stages = [s.strip() for s in cfg.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise TaskspaceError(
            f"unknown demo stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}"
        )
    if "agreement" in stages:
        print("== 1. agreement score on digits: human 5-vs-5 tasks vs random labellings ==")
        agreement_main(
            apply_overrides(
                AgreementConfig(),
                {
                    "data.name": "digits",
                    "model.name": "mlp",
                    "tasks": "human,random",
                    "num_tasks": cfg.num_tasks,
                    "pairs": cfg.pairs,
                    "seed": cfg.seed,
                    "out": f"{cfg.out}/agreement",
                    "progress": cfg.progress,
                    "report": False,
                },
            )
        )
    if "discover" in stages or "split" in stages:
        print("\n== 2. task discovery on digits: discovered vs human vs random tasks ==")
        summary = discovery_stage(f"{cfg.out}/discover", cfg.num_tasks, cfg.seed, cfg.progress)
        print(format_summary(summary))
        print(f"run directory: {cfg.out}/discover (plot: as_by_kind.png)")
    if "split" in stages:
        split_stage(cfg)
    if "robust" in stages:
        robust_stage(cfg)
    if cfg.report:
        done = [Path(cfg.out) / d for d in ("agreement", "discover", "split-eval", "robust")]
        done = [d for d in done if (d / "config.yaml").exists()]
        if done:
            page = build_report(done, Path(cfg.out) / "report.html", title="taskspace demo")
            print(f"\nreport of every stage: {page}")
    return 0


def split_stage(cfg: DemoConfig) -> Path:
    """Stage 3: 4 reference targets x 4 discovered tasks, adversarial vs random splits, as a
    ``split-eval`` run directory (splits, results, headline table)."""
    print("\n== 3. adversarial splits on digits: 4 targets x 4 discovered tasks ==")
    eval_cfg = apply_overrides(
        SplitEvalConfig(),
        {
            "data.name": "digits",
            "discovered": f"{cfg.out}/discover",
            "num_discovered": 4,
            "targets": ",".join(str(t) for t in REFERENCE_TARGETS[:4]),
            "model.name": "mlp",
            "recipe.preset": "fast",
            "seed": cfg.seed,
            "out": f"{cfg.out}/split-eval",
            "progress": cfg.progress,
        },
    )
    out = run_eval(eval_cfg)
    print(format_headline(read_csv(out / "headline.csv")))
    print(f"run directory: {out}")
    return out


def robust_stage(cfg: DemoConfig) -> Path:
    """Stage 4: group robustness on coloured digits (the digit's size is the target, the
    background colour agrees with it on 97 % of the training images): ERM vs JTT, RWG,
    SUBG and Group DRO, 3 seeds each."""
    print("\n== 4. group robustness on coloured digits: ERM vs robust methods ==")
    robust_cfg = apply_overrides(
        RobustConfig(),
        {
            "data.name": "coloured_digits",
            "out": f"{cfg.out}/robust",
            "progress": cfg.progress,
            "report": False,
        },
    )
    out = run_robust(robust_cfg)
    print(format_table(read_csv(out / "summary.csv")))
    print(f"run directory: {out}")
    return out
