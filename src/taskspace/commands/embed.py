"""``taskspace embed``: Task2Vec embeddings of a task set, their distances and neighbours.

Every task of ``tasks`` (human, random, original, attributes, task files such as a
discovery run's ``discovered.csv``) is embedded with one probe network: a fresh copy per
task with its head refit, then the diagonal Fisher of the probe's weights
(:mod:`taskspace.embed`). The probe is a registry name, ``tv:``/``timm:`` name, or a
checkpoint path; ``probe_epochs > 0`` first trains it on the dataset's own classes (saved
in the run directory as ``probe.*``), since a random probe tests the plumbing, not the
semantics.

The run directory holds ``config.yaml``, ``tasks.npz``, one embedding per finished task
under ``parts/`` (rerunning resumes task by task), then ``embeddings.safetensors`` +
``meta.json`` (all tasks), ``tasks.csv`` (kind, head accuracy, Fisher norm per task),
``distances.csv`` (every distance asked, every ordered pair), ``distance_matrix.png``
(the first distance, clustered: complete linkage, optimal ordering; other distances as
``distance_matrix_<name>.png``) with ``leaf_order.json``, ``nearest.csv`` (each task's
nearest tasks), ``nearest_by_kind.csv`` (each task's nearest task of every kind: a
discovered task's nearest human task), ``by_kind.csv`` (each task's mean distance to
every kind of task: e.g. a discovered task's distance to the random ones) and the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from taskspace.commands.report import write_run_report
from taskspace.config import option
from taskspace.data import load_splits, save_splits
from taskspace.data.config import DataConfig, load_data
from taskspace.data.dataset import ImageDataset
from taskspace.embed.api import check_options, embed_tasks
from taskspace.embed.distances import DISTANCES, nearest, pdist
from taskspace.embed.embedding import Embedding, load_embeddings, save_embeddings
from taskspace.embed.plots import plot_distance_matrix
from taskspace.embed.probe import load_probe
from taskspace.engine import Recipe, fit_many
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_json
from taskspace.runs import RunDir
from taskspace.tasks import TaskSet, load_tasks, save_tasks, validate_tasks
from taskspace.tasks.spec import tasks_from_spec

__all__ = ["EmbedConfig", "main", "run_embed"]


@dataclass
class EmbedConfig:
    """Options of ``taskspace embed``."""

    data: DataConfig = option(factory=DataConfig, selector="name", help="the images")
    tasks: str = option(
        "human,random",
        "human, random, original, attributes and task files <path>[:format], comma-separated",
    )
    num_tasks: int = option(16, "human and random tasks each")
    probe: str = option(
        "convnet", "the probe: a registry name, tv:/timm:<name>, or a checkpoint path"
    )
    probe_kwargs: dict[str, Any] = option(factory=dict, help="the probe's architecture options")
    probe_weights: str | None = option(None, "a local weights file for the probe (no downloads)")
    probe_epochs: float = option(
        0, "first train the probe on the dataset's classes for this many epochs (0: as given)"
    )
    method: str = option("montecarlo", "montecarlo or variational")
    estimator: str = option(
        "per_sample", "Monte-Carlo: per_sample (true Fisher) or batch_mean_sq (the original)"
    )
    bn_mode: str = option("eval", "BatchNorm during the Fisher: eval, or train (the original)")
    subset: str = option(
        "random", "max_samples subset: random (seeded) or first_batches (the original)"
    )
    head_fit: str = option(
        "lbfgs", "the head refit: lbfgs (to the optimum) or adam (the original's 10 epochs)"
    )
    head_weight_decay: float | None = option(
        None, "the head's weight decay (default: 1e-3 for lbfgs, the original's 1e-4 for adam)"
    )
    skip_layers: int = option(0, "probe layers before the embedded ones (ResNet: 6 = layer3)")
    max_samples: int | None = option(None, "examples per task (default: all of the split)")
    kl_factor: float = option(1.0, "variational: 1 (Gaussian KL) or 2 (the original)")
    split: str = option("train", "the split whose examples are embedded")
    distances: str = option("cosine", f"comma-separated, from {', '.join(DISTANCES)}")
    var_eps: float | None = option(None, "variance floor of the distances (0: the original)")
    per_chunk: int = option(
        8, "tasks embedded together (shared work); a killed run resumes after the last chunk"
    )
    nearest_k: int = option(3, "neighbours per task in nearest.csv")
    seed: int = option(0, "seed of tasks, subsets, head fits and label draws")
    device: str = option("cpu", "cpu or cuda")
    out: str | None = option(None, "run directory (default runs/embed-<data>-<probe>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


NON_RESULT_KEYS = {"out", "progress", "device", "report", "per_chunk"}
PROBE_FILE = "probe"
#: Options of the embedding itself (vs of the run) passed to :func:`embed_tasks`.
EMBED_KEYS = (
    "method",
    "estimator",
    "bn_mode",
    "subset",
    "head_fit",
    "head_weight_decay",
    "skip_layers",
    "max_samples",
    "seed",
)


def _distances(cfg: EmbedConfig) -> list[str]:
    names = [d.strip() for d in cfg.distances.split(",") if d.strip()]
    bad = [d for d in names if d not in DISTANCES]
    if not names or bad:
        raise TaskspaceError(
            f"unknown distance {bad[0] if bad else cfg.distances!r}; choose from "
            f"{', '.join(DISTANCES)}"
        )
    return names


def _train_probe(cfg: EmbedConfig, dataset: ImageDataset, rd: RunDir) -> Path:
    """Train the probe on the dataset's classes (once; the run directory keeps it)."""
    path = rd / PROBE_FILE
    if Path(f"{path}.json").is_file():
        return path
    recipe = Recipe(epochs=cfg.probe_epochs, lr=1e-3, optimizer="adam", batch_size=128)
    ensemble = fit_many(
        cfg.probe,
        dataset,
        dataset.classes[None],
        recipe,
        seeds=[cfg.seed],
        train_idx=dataset.splits[cfg.split],
        device=cfg.device,
        model_kwargs=cfg.probe_kwargs,
        progress=cfg.progress,
    )
    ensemble.save(path)
    return path


