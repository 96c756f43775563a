"""Progress bars: shown on stderr with what a command is doing, silenced by progress=false."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from taskspace.cli import main


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder tree large enough (520 files) for the hashing and decoding bars."""
    root = tmp_path_factory.mktemp("tree")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(260):
            img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i:03d}.png")
    return root


def agreement(tree: Path, out: Path, *extra: str) -> list[str]:
    return [
        "agreement",
        "data.name=imagefolder",
        f"data.root={tree}",
        "num_tasks=1",
        "recipe.steps=5",
        "model.kwargs={widths: [8]}",
        f"out={out}",
        *extra,
    ]


def test_bars_say_what_runs_and_progress_false_silences_all(
    tree: Path, tmp_path: Path, capsys
) -> None:  # noqa: ANN001
    assert main(agreement(tree, tmp_path / "loud")) == 0
    err = capsys.readouterr().err
    for what in ("hashing", "train mlp"):
        assert what in err, f"no {what!r} bar"
    assert main(agreement(tree, tmp_path / "quiet", "progress=false")) == 0
    assert capsys.readouterr().err == ""


def test_summary_tables_print_aligned() -> None:
    """Every line of a command's closing table has the same width, long names included."""
    from taskspace.commands.agreement import format_summary
    from taskspace.commands.discover import format_summary as discover_summary
    from taskspace.commands.split import format_balance
    from taskspace.splits import format_headline

    kinds = [
        {"kind": k, "split": "heldout", "mean": 0.9, "std": 0.01, "count": 16}
        for k in ("human", "emb_random_linear_tasks")
    ]
    metrics = [{"metric": m, "value": 0.5} for m in ("coverage_mean", "as_heldout_" + "x" * 40)]
    balance = [
        {
            "split": "s" * 50,
            "kind": "binary",
            "n_train": 900,
            "n_test": 800,
            "train_positive_rate": 0.45,
            "test_positive_rate": 0.55,
        }
    ]
    headline = [
        {"setting": s, "type": t, "mean": 0.5, "std": 0.1, "min": 0.3, "max": 0.7, "count": 16}
        for s in ("2-way", "10-way")
        for t in ("random", "adversarial")
    ]
    for table in (
        format_summary(kinds),
        discover_summary(metrics),
        format_balance(balance),
        format_headline(headline),
    ):
        widths = {len(line) for line in table.splitlines()}
        assert len(widths) == 1, table
