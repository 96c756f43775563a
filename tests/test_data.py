"""Tests of taskspace.data: digits, CIFAR (python batches and image trees), image folders,
the content-keyed cache, and splits (make / save / load)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import taskspace.data.imagefolder as imagefolder
from taskspace.data import (
    DATASET_NAMES,
    ImageDataset,
    load_dataset,
    load_splits,
    make_splits,
    save_splits,
)
from taskspace.data.splits import official_splits, stratified_subset
from taskspace.errors import TaskspaceError

CIFAR_JPEGS = Path(__file__).resolve().parents[2] / "shared" / "external" / "cifar10-yoongikim"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache folder, so none touches the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TASKSPACE_CACHE", str(cache))
    return cache


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and mtime (to prove nothing was written)."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            p = Path(dirpath) / name
            st = p.stat()
            out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _check_splits(ds: ImageDataset) -> None:
    """Splits are sorted, disjoint int64 index sets inside the dataset."""
    seen = torch.zeros(len(ds), dtype=torch.int64)
    for idx in ds.splits.values():
        assert idx.dtype == torch.int64
        assert torch.equal(idx, idx.sort().values)
        seen[idx] += 1
    assert int(seen.max()) == 1


# ---------------------------------------------------------------------------- digits


def test_digits_shapes_classes_and_splits() -> None:
    """Digits: shapes, dtypes, class counts, pixel scaling, default 1200/297/300 split."""
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    sk = load_digits()
    assert ds.name == "digits"
    assert ds.images.shape == (1797, 1, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.classes.dtype == torch.int64
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.classes.bincount().tolist() == np.bincount(sk.target).tolist()
    assert int(ds.images.max()) == 255 and int(ds.images.min()) == 0
    # 0..16 scaled to 0..255, same picture
    assert torch.equal(ds.images[:, 0] == 0, torch.from_numpy(sk.images == 0))
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 1200, "heldout": 297, "test": 300}
    _check_splits(ds)
    assert sum(len(v) for v in ds.splits.values()) == 1797
    assert len(ds.mean) == len(ds.std) == 1 and 0 < ds.mean[0] < 1 and 0 < ds.std[0] < 1
    x = ds.normalize(ds.images[ds.split("train")])
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    assert ds.ids is not None and ds.ids[0] == "0000" and len(ds.ids) == 1797


def test_digits_splits_deterministic_and_seeded() -> None:
    """Same split seed, same splits; another seed, other splits (same images)."""
    a, b = load_dataset("digits", split_seed=3), load_dataset("digits", split_seed=3)
    c = load_dataset("digits", split_seed=4)
    for name in ("train", "heldout", "test"):
        assert torch.equal(a.splits[name], b.splits[name])
    assert not torch.equal(a.splits["heldout"], c.splits["heldout"])
    assert torch.equal(a.images, c.images)


def test_digits_heldout_override() -> None:
    """``heldout`` as a count or a fraction; impossible sizes are one-line errors."""
    ds = load_dataset("digits", heldout=100)
    assert (len(ds.split("train")), len(ds.split("heldout")), len(ds.split("test"))) == (
        1397,
        100,
        300,
    )
    ds = load_dataset("digits", heldout=0.1)
    assert len(ds.split("heldout")) == 180
    with pytest.raises(TaskspaceError, match="heldout"):
        load_dataset("digits", heldout=1600)
    with pytest.raises(TaskspaceError, match="train_size"):
        load_dataset("digits", train_size=100)


def test_unknown_dataset_lists_names() -> None:
    """An unknown name lists every valid one, on one line."""
    with pytest.raises(TaskspaceError) as err:
        load_dataset("mnist")
    for name in DATASET_NAMES:
        assert name in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------- splits


def test_make_splits_covers_and_matches_random_split() -> None:
    """make_splits partitions range(n) exactly as torch's random_split does."""
    s = make_splits(1000, 7, heldout=100, test=0.2)
    assert [len(s[k]) for k in ("train", "heldout", "test")] == [700, 100, 200]
    assert torch.equal(torch.cat(list(s.values())).sort().values, torch.arange(1000))
    # reference: random_split(range(n), [n - h, h], generator=manual_seed(seed))
    g = torch.Generator().manual_seed(42)
    tr, ho = torch.utils.data.random_split(range(500), [450, 50], generator=g)
    s = make_splits(500, 42, heldout=50)
    assert s["train"].tolist() == sorted(tr.indices)
    assert s["heldout"].tolist() == sorted(ho.indices)
    assert "test" not in s
    assert make_splits(10, 0, heldout=5000.0 / 50000.0)["heldout"].numel() == 1
    with pytest.raises(TaskspaceError):
        make_splits(10, 0, heldout=5, test=5)
    with pytest.raises(TaskspaceError):
        make_splits(10, 0, heldout=1.5)


