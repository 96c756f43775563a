"""``taskspace group`` through the CLI: a fixture matrix in both orientations, an affinity
run directory, a given grouping, dfs_first, the files written, and bad input (one line,
exit 2, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from taskspace.cli import main
from taskspace.commands.group import load_matrix, parse_budgets
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["progress=false", "report=false"]
TK = ["seg", "depth", "normal", "key", "edge"]
#: Taskonomy TAG (section 6.3), rows = targets.
TK_TAG = np.array(
    [
        [11.9993, 0.1154, 0.0489, 0.0045, 0.0088],
        [0.4136, 7.3276, 0.2914, 0.0135, 0.0740],
        [0.1398, 0.2210, 1.0710, 0.0105, 0.0765],
        [0.0211, 0.0134, 0.0107, 0.7339, 0.6897],
        [0.0567, 0.0367, 0.0360, 0.3037, 5.9662],
    ]
)
TK_HOA = np.array(
    [
        [0.0509, 0.0528, 0.0471, 0.0655, 0.0606],
        [0.2636, 0.2616, 0.2551, 0.2674, 0.2675],
        [0.1004, 0.1002, 0.0975, 0.1110, 0.1082],
        [0.0972, 0.1068, 0.0568, 0.0910, 0.0933],
        [0.0287, 0.0423, 0.0310, 0.0232, 0.0337],
    ]
)


def write_matrix(path: Path, rows: list[str], cols: list[str], values: np.ndarray) -> Path:
    lines = ["source," + ",".join(cols)]
    lines += [r + "," + ",".join(repr(float(v)) for v in row) for r, row in zip(rows, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def served(sel: dict) -> set[tuple[frozenset, frozenset]]:
    return {(frozenset(g), frozenset(s)) for g, s in zip(sel["groups"], sel["serves"])}


def test_matrix_target_source_all_budgets(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    path = write_matrix(tmp_path / "tag.csv", TK, TK, TK_TAG)
    out = tmp_path / "run"
    args = ["group", f"matrix={path}", "orientation=target_source", f"out={out}", *FAST]
    assert main(args) == 0
    doc = json.loads((out / "selections.json").read_text())
    assert doc["kind"] == "tag" and doc["tasks"] == TK
    sels = {s["budget"]: s for s in doc["selections"]}
    assert sorted(sels) == [1, 2, 3, 4, 5]  # default: every B from 1 to n
    assert sels[1]["groups"] == [TK]
    assert served(sels[2]) == {
        (frozenset({"key", "edge"}), frozenset({"key", "edge"})),
        (frozenset({"seg", "depth", "normal"}), frozenset({"seg", "depth", "normal"})),
    }
    assert sels[2]["objective"] == pytest.approx(0.3217, rel=1e-3)
    assert served(sels[3]) == {
        (frozenset({"seg", "depth"}), frozenset({"seg", "depth"})),
        (frozenset({"depth", "normal"}), frozenset({"normal"})),
        (frozenset({"key", "edge"}), frozenset({"key", "edge"})),
    }
    assert served(sels[5]) == served(sels[3])
    rows = read_csv(out / "groups.csv")
    assert [r["tasks"] for r in rows if r["budget"] == "3"] == [
        "seg,depth",
        "depth,normal",
        "key,edge",
    ]
    assert [r["serves"] for r in rows if r["budget"] == "3"][1] == "normal"
    assert float(rows[-1]["objective"]) == pytest.approx(0.3487, rel=1e-3)
    matrix = {r["target"]: r for r in read_csv(out / "matrix.csv")}
    assert float(matrix["depth"]["seg"]) == pytest.approx(0.4136)  # onto depth from seg
    assert (out / "groups.png").stat().st_size > 1000
    assert json.loads((out / "done.json").read_text())["objective_b2"] == pytest.approx(
        sels[2]["objective"]
    )
    assert "B = 3" in capsys.readouterr().out


def test_affinity_run_source_target_hoa_with_a_given_grouping(tmp_path: Path) -> None:
    """An affinity run: affinity.csv as Z[source, target] (the transpose), with a source
    row for the sum of all tasks, and the run's kind in its config.yaml."""
    run = tmp_path / "affinity-run"
    run.mkdir()
    z = np.vstack([TK_HOA.T, TK_HOA.T.sum(axis=0)])
    write_matrix(run / "affinity.csv", [*TK, "all"], TK, z)
    (run / "config.yaml").write_text("kind: hoa\nlookahead: sgd\n")
    out = tmp_path / "g"
    grouping = "grouping=seg,depth,normal;key,edge"
    assert main(["group", f"run={run}", "budgets=2-3", grouping, f"out={out}", *FAST]) == 0
    doc = json.loads((out / "selections.json").read_text())
    assert doc["kind"] == "hoa"
    sels = {s["budget"]: s for s in doc["selections"]}
    assert sorted(sels) == [2, 3]
    assert served(sels[2]) == {
        (frozenset({"normal", "key"}), frozenset({"key"})),
        (
            frozenset({"seg", "depth", "normal", "edge"}),
            frozenset({"seg", "depth", "normal", "edge"}),
        ),
    }
    assert sels[2]["objective"] == pytest.approx(0.1019, rel=1e-3)
    assert sels[3]["objective"] == pytest.approx(0.0979, rel=1e-3)
    # the given grouping by hand: seg (.0528+.0471)/2, depth (.2636+.2551)/2,
    # normal (.1004+.1002)/2, key .0933, edge .0232
    want = (
        (0.0528 + 0.0471) / 2 + (0.2636 + 0.2551) / 2 + (0.1004 + 0.1002) / 2 + 0.0933 + 0.0232
    ) / 5
    assert doc["given"]["objective"] == pytest.approx(want)
    given = [r for r in read_csv(out / "groups.csv") if r["selection"] == "given"]
    assert [r["tasks"] for r in given] == ["seg,depth,normal", "key,edge"]


