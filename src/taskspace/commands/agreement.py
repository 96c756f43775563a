"""``taskspace agreement``: AS of human, random and table tasks, resumable and fan-out-able.

A run directory holds ``config.yaml``, ``splits.npz``, ``tasks.npz``, one ``parts/*.csv``
per finished chunk of tasks (``launch.per_job`` tasks each, default 8), and the merged
``agreement.csv`` (one row per task, pair and split), ``summary.csv`` (mean, std and count
per kind and split) and ``agreement.png``. Rerunning the same command skips finished
chunks; because every model's seeds depend only on (seed, task index, pair), the merged
tables equal those of an uninterrupted run. ``launch=local`` runs chunks as local
processes, ``launch=slurm`` as a SLURM array (submitit).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from taskspace.agreement.score import ROW_COLUMNS, agreement_score, summarize
from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.data import load_splits, save_splits
from taskspace.data.config import DataConfig, load_data
from taskspace.engine.recipe_config import RecipeConfig
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv
from taskspace.models import create_model
from taskspace.models.config import ModelConfig
from taskspace.report.plots import plot_agreement_by_kind
from taskspace.runs import LaunchOptions, RunDir, run_jobs
from taskspace.tasks import load_tasks, save_tasks, validate_tasks
from taskspace.tasks.spec import tasks_from_spec

__all__ = ["AgreementConfig", "main", "run_agreement"]

#: Old flat option names and their nested names (a line names the new key).
COMMON_RENAMED = {
    "root": "data.root",
    "split_seed": "data.split_seed",
    "heldout": "data.heldout",
    "train_size": "data.train_size",
    "test_size": "data.test_size",
    "model_kwargs": "model.kwargs",
    "epochs": "recipe.epochs",
    "steps": "recipe.steps",
    "lr": "recipe.lr",
    "batch_size": "recipe.batch_size",
    "optimizer": "recipe.optimizer",
    "weight_decay": "recipe.weight_decay",
    "augment": "recipe.augment",
    "schedule": "recipe.schedule",
    "bf16": "recipe.bf16",
    "channels_last": "recipe.channels_last",
    "parallel": "launch.parallel",
    "slurm_partition": "launch.slurm_partition",
    "slurm_gpus": "launch.slurm_gpus",
    "timeout_min": "launch.timeout_min",
}


@dataclass
class AgreementConfig:
    """Options of ``taskspace agreement``."""

    RENAMED: ClassVar[dict[str, str]] = {**COMMON_RENAMED, "tasks_per_job": "launch.per_job"}

    data: DataConfig = option(factory=DataConfig, selector="name", help="the images")
    model: ModelConfig = option(factory=ModelConfig, selector="name", help="the learner")
    recipe: RecipeConfig = option(
        factory=RecipeConfig, selector="preset", help="how the learner trains"
    )
    launch: LaunchOptions = option(
        factory=LaunchOptions, selector="kind", help="where chunks of tasks run"
    )
    tasks: str = option(
        "human,random",
        "human, random, original and task files "
        "<path>[:labels|torchvision_train|class_subsets], comma-separated",
    )
    num_tasks: int = option(16, "human and random tasks each")
    pairs: int = option(1, "seeded pairs of models per task")
    shared_order: bool = option(True, "both models of a pair read the same batches")
    seed: int = option(0, "base seed of tasks, initialisations and data orders")
    device: str = option("cpu", "cpu or cuda")
    batched: bool | None = option(None, "force vmap (true) or the per-model loop (false)")
    chunk_size: int | None = option(None, "models per batched chunk (default: by memory)")
    out: str | None = option(None, "run directory (default runs/agreement-<data>-<model>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


#: Options that do not change results (a resumed run may change them).
NON_RESULT_KEYS = {"launch", "out", "progress", "chunk_size", "batched", "device", "report"}
TASKS_PER_JOB = 8


def run_dir_of(cfg: AgreementConfig) -> RunDir:
    return RunDir.for_config(
        cfg, "agreement", NON_RESULT_KEYS, cfg.out, [cfg.data.name, cfg.model.name]
    )


def run_chunk(run_dir: str, chunk: int, task_indices: list[int]) -> str:
    """One job: AS of some tasks of a run, written to its part file."""
    rd = RunDir(run_dir, NON_RESULT_KEYS)
    cfg: AgreementConfig = rd.config(AgreementConfig)
    dataset = load_data(cfg.data, progress=cfg.progress)
    dataset.use_splits(load_splits(rd / "splits.npz"))
    tasks = load_tasks(rd / "tasks.npz").select(task_indices)
    rows = agreement_score(
        dataset,
        tasks,
        model=cfg.model.name,
        recipe=cfg.recipe.resolve(),
        pairs=cfg.pairs,
        seed=cfg.seed,
        shared_order=cfg.shared_order,
        task_ids=task_indices,
        device=cfg.device,
        chunk_size=cfg.chunk_size,
        batched=cfg.batched,
        model_kwargs=cfg.model.kwargs,
        progress=cfg.progress,
    )
    return str(rd.write_part(chunk, rows, ROW_COLUMNS))


def run_agreement(cfg: AgreementConfig) -> Path:
    """Run (or resume) ``taskspace agreement``; returns the run directory."""
    cfg.recipe.resolve()  # validate the recipe before any work
    if cfg.pairs < 1:
        raise TaskspaceError(f"pairs must be >= 1, got {cfg.pairs}")
    per_job = cfg.launch.per_job or TASKS_PER_JOB
    if per_job < 1:
        raise TaskspaceError(f"launch.per_job must be >= 1, got {per_job}")
    rd = run_dir_of(cfg)
    rd.check(cfg)
    dataset = load_data(cfg.data, progress=cfg.progress)
    if (rd / "splits.npz").exists():
        dataset.use_splits(load_splits(rd / "splits.npz"))
    tasks = (
        load_tasks(rd / "tasks.npz")
        if (rd / "tasks.npz").exists()
        else tasks_from_spec(cfg.tasks, dataset, num_tasks=cfg.num_tasks, seed=cfg.seed)
    )
    validate_tasks(tasks, dataset)
    create_model(
        cfg.model.name,
        2,
        in_channels=dataset.channels,
        image_size=dataset.image_size,
        **cfg.model.kwargs,
    )

    def first_files() -> None:
        save_splits(rd / "splits.npz", dataset.splits)
        save_tasks(rd / "tasks.npz", tasks)

    rd.start(cfg, first_files)
    chunks = [list(range(i, min(i + per_job, len(tasks)))) for i in range(0, len(tasks), per_job)]
    pending = rd.pending(len(chunks))
    if len(pending) < len(chunks):
        print(
            f"resuming {rd.path}: {len(chunks) - len(pending)}/{len(chunks)} chunks "
            "already finished"
        )
    run_jobs(
        run_chunk,
        [(str(rd.path), c, chunks[c]) for c in pending],
        cfg.launch,
        rd / "jobs",
        progress=cfg.progress,
    )
    summary = merge_run(rd, len(chunks))
    rd.mark_finished(summary_metrics(summary))
    return rd.path


def merge_run(rd: RunDir, n_chunks: int) -> list[dict]:
    """Merge part files into agreement.csv, summary.csv and agreement.png."""
    rows: list[dict] = [dict(r) for r in rd.merged_rows(n_chunks)]
    for r in rows:
        r["agreement"] = float(r["agreement"])
        r["task_index"] = int(r["task_index"])
        r["pair"] = int(r["pair"])
    rows.sort(key=lambda r: (r["task_index"], r["pair"], r["split"]))
    write_csv(rd / "agreement.csv", rows, ROW_COLUMNS)
    summary = summarize(rows)
    write_csv(rd / "summary.csv", summary, ["kind", "split", "mean", "std", "count"])
    plot_agreement_by_kind(rows, rd / "agreement.png")
    return summary


def summary_metrics(summary: list[dict]) -> dict[str, float]:
    """Headline numbers for sweep tables: ``as_<split>_<kind>``."""
    return {f"as_{s['split']}_{s['kind']}": round(float(s["mean"]), 6) for s in summary}


def format_summary(summary: list[dict]) -> str:
    """A small fixed-width table of the summary rows."""
    w = max([12, *(len(str(s["kind"])) + 1 for s in summary)])
    lines = [f"{'kind':<{w}} {'split':<8} {'mean AS':>8} {'std':>7} {'tasks':>6}"]
    for s in summary:
        lines.append(
            f"{s['kind']:<{w}} {s['split']:<8} {float(s['mean']):>8.3f} "
            f"{float(s['std']):>7.3f} {int(s['count']):>6}"
        )
    return "\n".join(lines)


def main(cfg: AgreementConfig) -> int:
    out = run_agreement(cfg)
    print(format_summary(read_csv(out / "summary.csv")))
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
