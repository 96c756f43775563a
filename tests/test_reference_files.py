"""The reference's index-based files on the datasets here (issue #9, defects 3 and 7).

The reference's CIFAR files (``ssl_tasks.csv``, ``discovered.csv``, ``cifar_splits.torch``)
index the 50,000 official training images in torchvision order. They must apply to CIFAR
loaded from torchvision's python batches (through the image ids, also on subsets), be
refused with the reason on an ImageFolder tree, and never be guessed at; class-subset task
files (``tiny_imagenet_binary_tasks.npy``) need their format said.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from taskspace.cli import main as cli
from taskspace.data import ImageDataset, load_dataset
from taskspace.errors import TaskspaceError
from taskspace.splits import load_split
from taskspace.splits.evaluate import auto_settings
from taskspace.tasks import (
    class_subset_tasks,
    export_tasks_csv,
    human_task_subset,
    load_tasks,
    random_tasks,
)
from taskspace.tasks.layout import torchvision_train_index

ASSETS = Path(__file__).resolve().parents[2] / "shared" / "external" / "taskdiscovery" / "assets"
TINY_NPY = ASSETS / "tasks" / "tiny_imagenet_binary_tasks.npy"
PER_BATCH = 20  # images per batch file of the tiny torchvision folder
FAST = ["model=mlp", "recipe.epochs=1", "progress=false"]  # taskspace agreement
SPLIT_FAST = ["model=mlp", "recipe.epochs=1", "progress=false"]  # taskspace split-eval


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoded ImageFolder trees go to a per-test cache, not the user's."""
    monkeypatch.setenv("TASKSPACE_CACHE", str(tmp_path / "cache"))


