"""``taskspace robust``: tables, pictures, saved models and report; resume after kill -9;
a 3 x 3 x 2-seed sweep with worst-group selection; the batched grid; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from taskspace.cli import main
from taskspace.data import load_dataset
from taskspace.engine import Ensemble
from taskspace.io import read_csv
from taskspace.robustness import fit_grid, fit_robust
from test_commands_resume import killed_when, taskspace

FAST = ["method.epochs=3", "progress=false"]


def test_robust_writes_tables_pictures_models_and_report(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "r"
    assert main(["robust", "methods=erm,jtt,dro", "seeds=[0,1]", *FAST, f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy, mean +- std over seeds" in printed
    assert "images per group: g0 75 g1 75 g2 75 g3 75" in printed
    summary = read_csv(out / "summary.csv")
    assert [(r["method"], r["split"]) for r in summary] == [
        (m, s) for m in ("erm", "jtt", "dro") for s in ("val", "test")
    ]
    results = read_csv(out / "results.csv")
    assert len(results) == 3 * 2 * 2  # methods x seeds x splits
    for r in summary:  # the summary is the mean over the seeds' rows
        rows = [x for x in results if x["method"] == r["method"] and x["split"] == r["split"]]
        mean = sum(float(x["worst_group_acc"]) for x in rows) / len(rows)
        assert float(r["worst_group_acc_mean"]) == pytest.approx(mean, abs=1e-6)
    counts = {r["split"]: r for r in read_csv(out / "group_counts.csv")}
    assert counts["test"]["g3 large=1,blue=1"] == "75"
    epochs = read_csv(out / "epochs.csv")
    assert {r["split"] for r in epochs} == {"val", "test"}
    assert max(float(r["epoch"]) for r in epochs if r["method"] == "erm") == pytest.approx(
        3, abs=0.05
    )
    for name in ("group_accuracy.png", "worst_group.png", "report.html"):
        assert (out / name).stat().st_size > 1000
    done = json.loads((out / "done.json").read_text())
    assert done["erm_test_worst"] == pytest.approx(
        float(
            next(r for r in summary if r["method"] == "erm" and r["split"] == "test")[
                "worst_group_acc_mean"
            ]
        ),
        abs=1e-6,
    )
    erm = Ensemble.load(out / "models" / "erm.json")
    assert len(erm) == 2 and (out / "models" / "jtt-stage1.json").exists()
    assert 'class="report-section robust"' in (out / "report.html").read_text()


def test_robust_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    args = [
        "robust",
        "methods=erm,rwg,subg",
        "seeds=[0]",
        "method.epochs=4",
        "progress=false",
        "report=false",
    ]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*args, f"out={whole}").returncode == 0
    killed_when(cut / "parts" / "part-0000.csv", *args, f"out={cut}")
    assert not (cut / "done.json").exists()
    assert taskspace(*args, f"out={cut}").returncode == 0
    assert (whole / "results.csv").read_text() == (cut / "results.csv").read_text()
    assert (whole / "summary.csv").read_text() == (cut / "summary.csv").read_text()


def test_sweep_lr_by_weight_decay_with_two_seeds_selects_by_val_worst_group(
    tmp_path: Path,
) -> None:
    out = tmp_path / "sweep"
    args = [
        "robust",
        "-m",
        "method.lr=0.01,0.03,0.1",
        "method.weight_decay=0.001,0.01,0.03",
        "methods=rwg",
        "seeds=[0,1]",
        "method.epochs=2",
        "progress=false",
        "report=false",
        f"out={out}",
    ]
    killed_when(out / "002" / "done.json", *args)
    finished = sorted(p.parent.name for p in out.glob("*/done.json"))
    assert 3 <= len(finished) < 9, finished
    rerun = taskspace(*args)
    assert rerun.returncode == 0, rerun.stderr
    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 9 and all(r["finished"] == "True" for r in rows)
    best = max(rows, key=lambda r: float(r["val_worst"]))
    assert json.loads((out / "best.json").read_text())["point"] == best["point"]
    assert f"best point by val_worst ({best['val_worst']})" in rerun.stdout
    assert f"method.lr={best['method.lr']}" in rerun.stdout


def test_batched_grid_equals_one_fit_per_point() -> None:
    ds = load_dataset("coloured_digits")
    points = [{"lr": lr, "weight_decay": wd} for lr in (0.02, 0.05) for wd in (0.001, 0.03)]
    kw = {"preset": "digits", "seeds": [0, 1], "epochs": 2, "select": "last"}
    together = fit_grid(ds, "large:blue", "jtt", points, **kw)
    assert [r.config.lr for r in together] == [0.02, 0.02, 0.05, 0.05]
    for point, r in zip(points, together):
        alone = fit_robust(ds, "large:blue", "jtt", **kw, **point)
        for k, v in alone.ensemble.params.items():
            torch.testing.assert_close(r.ensemble.params[k], v, rtol=1e-4, atol=1e-5)
        assert torch.equal(r.metrics["test"].total, alone.metrics["test"].total)


def test_batched_grid_from_the_command_reports_the_best_point(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "g"
    assert (
        main(
            [
                "robust",
                "methods=erm",
                "grid.lr=[0.02,0.05]",
                "grid.weight_decay=[0.001,0.03]",
                "seeds=[0,1]",
                *FAST,
                "report=false",
                f"out={out}",
            ]
        )
        == 0
    )
    summary = read_csv(out / "summary.csv")
    val = [r for r in summary if r["split"] == "val"]
    assert len(val) == 4
    best = max(val, key=lambda r: float(r["worst_group_acc_mean"]))
    done = json.loads((out / "done.json").read_text())
    assert done["erm_best_lr"] == float(best["lr"])
    assert done["erm_val_worst"] == pytest.approx(float(best["worst_group_acc_mean"]), abs=1e-6)
    assert "erm lr=0.02 wd=0.001" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["grouping=large:blu"], "did you mean 'blue'"),
        (["methods=erm,jtx"], "unknown method(s) jtx"),
        (["methods=rwg", "data.correlation=1.0"], "empty"),
        (["select=best"], "select must be worst, avg or last"),
        (["data=digits"], "has no attributes"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    tmp_path: Path,
    capsys,
    args: list[str],
    message: str,  # noqa: ANN001
) -> None:
    out = tmp_path / "bad"
    assert main(["robust", *args, *FAST, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()
