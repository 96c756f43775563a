"""``taskspace split-eval``: train on adversarial and random splits, the headline table.

Trains the learner (``model``, ``recipe``) on every split (adversarial and random, many at
once) and writes ``results.csv`` (one row per split and setting), ``headline.csv``,
``headline.png`` and ``split-<name>.png`` pictures. It reads ``splits=<split run dir>`` or
builds the splits itself from the same options as ``taskspace split``. Chunks of
``launch.per_job`` splits (default 32) are independent parts: a rerun skips finished
chunks, and ``launch=local`` / ``launch=slurm`` fan them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from taskspace.commands.report import write_run_report
from taskspace.commands.split import SPLIT_RENAMED, SplitConfig
from taskspace.config import load_config, option
from taskspace.data import ImageDataset
from taskspace.data.config import load_data
from taskspace.engine.recipe_config import RecipeConfig
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write, read_csv, write_csv
from taskspace.report.plots import plot_headline
from taskspace.report.split_pictures import split_picture
from taskspace.runs import LaunchOptions, RunDir, run_jobs
from taskspace.splits import (
    HEADLINE_COLUMNS,
    RESULT_COLUMNS,
    Split,
    build_splits,
    evaluate_splits,
    format_headline,
    read_splits,
    summarize_headline,
    write_splits,
)

__all__ = ["SplitEvalConfig", "main", "run_eval"]


@dataclass
class SplitEvalConfig(SplitConfig):
    """Options of ``taskspace split-eval``: the split options, or ``splits=<run dir>``."""

    RENAMED: ClassVar[dict[str, str]] = {**SPLIT_RENAMED, "splits_per_job": "launch.per_job"}

    splits: str | None = option(None, "a split run directory (else built from the options)")
    recipe: RecipeConfig = option(
        factory=RecipeConfig, selector="preset", help="how the learner trains"
    )
    launch: LaunchOptions = option(
        factory=LaunchOptions, selector="kind", help="where chunks of splits run"
    )
    settings: str = option("auto", "auto, 2-way and/or <C>-way, comma-separated")
    pictures: int = option(2, "adversarial splits to draw")
    per_class: int = option(6, "images per class in a picture")
    device: str = option("cpu", "cpu or cuda")
    chunk_size: int | None = option(None, "models per batched chunk (default: by memory)")
    batched: bool | None = option(None, "force vmap (true) or the per-model loop (false)")


NON_RESULT_KEYS = {
    "out",
    "progress",
    "device",
    "chunk_size",
    "batched",
    "launch",
    "pictures",
    "per_class",
    "export_partitions",
    "report",
}
SPLITS_PER_JOB = 32


def run_dir_of(cfg: SplitEvalConfig) -> RunDir:
    return RunDir.for_config(
        cfg, "split-eval", NON_RESULT_KEYS, cfg.out, [cfg.data.name, cfg.model.name]
    )


def eval_setup(cfg: SplitEvalConfig) -> tuple[RunDir, ImageDataset, list[Split]]:
    """The run directory, the dataset and the splits (read or built), all validated."""
    cfg.recipe.resolve()
    if (cfg.launch.per_job or SPLITS_PER_JOB) < 1:
        raise TaskspaceError(f"launch.per_job must be >= 1, got {cfg.launch.per_job}")
    rd = run_dir_of(cfg)
    rd.check(cfg)
    if cfg.splits:
        src = Path(cfg.splits)
        if not (src / "config.yaml").is_file():
            raise TaskspaceError(f"{src} is not a split run directory (no config.yaml)")
        dataset = load_data(
            load_config(SplitConfig, src / "config.yaml").data, progress=cfg.progress
        )
        return rd, dataset, read_splits(src, len(dataset))
    dataset = load_data(cfg.data, progress=cfg.progress)
    if (rd / "splits.csv").exists():
        return rd, dataset, read_splits(rd.path, len(dataset))
    splits, _, _ = build_splits(cfg, dataset, cfg.model.name)
    return rd, dataset, splits


def run_chunk(run_dir: str, chunk: int, ids: list[int]) -> str:
    """One job: train on splits ``ids``; write the part's rows and its predictions."""
    rd = RunDir(run_dir, NON_RESULT_KEYS)
    cfg: SplitEvalConfig = rd.config(SplitEvalConfig)
    data = (
        load_config(SplitConfig, Path(cfg.splits) / "config.yaml").data if cfg.splits else cfg.data
    )
    dataset = load_data(data, progress=False)
    splits = read_splits(rd.path, len(dataset))
    rows, preds = evaluate_splits(
        dataset,
        [splits[i] for i in ids],
        settings=cfg.settings,
        model=cfg.model.name,
        recipe=cfg.recipe.resolve(),
        seed=cfg.seed,
        split_ids=ids,
        device=cfg.device,
        chunk_size=cfg.chunk_size,
        batched=cfg.batched,
        model_kwargs=cfg.model.kwargs,
        progress=cfg.progress,
        return_predictions=True,
    )
    keys = sorted(preds)
    arrays = {"names": np.array([f"{a}|{b}" for a, b in keys] or [""])}
    arrays["pred"] = (
        torch.stack([preds[k] for k in keys]).numpy().astype(np.int16)
        if keys
        else np.zeros((0, len(dataset)), np.int16)
    )

    def _write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, names=arrays["names"], pred=arrays["pred"])

    atomic_write(rd.part(chunk, "npz"), _write)  # predictions first, rows mark the part done
    return str(rd.write_part(chunk, rows, RESULT_COLUMNS))