def _probe(cfg: EmbedConfig, dataset: ImageDataset, rd: RunDir) -> torch.nn.Module:
    spec = cfg.probe
    if cfg.probe_epochs > 0:
        spec = str(_train_probe(cfg, dataset, rd))
    return load_probe(
        spec,
        num_classes=dataset.num_classes,
        in_channels=dataset.channels,
        image_size=dataset.image_size,
        weights=cfg.probe_weights,
        seed=cfg.seed,
        **cfg.probe_kwargs,
    )


def _embed_options(cfg: EmbedConfig) -> dict[str, Any]:
    """The keyword options of :func:`embed_tasks` this configuration asks for."""
    opts: dict[str, Any] = {k: getattr(cfg, k) for k in EMBED_KEYS}
    if cfg.method == "variational":
        opts["kl_factor"] = cfg.kl_factor
    return opts


def _part(rd: RunDir, i: int) -> Path:
    return rd.path / "parts" / f"task-{i:05d}"


def run_embed(cfg: EmbedConfig) -> Path:
    """Run (or resume) ``taskspace embed``; returns the run directory."""
    distances = _distances(cfg)
    check_options(**_embed_options(cfg))
    if cfg.per_chunk < 1:
        raise TaskspaceError(f"per_chunk must be >= 1, got {cfg.per_chunk}")
    if cfg.nearest_k < 1:
        raise TaskspaceError(f"nearest_k must be >= 1, got {cfg.nearest_k}")
    name_parts = [cfg.data.name, Path(cfg.probe).stem.replace(":", "_")]
    rd = RunDir.for_config(cfg, "embed", NON_RESULT_KEYS, cfg.out, name_parts)
    rd.check(cfg)
    dataset = load_data(cfg.data, progress=cfg.progress)
    if (rd / "splits.npz").exists():
        dataset.use_splits(load_splits(rd / "splits.npz"))
    if cfg.split not in dataset.splits:
        raise TaskspaceError(
            f"split {cfg.split!r} not in the dataset; it has {', '.join(dataset.splits)}"
        )
    tasks = (
        load_tasks(rd / "tasks.npz")
        if (rd / "tasks.npz").exists()
        else tasks_from_spec(cfg.tasks, dataset, num_tasks=cfg.num_tasks, seed=cfg.seed)
    )
    validate_tasks(tasks, dataset)

    def first_files() -> None:
        save_splits(rd / "splits.npz", dataset.splits)
        save_tasks(rd / "tasks.npz", tasks)

    rd.start(cfg, first_files)
    probe = _probe(cfg, dataset, rd)
    pending = [i for i in range(len(tasks)) if not (_part(rd, i) / "meta.json").exists()]
    if len(pending) < len(tasks):
        print(f"resuming {rd.path}: {len(tasks) - len(pending)}/{len(tasks)} tasks embedded")
    opts = _embed_options(cfg)
    for start in range(0, len(pending), cfg.per_chunk):
        chunk = pending[start : start + cfg.per_chunk]

        def save(j: int, e: Embedding, chunk: list[int] = chunk) -> None:
            save_embeddings(_part(rd, chunk[j]), [e])

        embed_tasks(
            dataset,
            tasks.select(chunk),
            probe,
            split=cfg.split,
            device=cfg.device,
            progress=cfg.progress,
            on_task=save,
            **opts,
        )
    embeddings = [load_embeddings(_part(rd, i))[0] for i in range(len(tasks))]
    metrics = merge_run(rd, cfg, tasks, embeddings, distances)
    rd.mark_finished(metrics)
    return rd.path


