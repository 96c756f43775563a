"""``taskspace agreement``: AS of human, random and table tasks, resumable and fan-out-able.

A run directory holds ``config.yaml``, ``splits.npz``, ``tasks.npz``, one ``parts/*.csv``
per finished chunk of tasks, and the merged ``agreement.csv``, ``summary.csv`` and
``agreement.png``. Rerunning the same command skips chunks whose part file exists; because
every model's seeds depend only on (seed, task index, pair), the merged tables are the same
as those of an uninterrupted run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from taskspace.agreement.score import ROW_COLUMNS, agreement_score, summarize
from taskspace.config import to_dict
from taskspace.data import ImageDataset, load_dataset, load_splits, save_splits
from taskspace.engine import get_recipe
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_yaml
from taskspace.launch import LaunchOptions, run_jobs
from taskspace.models import create_model
from taskspace.rundir import check_run_config, config_digest
from taskspace.tasks import (
    TaskSet,
    human_tasks,
    load_tasks,
    parse_task_spec,
    random_tasks,
    save_tasks,
)


@dataclass
class DataConfig:
    """Which images: a dataset name, its folder, and how it is split."""

    data: str = "digits"
    root: str | None = None
    split_seed: int = 0
    heldout: float | None = None
    train_size: int | None = None
    test_size: int | None = None


@dataclass
class AgreementConfig(DataConfig):
    """Options of ``taskspace agreement`` (all settable as ``key=value``)."""

    model: str = "mlp"
    model_kwargs: dict | None = None
    tasks: str = "human,random"
    num_tasks: int = 16
    pairs: int = 1
    recipe: str = "fast"
    epochs: float | None = None
    steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    weight_decay: float | None = None
    augment: bool | None = None
    schedule: str | None = None
    bf16: bool = False
    channels_last: bool = False
    shared_order: bool = True
    seed: int = 0
    device: str = "cpu"
    batched: bool | None = None
    chunk_size: int | None = None
    tasks_per_job: int = 8
    launch: str = "inprocess"
    parallel: int = 2
    slurm_partition: str | None = None
    slurm_gpus: int = 0
    timeout_min: int = 240
    out: str | None = None
    progress: bool = True


#: Options that do not change results (so a resumed run may change them).
NON_RESULT_KEYS = {"launch", "parallel", "slurm_partition", "slurm_gpus", "timeout_min", "out",
                   "progress", "tasks_per_job", "chunk_size", "batched", "device"}


def recipe_of(cfg: AgreementConfig):  # noqa: ANN201
    return get_recipe(
        cfg.recipe, epochs=cfg.epochs, steps=cfg.steps, lr=cfg.lr, batch_size=cfg.batch_size,
        optimizer=cfg.optimizer, weight_decay=cfg.weight_decay, augment=cfg.augment,
        schedule=cfg.schedule, bf16=cfg.bf16, channels_last=cfg.channels_last,
    )


def dataset_of(cfg: DataConfig) -> ImageDataset:
    return load_dataset(
        cfg.data, cfg.root, split_seed=cfg.split_seed, heldout=cfg.heldout,
        train_size=cfg.train_size, test_size=cfg.test_size,
    )


def build_tasks(cfg: AgreementConfig, dataset: ImageDataset) -> TaskSet:
    """The task set named by ``cfg.tasks``, a comma-separated list of ``human``, ``random``,
    ``original`` and task files ``<path>[:<format>]``.

    A file's ``format`` says what its rows mean (:data:`taskspace.tasks.TASK_FORMATS`):
    ``labels`` (one per image, dataset order), ``torchvision_train`` (the reference's
    ``ssl_tasks.csv`` / ``discovered.csv``: one per official CIFAR training image in
    torchvision order; their test images are unlabelled, so only ``heldout`` AS is scored)
    or ``class_subsets`` (row j = positive class ids of task j, e.g.
    ``tasks=tiny_imagenet_binary_tasks.npy:class_subsets``). Without it the shape decides,
    and a shape that fits two readings is refused (see :func:`taskspace.tasks.load_tasks`).
    """
    parts: list[TaskSet] = []
    for item in [t.strip() for t in cfg.tasks.split(",") if t.strip()]:
        if item == "human":
            parts.append(human_tasks(dataset.classes, dataset.num_classes,
                                     max_tasks=cfg.num_tasks, seed=cfg.seed,
                                     include_original=False))
        elif item == "original":
            parts.append(TaskSet(dataset.classes[None].clone(), ["original"], ["original"], {}))
        elif item == "random":
            parts.append(random_tasks(len(dataset), cfg.num_tasks, seed=cfg.seed))
        else:
            path, fmt = parse_task_spec(item)
            parts.append(load_tasks(path, format=fmt, dataset=dataset))
    if not parts:
        raise TaskspaceError("tasks is empty; use tasks=human,random or a task file path")
    return TaskSet.concat(*parts)


def default_out(cfg: AgreementConfig, command: str = "agreement") -> Path:
    """Deterministic run directory for a config, so rerunning a command resumes it."""
    return Path("runs") / f"{command}-{cfg.data}-{cfg.model}-{config_digest(cfg, NON_RESULT_KEYS)}"


def run_chunk(run_dir: str, chunk: int, task_indices: list[int]) -> str:
    """One job: AS of some tasks of a run, written to ``parts/chunk-NNNN.csv``."""
    import yaml

    from taskspace.config import apply_overrides

    out = Path(run_dir)
    cfg = apply_overrides(AgreementConfig(), yaml.safe_load((out / "config.yaml").read_text()))
    dataset = dataset_of(cfg)
    dataset.use_splits(load_splits(out / "splits.npz"))
    tasks = load_tasks(out / "tasks.npz").select(task_indices)
    rows = agreement_score(
        dataset, tasks, model=cfg.model, recipe=recipe_of(cfg), pairs=cfg.pairs,
        seed=cfg.seed, shared_order=cfg.shared_order, task_ids=task_indices,
        device=cfg.device, chunk_size=cfg.chunk_size, batched=cfg.batched,
        model_kwargs=cfg.model_kwargs, progress=cfg.progress,
    )
    path = out / "parts" / f"chunk-{chunk:04d}.csv"
    write_csv(path, rows, ROW_COLUMNS)
    return str(path)


def run_agreement(cfg: AgreementConfig) -> Path:
    """Run (or resume) ``taskspace agreement``; returns the run directory."""
    recipe_of(cfg)  # validate the recipe before any work
    if cfg.pairs < 1:
        raise TaskspaceError(f"pairs must be >= 1, got {cfg.pairs}")
    if cfg.tasks_per_job < 1:
        raise TaskspaceError(f"tasks_per_job must be >= 1, got {cfg.tasks_per_job}")
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    check_run_config(out, cfg, NON_RESULT_KEYS)
    dataset = dataset_of(cfg)
    if (out / "splits.npz").exists():
        dataset.use_splits(load_splits(out / "splits.npz"))
    tasks = load_tasks(out / "tasks.npz") if (out / "tasks.npz").exists() else build_tasks(
        cfg, dataset)
    from taskspace.tasks import validate_tasks

    validate_tasks(tasks, dataset)
    create_model(cfg.model, 2, in_channels=dataset.channels, image_size=dataset.image_size,
                 **(cfg.model_kwargs or {}))
    if not (out / "config.yaml").exists():
        save_splits(out / "splits.npz", dataset.splits)
        save_tasks(out / "tasks.npz", tasks)
        write_yaml(out / "config.yaml", to_dict(cfg))
    chunks = [list(range(i, min(i + cfg.tasks_per_job, len(tasks))))
              for i in range(0, len(tasks), cfg.tasks_per_job)]
    pending = [(str(out), c, ix) for c, ix in enumerate(chunks)
               if not (out / "parts" / f"chunk-{c:04d}.csv").exists()]
    done = len(chunks) - len(pending)
    if done:
        print(f"resuming {out}: {done}/{len(chunks)} chunks already finished")
    opts = LaunchOptions(cfg.launch, cfg.parallel, cfg.timeout_min, cfg.slurm_partition,
                         cfg.slurm_gpus)
    run_jobs(run_chunk, pending, opts, out / "jobs", progress=cfg.progress)
    merge_run(out, len(chunks))
    return out


def merge_run(out: Path, n_chunks: int) -> list[dict]:
    """Merge part files into agreement.csv, summary.csv and agreement.png."""
    rows: list[dict] = []
    for c in range(n_chunks):
        rows.extend(read_csv(out / "parts" / f"chunk-{c:04d}.csv"))
    for r in rows:
        r["agreement"] = float(r["agreement"])
        r["task_index"] = int(r["task_index"])
        r["pair"] = int(r["pair"])
    rows.sort(key=lambda r: (r["task_index"], r["pair"], r["split"]))
    write_csv(out / "agreement.csv", rows, ROW_COLUMNS)
    summary = summarize(rows)
    write_csv(out / "summary.csv", summary, ["kind", "split", "mean", "std", "count"])
    from taskspace.report.plots import plot_agreement_by_kind

    plot_agreement_by_kind(rows, out / "agreement.png")
    return summary


def format_summary(summary: list[dict]) -> str:
    """A small fixed-width table of the summary rows."""
    lines = [f"{'kind':<12} {'split':<8} {'mean AS':>8} {'std':>7} {'tasks':>6}"]
    for s in summary:
        lines.append(f"{s['kind']:<12} {s['split']:<8} {float(s['mean']):>8.3f} "
                     f"{float(s['std']):>7.3f} {int(s['count']):>6}")
    return "\n".join(lines)


def main(cfg: AgreementConfig) -> int:
    out = run_agreement(cfg)
    summary = read_csv(out / "summary.csv")
    print(format_summary(summary))
    print(f"run directory: {out}")
    return 0



