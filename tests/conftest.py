"""Shared fixtures: the digits dataset (loaded once) and the path to ../shared/external."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from taskspace.data import ImageDataset, load_dataset

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"


@pytest.fixture(scope="module")
def one_thread():  # noqa: ANN201
    """One intra-op thread for a module of small trainings: on shared, busy cores two
    spinning OpenMP threads per process made them tens of times slower (0.45 s vs 60 s for
    one call, measured). Modules opt in with ``pytestmark = usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits() -> ImageDataset:
    return load_dataset("digits")


#: Small but real digits runs of every kind, for the report tests (options kept tiny).
REPORT_RUNS = {
    "agreement": [
        "agreement",
        "tasks=human,random",
        "num_tasks=3",
        "launch.per_job=2",
        "recipe.steps=40",
        "model.kwargs={widths: [32]}",
    ],
    "discover": [
        "discover",
        "encoder.K=4",
        "encoder.d=4",
        "meta.T=2",
        "meta.batch_size=32",
        "meta.eval_batch_size=32",
        "meta.meta_steps=6",
        "meta.heads_per_step=4",
        "encoder.kwargs={widths: [32]}",
        "model.kwargs={widths: [16]}",
        "evaluation.epochs=1",
        "evaluation.baselines=true",
        "evaluation.num_baseline_tasks=2",
        "evaluation.gallery_size=4",
    ],
    "pretrain": [
        "pretrain",
        "simclr.steps=4",
        "simclr.batch_size=32",
        "model.kwargs={widths: [16]}",
    ],
}


@pytest.fixture(scope="session")
def report_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Run directories of every kind made by the real commands on digits (no reports)."""
    from taskspace.cli import main

    root = tmp_path_factory.mktemp("report-runs")
    runs = {name: root / name for name in (*REPORT_RUNS, "split", "split-eval", "sweep")}
    common = ["progress=false", "report=false"]
    for name, args in REPORT_RUNS.items():
        assert main([*args, *common, f"out={runs[name]}"]) == 0
    split = ["discovered=" + str(runs["discover"]), "num_discovered=2", "targets=0,11"]
    assert main(["split", *split, *common, f"out={runs['split']}"]) == 0
    assert (
        main(
            [
                "split-eval",
                f"splits={runs['split']}",
                "recipe.steps=40",
                "model.kwargs={widths: [32]}",
                *common,
                f"out={runs['split-eval']}",
            ]
        )
        == 0
    )
    sweep = [
        "agreement",
        "-m",
        "seed=0,1",
        "num_tasks=1",
        "recipe.steps=10",
        "model.kwargs={widths: [16]}",
        *common,
        f"out={runs['sweep']}",
    ]
    assert main(sweep) == 0
    return runs
