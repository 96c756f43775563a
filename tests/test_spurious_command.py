"""``taskspace spurious`` on CelebA-lite: the stages, their files, resume, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taskspace.cli import main
from taskspace.io import read_csv
from test_commands_resume import killed_when, taskspace

FAST = ["progress=false", "report=false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spurious") / "run"
    assert main(["spurious", "stages=train", *FAST, f"out={out}"]) == 0
    assert main(["spurious", "stages=matrix,extract", "clusters=6", *FAST, f"out={out}"]) == 0
    return out


def test_stages_write_the_matrix_pairs_and_clusters(run: Path) -> None:
    pairs = read_csv(run / "pairs.csv")
    assert {(p["task"], p["attr"]) for p in pairs} == {("Square", "Red"), ("Dot", "Frame")}
    delta = {r["task"]: r for r in read_csv(run / "delta.csv")}
    assert float(delta["Square"]["Red"]) > 66 and float(delta["Red"]["Square"]) < 11
    hist = read_csv(run / "histogram.csv")
    assert sum(int(h["cells"]) for h in hist) == 8 * 7  # every off-diagonal cell
    clusters = json.loads((run / "clusters.json").read_text())
    svd = [set(names) for names in clusters["svd_kmeans"]["clusters"].values()]
    assert {"Square", "Red"} in svd and {"Dot", "Frame"} in svd
    for name in ("delta.png", "histogram.png", "delta-cocluster.png", "heatmaps"):
        assert (run / name).exists()
    assert json.loads((run / "done.json").read_text())["top_pair"] == "Square:Red"


def test_svd_on_the_rows_of_t_as_the_reference(run: Path) -> None:
    assert (
        main(["spurious", "stages=extract", "svd_input=rows", "clusters=6", *FAST, f"out={run}"])
        == 0
    )
    svd = json.loads((run / "clusters.json").read_text())["svd_kmeans"]
    assert svd["input"] == "rows" and sum(len(v) for v in svd["clusters"].values()) == 8


def test_rerun_reuses_the_models(run: Path, capsys) -> None:  # noqa: ANN001
    before = (run / "models" / "attributes.safetensors").stat().st_mtime_ns
    assert main(["spurious", "clusters=6", *FAST, f"out={run}"]) == 0
    assert (run / "models" / "attributes.safetensors").stat().st_mtime_ns == before
    assert "Square:Red" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["stages=matrix"], "needs the task models of stage train"),
        (["tasks=Square,Blue"], "has no attribute(s) Blue"),
        (["stages=train,plot"], "unknown stage(s) plot"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, args, message) -> None:  # noqa: ANN001
    out = tmp_path / "bad"
    assert main(["spurious", *args, *FAST, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (out / "models").exists()


def test_train_stage_fans_out_in_parts_and_gives_the_same_matrix(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    args = ["spurious", "stages=train,matrix", "launch=local", "launch.per_job=3", *FAST]
    assert main([*args, f"out={out}"]) == 0
    assert len(list((out / "parts").glob("part-*.json"))) == 3  # 8 attributes in parts of 3
    assert list((out / "jobs").glob("*_log.out")), "no local job ran"
    whole = {r["task"]: r for r in read_csv(run / "delta.csv")}
    split = {r["task"]: r for r in read_csv(out / "delta.csv")}
    for task, row in whole.items():
        for attr, value in row.items():
            if attr != "task":
                assert float(split[task][attr]) == pytest.approx(float(value), abs=2.0)
    assert read_csv(out / "pairs.csv")[0]["task"] == "Square"


def test_train_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    args = ["spurious", "stages=train,matrix", "launch.per_job=2", "recipe.epochs=2", *FAST]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*args, f"out={whole}").returncode == 0
    killed_when(cut / "parts" / "part-0000.json", *args, f"out={cut}")
    assert not (cut / "delta.csv").exists()
    rerun = taskspace(*args, f"out={cut}")
    assert rerun.returncode == 0, rerun.stderr
    assert (whole / "delta.csv").read_text() == (cut / "delta.csv").read_text()
