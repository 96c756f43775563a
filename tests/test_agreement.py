"""Agreement score: the human-vs-random gap on digits, and the `taskspace agreement` command
(resume after a kill, local fan-out, clear errors for bad input)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taskspace.agreement import agreement_score, proxy_agreement_score, summarize
from taskspace.cli import main as cli
from taskspace.tasks import TaskSet, human_tasks, random_tasks, save_tasks

FAST_CLI = [
    "data=digits",
    "model=mlp",
    "num_tasks=2",
    "recipe.epochs=3",
    "launch.per_job=1",
    "progress=false",
]


@pytest.mark.slow
def test_human_tasks_agree_random_tasks_do_not(digits):
    """Done-when: digits, mlp, default recipe, 1 pair: human >= 0.95, random in [0.5, 0.85],
    gap >= 0.15."""
    tasks = TaskSet.concat(
        human_tasks(digits.classes, 10, max_tasks=4, seed=0, include_original=False),
        random_tasks(len(digits), 4, seed=0),
    )
    rows = agreement_score(digits, tasks, model="mlp", recipe="fast", pairs=1, seed=0)
    summary = {(s["kind"], s["split"]): s["mean"] for s in summarize(rows)}
    human, rand = summary[("human", "heldout")], summary[("random", "heldout")]
    print(f"digits mlp AS: human {human:.3f} random {rand:.3f}")
    assert human >= 0.95
    assert 0.5 <= rand <= 0.85
    assert human - rand >= 0.15
    # accuracies are reported against the task's own labels
    acc = [r["acc_a"] for r in rows if r["kind"] == "human" and r["split"] == "test"]
    assert min(acc) > 0.85


def test_rows_pairs_and_proxy(digits):
    tasks = human_tasks(digits.classes, 10, max_tasks=2, seed=1, include_original=True)
    rows = agreement_score(
        digits, tasks, recipe="fast", pairs=2, model="mlp", model_kwargs={"widths": (64, 32)}
    )
    # 3 tasks (one 10-way) x 2 pairs x 2 splits
    assert len(rows) == 12
    assert {r["split"] for r in rows} == {"heldout", "test"}
    original = [r for r in rows if r["task"] == "original"]
    assert all(r["acc_a"] > 0.8 for r in original)  # a real 10-way learner
    proxy = proxy_agreement_score(
        digits,
        tasks.select([0]),
        model="mlp",
        steps=20,
        batch_size=128,
        model_kwargs={"widths": (64, 32)},
    )
    assert len(proxy) == 1 and proxy[0]["split"] == "proxy"
    assert 0.0 <= proxy[0]["agreement"] <= 1.0


def test_pairs_differ_only_in_init(digits):
    """Seeds depend on (seed, task, pair): the same task gets the same models in any chunk."""
    tasks = human_tasks(digits.classes, 10, max_tasks=3, seed=0, include_original=False)
    kw = dict(recipe="fast", model="mlp", model_kwargs={"widths": (64, 32)})
    whole = agreement_score(digits, tasks, **kw)
    part = agreement_score(digits, tasks.select([2]), task_ids=[2], **kw)
    assert [r for r in whole if r["task_index"] == 2] == part


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_writes_tables_and_resumes_after_kill(tmp_path, capsys):
    ref = tmp_path / "ref"
    code, out, _ = _run_cli(["agreement", *FAST_CLI, f"out={ref}"], capsys)
    assert code == 0 and "random" in out and str(ref) in out
    for name in [
        "agreement.csv",
        "summary.csv",
        "agreement.png",
        "config.yaml",
        "tasks.npz",
        "splits.npz",
    ]:
        assert (ref / name).exists(), name
    header = (ref / "agreement.csv").read_text().splitlines()[0]
    assert header == "task,kind,task_index,pair,split,agreement,acc_a,acc_b"

    run = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskspace.cli", "agreement", *FAST_CLI, f"out={run}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = run / "parts" / "part-0000.csv"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    done_before = sorted(p.name for p in (run / "parts").glob("part-*.csv"))
    assert len(done_before) < 4, "the run finished before it could be killed"
    assert not (run / "agreement.csv").exists()
    stamp = first.stat().st_mtime_ns

    code, out, _ = _run_cli(["agreement", *FAST_CLI, f"out={run}"], capsys)
    assert code == 0
    assert f"{len(done_before)}/4 chunks already finished" in out
    assert first.stat().st_mtime_ns == stamp  # finished rows were not recomputed
    assert (run / "agreement.csv").read_bytes() == (ref / "agreement.csv").read_bytes()
    assert (run / "summary.csv").read_bytes() == (ref / "summary.csv").read_bytes()

    # a finished run reruns as a no-op with the same tables
    code, out, _ = _run_cli(["agreement", *FAST_CLI, f"out={run}"], capsys)
    assert code == 0 and "4/4 chunks already finished" in out


@pytest.mark.slow
def test_local_launch_matches_inprocess(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _run_cli(["agreement", *FAST_CLI, f"out={a}"], capsys)[0] == 0
    assert (
        _run_cli(["agreement", *FAST_CLI, f"out={b}", "launch=local", "launch.parallel=2"], capsys)[
            0
        ]
        == 0
    )
    assert (a / "agreement.csv").read_bytes() == (b / "agreement.csv").read_bytes()
    assert list((b / "jobs").glob("*_log.out")), "submitit local jobs left no logs"


def _write_tree(root: Path, corrupt: bool) -> None:
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            arr = (np.random.default_rng(i).random((8, 8, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    if corrupt:
        (root / "b" / "9.png").write_bytes(b"\x89PNG not really an image")


def _bad_inputs(tmp_path: Path) -> dict[str, list[str]]:
    short = tmp_path / "short.csv"
    short.write_text(",t0\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    one = tmp_path / "one.npz"
    save_tasks(one, TaskSet(torch.zeros(1, 1797, dtype=torch.long), ["flat"], ["table"], {}))
    tree = tmp_path / "tree"
    _write_tree(tree, corrupt=True)
    return {
        "labels per task": [f"tasks={short}"],
        "only one class": [f"tasks={one}"],
        "unknown model": ["model=nope", "tasks=random"],
        "data folder not found": ["data=imagefolder", f"data.root={tmp_path / 'missing'}"],
        "9.png": ["data=imagefolder", f"data.root={tree}", "tasks=random"],
        "unknown option": ["colour=blue"],
        "must be an integer": ["pairs=two"],
    }


@pytest.mark.parametrize(
    "case",
    [
        "labels per task",
        "only one class",
        "unknown model",
        "data folder not found",
        "9.png",
        "unknown option",
        "must be an integer",
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, case):
    out = tmp_path / "run"
    args = _bad_inputs(tmp_path)[case]
    code, _, err = _run_cli(["agreement", *FAST_CLI, *args, f"out={out}"], capsys)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert case in lines[0]
    assert "Traceback" not in err
    assert not (out / "agreement.csv").exists()
    assert not list(out.glob("**/*.csv")) if out.exists() else True


def test_rerun_with_other_options_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run_cli(["agreement", *FAST_CLI, "num_tasks=1", f"out={out}"], capsys)[0] == 0
    code, _, err = _run_cli(["agreement", *FAST_CLI, "num_tasks=1", "seed=3", f"out={out}"], capsys)
    assert code == 2 and "different options (seed)" in err
    # a run made before an option existed resumes at that option's default, not otherwise
    cfg = out / "config.yaml"
    cfg.write_text(
        "".join(
            ln
            for ln in cfg.read_text().splitlines(keepends=True)
            if not ln.strip().startswith("bf16:")
        )
    )
    assert _run_cli(["agreement", *FAST_CLI, "num_tasks=1", f"out={out}"], capsys)[0] == 0
    code, _, err = _run_cli(
        ["agreement", *FAST_CLI, "num_tasks=1", "recipe.bf16=true", f"out={out}"], capsys
    )
    assert code == 2 and "different options (recipe.bf16)" in err


def test_help_lists_options(capsys):
    assert cli(["agreement", "--help"]) == 0
    text = capsys.readouterr().out
    assert "pairs=1" in text and "launch.kind='inprocess'" in text
    assert cli(["nonsense"]) == 2