def run_eval(cfg: SplitEvalConfig) -> Path:
    """Run (or resume) ``taskspace split-eval``; returns the run directory."""
    rd, dataset, splits = eval_setup(cfg)
    rd.start(cfg, lambda: write_splits(rd.path, splits, dataset, cfg.export_partitions))
    per = cfg.launch.per_job or SPLITS_PER_JOB
    chunks = [list(range(i, min(i + per, len(splits)))) for i in range(0, len(splits), per)]
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
    summary = merge_eval(rd, cfg, dataset, splits, len(chunks))
    rd.mark_finished({f"{r['type']}_{r['setting']}": round(float(r["mean"]), 6) for r in summary})
    return rd.path


def _load_preds(rd: RunDir, n_chunks: int) -> dict[str, torch.Tensor]:
    preds: dict[str, torch.Tensor] = {}
    for c in range(n_chunks):
        with np.load(rd.part(c, "npz"), allow_pickle=False) as z:
            for name, row in zip(z["names"].tolist(), z["pred"]):
                if name:
                    preds[str(name)] = torch.from_numpy(row.astype(np.int64))
    return preds


def merge_eval(
    rd: RunDir, cfg: SplitEvalConfig, dataset: ImageDataset, splits: list[Split], n_chunks: int
) -> list[dict]:
    """``results.csv``, ``headline.csv``, ``headline.png`` and split pictures."""
    rows: list[dict] = [dict(r) for r in rd.merged_rows(n_chunks)]
    for r in rows:
        for k in ("train_acc", "test_acc"):
            r[k] = float(r[k])
        for k in ("n_train", "n_test", "split_id"):
            r[k] = int(r[k])
    rows.sort(key=lambda r: (r["split_id"], r["setting"]))
    write_csv(rd / "results.csv", rows, RESULT_COLUMNS)
    summary = summarize_headline(rows)
    write_csv(rd / "headline.csv", summary, HEADLINE_COLUMNS)
    plot_headline(
        summary,
        rd / "headline.png",
        title=f"{cfg.model.name} on {dataset.name}: test-side accuracy",
    )
    if cfg.pictures > 0:
        preds = _load_preds(rd, n_chunks)
        cls = f"{dataset.num_classes}-way"
        for s in [s for s in splits if s.kind != "random"][: cfg.pictures]:
            acc = [r for r in rows if r["split"] == s.name]
            info = ", ".join(f"{r['setting']} test acc {r['test_acc']:.2f}" for r in acc)
            split_picture(
                dataset,
                s,
                rd / f"split-{s.name}.png",
                preds.get(f"{s.name}|{cls}"),
                per_class=cfg.per_class,
                seed=cfg.seed,
                title=f"{s.name} ({info})",
            )
    return summary


def main(cfg: SplitEvalConfig) -> int:
    out = run_eval(cfg)
    print(format_headline(read_csv(out / "headline.csv")))
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
