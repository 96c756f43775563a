"""Tests for taskspace.tasks: TaskSet, builders (human/random) and task files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from taskspace.data.dataset import ImageDataset
from taskspace.errors import TaskspaceError
from taskspace.tasks import (
    REFERENCE_TARGETS,
    TaskSet,
    class_subset_tasks,
    export_tasks_csv,
    human_task_count,
    human_task_subset,
    human_task_subsets,
    human_tasks,
    load_tasks,
    random_tasks,
    save_tasks,
    validate_tasks,
)

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external" / "taskdiscovery"
SSL_CSV = EXTERNAL / "assets" / "tasks" / "ssl_tasks.csv"
TINY_NPY = EXTERNAL / "assets" / "tasks" / "tiny_imagenet_binary_tasks.npy"


def cifar_like_classes(per_class: int = 30, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """Class ids with exactly ``per_class`` images per class, shuffled (like CIFAR-10)."""
    g = torch.Generator().manual_seed(seed)
    classes = torch.arange(num_classes).repeat_interleave(per_class)
    return classes[torch.randperm(len(classes), generator=g)]


def tiny_dataset(classes: torch.Tensor) -> ImageDataset:
    n = len(classes)
    return ImageDataset(
        name="tiny",
        images=torch.zeros(n, 1, 2, 2, dtype=torch.uint8),
        mean=(0.5,),
        std=(0.5,),
        classes=classes,
        class_names=[str(c) for c in range(int(classes.max()) + 1)],
        splits={"train": torch.arange(0, n // 2), "test": torch.arange(n // 2, n)},
    )


# ---------------------------------------------------------------- TaskSet
def test_taskset_validation_errors() -> None:
    ok = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(TaskspaceError, match="2-D"):
        TaskSet(torch.zeros(5, dtype=torch.long), ["a"], ["table"])
    with pytest.raises(TaskspaceError, match="integers"):
        TaskSet(torch.zeros(2, 5), ["a", "b"], ["table", "table"])
    with pytest.raises(TaskspaceError, match="names"):
        TaskSet(ok, ["a"], ["table", "table"])
    with pytest.raises(TaskspaceError, match="kinds"):
        TaskSet(ok, ["a", "b"], ["table"])
    with pytest.raises(TaskspaceError, match="non-negative"):
        TaskSet(ok - 1, ["a", "b"], ["table", "table"])
    with pytest.raises(TaskspaceError, match="duplicate"):
        TaskSet(ok, ["a", "a"], ["table", "table"])
    with pytest.raises(TaskspaceError, match="unknown task kind"):
        TaskSet(ok, ["a", "b"], ["table", "bogus"])


def test_taskset_select_concat_kind_and_meta() -> None:
    classes = cifar_like_classes()
    human = human_tasks(classes, 10)
    rnd = random_tasks(len(classes), 3, seed=1)
    both = TaskSet.concat(human, rnd)
    assert len(both) == 126 + 1 + 3
    assert both.subset_of_kind("random").names == rnd.names
    assert len(both.subset_of_kind("discovered")) == 0
    assert torch.equal(both.subset_of_kind("original").labels[0], classes)
    # set-level facts the parts disagree on move to per-task entries
    assert both.task_meta("random-001")["seed"] == 1
    assert both.task_meta("human-011")["positive_classes"] == [0, 1, 2, 5, 6]
    assert "seed" not in both.task_meta("human-011")
    sel = both.select(["human-011", 0, -1])
    assert sel.names == ["human-011", "human-000", "random-002"]
    assert torch.equal(sel.labels[0], human.labels[11])
    assert set(sel.meta["tasks"]) == set(sel.names)
    assert both.num_classes("original") == 10
    assert both.num_classes(0) == 2
    with pytest.raises(TaskspaceError, match="duplicate"):
        TaskSet.concat(rnd, rnd)
    assert len(TaskSet.concat(rnd, rnd.renamed(prefix="b-"))) == 6
    with pytest.raises(TaskspaceError, match="different images"):
        TaskSet.concat(rnd, random_tasks(7, 1))


# ---------------------------------------------------------------- human tasks
def test_human_tasks_cifar10_reference_order() -> None:
    classes = cifar_like_classes()
    tasks = human_tasks(classes, 10)
    assert len(tasks) == 127 and human_task_count(10) == 126
    assert tasks.names[11] == "human-011" and tasks.names[-1] == "original"
    assert tasks.kinds.count("human") == 126 and tasks.kinds[-1] == "original"
    subsets = human_task_subsets(10)
    assert subsets == list(itertools.combinations(range(10), 5))[:126]
    assert all(0 in s for s in subsets)
    expected = {
        0: (0, 1, 2, 3, 4),
        11: (0, 1, 2, 5, 6),
        18: (0, 1, 2, 7, 8),
        27: (0, 1, 3, 5, 7),
        31: (0, 1, 3, 6, 8),
        38: (0, 1, 4, 5, 8),
        40: (0, 1, 4, 6, 7),
    }
    assert tuple(expected) == REFERENCE_TARGETS
    for i, subset in expected.items():
        assert subsets[i] == subset == human_task_subset(10, i)
        positive = torch.isin(classes, torch.tensor(subset)).long()
        assert torch.equal(tasks.labels[i], positive)
    # every unordered partition once: no task is another's complement
    keys = {frozenset(s) for s in subsets} | {frozenset(set(range(10)) - set(s)) for s in subsets}
    assert len(keys) == 252
    # balanced on CIFAR-like class vectors
    counts = tasks.labels[:126].sum(dim=1)
    assert torch.all(counts == len(classes) // 2)
    assert tasks.num_classes("original") == 10


def test_human_tasks_odd_and_unranking() -> None:
    assert human_task_subsets(3) == [(0,), (1,), (2,)]
    assert human_task_count(5) == 10
    for c in (2, 4, 5, 7, 8):
        listed = human_task_subsets(c)
        assert [human_task_subset(c, i) for i in range(len(listed))] == listed
    tasks = human_tasks(cifar_like_classes(num_classes=5), 5, include_original=False)
    assert len(tasks) == 10 and "original" not in tasks.names


def test_human_tasks_seeded_sample() -> None:
    classes = cifar_like_classes()
    a = human_tasks(classes, 10, max_tasks=7, seed=3)
    b = human_tasks(classes, 10, max_tasks=7, seed=3)
    c = human_tasks(classes, 10, max_tasks=7, seed=4)
    assert a.names == b.names and torch.equal(a.labels, b.labels)
    assert a.names != c.names
    idx = [a.task_meta(k)["partition_index"] for k in range(7)]
    assert idx == sorted(idx) and len(set(idx)) == 7 and all(0 <= i < 126 for i in idx)
    assert a.names[:7] == [f"human-{i:03d}" for i in idx]
    full = human_tasks(classes, 10)
    for k, i in enumerate(idx):
        assert torch.equal(a.labels[k], full.labels[i])
    # huge class counts: sampling without enumerating; enumerating all is refused
    many = human_tasks(cifar_like_classes(per_class=2, num_classes=100), 100, max_tasks=3)
    assert len(many) == 4 and torch.all(many.labels[:3].sum(1) == 100)
    with pytest.raises(TaskspaceError, match="max_tasks"):
        human_tasks(cifar_like_classes(per_class=2, num_classes=100), 100)


def test_class_subset_tasks_tiny_imagenet_format() -> None:
    classes = torch.arange(6).repeat(3)
    tasks = class_subset_tasks(classes, 6, np.array([[3, 1, 0], [5, 4, 2]]))
    assert tasks.task_meta(0)["positive_classes"] == [0, 1, 3]
    assert torch.equal(tasks.labels[1], (classes >= 2).long() * (classes != 3).long())


@pytest.mark.external
def test_tiny_imagenet_binary_tasks_file() -> None:
    if not TINY_NPY.is_file():
        pytest.skip("reference tiny_imagenet_binary_tasks.npy absent")
    subsets = np.load(TINY_NPY, allow_pickle=False)
    classes = torch.arange(200).repeat(2)
    tasks = class_subset_tasks(classes, 200, subsets)
    assert len(tasks) == 5 and torch.all(tasks.labels.sum(1) == 200)


# ---------------------------------------------------------------- random tasks
def test_random_tasks_seeded() -> None:
    a = random_tasks(1000, 4, seed=0)
    b = random_tasks(1000, 4, seed=0)
    c = random_tasks(1000, 4, seed=1)
    assert torch.equal(a.labels, b.labels) and not torch.equal(a.labels, c.labels)
    assert a.names == ["random-000", "random-001", "random-002", "random-003"]
    assert set(a.kinds) == {"random"}
    assert a.labels.min() >= 0 and a.labels.max() <= 1
    ref = torch.randint(0, 2, (1000,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.labels[0], ref)  # the reference check_as.py draw
    per = random_tasks(1000, 3, seed_per_task=True)
    assert torch.equal(per.labels[2], random_tasks(1000, 1, seed=2).labels[0])


def test_random_tasks_balanced() -> None:
    t = random_tasks(1000, 5, seed=2, num_classes=4, balanced=True)
    for k in range(5):
        assert torch.equal(torch.bincount(t.labels[k], minlength=4), torch.full((4,), 250))
    assert not torch.equal(t.labels[0], t.labels[1])
    assert torch.equal(t.labels, random_tasks(1000, 5, seed=2, num_classes=4, balanced=True).labels)


# ---------------------------------------------------------------- validate_tasks
def test_validate_tasks_errors() -> None:
    classes = cifar_like_classes(per_class=4)
    ds = tiny_dataset(classes)
    validate_tasks(human_tasks(classes, 10), ds)
    with pytest.raises(TaskspaceError, match="has 1000 labels per task but the dataset"):
        validate_tasks(random_tasks(1000, 2), ds)
    labels = torch.zeros(2, len(classes), dtype=torch.long)
    labels[1, ds.split("train")[:3]] = 1
    labels[0, ds.split("test")] = 1  # two classes overall, one in train
    one = TaskSet(labels, ["x", "y"], ["table", "table"])
    with pytest.raises(TaskspaceError, match="task 'x' has only one class in the train split"):
        validate_tasks(one, ds)
    validate_tasks(one, ds, train_split=None)
    with pytest.raises(TaskspaceError, match="no split"):
        validate_tasks(one, ds, train_split="val")


# ---------------------------------------------------------------- files
def test_npz_round_trip(tmp_path: Path) -> None:
    tasks = TaskSet.concat(human_tasks(cifar_like_classes(), 10), random_tasks(300, 2, seed=5))
    tasks.meta["sign_convention"] = "1[s>0]"
    path = save_tasks(tmp_path / "tasks.npz", tasks)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["labels"].dtype == np.uint8
    back = load_tasks(path)
    assert torch.equal(back.labels, tasks.labels) and back.labels.dtype == torch.int64
    assert back.names == tasks.names and back.kinds == tasks.kinds and back.meta == tasks.meta
    big = TaskSet(torch.tensor([[0, 300, 7]]), ["wide"], ["table"], {})
    save_tasks(tmp_path / "big.npz", big)
    assert torch.equal(load_tasks(tmp_path / "big.npz").labels, big.labels)
    assert not list(tmp_path.glob("*.tmp"))


def test_csv_round_trip_both_layouts(tmp_path: Path) -> None:
    tasks = random_tasks(50, 3, seed=7, num_classes=3)
    export_tasks_csv(tmp_path / "idx.csv", tasks)
    export_tasks_csv(tmp_path / "noidx.csv", tasks, index=False)
    lines = (tmp_path / "idx.csv").read_text().splitlines()
    assert lines[0] == ",random-000,random-001,random-002" and lines[1].startswith("0,")
    header = (tmp_path / "noidx.csv").read_text().splitlines()[0]
    assert header == "random-000,random-001,random-002"
    for name in ("idx.csv", "noidx.csv"):
        back = load_tasks(tmp_path / name)
        assert torch.equal(back.labels, tasks.labels) and back.names == tasks.names
        assert back.kinds == ["table"] * 3
    assert load_tasks(tmp_path / "idx.csv", kind="discovered").kinds == ["discovered"] * 3
    # a first column named "index" counts as an index only when it is 0..N-1
    (tmp_path / "named.csv").write_text("index,a\n0,1\n1,0\n2,1\n")
    assert load_tasks(tmp_path / "named.csv").names == ["a"]
    (tmp_path / "notidx.csv").write_text("idx,a\n1,1\n0,0\n")
    assert load_tasks(tmp_path / "notidx.csv").names == ["idx", "a"]


@pytest.mark.external
def test_reference_ssl_tasks_csv() -> None:
    if not SSL_CSV.is_file():
        pytest.skip("reference ssl_tasks.csv absent")
    tasks = load_tasks(SSL_CSV)
    assert tasks.labels.shape == (4, 50000)
    assert tasks.names == [f"resnet50-{i}" for i in range(4)]
    rates = tasks.labels.float().mean(dim=1).tolist()
    assert rates == pytest.approx([0.511, 0.495, 0.495, 0.498], abs=0.0015)


def test_npy_with_sidecar(tmp_path: Path) -> None:
    labels = np.array([[0, 1, 1, 0], [1, 1, 0, 0]], dtype=np.uint8)
    np.save(tmp_path / "disc.npy", labels)
    bare = load_tasks(tmp_path / "disc.npy")
    assert bare.names == ["disc-000", "disc-001"] and bare.kinds == ["table", "table"]
    side = {"names": ["t0", "t1"], "kinds": "discovered", "encoder": "resnet18", "meta": {"a": 1}}
    (tmp_path / "disc.json").write_text(json.dumps(side))
    tasks = load_tasks(tmp_path / "disc.npy")
    assert tasks.names == ["t0", "t1"] and tasks.kinds == ["discovered"] * 2
    assert tasks.meta == {"encoder": "resnet18", "a": 1}
    assert torch.equal(tasks.labels, torch.from_numpy(labels).long())
    # save_tasks writes <file>.npy.json, which wins over <stem>.json
    save_tasks(tmp_path / "disc.npy", tasks.renamed(prefix="x-"))
    assert (tmp_path / "disc.npy.json").is_file()
    assert load_tasks(tmp_path / "disc.npy").names == ["x-t0", "x-t1"]
    (tmp_path / "disc.npy.json").write_text(json.dumps({"names": ["only-one"]}))
    with pytest.raises(TaskspaceError, match="1 names"):
        load_tasks(tmp_path / "disc.npy")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TaskspaceError, match="does not exist"):
        load_tasks(tmp_path / "missing.npz")
    (tmp_path / "t.parquet").write_text("x")
    with pytest.raises(TaskspaceError, match="unknown task file type"):
        load_tasks(tmp_path / "t.parquet")
    (tmp_path / "bad.npz").write_bytes(b"\x00garbage bytes, not a zip archive" * 10)
    with pytest.raises(TaskspaceError, match="bad.npz.*not a valid .npz"):
        load_tasks(tmp_path / "bad.npz")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 20)
    with pytest.raises(TaskspaceError, match="trunc.npz"):
        load_tasks(tmp_path / "trunc.npz")
    (tmp_path / "cell.csv").write_text(",a,b\n0,1,0\n1,0,0.5\n")
    with pytest.raises(TaskspaceError, match=r"cell.csv, line 3, column 'b': '0.5'"):
        load_tasks(tmp_path / "cell.csv")
    (tmp_path / "ragged.csv").write_text("a,b\n1,0\n1\n")
    with pytest.raises(TaskspaceError, match="ragged.csv, line 3"):
        load_tasks(tmp_path / "ragged.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(TaskspaceError, match="empty.csv: empty file"):
        load_tasks(tmp_path / "empty.csv")
    (tmp_path / "neg.csv").write_text("a\n1\n-1\n")
    with pytest.raises(TaskspaceError, match="negative"):
        load_tasks(tmp_path / "neg.csv")
    (tmp_path / "order.csv").write_text(",a\n1,0\n0,1\n")
    with pytest.raises(TaskspaceError, match="index column"):
        load_tasks(tmp_path / "order.csv")
    np.save(tmp_path / "float.npy", np.zeros((2, 3)))
    with pytest.raises(TaskspaceError, match="integers"):
        load_tasks(tmp_path / "float.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TaskspaceError, match="obj.npy"):
        load_tasks(tmp_path / "obj.npy")  # never unpickles
    assert (tmp_path / "float.npy").is_file()
    # integral floats such as pandas' "1.0" are accepted
    (tmp_path / "float.csv").write_text("a\n1.0\n0\n")
    assert load_tasks(tmp_path / "float.csv").labels.tolist() == [[1, 0]]
