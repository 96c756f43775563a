"""Where splits come from: target and discovered task specs, imported split files, and the
run directory layout of a set of splits (``splits/*.npz`` + ``splits.csv``).

:class:`SplitOptions` are the options that decide a set of splits; :func:`build_splits`
turns them into validated :class:`Split` objects (adversarial first, then the random
baselines), so a command can check everything before it writes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from taskspace.config import option
from taskspace.data import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv
from taskspace.splits.builders import (
    Split,
    adversarial_splits,
    feature_sign_tasks,
    random_network_split,
    resolve_pool,
)
from taskspace.splits.evaluate import check_random_baseline, with_random_baselines
from taskspace.splits.files import (
    BALANCE_COLUMNS,
    balance_row,
    export_partition,
    import_partition,
    load_reference_splits,
    load_split,
    save_split,
)
from taskspace.tasks import (
    REFERENCE_TARGETS,
    TaskSet,
    human_task_count,
    human_task_name,
    human_task_subset,
    human_tasks,
    load_tasks,
    parse_task_spec,
)

__all__ = ["KINDS", "SplitOptions", "build_splits", "import_splits", "read_splits", "write_splits"]

KINDS = ("binary", "multiclass", "random_network")


@dataclass
class SplitOptions:
    """What decides a set of adversarial splits (and their random baselines)."""

    discovered: str = option(
        "standin",
        "tau_d: a discovery run dir or tasks file "
        "(<path>[:<format>]), human, or standin (feature-sign tasks)",
    )
    num_discovered: int = option(8, "the first N discovered tasks")
    targets: str = option(
        "human",
        "human (the reference targets 0, 11, 18, 27, 31, 38, 40), "
        "human-task indices (0,11) or a tasks file",
    )
    kind: str = option("binary", "binary, multiclass or random_network")
    flip: bool = option(False, "swap the train and test sides")
    pool: str = option("nontest", "images the splits cover: nontest, train or all")
    seeds: list[int] | None = option(None, "random_network: one split per seed")
    random_baselines: bool = option(True, "add random splits as baselines")
    random_baseline: str = option(
        "matched",
        "matched (size-matched, default) or reference "
        "(one seeded half/half split, as the reference)",
    )
    import_file: str | None = option(
        None,
        "a reference .torch, a CelebA partition .csv or a split .npz instead of building splits",
    )
    seed: int = option(0, "seed of stand-in tasks, baselines and the random network")


def resolve_tasks_path(value: str) -> Path:
    """A discovery run directory (its ``tasks.npz``) or a tasks file."""
    path = Path(value)
    if path.is_dir():
        cand = path / "tasks.npz"
        if not cand.is_file():
            raise TaskspaceError(
                f"{path} is a directory without tasks.npz; pass a discovery "
                "run directory or a tasks file"
            )
        return cand
    if not path.is_file():
        raise TaskspaceError(
            f"tasks not found: {value} (use a discovery run directory, a "
            "tasks .npz/.npy/.csv file, 'human' or 'standin')"
        )
    return path


def build_targets(cfg: SplitOptions, dataset: ImageDataset) -> TaskSet:
    """``targets=human`` (reference targets that exist), human indices, or a tasks file."""
    c = dataset.num_classes
    spec = cfg.targets.strip()
    if spec == "human" or all(p.strip().isdigit() for p in spec.split(",") if p.strip()):
        total = human_task_count(c)
        if spec == "human":
            wanted = [i for i in REFERENCE_TARGETS if i < total]
        else:
            wanted = [int(p) for p in spec.split(",") if p.strip()]
            bad = [i for i in wanted if i >= total]
            if bad:
                raise TaskspaceError(
                    f"target index {bad[0]} out of range: {c} classes give {total} human tasks"
                )
        if not wanted:
            raise TaskspaceError("no targets: use targets=human or a list of task indices")
        allh = human_tasks(
            dataset.classes,
            c,
            include_original=False,
            max_tasks=None if total <= 10_000 else 10_000,
            seed=cfg.seed,
        )
        return allh.select([allh.index(human_task_name(c, i)) for i in wanted])
    return load_task_spec(spec, dataset)


def load_task_spec(spec: str, dataset: ImageDataset) -> TaskSet:
    """Tasks of a ``<run dir | tasks file>[:<format>]`` spec, placed on ``dataset``."""
    path, fmt = parse_task_spec(spec)
    return load_tasks(resolve_tasks_path(path), format=fmt, dataset=dataset)


def build_discovered(
    cfg: SplitOptions, dataset: ImageDataset, targets: TaskSet, model: str = "mlp"
) -> TaskSet:
    """The ``tau_d`` tasks named by ``cfg.discovered`` (first ``num_discovered``)."""
    if cfg.num_discovered < 1:
        raise TaskspaceError(f"num_discovered must be >= 1, got {cfg.num_discovered}")
    if cfg.discovered == "standin":
        return feature_sign_tasks(dataset, cfg.num_discovered, seed=cfg.seed, model=model)
    if cfg.discovered == "human":
        allh = human_tasks(
            dataset.classes,
            dataset.num_classes,
            include_original=False,
            max_tasks=64,
            seed=cfg.seed + 1,
        )
        keep = [i for i, n in enumerate(allh.names) if n not in targets.names]
        return allh.select(keep[: cfg.num_discovered]).renamed(prefix="d-")
    tasks = load_task_spec(cfg.discovered, dataset)
    return tasks.select(list(range(min(cfg.num_discovered, len(tasks)))))


def _check_lengths(tasks: TaskSet, dataset: ImageDataset, what: str) -> None:
    if tasks.num_images != len(dataset):
        raise TaskspaceError(
            f"{what} label {tasks.num_images} images but the dataset has "
            f"{len(dataset)}; tasks must come from the same data options"
        )


def build_splits(
    cfg: SplitOptions, dataset: ImageDataset, model: str = "mlp"
) -> tuple[list[Split], TaskSet | None, TaskSet | None]:
    """All splits of ``cfg`` (adversarial, then random baselines), fully validated.

    ``model`` is the learner whose features give stand-in tasks and, for
    ``kind=random_network``, the randomly initialised network."""
    if cfg.kind not in KINDS:
        raise TaskspaceError(f"kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    check_random_baseline(cfg.random_baseline)
    targets = discovered = None
    if cfg.import_file:
        adv = import_splits(cfg.import_file, dataset)
        if any(s.target_labels is None for s in adv):
            adv = with_targets(adv, build_targets(cfg, dataset), cfg.targets)
    elif cfg.kind == "random_network":
        pool = resolve_pool(dataset, cfg.pool)
        adv = [
            random_network_split(dataset, model=model, seed=s, pool=pool, flip=cfg.flip)
            for s in (cfg.seeds if cfg.seeds else [cfg.seed])
        ]
    else:
        targets = build_targets(cfg, dataset)
        _check_lengths(targets, dataset, "target tasks")
        discovered = build_discovered(cfg, dataset, targets, model)
        _check_lengths(discovered, dataset, "discovered tasks")
        adv = adversarial_splits(
            dataset, targets, discovered, kind=cfg.kind, pool=cfg.pool, flip=cfg.flip
        )
    for s in adv:
        s.validate(len(dataset))
    names = [s.name for s in adv]
    if len(set(names)) != len(names):
        raise TaskspaceError("split names are not unique; rename the tasks")
    if cfg.random_baselines:
        return with_random_baselines(adv, cfg.seed, cfg.random_baseline), targets, discovered
    return list(adv), targets, discovered


def import_splits(path_str: str, dataset: ImageDataset) -> list[Split]:
    """Splits from a reference ``.torch`` file, a CelebA partition ``.csv`` or a ``.npz``.

    A reference file's indices are placed on ``dataset`` (see
    :func:`taskspace.splits.files.load_reference_splits`), and a split keyed by a human-task
    index there gets that task as its 2-way target (:func:`human_target`).
    """
    path = Path(path_str)
    n = len(dataset)
    suffix = path.suffix.lower()
    if suffix in (".torch", ".pt", ".pth"):
        splits = load_reference_splits(path, dataset=dataset)
        return [human_target(s, dataset, path) if "target_index" in s.meta else s for s in splits]
    if suffix == ".csv":
        split, _ = import_partition(path, n, dataset.ids if dataset.ids else None)
        return [split]
    if suffix == ".npz":
        return [load_split(path, n)]
    raise TaskspaceError(f"unknown split file type {path.name!r}; use .torch, .csv or .npz")


def _retarget(split: Split, labels: torch.Tensor, meta: dict) -> Split:
    """``split`` with 2-way target ``labels`` and extra ``meta``."""
    return Split(
        split.train_idx, split.test_idx, split.name, split.kind, {**split.meta, **meta}, labels
    )


def human_target(split: Split, dataset: ImageDataset, path: Path) -> Split:
    """``split`` with the human task its file keys it by as target.

    The reference's ``cifar_splits.torch`` keys splits by human-task index ``t``: task ``t``
    is the ``t``-th ``C/2``-subset of the classes containing class 0
    (:func:`taskspace.tasks.human_task_subset`), label 1 iff the class is in it.
    """
    t = int(split.meta["target_index"])
    c = dataset.num_classes
    total = human_task_count(c)
    if not 0 <= t < total:
        raise TaskspaceError(
            f"{path}: target {t} is not a human-task index of {c} classes (0..{total - 1})"
        )
    positive = list(human_task_subset(c, t))
    labels = torch.isin(dataset.classes, torch.tensor(positive)).long()
    return _retarget(split, labels, {"target": human_task_name(c, t), "positive_classes": positive})


def with_targets(splits: list[Split], targets: TaskSet, spec: str) -> list[Split]:
    """Give imported splits without a target the one task ``targets=`` names.

    Several targets (the default ``targets=human``) leave them without one (only the class
    setting is evaluated); several named explicitly are an error, since it is unclear which
    target the file's splits were built for.
    """
    if len(targets) != 1:
        if spec.strip() == "human":
            return splits
        raise TaskspaceError(
            f"the split file records no target and targets={spec} names "
            f"{len(targets)} tasks; name one (e.g. targets=11)"
        )
    meta = {"target": targets.names[0]}
    positive = targets.task_meta(0).get("positive_classes")
    if positive:
        meta["positive_classes"] = positive
    labels = targets.labels[0]
    if int(labels.max()) > 1:
        raise TaskspaceError(
            f"target task {targets.names[0]!r} has "
            f"{targets.num_classes(0)} classes; a 2-way target must be 0/1"
        )
    return [s if s.target_labels is not None else _retarget(s, labels, meta) for s in splits]


def split_file_name(i: int, split: Split) -> str:
    return f"{i:04d}-{split.name}.npz"


def write_splits(
    out: Path, splits: list[Split], dataset: ImageDataset, export_partitions: bool = False
) -> None:
    """``splits/*.npz`` and ``splits.csv`` (and ``partitions/*.csv``)."""
    rows = []
    for i, s in enumerate(splits):
        save_split(out / "splits" / split_file_name(i, s), s)
        row = balance_row(s, dataset.classes, dataset.num_classes)
        row["file"] = split_file_name(i, s)
        rows.append(row)
        if export_partitions:
            export_partition(
                out / "partitions" / f"{s.name}.csv",
                s,
                len(dataset),
                dataset.ids if dataset.ids else None,
            )
    write_csv(out / "splits.csv", rows, [*BALANCE_COLUMNS, "file"])


def read_splits(out: Path, n_images: int) -> list[Split]:
    """The splits of a split run directory, in ``splits.csv`` order."""
    table = out / "splits.csv"
    if not table.is_file():
        raise TaskspaceError(f"{out} is not a split run directory (no splits.csv)")
    return [load_split(out / "splits" / r["file"], n_images) for r in read_csv(table)]