def write_torchvision_cifar(root: Path) -> Path:
    """A tiny ``cifar-10-batches-py``: 5 train batches + a test batch of ``PER_BATCH``
    random images each (labels cycle through the 10 classes), and ``batches.meta``."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for b, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
        labels = [(3 * b + j) % 10 for j in range(PER_BATCH)]
        with (folder / name).open("wb") as f:
            pickle.dump({b"data": data, b"labels": labels}, f, protocol=2)
    names = [
        n.encode()
        for n in (
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        )
    ]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({b"label_names": names}, f, protocol=2)
    return root


def write_cifar_tree(root: Path) -> Path:
    """A tiny CIFAR-like ImageFolder tree: ``train|test/<10 classes>/NNNN.png``."""
    rng = np.random.default_rng(1)
    for part, n in (("train", 3), ("test", 1)):
        for c in range(10):
            (root / part / f"class{c}").mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / f"class{c}" / f"{i:04d}.png")
    return root


def reference_labels() -> np.ndarray:
    """``[50000, 2]`` 0/1 labels that depend on the torchvision index in two ways."""
    t = np.arange(50_000)
    return np.stack([(t * 7919 // 3) % 2, (t // 10_000 + t) % 2], axis=1)


def write_reference_csv(path: Path) -> Path:
    """An ``ssl_tasks.csv``-like file: header ``,ssl-0,ssl-1``, index 0..49999."""
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["", "ssl-0", "ssl-1"])
        w.writerows([i, *row] for i, row in enumerate(reference_labels().tolist()))
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---------------------------------------------------------------- defect 3: task CSVs
def test_cli_agreement_reference_csv_on_torchvision_folder(tmp_path: Path, capsys) -> None:
    """Done-when: ``agreement data=cifar10 data.root=<torchvision folder> tasks=<ssl csv>`` runs;
    the file's tasks are scored on the held-out split only, human tasks on both."""
    root = write_torchvision_cifar(tmp_path / "data")
    tasks_csv = write_reference_csv(tmp_path / "ssl.csv")
    out = tmp_path / "run"
    code = cli(
        [
            "agreement",
            "data=cifar10",
            f"data.root={root}",
            f"tasks={tasks_csv},human",
            "num_tasks=1",
            *FAST,
            f"out={out}",
        ]
    )
    assert code == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "agreement.csv").open()))
    scored = {(r["kind"], r["task"], r["split"]) for r in rows}
    human = next(t for k, t, _ in scored if k == "human")
    assert scored == {
        ("table", "ssl-0", "heldout"),
        ("table", "ssl-1", "heldout"),
        ("human", human, "heldout"),
        ("human", human, "test"),
    }
    tasks = load_tasks(out / "tasks.npz")
    ds = load_dataset("cifar10", root)
    file_rows = reference_labels()
    for i in (0, 19, 20, 45, 99):  # data_batch_1/00000 ... data_batch_5/00019
        t = torchvision_train_index(ds.ids[i])
        assert t == (i // PER_BATCH) * 10_000 + i % PER_BATCH
        assert tasks.labels[:2, i].tolist() == file_rows[t].tolist()
    assert tasks.unlabelled_splits("ssl-0") == ["test"]
    assert tasks.unlabelled_splits(2) == []  # the human task labels every image


def test_reference_csv_follows_ids_on_subsets(tmp_path: Path) -> None:
    """With train_size/test_size subsets each kept image gets its own torchvision row."""
    root = write_torchvision_cifar(tmp_path / "data")
    tasks_csv = write_reference_csv(tmp_path / "ssl.csv")
    ds = load_dataset("cifar10", root, train_size=30, test_size=10)
    tasks = load_tasks(tasks_csv, dataset=ds)
    assert tasks.labels.shape == (2, 40)
    file_rows = reference_labels()
    train = [i for i, x in enumerate(ds.ids) if x.startswith("data_batch_")]
    assert len(train) == 30 and any(x.startswith("data_batch_5") for x in ds.ids)
    expected = [file_rows[torchvision_train_index(ds.ids[i])].tolist() for i in train]
    assert tasks.labels[:, train].T.tolist() == expected
    assert tasks.meta["unlabelled_splits"] == ["test"]


def test_reference_row_count_equal_to_dataset_size_is_ambiguous(tmp_path: Path) -> None:
    """50,000 rows on a torchvision-layout dataset of 50,000 images fit both readings."""
    tasks_csv = write_reference_csv(tmp_path / "ssl.csv")
    ds = full_torchvision_dataset(n_test=0)
    with pytest.raises(TaskspaceError, match="say which: tasks=.*:labels or"):
        load_tasks(tasks_csv, dataset=ds)
    as_rows = load_tasks(tasks_csv, format="torchvision_train", dataset=ds)
    assert torch.equal(as_rows.labels.T, torch.from_numpy(reference_labels()))


def test_cli_agreement_reference_csv_refused_on_imagefolder_tree(tmp_path: Path, capsys) -> None:
    """Done-when: the same command on a JPEG/PNG ImageFolder tree exits 2 with one line
    that says why (not torchvision's order) and what to do (the python-batch folder)."""
    root = write_cifar_tree(tmp_path / "tree")
    tasks_csv = write_reference_csv(tmp_path / "ssl.csv")
    out = tmp_path / "run"
    code = cli(
        [
            "agreement",
            "data=cifar10",
            f"data.root={root}",
            f"tasks={tasks_csv}",
            *FAST,
            f"out={out}",
        ]
    )
    err = one_error_line(capsys)
    assert code == 2
    assert "ImageFolder tree" in err and "not torchvision's order" in err
    assert "cifar-10-batches-py" in err
    assert not out.exists()


def full_torchvision_dataset(n_test: int = 10) -> ImageDataset:
    """All 50,000 official training ids (plus a few test ids), 1-pixel images."""
    ids = [f"data_batch_{b}/{r:05d}" for b in range(1, 6) for r in range(10_000)]
    ids += [f"test_batch/{r:05d}" for r in range(n_test)]
    n = len(ids)
    return ImageDataset(
        "cifar10",
        torch.zeros(n, 1, 1, 1, dtype=torch.uint8),
        (0.5,),
        (0.5,),
        torch.arange(n) % 10,
        [str(c) for c in range(10)],
        splits={
            "train": torch.arange(45_000),
            "heldout": torch.arange(45_000, 50_000),
            "test": torch.arange(50_000, n),
        },
        ids=ids,
        index_order="torchvision",
    )


def test_export_tasks_csv_writes_reference_rows(tmp_path: Path) -> None:
    """On the full torchvision-layout CIFAR the CSV has the reference's 50,000 rows (test
    images left out) and reads back onto the same images; partly labelled tasks are never
    written with made-up labels."""
    ds = full_torchvision_dataset()
    tasks = random_tasks(len(ds), 2, seed=3)
    path = export_tasks_csv(tmp_path / "tasks.csv", tasks, dataset=ds)
    lines = path.read_text().splitlines()
    assert len(lines) == 1 + 50_000 and lines[0] == ",random-000,random-001"
    assert lines[1 + 12_345] == f"12345,{tasks.labels[0, 12_345]},{tasks.labels[1, 12_345]}"
    back = load_tasks(path, dataset=ds)
    assert torch.equal(back.labels[:, :50_000], tasks.labels[:, :50_000])
    assert back.unlabelled_splits(0) == ["test"]
    with pytest.raises(TaskspaceError, match="no labels on split.*test"):
        export_tasks_csv(tmp_path / "again.csv", back)
    assert not (tmp_path / "again.csv").exists()
    # without the dataset: one row per image of the task set, its own order
    export_tasks_csv(tmp_path / "own.csv", tasks)
    assert len((tmp_path / "own.csv").read_text().splitlines()) == 1 + len(ds)


# ---------------------------------------------------------------- defect 7: class subsets
def test_class_subset_files_need_their_format(tmp_path: Path, digits, capsys) -> None:
    """A bare .npy of class ids per row is refused without a format, and read as class
    subsets with ``tasks=<file>:class_subsets``."""
    subsets = np.array([[0, 3, 5, 7, 9], [8, 1, 2, 4, 6]], dtype=np.int64)
    np.save(tmp_path / "subsets.npy", subsets)
    with pytest.raises(TaskspaceError, match="class_subsets"):
        load_tasks(tmp_path / "subsets.npy", dataset=digits)
    tasks = load_tasks(tmp_path / "subsets.npy", format="class_subsets", dataset=digits)
    expected = class_subset_tasks(digits.classes, 10, subsets)
    assert torch.equal(tasks.labels, expected.labels) and tasks.kinds == ["human"] * 2
    assert tasks.task_meta(1)["positive_classes"] == [1, 2, 4, 6, 8]
    np.save(tmp_path / "repeats.npy", np.array([[0, 3, 3, 7]]))
    with pytest.raises(TaskspaceError, match="row 0 repeats class id 3"):
        load_tasks(tmp_path / "repeats.npy", format="class_subsets", dataset=digits)
    out = tmp_path / "run"
    assert (
        cli(["agreement", "data=digits", f"tasks={tmp_path / 'subsets.npy'}", *FAST, f"out={out}"])
        == 2
    )
    assert "class_subsets" in one_error_line(capsys)
    assert (
        cli(
            [
                "agreement",
                "data=digits",
                f"tasks={tmp_path / 'subsets.npy'}:class_subsets",
                *FAST,
                f"out={out}",
            ]
        )
        == 0
    )
    rows = list(csv.DictReader((out / "agreement.csv").open()))
    assert {r["task"] for r in rows} == {"subsets-000", "subsets-001"}
    assert (
        cli(
            [
                "agreement",
                "data=digits",
                f"tasks={tmp_path / 'subsets.npy'}:subsets",
                *FAST,
                f"out={tmp_path / 'r2'}",
            ]
        )
        == 2
    )
    assert "unknown task file format 'subsets'" in one_error_line(capsys)


@pytest.mark.external
def test_reference_tiny_imagenet_tasks_as_class_subsets() -> None:
    """The real ``tiny_imagenet_binary_tasks.npy``: 5 tasks of 100 of 200 classes."""
    if not TINY_NPY.is_file():
        pytest.skip("reference tiny_imagenet_binary_tasks.npy absent")
    classes = torch.arange(200).repeat(3)
    ds = ImageDataset(
        "tiny",
        torch.zeros(600, 1, 1, 1, dtype=torch.uint8),
        (0.5,),
        (0.5,),
        classes,
        [str(c) for c in range(200)],
    )
    with pytest.raises(TaskspaceError, match="class_subsets"):
        load_tasks(TINY_NPY, dataset=ds)
    tasks = load_tasks(TINY_NPY, format="class_subsets", dataset=ds)
    assert tasks.labels.shape == (5, 600) and tasks.labels.sum(1).tolist() == [300] * 5
    rows = np.load(TINY_NPY)
    assert tasks.task_meta(2)["positive_classes"] == sorted(rows[2].tolist())


# ---------------------------------------------------------------- defect 7: .torch splits
def write_cifar_splits(path: Path) -> dict[int, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A ``cifar_splits.torch``-like dict over torchvision training indices: targets 0 and
    11, two splits each, covering the images of the tiny folder."""
    tv = torch.tensor([b * 10_000 + r for b in range(5) for r in range(PER_BATCH)])
    g = torch.Generator().manual_seed(0)
    d = {}
    for target in (0, 11):
        d[target] = []
        for _ in range(2):
            perm = tv[torch.randperm(len(tv), generator=g)]
            d[target].append((perm[:60], perm[60:]))
    torch.save(d, path)
    return d


def test_cli_split_imports_reference_torch_file(tmp_path: Path, capsys) -> None:
    """Indices are torchvision training indices, placed through ids; each split gets its
    file's target (human task 0 / 11) and so a 2-way adversarial row per target."""
    root = write_torchvision_cifar(tmp_path / "data")
    d = write_cifar_splits(tmp_path / "cifar_splits.torch")
    out = tmp_path / "split"
    assert (
        cli(
            [
                "split",
                "data=cifar10",
                f"data.root={root}",
                f"import_file={tmp_path / 'cifar_splits.torch'}",
                f"out={out}",
                "progress=false",
            ]
        )
        == 0
    ), capsys.readouterr().err
    ds = load_dataset("cifar10", root)
    tv = [torchvision_train_index(x) for x in ds.ids]
    rows = list(csv.DictReader((out / "splits.csv").open()))
    assert [r["split"] for r in rows[:4]] == ["target0-0", "target0-1", "target11-0", "target11-1"]
    s = load_split(out / "splits" / rows[2]["file"], len(ds))
    assert sorted(tv[i] for i in s.train_idx.tolist()) == sorted(d[11][0][0].tolist())
    assert sorted(tv[i] for i in s.test_idx.tolist()) == sorted(d[11][0][1].tolist())
    positive = list(human_task_subset(10, 11))
    assert s.meta["target"] == "human-011" and s.meta["positive_classes"] == positive
    assert torch.equal(s.target_labels, torch.isin(ds.classes, torch.tensor(positive)).long())
    assert auto_settings(s, 10) == ["2-way", "10-way"]
    ev = tmp_path / "eval"
    assert cli(["split-eval", f"splits={out}", *SPLIT_FAST, "pictures=0", f"out={ev}"]) == 0
    res = list(csv.DictReader((ev / "results.csv").open()))
    two_way = {(r["target"], r["type"]) for r in res if r["setting"] == "2-way"}
    assert two_way == {
        (t, ty) for t in ("human-000", "human-011") for ty in ("adversarial", "random")
    }


def test_reference_torch_file_on_subset_drops_missing_images(tmp_path: Path) -> None:
    from taskspace.splits import import_splits

    root = write_torchvision_cifar(tmp_path / "data")
    d = write_cifar_splits(tmp_path / "cifar_splits.torch")
    ds = load_dataset("cifar10", root, train_size=50, test_size=10)
    tv = [torchvision_train_index(x) for x in ds.ids]
    s = import_splits(str(tmp_path / "cifar_splits.torch"), ds)[0]
    kept = {t for t in tv if t is not None}
    assert sorted(tv[i] for i in s.train_idx.tolist()) == sorted(
        t for t in d[0][0][0].tolist() if t in kept
    )
    assert s.meta["dropped"] == 100 - 50 and len(s.train_idx) + len(s.test_idx) == 50


def test_reference_torch_file_refused_on_imagefolder_tree(tmp_path: Path, capsys) -> None:
    root = write_cifar_tree(tmp_path / "tree")
    torch.save(
        {0: [(torch.tensor([0, 1, 2]), torch.tensor([3, 4]))]}, tmp_path / "cifar_splits.torch"
    )
    out = tmp_path / "split"
    assert (
        cli(
            [
                "split",
                "data=cifar10",
                f"data.root={root}",
                f"import_file={tmp_path / 'cifar_splits.torch'}",
                f"out={out}",
            ]
        )
        == 2
    )
    err = one_error_line(capsys)
    assert "cifar_splits.torch indexes CIFAR's official training images" in err
    assert "ImageFolder tree" in err and "cifar-10-batches-py" in err
    assert not out.exists()


def test_imported_split_without_target_takes_targets_option(tmp_path: Path, capsys) -> None:
    """A pair file records no target: ``targets=11`` gives it one; several named targets
    are refused; the default leaves it to the class setting."""
    from taskspace.splits import SplitOptions, build_splits

    root = write_torchvision_cifar(tmp_path / "data")
    ds = load_dataset("cifar10", root)
    torch.save(
        [torch.tensor([0, 1, 10_000, 20_005]), torch.tensor([2, 40_019])], tmp_path / "pair.torch"
    )
    common = {"import_file": str(tmp_path / "pair.torch"), "random_baselines": False}
    (s,) = build_splits(SplitOptions(**common, targets="11"), ds)[0]
    assert s.train_idx.tolist() == [0, 1, 20, 45] and s.test_idx.tolist() == [2, 99]
    positive = torch.tensor(human_task_subset(10, 11))
    assert torch.equal(s.target_labels, torch.isin(ds.classes, positive).long())
    assert s.meta["target"] == "human-011" and auto_settings(s, 10) == ["2-way", "10-way"]
    (plain,) = build_splits(SplitOptions(**common), ds)[0]
    assert plain.target_labels is None and auto_settings(plain, 10) == ["10-way"]
    with pytest.raises(TaskspaceError, match="records no target and targets=0,11"):
        build_splits(SplitOptions(**common, targets="0,11"), ds)