def test_save_load_splits_roundtrip(tmp_path: Path) -> None:
    """Splits survive save/load bit for bit; the write leaves no temp files."""
    splits = make_splits(1797, 5, heldout=297, test=300)
    splits["extra"] = torch.tensor([], dtype=torch.int64)
    path = save_splits(tmp_path / "run" / "splits.npz", splits)
    back = load_splits(path, n=1797)
    assert list(back) == list(splits)
    for k in splits:
        assert back[k].dtype == torch.int64 and torch.equal(back[k], splits[k])
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(TaskspaceError, match="has 1000 images"):
        load_splits(path, n=1000)


def test_splits_validation_errors(tmp_path: Path) -> None:
    """Overlapping, float, negative, missing or junk split files are refused."""
    with pytest.raises(TaskspaceError, match="disjoint"):
        save_splits(tmp_path / "s.npz", {"train": torch.tensor([0, 1]), "test": torch.tensor([1])})
    with pytest.raises(TaskspaceError, match="integer"):
        np.savez(tmp_path / "f.npz", train=np.array([0.5, 1.0]))
        load_splits(tmp_path / "f.npz")
    with pytest.raises(TaskspaceError, match="negative"):
        np.savez(tmp_path / "n.npz", train=np.array([-1, 2]))
        load_splits(tmp_path / "n.npz")
    with pytest.raises(TaskspaceError, match="not found"):
        load_splits(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TaskspaceError, match="junk.npz"):
        load_splits(tmp_path / "junk.npz")


def test_stratified_subset_and_official_splits() -> None:
    """Subsets keep class shares; the pool splits 9:1; test follows train."""
    classes = torch.arange(10).repeat_interleave(torch.tensor([50] * 9 + [5]))
    g = torch.Generator().manual_seed(0)
    sub = stratified_subset(classes, 101, g)
    counts = classes[sub].bincount(minlength=10).tolist()
    assert sum(counts) == 101 and counts[:9] == [11] * 9 and counts[9] == 2
    test_classes = torch.arange(10).repeat(3)
    keep, splits, _ = official_splits(classes, test_classes, seed=1, train_size=100, test_size=10)
    assert len(keep) == 110 and bool((keep[100:] >= len(classes)).all())
    assert [len(splits[k]) for k in ("train", "heldout", "test")] == [90, 10, 10]
    assert classes[keep[:100]].bincount().tolist() == [11] * 9 + [1]
    assert test_classes[keep[100:] - len(classes)].bincount().tolist() == [1] * 10


# ---------------------------------------------------------------------------- CIFAR batches


def _cifar_image(k: int) -> np.ndarray:
    """A recognisable 3x32x32 image: channel c holds value (k + 40 c) % 256, row r adds r."""
    img = np.zeros((3, 32, 32), dtype=np.uint8)
    for c in range(3):
        img[c] = ((k + 40 * c + np.arange(32)[:, None]) % 256).astype(np.uint8)
    return img


def _write_batch(path: Path, entries: dict[bytes, object]) -> None:
    """Pickle a batch dict with bytes keys, protocol 2, like the official files."""
    with path.open("wb") as f:
        pickle.dump(entries, f, protocol=2)


def _cifar10_batches(folder: Path, per_batch: int = 4) -> list[int]:
    """torchvision's cifar-10-batches-py layout with ``per_batch`` images per file."""
    folder.mkdir(parents=True)
    labels_all = []
    k = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = [(k + j) % 10 for j in range(per_batch)]
        data = np.stack([_cifar_image(k + j).reshape(-1) for j in range(per_batch)])
        _write_batch(
            folder / name,
            {
                b"batch_label": name.encode(),
                b"labels": labels,
                b"data": data,
                b"filenames": [f"img_{k + j}.png".encode() for j in range(per_batch)],
            },
        )
        labels_all += labels
        k += per_batch
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer"]
    names += [b"dog", b"frog", b"horse", b"ship", b"truck"]
    _write_batch(
        folder / "batches.meta",
        {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072},
    )
    return labels_all


