"""The HTML report without a browser: every run kind gets its section, commands write their
report, bad input gives one line, old and half-finished runs still give a page."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from taskspace.cli import main
from taskspace.report.page import build_report
from taskspace.report.quiz import quiz_data
from taskspace.tasks import TaskSet, human_tasks, random_tasks

SECTION = re.compile(r'<section class="report-section ([\w-]+)"')


def sections(page: Path) -> list[str]:
    return SECTION.findall(page.read_text())


def data_block(page: Path, prefix: str) -> dict:
    m = re.search(
        rf'<script type="application/json" id="{prefix}-\d+">(.*?)</script>', page.read_text(), re.S
    )
    assert m, f"no {prefix} data on the page"
    return json.loads(m.group(1))


@pytest.mark.parametrize(
    "kind, section",
    [
        ("agreement", "agreement"),
        ("discover", "discovery"),
        ("pretrain", "pretrain"),
        ("split", "split"),
        ("split-eval", "split-eval"),
        ("sweep", "sweep"),
    ],
)
def test_every_run_kind_gets_its_section(
    report_runs: dict, tmp_path: Path, kind: str, section: str
) -> None:
    page = build_report([report_runs[kind]], tmp_path / "r.html")
    assert sections(page) == [section]
    html = page.read_text()
    assert "could not be built" not in html and "incomplete" not in html.split("<main>")[1]


def test_one_page_for_several_runs_and_what_each_section_holds(
    report_runs: dict, tmp_path: Path
) -> None:
    order = ["agreement", "discover", "split-eval", "sweep"]
    page = build_report([report_runs[k] for k in order], tmp_path / "all.html")
    assert sections(page) == ["agreement", "discovery", "split-eval", "sweep"]
    html = page.read_text()
    assert html.count('class="quiz"') == 2 and html.count('class="split-viewer"') == 1
    assert "meta-training curves" in html and "folded similarity" in html
    viewer = data_block(page, "splits")
    assert len(viewer["splits"]) == 8 and viewer["splits"][0]["kind"] == "binary"
    mistakes = viewer["splits"][0]["panels"]["mistakes"]
    assert sum(len(idx) for _, idx, _ in mistakes) > 0, "the learner made no mistake?"
    pool = json.loads(re.search(r'id="image-pool">(.*?)</script>', html, re.S).group(1))
    shown = {i for _, idx, _ in mistakes for i in idx}
    assert shown <= {int(i) for i in pool[viewer["pool"]]}, "images missing from the pool"
    assert 'src="http' not in html and 'href="http' not in html  # nothing from the network


def test_quiz_questions_are_held_back_and_balanced(digits) -> None:  # noqa: ANN001
    tasks = TaskSet.concat(
        human_tasks(digits.classes, 10, max_tasks=2, include_original=False),
        random_tasks(len(digits), 2, seed=0),
    )
    data, shown = quiz_data(digits, tasks, "k", examples=4, questions=10, seed=0)
    assert [t["kind"] for t in data["tasks"]] == ["human", "human", "random", "random"]
    held = set(digits.split("heldout").tolist())
    for t, k in zip(data["tasks"], range(4)):
        labels = tasks.labels[k]
        qs = t["questions"]
        assert len(qs) == 10 and sum(q["label"] for q in qs) == 5
        assert all(int(labels[q["i"]]) == q["label"] and q["i"] in held for q in qs)
        examples = t["examples"]["0"] + t["examples"]["1"]
        assert not set(examples) & {q["i"] for q in qs}
        assert all(int(labels[i]) == 1 for i in t["examples"]["1"])
    assert set(shown) >= {q["i"] for t in data["tasks"] for q in t["questions"]}


def test_commands_write_their_report_unless_told_not_to(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    args = [
        "agreement",
        "num_tasks=1",
        "recipe.steps=5",
        "model.kwargs={widths: [8]}",
        "progress=false",
    ]
    assert main([*args, f"out={tmp_path / 'a'}"]) == 0
    page = tmp_path / "a" / "report.html"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # atomic writes give the permissions of a plain open()
    assert page.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    assert f"report: {(tmp_path / 'a' / 'report.html').resolve()}" in capsys.readouterr().out
    assert main([*args, "report=false", f"out={tmp_path / 'b'}"]) == 0
    assert not (tmp_path / "b" / "report.html").exists()


def test_cli_report_of_several_runs_goes_to_their_common_folder(report_runs: dict, capsys) -> None:  # noqa: ANN001
    root = report_runs["agreement"].parent
    assert main(["report", str(report_runs["agreement"]), str(report_runs["sweep"])]) == 0
    assert capsys.readouterr().out.strip() == f"report: {root.resolve() / 'report.html'}"
    assert sections(root / "report.html") == ["agreement", "sweep"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such run directory"),
        (lambda p: (p.mkdir(), p)[1], "is empty: not a run directory"),
        (lambda p: (p.mkdir(), (p / "x.txt").write_text("x"), p)[2], "not a run directory"),
        (lambda p: (p.write_text("x"), p)[1], "is a file, not a run directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys, make, message) -> None:  # noqa: ANN001
    bad = make(tmp_path / "bad")
    assert main(["report", str(bad), f"out={tmp_path / 'r.html'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r.html").exists()
    assert main(["report"]) == 2 and "give one or more run directories" in capsys.readouterr().err


def test_run_killed_half_way_is_reported_as_incomplete(report_runs: dict, tmp_path: Path) -> None:
    cut = tmp_path / "cut"
    shutil.copytree(report_runs["agreement"], cut)
    for name in ("done.json", "agreement.csv", "summary.csv", "agreement.png"):
        (cut / name).unlink()
    parts = sorted((cut / "parts").glob("part-*.csv"))
    parts[-1].unlink()
    page = build_report([cut])
    html = page.read_text()
    assert sections(page) == ["agreement"] and "has not finished" in html
    assert f"{len(parts) - 1} part file(s) finished so far" in html
    assert "human-" in html  # the finished parts' rows are shown


def test_a_damaged_file_gives_a_section_that_says_so(report_runs: dict, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(report_runs["discover"], broken)
    (broken / "tasks.npz").write_bytes(b"not a zip file")
    (broken / "heads.csv").write_text("head,task\n0\n1,2,3,4\n")
    html = build_report([broken]).read_text()
    assert "tasks.npz could not be read" in html or "could not be built" in html
    assert "Traceback" not in html


def test_a_run_from_before_the_report_still_builds(report_runs: dict, tmp_path: Path) -> None:
    """A run directory written before this version: no ``report`` option in its config, no
    report files, flat old-style data options."""
    old = tmp_path / "old"
    shutil.copytree(report_runs["agreement"], old)
    cfg = (old / "config.yaml").read_text()
    cfg = cfg.replace("report: false\n", "")
    cfg = re.sub(r"data:\n(  .*\n)+", "data: digits\n", cfg)
    (old / "config.yaml").write_text(cfg)
    page = build_report([old])
    html = page.read_text()
    assert sections(page) == ["agreement"] and 'class="quiz"' in html
    assert "could not be built" not in html
