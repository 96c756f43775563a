"""Adversarial splits: builders, files (npz, CelebA partitions, reference .torch), evaluation,
pictures and the ``split`` / ``split-eval`` commands."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from taskspace.cli import main as cli_main
from taskspace.data import load_dataset
from taskspace.engine import get_recipe
from taskspace.errors import TaskspaceError
from taskspace.report.split_pictures import choose_panels, split_picture
from taskspace.splits import (
    Split,
    binary_split,
    class_partition,
    evaluate_splits,
    export_partition,
    format_headline,
    headline_table,
    import_partition,
    load_reference_splits,
    load_split,
    lower_half_per_class,
    multiclass_split,
    random_network_split,
    random_split_like,
    save_split,
    split_balance,
    with_random_baselines,
)
from taskspace.tasks import TaskSet, human_tasks, save_tasks

pytestmark = pytest.mark.usefixtures("one_thread")

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"
CELEBA = EXTERNAL / "taskdiscovery" / "assets" / "adversarial_splits" / "celeba"
SMALL = {"widths": [128, 64]}  # a narrower reference MLP keeps the training tests fast
FAST10 = get_recipe("fast", epochs=10)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class Custom:
    """Not a tensor: a .torch file holding one must be refused."""

    def __init__(self) -> None:
        self.x = 1


# ----------------------------------------------------------------------------- builders
def test_binary_split_sides_orientation_and_flip():
    t = torch.tensor([0, 0, 1, 1, 0, 1, 1, 0])
    d = torch.tensor([0, 1, 1, 0, 0, 1, 0, 1])
    s = binary_split(t, d, target_name="t", discovered_name="d")
    assert s.train_idx.tolist() == [0, 2, 4, 5]
    assert s.test_idx.tolist() == [1, 3, 6, 7]
    assert s.meta["orientation"] == "t=d" and s.sizes == (4, 4)
    f = binary_split(t, d, flip=True, target_name="t", discovered_name="d")
    assert f.train_idx.tolist() == s.test_idx.tolist()
    assert f.test_idx.tolist() == s.train_idx.tolist()
    assert f.meta["orientation"] == "t=1-d" and f.name == "t__d-flip"
    assert s.flipped().train_idx.tolist() == f.train_idx.tolist()
    pooled = binary_split(t, d, pool=torch.tensor([0, 1, 2, 3]))
    assert pooled.train_idx.tolist() == [0, 2] and pooled.test_idx.tolist() == [1, 3]


def test_multiclass_split_uses_class_group():
    classes = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    d = torch.tensor([1, 1, 0, 0, 0, 0, 1, 1])
    s = multiclass_split(classes, [0, 1], d)
    # t = [1,1,0,0,1,1,0,0]; train where t == d
    assert s.train_idx.tolist() == [0, 1, 2, 3]
    assert s.kind == "multiclass" and s.meta["positive_classes"] == [0, 1]
    assert s.target_labels.tolist() == [1, 1, 0, 0, 1, 1, 0, 0]


def test_bad_splits_are_refused():
    with pytest.raises(TaskspaceError, match="disjoint"):
        Split(torch.tensor([0, 1, 2]), torch.tensor([2, 3]), "x", "imported")
    with pytest.raises(TaskspaceError, match="out of range"):
        Split(torch.tensor([0, 1]), torch.tensor([5]), "x", "imported").validate(5)
    with pytest.raises(TaskspaceError, match="same images"):
        binary_split(torch.zeros(5, dtype=torch.long), torch.zeros(6, dtype=torch.long))
    with pytest.raises(TaskspaceError, match="binary"):
        binary_split(torch.tensor([0, 2]), torch.tensor([0, 1]))


def test_class_partition_and_lower_half():
    from sklearn.model_selection import train_test_split

    first, _ = train_test_split(np.arange(10), train_size=5, random_state=3)
    assert class_partition(10, 3) == sorted(first.tolist())
    assert len(class_partition(7, 0)) == 3
    scores = torch.tensor([5.0, 1.0, 3.0, 2.0, 9.0, 0.0, 4.0])
    classes = torch.tensor([0, 0, 0, 1, 1, 1, 1])
    d = lower_half_per_class(scores, classes)
    # class 0 (n=3): floor(3/2)=1 lowest -> index 1; class 1 (n=4): 2 lowest -> 5, 3
    assert d.tolist() == [0, 1, 0, 1, 0, 1, 0]


def test_random_network_split_on_digits(digits):
    s = random_network_split(digits, model="mlp", seed=0)
    again = random_network_split(digits, model="mlp", seed=0)
    other = random_network_split(digits, model="mlp", seed=1)
    assert torch.equal(s.train_idx, again.train_idx)
    assert not torch.equal(s.train_idx, other.train_idx)
    pool = torch.cat([s.train_idx, s.test_idx]).sort().values
    test_set = set(digits.split("test").tolist())
    assert len(pool) == len(digits) - len(test_set) and not set(pool.tolist()) & test_set
    c1 = class_partition(10, 0)
    assert s.meta["positive_classes"] == c1
    # within each class, train takes one half of the logit order: sizes differ by <= 1
    for c in range(10):
        n_tr = int((digits.classes[s.train_idx] == c).sum())
        n_te = int((digits.classes[s.test_idx] == c).sum())
        assert abs(n_tr - n_te) <= 1
    assert abs(len(s.train_idx) - len(s.test_idx)) <= 10


def test_random_split_like_same_sizes(digits):
    s = random_network_split(digits, model="mlp", seed=0)
    r = random_split_like(s, seed=5)
    assert r.sizes == s.sizes and r.kind == "random"
    assert set(torch.cat([r.train_idx, r.test_idx]).tolist()) == set(
        torch.cat([s.train_idx, s.test_idx]).tolist()
    )
    assert torch.equal(random_split_like(s, seed=5).train_idx, r.train_idx)
    assert not torch.equal(random_split_like(s, seed=6).train_idx, r.train_idx)


def test_reference_random_baseline_is_one_seed0_half_split():
    """``random_baseline=reference``: the reference's 25k/25k ``random_split`` with seed 0
    of the 50,000 training images, the same for every adversarial split."""
    from taskspace.splits import reference_random_split

    g = torch.Generator().manual_seed(1)
    t, d1, d2 = (torch.randint(0, 2, (50_000,), generator=g) for _ in range(3))
    adv = [
        binary_split(t, d1, target_name="t", discovered_name="d1"),
        binary_split(t, d2, target_name="t", discovered_name="d2"),
    ]
    perm = torch.randperm(50_000, generator=torch.Generator().manual_seed(0))
    ref = reference_random_split(adv[0])
    assert ref.train_idx.tolist() == sorted(perm[:25_000].tolist())
    assert ref.test_idx.tolist() == sorted(perm[25_000:].tolist())
    halves = torch.utils.data.random_split(
        range(50_000), [25_000, 25_000], generator=torch.Generator().manual_seed(0)
    )
    assert ref.train_idx.tolist() == sorted(halves[0].indices)
    both = with_random_baselines(adv, 0, "reference")
    assert [s.name for s in both[2:]] == ["random-t__d1", "random-t__d2"]
    for base, s in zip(both[2:], adv):
        assert torch.equal(base.train_idx, ref.train_idx) and base.kind == "random"
        assert base.meta["random_baseline"] == "reference" and base.meta["like"] == s.name
        assert torch.equal(base.target_labels, t)
    matched = with_random_baselines(adv, 0)  # default: sizes of each adversarial split
    assert [b.sizes for b in matched[2:]] == [s.sizes for s in adv]
    with pytest.raises(TaskspaceError, match="random_baseline must be one of matched, ref"):
        with_random_baselines(adv, 0, "paper")


def test_cli_split_reference_random_baseline(tmp_path):
    out = tmp_path / "s"
    assert (
        cli_main(
            [
                "split",
                "discovered=human",
                "targets=0",
                "num_discovered=2",
                "random_baseline=reference",
                f"out={out}",
                "progress=false",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "splits.csv").open()))
    base = [load_split(out / "splits" / r["file"]) for r in rows if r["kind"] == "random"]
    assert len(base) == 2 and torch.equal(base[0].train_idx, base[1].train_idx)
    pool = torch.cat([base[0].train_idx, base[0].test_idx]).sort().values
    perm = torch.randperm(len(pool), generator=torch.Generator().manual_seed(0))
    assert base[0].test_idx.tolist() == sorted(pool[perm[len(pool) - len(pool) // 2 :]].tolist())


def test_standin_tasks_have_their_own_kind(tmp_path, digits):
    """``discovered=standin`` tasks are kind ``standin``, not ``random``."""
    from taskspace.splits.builders import feature_sign_tasks
    from taskspace.tasks import TASK_KINDS, load_tasks

    assert "standin" in TASK_KINDS
    tasks = feature_sign_tasks(digits, 2, recipe=get_recipe("fast", epochs=1))
    assert tasks.kinds == ["standin", "standin"] and tasks.names == ["standin-00", "standin-01"]
    assert tasks.subset_of_kind("random").names == []
    out = tmp_path / "s"
    assert cli_main(["split", "targets=0", "num_discovered=2", f"out={out}", "progress=false"]) == 0
    assert load_tasks(out / "discovered.npz").kinds == ["standin", "standin"]


# ----------------------------------------------------------------------------- files
def test_npz_round_trip(tmp_path):
    t = torch.tensor([0, 1, 1, 0, 1, 0])
    s = binary_split(t, torch.tensor([0, 1, 0, 0, 1, 1]), target_name="a", discovered_name="b")
    path = save_split(tmp_path / "s.npz", s)
    back = load_split(path, 6)
    assert torch.equal(back.train_idx, s.train_idx) and torch.equal(back.test_idx, s.test_idx)
    assert back.meta == s.meta and back.name == s.name and back.kind == s.kind
    assert torch.equal(back.target_labels, t)
    with np.load(path, allow_pickle=False) as z:
        assert z["train_idx"].dtype == np.int64
    with pytest.raises(TaskspaceError, match="out of range"):
        load_split(path, 4)


def test_partition_file_round_trip(tmp_path, digits):
    s = random_network_split(digits, model="mlp", seed=2)
    path = export_partition(tmp_path / "p.csv", s, len(digits))
    rows = list(csv.reader(path.open()))
    assert rows[0] == ["image_id", "partition"] and rows[1][0] == "000001.jpg"
    assert len(rows) == len(digits) + 1
    back, test = import_partition(path, len(digits))
    assert torch.equal(back.train_idx, s.train_idx) and torch.equal(back.test_idx, s.test_idx)
    assert torch.equal(test, digits.split("test").sort().values)
    ids = [f"img{i}" for i in range(len(digits))]
    export_partition(tmp_path / "q.csv", s, len(digits), ids)
    back2, _ = import_partition(tmp_path / "q.csv", len(digits), ids)
    assert torch.equal(back2.train_idx, s.train_idx)
    with pytest.raises(TaskspaceError, match="unknown image ids"):
        import_partition(tmp_path / "q.csv", len(digits))


@pytest.mark.external
@pytest.mark.skipif(not CELEBA.is_dir(), reason="reference CelebA partition files absent")
def test_reference_celeba_partition_files():
    expected = {"adv": (84_424, 98_213, 19_962), "random": (91_318, 91_319, 19_962)}
    for which, (n0, n1, n2) in expected.items():
        path = CELEBA / f"list_eval_partition_{which}_split.csv"
        split, test = import_partition(path)
        assert split.sizes == (n0, n1) and len(test) == n2
        assert int(test.min()) == 182_637 and int(test.max()) == 202_598  # ids 182638..202599


def test_reference_torch_files(tmp_path):
    d = {
        0: [(torch.tensor([0, 1, 2]), torch.tensor([3, 4]))] * 2,
        11: [(torch.tensor([4]), torch.tensor([0, 1]))],
    }
    torch.save(d, tmp_path / "cifar_splits.torch")
    splits = load_reference_splits(tmp_path / "cifar_splits.torch", 5)
    assert [s.name for s in splits] == ["target0-0", "target0-1", "target11-0"]
    assert splits[2].train_idx.tolist() == [4] and splits[2].meta["target"] == "11"
    torch.save(
        [np.array([0, 2, 4], dtype=np.int64), np.array([1, 3], dtype=np.int64)],
        tmp_path / "adv-split.torch",
    )
    (s,) = load_reference_splits(tmp_path / "adv-split.torch")
    assert s.train_idx.tolist() == [0, 2, 4] and s.test_idx.tolist() == [1, 3]
    torch.save({"a": Custom()}, tmp_path / "evil.torch")
    with pytest.raises(TaskspaceError, match="refused"):
        load_reference_splits(tmp_path / "evil.torch")
    torch.save([torch.tensor([0, 1]), torch.tensor([1, 2])], tmp_path / "overlap.torch")
    with pytest.raises(TaskspaceError, match="disjoint"):
        load_reference_splits(tmp_path / "overlap.torch")
    with pytest.raises(TaskspaceError, match="out of range"):
        load_reference_splits(tmp_path / "adv-split.torch", 4)


def test_split_balance():
    classes = torch.tensor([0, 0, 1, 1, 2, 2])
    s = Split(
        torch.tensor([0, 2, 3]),
        torch.tensor([1, 4]),
        "b",
        "imported",
        target_labels=torch.tensor([1, 0, 1, 0, 0, 0]),
    )
    b = split_balance(s, classes, 3)
    assert b["train"] == {"n": 3, "class_counts": [1, 2, 0], "positive_rate": pytest.approx(2 / 3)}
    assert b["test"] == {"n": 2, "class_counts": [1, 0, 1], "positive_rate": 0.0}


# ----------------------------------------------------------------------------- pictures
def test_picture_indices_match_class_and_side(tmp_path, digits):
    s = random_network_split(digits, model="mlp", seed=0)
    preds = torch.full((len(digits),), -1)
    preds[s.test_idx] = (digits.classes[s.test_idx] + (s.test_idx % 3 == 0).long()) % 10
    panels = split_picture(digits, s, tmp_path / "split-x.png", preds, per_class=4)
    assert (tmp_path / "split-x.png").stat().st_size > 5000
    train, test = set(s.train_idx.tolist()), set(s.test_idx.tolist())
    assert list(panels["train"])[:5] == s.meta["positive_classes"]
    for c in range(10):
        assert len(panels["train"][c]) == 4 and len(panels["test"][c]) == 4
        assert all(i in train and int(digits.classes[i]) == c for i in panels["train"][c])
        assert all(i in test and int(digits.classes[i]) == c for i in panels["test"][c])
        for i in panels["mistakes"][c]:
            assert i in test and int(preds[i]) == c != int(digits.classes[i])
    assert sum(len(v) for v in panels["mistakes"].values()) > 0
    assert choose_panels(digits, s, preds, per_class=4) == panels  # seeded


# ----------------------------------------------------------------------------- evaluation
def test_random_network_split_lowers_10way_accuracy(digits):
    """Done-when: over 4 seeds, the random-network split costs >= 0.03 of 10-way accuracy
    against random splits of the same sizes."""
    adv = [random_network_split(digits, model="mlp", seed=s) for s in range(4)]
    rows = evaluate_splits(
        digits, with_random_baselines(adv), model="mlp", recipe=FAST10, model_kwargs=SMALL
    )
    assert {r["setting"] for r in rows} == {"10-way"} and len(rows) == 8
    acc = {
        t: np.mean([r["test_acc"] for r in rows if r["type"] == t])
        for t in ("adversarial", "random")
    }
    assert acc["random"] > 0.9
    assert acc["random"] - acc["adversarial"] >= 0.03, acc


@pytest.mark.slow
def test_headline_table_human_tau_d(digits):
    """With human tasks as tau_d, adversarial splits hold out whole classes: 2-way accuracy
    falls well below random splits and 10-way accuracy on the test side is 0."""
    h = human_tasks(digits.classes, 10, max_tasks=12, seed=0, include_original=False)
    targets, disc = h.select([0, 1]), h.select([6, 7]).renamed(prefix="d-")
    summary, rows = headline_table(
        digits, targets, disc, "mlp", FAST10, 0, model_kwargs=SMALL, return_rows=True
    )
    by = {(r["setting"], r["type"]): r for r in summary}
    assert by[("2-way", "random")]["mean"] > 0.9
    assert by[("2-way", "adversarial")]["mean"] < by[("2-way", "random")]["mean"] - 0.25
    assert by[("10-way", "adversarial")]["mean"] == 0.0
    assert by[("10-way", "random")]["mean"] > 0.9
    assert len(rows) == 16 and by[("2-way", "adversarial")]["count"] == 4
    text = format_headline(summary)
    assert "2-way" in text and "10-way" in text and "adversarial" in text


# ----------------------------------------------------------------------------- commands
def test_cli_split_and_eval_resume(tmp_path, capsys):
    out = tmp_path / "splits"
    code = cli_main(
        [
            "split",
            "kind=random_network",
            "seeds=0,1",
            f"out={out}",
            "export_partitions=true",
            "progress=false",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((out / "splits.csv").open()))
    assert [r["kind"] for r in rows] == ["random_network"] * 2 + ["random"] * 2
    assert len(list((out / "splits").glob("*.npz"))) == 4
    assert (out / "partitions" / "randnet-mlp-s0.csv").exists()
    ev = tmp_path / "eval"
    args = [
        "split-eval",
        f"splits={out}",
        "recipe.steps=40",
        "model.kwargs={widths: [128, 64]}",
        f"out={ev}",
        "progress=false",
        "pictures=1",
        "launch.per_job=2",
    ]
    assert cli_main(args) == 0
    first = (ev / "results.csv").read_text()
    assert "10-way" in first and len(first.strip().splitlines()) == 5
    assert (ev / "headline.png").exists() and (ev / "split-randnet-mlp-s0.png").exists()
    (ev / "parts" / "part-0001.csv").unlink()
    (ev / "results.csv").unlink()
    capsys.readouterr()
    assert cli_main(args) == 0
    assert "resuming" in capsys.readouterr().out
    assert (ev / "results.csv").read_text() == first


def test_cli_split_from_discovery_run_dir(tmp_path, digits):
    run = tmp_path / "discover-run"
    h = human_tasks(digits.classes, 10, max_tasks=20, seed=3, include_original=False)
    disc = h.select([0, 1, 2]).renamed([f"discovered-{i:02d}" for i in range(3)])
    save_tasks(run / "tasks.npz", disc.with_kind("discovered"))
    (run / "config.yaml").write_text("data: digits\n")
    out = tmp_path / "s"
    assert (
        cli_main(
            [
                "split",
                f"discovered={run}",
                "targets=0,11",
                "num_discovered=2",
                "kind=multiclass",
                f"out={out}",
                "progress=false",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "splits.csv").open()))
    assert [r["split"] for r in rows[:2]] == [
        "human-000__discovered-00",
        "human-000__discovered-01",
    ]
    assert len(rows) == 8 and [r["kind"] for r in rows].count("multiclass") == 4
    s = load_split(out / "splits" / rows[0]["file"], len(digits))
    pos = s.meta["positive_classes"]
    t = torch.isin(digits.classes, torch.tensor(pos)).long()
    d = disc.labels[0]
    assert bool((t[s.train_idx] == d[s.train_idx]).all())
    assert bool((t[s.test_idx] != d[s.test_idx]).all())
    assert not set(s.test_idx.tolist()) & set(digits.split("test").tolist())
    assert float(rows[0]["train_positive_rate"]) == pytest.approx(
        float(t[s.train_idx].float().mean()), abs=1e-4
    )


def _assert_refused(args, out, capsys, match):
    capsys.readouterr()
    assert cli_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not out.exists()


def test_cli_bad_input_exit_2(tmp_path, capsys, digits):
    n = len(digits)
    out = tmp_path / "out"
    torch.save([torch.tensor([0, 1, 2]), torch.tensor([2, 3])], tmp_path / "overlap.torch")
    _assert_refused(
        ["split", f"import_file={tmp_path / 'overlap.torch'}", f"out={out}"],
        out,
        capsys,
        "disjoint",
    )
    torch.save([torch.tensor([0, 1]), torch.tensor([n + 5])], tmp_path / "range.torch")
    _assert_refused(
        ["split", f"import_file={tmp_path / 'range.torch'}", f"out={out}"],
        out,
        capsys,
        "out of range",
    )
    (tmp_path / "p.csv").write_text("image_id,partition\n000001.jpg,0\nnope.jpg,1\n")
    _assert_refused(
        ["split", f"import_file={tmp_path / 'p.csv'}", f"out={out}"],
        out,
        capsys,
        "unknown image ids",
    )
    short = TaskSet(torch.randint(0, 2, (2, n - 7)), ["a", "b"], ["discovered"] * 2)
    save_tasks(tmp_path / "short.npz", short)
    _assert_refused(
        ["split", f"discovered={tmp_path / 'short.npz'}", f"out={out}"], out, capsys, "images"
    )
    _assert_refused(
        ["split-eval", f"discovered={tmp_path / 'short.npz'}", f"out={out}"], out, capsys, "images"
    )
    _assert_refused(
        ["split", "discovered=/nonexistent/run", f"out={out}"], out, capsys, "not found"
    )
