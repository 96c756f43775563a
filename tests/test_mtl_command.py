"""``taskspace mtl``: STL vs MTL arms on CelebA-lite, files, and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from taskspace.cli import main
from taskspace.io import read_csv
from test_commands_resume import killed_when, taskspace

FAST = ["seeds=[0,1]", "epochs=2", "progress=false"]


def test_arms_write_one_summary_row_per_arm_task_and_split(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "m"
    assert main(["mtl", "arms=stl,static,lbtw", *FAST, f"out={out}"]) == 0
    summary = read_csv(out / "summary.csv")
    keys = [(r["method"], r["task"], r["split"]) for r in summary]
    assert keys == [
        (a, t, s)
        for a in ("stl", "static", "lbtw")
        for t in ("Square:Red", "Large:Red")
        for s in ("val", "test")
    ]
    results = read_csv(out / "results.csv")
    assert len(results) == 3 * 2 * 2 * 2  # arms x tasks x seeds x splits
    for r in summary:
        rows = [
            x
            for x in results
            if (x["arm"], x["task"], x["split"]) == (r["method"], r["task"], r["split"])
        ]
        mean = sum(float(x["worst_group_acc"]) for x in rows) / len(rows)
        assert float(r["worst_group_acc_mean"]) == pytest.approx(mean, abs=1e-6)
    assert (out / "group_accuracy.png").exists() and (out / "report.html").exists()
    assert "lbtw     Large:Red" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["task_weights=[0.5,0.7]"], "sum"),
        (["arms=stl,joint"], "unknown arm(s) joint"),
        (["groupings=Square:Rde"], "did you mean 'Red'"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, args, message) -> None:  # noqa: ANN001
    out = tmp_path / "bad"
    assert main(["mtl", *args, *FAST, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    args = ["mtl", "arms=stl,static", "seeds=[0]", "epochs=2", "progress=false", "report=false"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*args, f"out={whole}").returncode == 0
    killed_when(cut / "parts" / "part-0000.csv", *args, f"out={cut}")
    assert not (cut / "done.json").exists()
    rerun = taskspace(*args, f"out={cut}")
    assert rerun.returncode == 0, rerun.stderr
    assert (whole / "results.csv").read_text() == (cut / "results.csv").read_text()


@pytest.mark.usefixtures("one_thread")
def test_weighting_trains_the_multi_task_arm_with_it(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """``weighting=pcgrad`` on TAG CelebA's setting (fixed order over tag_celeba UW):
    the multi-task arms become pcgrad alone (stl is not listed); one summary row per task
    and split."""
    out = tmp_path / "w"
    args = ["weighting=pcgrad", "pcgrad_order=fixed", "pcgrad_inner=uw", "uw_variant=tag_celeba"]
    assert main(["mtl", "arms=static,lbtw", *args, *FAST, "report=false", f"out={out}"]) == 0
    summary = read_csv(out / "summary.csv")
    assert [(r["method"], r["task"], r["split"]) for r in summary] == [
        (a, t, s) for a in ("pcgrad",) for t in ("Square:Red", "Large:Red") for s in ("val", "test")
    ]
    assert all(0.0 <= float(r["worst_group_acc_mean"]) <= 1.0 for r in summary)
    assert "pcgrad   Large:Red" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args, message",
    [
        (["weighting=mgda"], "unknown weighting 'mgda'; choose from equal, static, lbtw, uw"),
        (["arms=stl,uw", "uw_variant=gal"], "kendall, tag_celeba, libmtl"),
        (["weighting=gradnorm", "gradnorm_variant=chen"], "'tag_celeba' or 'libmtl'"),
        (["weighting=pcgrad", "pcgrad_inner=gradnorm"], "pcgrad_inner must be"),
    ],
)
def test_bad_weighting_input_is_one_line_exit_2(tmp_path: Path, capsys, args, message) -> None:  # noqa: ANN001
    out = tmp_path / "bad"
    assert main(["mtl", *args, *FAST, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_weighting_options_build_the_weighting() -> None:
    """The variant options reach the weighting: TAG CelebA's PCGrad (fixed order over
    tag_celeba UW, lr 0.01) and LibMTL's GradNorm with alpha 2; ``weighting=`` keeps stl."""
    from taskspace.commands.mtl import MtlConfig, _arms, _weighting
    from taskspace.mtl.weighting import GradNorm, PCGrad, UncertaintyWeighting

    cfg = MtlConfig(
        weighting="pcgrad",
        pcgrad_order="fixed",
        pcgrad_inner="uw",
        uw_variant="tag_celeba",
        weighting_lr=0.01,
        gradnorm_variant="libmtl",
        gradnorm_alpha=2.0,
    )
    assert _arms(cfg) == ["stl", "pcgrad"]
    pc = _weighting(cfg, "pcgrad")
    assert isinstance(pc, PCGrad) and pc.order == "fixed"
    assert isinstance(pc.inner, UncertaintyWeighting)
    assert (pc.inner.variant, pc.inner.lr) == ("tag_celeba", 0.01)
    gn = _weighting(cfg, "gradnorm")
    assert isinstance(gn, GradNorm) and (gn.variant, gn.exponent, gn.lr) == ("libmtl", 2.0, 0.01)
