"""``taskspace affinity`` end to end on a tiny planted set: its files, the orientation
``taskspace group`` reads, resume, bad input, the report section, and a run killed with
SIGKILL and rerun."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from taskspace.cli import main
from test_commands_resume import killed_when, taskspace

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "progress=false",
    "report=false",
    "names=[f0a,f0b,f0x]",
    "data.train_size=60",
    "data.heldout=40",
    "data.test_size=40",
    "recipe.epochs=2",
    "recipe.affinity_epochs=1",
    "recipe.batch_size=20",
    "model.kwargs={widths: [8]}",
]


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tag_run(tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("aff") / "tag"
    assert main(["affinity", *TINY, "kind=tag", "seeds=[0,1]", f"out={out}"]) == 0
    return out


def test_tag_run_writes_matrix_selections_and_comparison(tag_run: Path) -> None:
    for f in ("affinity.csv", "per_epoch.csv", "affinity.png", "affinity_seeds.png",
              "selections.json", "groups.csv", "comparison.csv", "groups.png",
              "comparison.png", "done.json"):  # fmt: skip
        assert (tag_run / f).is_file(), f
    rows = _csv(tag_run / "affinity.csv")
    assert list(rows[0]) == ["source", "f0a", "f0b", "f0x"]
    assert [r["source"] for r in rows] == ["f0a", "f0b", "f0x"]
    parts = [json.loads((tag_run / "parts" / f"affinity-seed{s}.json").read_text()) for s in (0, 1)]
    mean = (parts[0]["matrix"][0][2] + parts[1]["matrix"][0][2]) / 2  # Z[f0a -> f0x]
    assert float(rows[0]["f0x"]) == pytest.approx(mean, rel=1e-5)
    sels = json.loads((tag_run / "selections.json").read_text())["selections"]
    assert [s["budget"] for s in sels] == [1, 2, 3]
    comp = _csv(tag_run / "comparison.csv")
    arms = [r["arm"] for r in comp if r["task"] == "total"]
    assert arms == ["B=1", "B=2", "B=3", "all-in-one", "one-per-task"]
    tot = {r["arm"]: r for r in comp if r["task"] == "total"}
    assert tot["B=1"]["val_loss"] == tot["all-in-one"]["val_loss"]
    single = sum(
        float(r["val_loss"]) for r in comp if r["arm"] == "one-per-task" and r["task"] != "total"
    )
    assert float(tot["one-per-task"]["val_loss"]) == pytest.approx(single, rel=1e-5)


def test_group_command_reads_the_run_and_agrees(tag_run: Path, tmp_path: Path) -> None:
    assert main(["group", f"run={tag_run}", f"out={tmp_path / 'g'}", "report=false"]) == 0
    ours = json.loads((tag_run / "selections.json").read_text())["selections"]
    theirs = json.loads((tmp_path / "g" / "selections.json").read_text())
    theirs = theirs.get("selections", theirs) if isinstance(theirs, dict) else theirs
    objectives = sorted(float(s["objective"]) for s in ours)
    assert objectives == pytest.approx(sorted(float(s["objective"]) for s in theirs)[:3])


def test_rerun_trains_nothing_and_new_budgets_reuse_networks(tag_run: Path, capsys) -> None:  # noqa: ANN001
    before = sorted(p.name for p in (tag_run / "parts").iterdir())
    comp = (tag_run / "comparison.csv").read_text()
    assert main(["affinity", *TINY, "kind=tag", "seeds=[0,1]", f"out={tag_run}"]) == 0
    assert sorted(p.name for p in (tag_run / "parts").iterdir()) == before
    assert (tag_run / "comparison.csv").read_text() == comp
    args = [*TINY, "kind=tag", "seeds=[0,1]", "budgets=[2]", f"out={tag_run}"]
    assert main(["affinity", *args]) == 0  # budgets do not change results: same folder
    assert sorted(p.name for p in (tag_run / "parts").iterdir()) == before


def test_hoa_run_orientation_and_reused_pairs(tmp_path: Path) -> None:
    out = tmp_path / "hoa"
    assert main(["affinity", *TINY, "kind=hoa", "seeds=[0]", f"out={out}"]) == 0
    rows = _csv(out / "affinity.csv")
    assert list(rows[0])[0] == "partner"
    groups = _csv(out / "groups.csv")
    # row o, column t: task t's val loss in the pair {t, o}
    pair = {
        r["task"]: float(r["loss"])
        for r in groups
        if r["members"] == "f0a+f0x" and r["split"] == "val"
    }
    assert float(rows[2]["f0a"]) == pytest.approx(pair["f0a"], rel=1e-5)
    assert float(rows[0]["f0x"]) == pytest.approx(pair["f0x"], rel=1e-5)
    alone = [float(r["loss"]) for r in groups if r["members"] == "f0b" and r["split"] == "val"]
    assert float(rows[1]["f0b"]) == pytest.approx(alone[0], rel=1e-5)
    # only the all-task network was trained after HOA's singles and pairs
    assert [p.name for p in (out / "parts").glob("groups-*.csv")] == ["groups-seed0-000.csv"]
    assert {r["members"] for r in _csv(out / "parts" / "groups-seed0-000.csv")} == {"f0a+f0b+f0x"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["budgets=[0]"], "budgets must be integers >= 1"),
        (["names=[f0a,nope]"], "unknown task name(s) nope"),
        (["kind=tagg"], "kind must be tag, cs or hoa"),
        (["names=[f0a]"], "at least two tasks"),
        (["metric=acc"], "metric must be loss or error"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path: Path, capsys, args, message) -> None:  # noqa: ANN001
    out = tmp_path / "bad"
    assert main(["affinity", *TINY, *args, f"out={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_report_section_shows_heatmaps_and_totals(tag_run: Path) -> None:
    import taskspace.report.sections.affinity  # noqa: F401  (registers the section)
    from taskspace.report.page import build_report

    html = Path(build_report([str(tag_run)])).read_text()
    assert "Task affinity and grouping" in html and "one-per-task" in html
    assert html.count("data:image/png") >= 4 or html.count(".png") >= 4


def test_killed_and_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    args = ["affinity", *TINY, "kind=cs", "seeds=[0,1,2]"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert taskspace(*args, f"out={whole}").returncode == 0
    killed_when(cut / "parts" / "affinity-seed0.json", *args, f"out={cut}")
    assert not (cut / "comparison.csv").exists()
    rerun = taskspace(*args, f"out={cut}")
    assert rerun.returncode == 0, rerun.stderr
    for f in ("affinity.csv", "comparison.csv", "groups.csv"):
        assert (whole / f).read_text() == (cut / f).read_text(), f
