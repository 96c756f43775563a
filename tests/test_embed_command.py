"""``taskspace embed``: files, resume after SIGKILL, kinds, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from taskspace.cli import main as cli
from taskspace.embed.embedding import load_embeddings
from taskspace.io import read_csv

pytestmark = pytest.mark.usefixtures("one_thread")

#: A small, fast setting: a 1-epoch MLP probe on digits, 3 human and 3 random tasks.
FAST = [
    "data=digits",
    "tasks=human,random",
    "num_tasks=3",
    "probe=mlp",
    "probe_kwargs={widths: [32]}",
    "probe_epochs=1",
    "max_samples=128",
    "distances=cosine,jsd",
    "progress=false",
    "report=false",
]


def test_embed_writes_every_file_and_kind_tables(tmp_path: Path) -> None:
    out = tmp_path / "e"
    assert cli(["embed", *FAST, f"out={out}"]) == 0
    for name in (
        "embeddings.safetensors",
        "meta.json",
        "distances.csv",
        "distance_matrix.png",
        "distance_matrix_jsd.png",
        "leaf_order.json",
        "nearest.csv",
        "nearest_by_kind.csv",
        "by_kind.csv",
        "tasks.csv",
        "probe.json",
    ):
        assert (out / name).is_file(), name
    embs = load_embeddings(out)
    assert len(embs) == 6 and len({e.hessian.shape for e in embs}) == 1
    rows = read_csv(out / "distances.csv")
    assert {r["distance"] for r in rows} == {"cosine", "jsd"}
    assert len(rows) == 2 * 6 * 5
    cos = {(r["from"], r["to"]): float(r["value"]) for r in rows if r["distance"] == "cosine"}
    assert all(v >= 0 for v in cos.values())
    h = next(a for a, _ in cos if a.startswith("human"))
    assert cos[(h, "random-000")] == pytest.approx(cos[("random-000", h)])
    near = read_csv(out / "nearest.csv")
    assert len(near) == 6 * 3 and {r["rank"] for r in near} == {"1", "2", "3"}
    # the nearest neighbour is the smallest distance of its row
    for r in near:
        if r["rank"] == "1":
            row = [v for (a, _), v in cos.items() if a == r["task"]]
            assert float(r["distance"]) == pytest.approx(min(row))
    kinds = read_csv(out / "by_kind.csv")
    assert {r["kind"] for r in kinds} == {"human", "random"}
    per_kind = read_csv(out / "nearest_by_kind.csv")
    assert len(per_kind) == 6 * 2
    tasks = read_csv(out / "tasks.csv")
    assert all(0.0 <= float(r["head_accuracy"]) <= 1.0 for r in tasks)


def _embed_process(out: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [a for a in FAST if not a.startswith("num_tasks")] + ["num_tasks=4", "per_chunk=2"]
    return subprocess.Popen(
        [sys.executable, "-m", "taskspace.cli", "embed", *args, f"out={out}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_embed_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = _embed_process(killed)
    deadline = time.time() + 120
    parts = killed / "parts"
    while time.time() < deadline and proc.poll() is None:
        if parts.is_dir() and len(list(parts.glob("task-*/meta.json"))) >= 1:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert not (killed / "done.json").exists(), "the run finished before it was killed"
    finished_before = len(list(parts.glob("task-*/meta.json")))
    assert 1 <= finished_before < 8
    assert _embed_process(killed).wait() == 0
    assert _embed_process(whole).wait() == 0
    a, b = load_embeddings(killed), load_embeddings(whole)
    assert len(a) == len(b) == 8
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.hessian, y.hessian)
    assert read_csv(killed / "distances.csv") == read_csv(whole / "distances.csv")


@pytest.mark.parametrize(
    ("extra", "message", "checked_first"),
    [
        (["distances=cosine,euclid"], "unknown distance 'euclid'", True),
        (["probe=/no/such/probe.safetensors"], "probe", False),
        (["max_samples=8"], "fewer than the minimum 32", False),
        (["method=fisher"], "method must be one of montecarlo, variational", True),
        (["head_fit=sgd"], "head_fit must be one of lbfgs, adam", True),
        (["head_weight_decay=-1"], "head_weight_decay must be a number >= 0", True),
        (["skip_layers=-1"], "skip_layers must be a non-negative integer", True),
        (["tasks=attributes"], "needs a dataset with attributes", False),
    ],
)
def test_embed_bad_input_is_one_line_exit_2(
    tmp_path: Path,
    extra: list[str],
    message: str,
    checked_first: bool,
    capsys: pytest.CaptureFixture,
) -> None:
    """One line, exit 2, no finished run; a bad option value is refused before the run
    directory is made."""
    out = tmp_path / "bad"
    assert cli(["embed", *FAST, *extra, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (out / "done.json").exists()
    if checked_first:
        assert not out.exists()
