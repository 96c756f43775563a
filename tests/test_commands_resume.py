"""Every command runs through the run layer: killed with SIGKILL part-way and rerun, it
ends with the same results as an uninterrupted run; sweeps resume and end with one table."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def taskspace(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process (one thread, so two processes sum identically)."""
    return subprocess.run(
        [sys.executable, "-m", "taskspace.cli", *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def killed_when(marker: Path, *args: str) -> None:
    """Start the CLI, SIGKILL it as soon as ``marker`` exists, and check it was cut short."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskspace.cli", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not marker.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), f"{marker} never appeared"


def same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


DISCOVER = [
    "discover",
    "encoder.K=2",
    "encoder.d=2",
    "meta.T=2",
    "meta.batch_size=16",
    "meta.eval_batch_size=16",
    "meta.heads_per_step=2",
    "meta.meta_steps=8",
    "encoder.kwargs={widths: [16]}",
    "model.kwargs={widths: [8]}",
    "evaluate=false",
    "checkpoint_every=1",
    "progress=false",
]


def test_discover_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*DISCOVER, f"out={whole}").returncode == 0
    killed_when(cut / "checkpoint.pt", *DISCOVER, f"out={cut}")
    step = torch.load(cut / "checkpoint.pt", weights_only=True)["step"]
    assert step < 8, "the run finished before it could be killed"
    rerun = taskspace(*DISCOVER, f"out={cut}")
    assert rerun.returncode == 0 and "resuming" in rerun.stdout
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(cut / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    same_tensors(a["encoder"], b["encoder"])
    assert [r["loss"] for r in a["logs"]] == [r["loss"] for r in b["logs"]]


PRETRAIN = [
    "pretrain",
    "simclr.steps=12",
    "simclr.batch_size=32",
    "checkpoint_every=1",
    "model.kwargs={widths: [16, 8]}",
    "progress=false",
]


def test_pretrain_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*PRETRAIN, f"out={whole}").returncode == 0
    killed_when(cut / "checkpoint.pt", *PRETRAIN, f"out={cut}")
    assert not (cut / "backbone.safetensors").exists()
    rerun = taskspace(*PRETRAIN, f"out={cut}")
    assert rerun.returncode == 0 and "resuming" in rerun.stdout
    same_tensors(
        load_file(str(whole / "backbone.safetensors")), load_file(str(cut / "backbone.safetensors"))
    )
    assert (whole / "log.csv").read_text() == (cut / "log.csv").read_text()


SPLIT = ["split", "discovered=human", "targets=0,11,18", "num_discovered=3", "progress=false"]
SPLIT_EVAL = [
    "split-eval",
    "recipe.steps=30",
    "model.kwargs={widths: [32]}",
    "launch.per_job=3",
    "pictures=0",
    "progress=false",
]


def test_split_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*SPLIT, f"out={whole}").returncode == 0
    killed_when(cut / "config.yaml", *SPLIT, f"out={cut}")
    assert not (cut / "done.json").exists()
    assert taskspace(*SPLIT, f"out={cut}").returncode == 0
    assert (whole / "splits.csv").read_text() == (cut / "splits.csv").read_text()
    for f in sorted((whole / "splits").glob("*.npz")):
        assert f.read_bytes() == (cut / "splits" / f.name).read_bytes(), f.name


def test_split_eval_killed_rerun_and_local_launch_equal_uninterrupted(tmp_path: Path) -> None:
    splits = tmp_path / "splits"
    assert taskspace(*SPLIT, f"out={splits}").returncode == 0
    whole, cut, local = tmp_path / "whole", tmp_path / "cut", tmp_path / "local"
    args = [*SPLIT_EVAL, f"splits={splits}"]
    assert taskspace(*args, f"out={whole}").returncode == 0
    killed_when(cut / "parts" / "part-0000.csv", *args, f"out={cut}")
    assert not (cut / "results.csv").exists()
    rerun = taskspace(*args, f"out={cut}")
    assert rerun.returncode == 0 and "chunks already finished" in rerun.stdout
    assert (whole / "results.csv").read_text() == (cut / "results.csv").read_text()
    assert taskspace(*args, "launch=local", f"out={local}").returncode == 0
    assert (whole / "results.csv").read_text() == (local / "results.csv").read_text()
    assert list((local / "jobs").glob("*_log.out")), "no local job ran"


SWEEP = [
    "agreement",
    "-m",
    "recipe.lr=1e-3,2e-3,3e-3",
    "seed=0,1,2",
    "num_tasks=1",
    "recipe.steps=10",
    "model.kwargs={widths: [16]}",
    "progress=false",
]


def test_sweep_of_nine_points_killed_and_rerun_ends_with_one_table(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    killed_when(out / "002" / "done.json", *SWEEP, f"out={out}")
    finished = sorted(p.parent.name for p in out.glob("*/done.json"))
    assert 3 <= len(finished) < 9, finished
    stamps = {n: (out / n / "done.json").stat().st_mtime_ns for n in finished}
    rerun = taskspace(*SWEEP, f"out={out}")
    assert rerun.returncode == 0, rerun.stderr
    assert f"{len(finished)}/9 points finished" in rerun.stdout
    for n, stamp in stamps.items():  # finished points were skipped, not rerun
        assert (out / n / "done.json").stat().st_mtime_ns == stamp
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 9 and all(r["finished"] == "True" for r in rows)
    assert {(r["recipe.lr"], r["seed"]) for r in rows} == {
        (lr, s) for lr in ("0.001", "0.002", "0.003") for s in ("0", "1", "2")
    }
    assert all(0.0 <= float(r["as_heldout_human"]) <= 1.0 for r in rows)


def test_sweep_with_a_bad_point_fails_before_running_anything(tmp_path: Path) -> None:
    bad = taskspace("agreement", "-m", "pairs=1,two", f"out={tmp_path / 's'}")
    assert bad.returncode == 2 and "pairs must be an integer" in bad.stderr
    assert not (tmp_path / "s").exists()


def test_every_command_has_help(capsys: pytest.CaptureFixture) -> None:
    from taskspace.cli import COMMANDS
    from taskspace.cli import main as cli

    assert set(COMMANDS) == {
        "affinity",
        "agreement",
        "discover",
        "embed",
        "group",
        "mtl",
        "pretrain",
        "report",
        "robust",
        "split",
        "split-eval",
        "spurious",
        "demo",
    }
    for command in COMMANDS:
        assert cli([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "options (key=default)" in out and "out=None" in out or command == "demo"