def test_dfs_first_keeps_the_redundant_network_and_the_report(tmp_path: Path) -> None:
    path = write_matrix(tmp_path / "tag.csv", TK, TK, TK_TAG.T)  # source_target (default)
    out = tmp_path / "dfs"
    assert main(["group", f"matrix={path}", "budgets=4", "tie_break=dfs_first", f"out={out}",
                 "progress=false"]) == 0  # fmt: skip
    sel = json.loads((out / "selections.json").read_text())["selections"][0]
    assert len(sel["groups"]) == 4 and sum(not s for s in sel["serves"]) == 1
    assert sel["objective"] == pytest.approx(0.3487, rel=1e-3)
    html = (out / "report.html").read_text()
    assert "Network selection" in html and "depth,normal" in html


def test_helpers() -> None:
    assert parse_budgets(None, 3) == [1, 2, 3]
    assert parse_budgets("4,2-3, 2", 9) == [2, 3, 4]
    assert parse_budgets(3, 9) == [3]
    with pytest.raises(TaskspaceError, match="must be >= 1"):
        parse_budgets("0,2", 3)
    with pytest.raises(TaskspaceError, match="not an integer"):
        parse_budgets("two", 3)


def test_load_matrix_reorders_columns_to_the_rows(tmp_path: Path) -> None:
    values = np.arange(9.0).reshape(3, 3)  # rows a, b, c; header c, a, b
    path = write_matrix(tmp_path / "m.csv", ["a", "b", "c"], ["c", "a", "b"], values)
    names, a = load_matrix(path, "target_source")
    assert names == ["c", "a", "b"]
    assert a[0].tolist() == [6.0, 7.0, 8.0]  # row c
    names, a = load_matrix(path, "source_target")
    assert a[1, 0] == 7.0  # onto a from c = Z[c, a]: row c, column a


@pytest.mark.parametrize(
    "make, args, message",
    [
        (lambda d: write_matrix(d / "m.csv", ["a", "b"], ["a", "b", "c"], np.ones((2, 3))), [],
         "not square"),
        (lambda d: write_matrix(d / "m.csv", ["a", "b"], ["a", "b"], np.ones((2, 2))),
         ["budgets=0"], "must be >= 1"),
        (lambda d: write_matrix(d / "m.csv", ["a", "b"], ["a", "b"], np.ones((2, 2))),
         ["grouping=a;z"], "unknown task name(s) z"),
        (lambda d: write_matrix(d / "m.csv", ["a", "b"], ["a", "c"], np.ones((2, 2))), [],
         "name different tasks"),
        (lambda d: d / "missing.csv", [], "no such matrix file"),
        (lambda d: write_matrix(d / "m.csv", ["a", "b"], ["a", "b"], np.ones((2, 2))),
         ["orientation=rows"], "orientation must be"),
        (lambda d: write_matrix(d / "m.csv", ["a", "b"], ["a", "b"], np.ones((2, 2))),
         ["kind=best"], "kind must be"),
    ],
)  # fmt: skip
def test_bad_input_one_line_exit_2(tmp_path: Path, capsys, make, args, message) -> None:  # noqa: ANN001
    path = make(tmp_path)
    out = tmp_path / "out"
    assert main(["group", f"matrix={path}", f"out={out}", *args, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_bad_run_directory(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    assert main(["group", f"run={tmp_path}", *FAST]) == 2
    assert "holds no affinity.csv" in capsys.readouterr().err
    assert main(["group", *FAST]) == 2
    assert "give one input" in capsys.readouterr().err