def test_cifar10_python_batches(tmp_path: Path) -> None:
    """A tiny real-layout cifar-10-batches-py loads in torchvision order."""
    labels = _cifar10_batches(tmp_path / "data" / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path / "data")
    assert ds.images.shape == (24, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes.tolist() == labels
    assert ds.class_names[0] == "airplane" and ds.class_names[9] == "truck"
    for k in (0, 5, 23):
        assert np.array_equal(ds.images[k].numpy(), _cifar_image(k))
    assert ds.ids is not None and ds.ids[0] == "data_batch_1/00000"
    assert ds.ids[-1] == "test_batch/00003"
    assert (ds.mean, ds.std) == ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    assert [len(ds.split(k)) for k in ("train", "heldout", "test")] == [18, 2, 4]
    assert ds.split("test").tolist() == [20, 21, 22, 23]
    g = torch.Generator().manual_seed(0)
    assert ds.split("heldout").tolist() == sorted(torch.randperm(20, generator=g)[18:].tolist())
    # root may also be the batch folder itself; no cache is written for batches
    same = load_dataset("CIFAR-10", tmp_path / "data" / "cifar-10-batches-py")
    assert torch.equal(same.images, ds.images)


def test_cifar100_python_batches(tmp_path: Path) -> None:
    """cifar-100-python with fine labels; stats computed from the train part."""
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, start, n in (("train", 0, 30), ("test", 30, 10)):
        data = np.stack([_cifar_image(start + j).reshape(-1) for j in range(n)])
        fine = [(start + j) % 100 for j in range(n)]
        entries = {b"fine_labels": fine, b"coarse_labels": [0] * n, b"data": data}
        _write_batch(folder / name, entries)
    _write_batch(folder / "meta", {b"fine_label_names": [f"c{i:03d}".encode() for i in range(100)]})
    ds = load_dataset("cifar100", tmp_path)
    assert ds.images.shape == (40, 3, 32, 32) and ds.num_classes == 100
    assert ds.classes[:3].tolist() == [0, 1, 2] and ds.class_names[99] == "c099"
    assert len(ds.split("test")) == 10 and len(ds.split("heldout")) == 3
    train_part = ds.images[:30].double() / 255
    assert ds.mean == pytest.approx(tuple(train_part.mean((0, 2, 3)).tolist()), abs=1e-4)


def test_cifar_batches_refuse_foreign_pickles(tmp_path: Path) -> None:
    """A batch pickle naming any non-numpy callable is refused, not run."""

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("echo pwned",))

    _cifar10_batches(tmp_path / "cifar-10-batches-py")
    with (tmp_path / "cifar-10-batches-py" / "data_batch_2").open("wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(TaskspaceError, match="data_batch_2"):
        load_dataset("cifar10", tmp_path)


def test_cifar_missing_and_unrecognised_folders(tmp_path: Path) -> None:
    """Missing root, no root, unknown layout, missing batch: one-line errors."""
    with pytest.raises(TaskspaceError, match="data folder not found"):
        load_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(TaskspaceError, match="root="):
        load_dataset("cifar10")
    (tmp_path / "stuff").mkdir()
    with pytest.raises(TaskspaceError, match="no cifar10 data"):
        load_dataset("cifar10", tmp_path / "stuff")
    _cifar10_batches(tmp_path / "cut" / "cifar-10-batches-py")
    (tmp_path / "cut" / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(TaskspaceError, match="data_batch_4"):
        load_dataset("cifar10", tmp_path / "cut")


# ---------------------------------------------------------------------------- image trees


def _pixels(seed: int, size: tuple[int, int] = (6, 5), mode: str = "RGB") -> np.ndarray:
    """Random ``uint8`` pixels of a ``size`` (width, height) image in ``mode``."""
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _tree(root: Path, layout: dict[str, list[str]], mode: str = "RGB") -> dict[str, np.ndarray]:
    """Write PNG files (lossless, so pixels can be compared) plus one JPEG per class."""
    written = {}
    for i, (cls_dir, names) in enumerate(sorted(layout.items())):
        (root / cls_dir).mkdir(parents=True, exist_ok=True)
        for j, name in enumerate(names):
            arr = _pixels(100 * i + j, mode=mode)
            Image.fromarray(arr, mode).save(root / cls_dir / name)
            written[f"{cls_dir}/{name}"] = arr
    return written


LAYOUT = {
    "train/cat": ["b.png", "a.png", "c.jpg"],
    "train/ant": ["2.png", "10.png", "1.png", "z.jpeg"],
    "train/bee": ["x.png", "y.png"],
    "test/cat": ["t1.png"],
    "test/ant": ["t1.png", "t0.png"],
    "test/bee": ["t9.png"],
}


def test_imagefolder_canonical_order_and_cache(
    tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Canonical order, exact pixels, cache hit without decoding, data dir untouched."""
    root = tmp_path / "tree"
    written = _tree(root, LAYOUT)
    (root / "README.md").write_text("not an image")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"junk")
    before = _files(root)
    ds = load_dataset("imagefolder", root)
    assert ds.class_names == ["ant", "bee", "cat"]
    assert ds.ids == [
        "train/ant/1.png", "train/ant/10.png", "train/ant/2.png", "train/ant/z.jpeg",
        "train/bee/x.png", "train/bee/y.png",
        "train/cat/a.png", "train/cat/b.png", "train/cat/c.jpg",
        "test/ant/t0.png", "test/ant/t1.png", "test/bee/t9.png", "test/cat/t1.png",
    ]  # fmt: skip
    assert ds.classes.tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 0, 0, 1, 2]
    assert ds.images.shape == (13, 3, 5, 6)
    for i, rel in enumerate(ds.ids):
        if rel.endswith(".png"):
            assert np.array_equal(ds.images[i].permute(1, 2, 0).numpy(), written[rel])
    assert ds.split("test").tolist() == [9, 10, 11, 12]
    assert len(ds.split("train")) + len(ds.split("heldout")) == 9
    _check_splits(ds)
    # cache: written under TASKSPACE_CACHE, never inside the data folder
    assert _files(root) == before
    assert list((_private_cache / "trees").glob("*.pt"))

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache miss: the tree was decoded again")

    monkeypatch.setattr(imagefolder, "decode_tree", no_decode)
    again = load_dataset("imagefolder", root)
    assert torch.equal(again.images, ds.images) and torch.equal(again.classes, ds.classes)
    assert again.ids == ds.ids and again.mean == ds.mean and again.std == ds.std
    assert _files(root) == before
    # a changed file is noticed (new fast key, new content hash): decoded again
    Image.fromarray(_pixels(999)).save(root / "train" / "bee" / "x.png")
    with pytest.raises(AssertionError, match="cache miss"):
        load_dataset("imagefolder", root)


def test_imagefolder_cache_off_and_copied_tree(
    tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """cache=False writes nothing; a copied tree is found by its content hash."""
    _tree(tmp_path / "a", LAYOUT)
    first = load_dataset("imagefolder", tmp_path / "a", cache=False)
    assert not _private_cache.exists()
    load_dataset("imagefolder", tmp_path / "a")
    # same bytes elsewhere (new mtimes): found by content hash, not decoded again
    _tree(tmp_path / "b", LAYOUT)

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("the copy was decoded again")

    monkeypatch.setattr(imagefolder, "decode_tree", no_decode)
    copy = load_dataset("imagefolder", tmp_path / "b")
    assert torch.equal(copy.images, first.images)
    assert len(list((_private_cache / "trees").glob("*.pt"))) == 1


def test_imagefolder_single_tree_gray_and_subsets(tmp_path: Path) -> None:
    """Single-part trees, gray and mixed modes, stratified train/test subsets."""
    layout = {c: [f"{i:02d}.png" for i in range(10)] for c in ("one", "two", "three")}
    _tree(tmp_path / "g", layout, mode="L")
    ds = load_dataset("imagefolder", tmp_path / "g", split_seed=1)
    assert ds.images.shape == (30, 1, 5, 6) and ds.class_names == ["one", "three", "two"]
    assert [len(ds.split(k)) for k in ("train", "heldout", "test")] == [21, 3, 6]
    with pytest.raises(TaskspaceError, match="train_size"):
        load_dataset("imagefolder", tmp_path / "g", train_size=10)
    # one RGB image among gray ones: everything becomes RGB, gray replicated
    Image.fromarray(_pixels(5)).save(tmp_path / "g" / "one" / "zz.png")
    mixed = load_dataset("imagefolder", tmp_path / "g")
    assert mixed.images.shape == (31, 3, 5, 6)
    assert torch.equal(mixed.images[0, 0], mixed.images[0, 2])
    # train/test tree: class-stratified subsets
    big = {f"{p}/{c}": [f"{i:02d}.png" for i in range(n)] for p, n in (("train", 20), ("test", 8))
           for c in ("a", "b")}  # fmt: skip
    _tree(tmp_path / "s", big)
    sub = load_dataset("imagefolder", tmp_path / "s", train_size=10, test_size=4, split_seed=2)
    assert len(sub) == 14 and sub.ids is not None
    assert sub.classes[:10].bincount().tolist() == [5, 5]
    assert sub.classes[10:].bincount().tolist() == [2, 2]
    assert [len(sub.split(k)) for k in ("train", "heldout", "test")] == [9, 1, 4]
    assert all(i.startswith("train/") for i in sub.ids[:10])
    assert all(i.startswith("test/") for i in sub.ids[10:])


def test_imagefolder_errors(tmp_path: Path) -> None:
    """Missing, flat, empty-class, corrupt, mixed-size and half-split trees."""
    with pytest.raises(TaskspaceError, match="data folder not found"):
        load_dataset("imagefolder", tmp_path / "missing")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(TaskspaceError, match="not a folder"):
        load_dataset("imagefolder", tmp_path / "file.txt")
    (tmp_path / "flat").mkdir()
    Image.fromarray(_pixels(0)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(TaskspaceError, match="no class folders"):
        load_dataset("imagefolder", tmp_path / "flat")
    _tree(tmp_path / "e", {"a": ["1.png"], "b": []})
    with pytest.raises(TaskspaceError, match="empty class folder"):
        load_dataset("imagefolder", tmp_path / "e")
    _tree(tmp_path / "c", {"a": ["1.png", "2.png"], "b": ["3.png"]})
    (tmp_path / "c" / "a" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(TaskspaceError, match=r"a/2\.png") as err:
        load_dataset("imagefolder", tmp_path / "c")
    assert "\n" not in str(err.value)
    _tree(tmp_path / "m", {"a": ["1.png"], "b": ["2.png"]})
    Image.fromarray(_pixels(1, size=(7, 7))).save(tmp_path / "m" / "b" / "2.png")
    with pytest.raises(TaskspaceError, match=r"b/2\.png is 7x7"):
        load_dataset("imagefolder", tmp_path / "m")
    _tree(tmp_path / "t", {"train/a": ["1.png"], "train/b": ["2.png"]})
    with pytest.raises(TaskspaceError, match="no test/"):
        load_dataset("imagefolder", tmp_path / "t")


def test_parallel_decode_matches_and_reports_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Process-pool decoding equals serial decoding and names a corrupt file."""
    layout = {c: [f"{i:03d}.png" for i in range(300)] for c in ("a", "b")}
    _tree(tmp_path / "p", layout)
    serial = load_dataset("imagefolder", tmp_path / "p", cache=False)
    monkeypatch.setattr(imagefolder, "_PARALLEL_MIN_FILES", 1)
    parallel = load_dataset("imagefolder", tmp_path / "p", cache=False)
    assert torch.equal(serial.images, parallel.images)
    (tmp_path / "p" / "b" / "123.png").write_bytes(b"broken")
    with pytest.raises(TaskspaceError, match=r"b/123\.png"):
        load_dataset("imagefolder", tmp_path / "p", cache=False)


# ---------------------------------------------------------------------------- real CIFAR-10


@pytest.mark.slow
@pytest.mark.external
def test_real_cifar10_jpegs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real CIFAR-10 JPEG tree: canonical order, reference split, stratified subset."""
    if not (CIFAR_JPEGS / "train").is_dir():
        pytest.skip(f"{CIFAR_JPEGS} is absent")
    if os.environ.get("TASKSPACE_TEST_CACHE"):  # reuse a cache across test runs if asked
        monkeypatch.setenv("TASKSPACE_CACHE", os.environ["TASKSPACE_TEST_CACHE"])
    full = load_dataset("cifar10", CIFAR_JPEGS, progress=False)
    assert full.images.shape == (60000, 3, 32, 32)
    assert full.ids is not None and full.ids[0] == "train/airplane/0000.jpg"
    assert full.ids[50000] == "test/airplane/0000.jpg"
    assert full.class_names[:3] == ["airplane", "automobile", "bird"]
    assert full.classes[:50000].bincount().tolist() == [5000] * 10
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(50000, generator=g)
    assert torch.equal(full.split("heldout"), perm[45000:].sort().values)
    assert torch.equal(full.split("test"), torch.arange(50000, 60000))
    sub = load_dataset("cifar10", CIFAR_JPEGS, train_size=2000, test_size=1000, progress=False)
    assert sub.images.shape == (3000, 3, 32, 32)
    assert sub.classes[:2000].bincount().tolist() == [200] * 10
    assert sub.classes[2000:].bincount().tolist() == [100] * 10
    assert [len(sub.split(k)) for k in ("train", "heldout", "test")] == [1800, 200, 1000]
    index = {name: i for i, name in enumerate(full.ids)}
    picks = torch.tensor([index[i] for i in sub.ids])
    assert torch.equal(sub.images, full.images[picks])
    assert torch.equal(sub.classes, full.classes[picks])