def _distance_kwargs(cfg: EmbedConfig) -> dict[str, Any]:
    return {} if cfg.var_eps is None else {"var_eps": cfg.var_eps}


def merge_run(
    rd: RunDir,
    cfg: EmbedConfig,
    tasks: TaskSet,
    embeddings: list[Embedding],
    distances: list[str],
) -> dict[str, float]:
    """All tasks' files: embeddings, tables, the clustered matrix; returns headline metrics."""
    save_embeddings(rd.path, embeddings)
    rows = []
    for name, kind, e in zip(tasks.names, tasks.kinds, embeddings):
        rows.append(
            {
                "task": name,
                "kind": kind,
                "head_accuracy": e.meta.get("head_accuracy"),
                "fisher_norm": float(np.linalg.norm(e.hessian)),
                "num_samples": e.meta.get("num_samples"),
            }
        )
    write_csv(rd / "tasks.csv", rows, list(rows[0]))
    matrices = {d: pdist(embeddings, d, **_distance_kwargs(cfg)) for d in distances}
    dist_rows = [
        {"distance": d, "from": a, "to": b, "value": float(m[i, j])}
        for d, m in matrices.items()
        for i, a in enumerate(tasks.names)
        for j, b in enumerate(tasks.names)
        if i != j
    ]
    write_csv(rd / "distances.csv", dist_rows, ["distance", "from", "to", "value"])
    leaves = {}
    for k, (d, m) in enumerate(matrices.items()):
        png = "distance_matrix.png" if k == 0 else f"distance_matrix_{d}.png"
        labels = [f"{n} ({kind})" for n, kind in zip(tasks.names, tasks.kinds)]
        _, order = plot_distance_matrix(m, labels, rd / png, title=f"{d} distance")
        leaves[d] = [tasks.names[i] for i in order]
    write_json(rd / "leaf_order.json", leaves)
    first = matrices[distances[0]]
    near = nearest(first, tasks.names, min(cfg.nearest_k, len(tasks) - 1))
    kind_of = dict(zip(tasks.names, tasks.kinds))
    for r in near:
        r["kind"] = kind_of[r["task"]]
        r["neighbour_kind"] = kind_of[r["neighbour"]]
    write_csv(
        rd / "nearest.csv",
        near,
        ["task", "kind", "rank", "neighbour", "neighbour_kind", "distance"],
    )
    by_kind, metrics = kind_distances(first, tasks)
    write_csv(rd / "by_kind.csv", by_kind, list(by_kind[0]) if by_kind else ["task"])
    per_kind = nearest_of_each_kind(first, tasks)
    write_csv(
        rd / "nearest_by_kind.csv",
        per_kind,
        ["task", "kind", "other_kind", "neighbour", "distance"],
    )
    return metrics


def nearest_of_each_kind(d: np.ndarray, tasks: TaskSet) -> list[dict[str, Any]]:
    """For every task and every kind of task, its nearest task of that kind (itself
    excluded): e.g. a discovered task's nearest human task."""
    k_arr = np.array(tasks.kinds)
    rows = []
    for i, (name, kind) in enumerate(zip(tasks.names, tasks.kinds)):
        for other in sorted(set(tasks.kinds)):
            cand = np.flatnonzero(k_arr == other)
            cand = cand[cand != i]
            if len(cand) == 0:
                continue
            j = int(cand[np.argmin(d[i, cand])])
            row = {"task": name, "kind": kind, "other_kind": other}
            rows.append({**row, "neighbour": tasks.names[j], "distance": float(d[i, j])})
    return rows


def kind_distances(d: np.ndarray, tasks: TaskSet) -> tuple[list[dict], dict[str, float]]:
    """Each task's mean distance to every kind (itself excluded), and the kind-pair means
    as headline metrics ``dist_<kind>_<kind>``."""
    kinds = sorted(set(tasks.kinds))
    k_arr = np.array(tasks.kinds)
    rows = []
    for i, (name, kind) in enumerate(zip(tasks.names, tasks.kinds)):
        row: dict[str, Any] = {"task": name, "kind": kind}
        for other in kinds:
            mask = k_arr == other
            mask[i] = False
            row[f"to_{other}"] = float(d[i, mask].mean()) if mask.any() else None
        rows.append(row)
    metrics = {}
    for a in kinds:
        for b in kinds:
            if a > b:
                continue
            vals = [r[f"to_{b}"] for r in rows if r["kind"] == a and r[f"to_{b}"] is not None]
            if vals:
                metrics[f"dist_{a}_{b}"] = round(float(np.mean(vals)), 6)
    return rows, metrics


def main(cfg: EmbedConfig) -> int:
    out = run_embed(cfg)
    for r in read_csv(out / "nearest.csv")[: 3 * cfg.nearest_k]:
        print(f"{r['task']:<24} -> {r['neighbour']:<24} {float(r['distance']):.4f}")
    for k, v in RunDir(out).metrics().items():
        print(f"{k:<28} {v:.4f}")
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
