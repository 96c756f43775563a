"""Attribute datasets: CelebA-layout folders (TXT/CSV files, join by file name, crop,
partitions, errors, cache) and the synthetic coloured digits / waterdigits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits, load_sample_images

import taskspace.data.celeba as celeba
from taskspace.cli import main as cli
from taskspace.commands.agreement import AgreementConfig
from taskspace.config import build_config
from taskspace.data import DATASET_NAMES, ImageDataset, load_dataset
from taskspace.data.celeba import join_celeba, load_celeba, read_attribute_file
from taskspace.data.config import DataConfig, load_data
from taskspace.data.synthetic import load_coloured_digits, load_waterdigits
from taskspace.errors import TaskspaceError

EXTERNAL = Path(__file__).resolve().parents[2] / "shared" / "external"
CELEBA_IMAGES = EXTERNAL / "celeba-cs389hw4" / "celebA"
CELEBA_ATTRS = EXTERNAL / "celeba-attr-zgjsxx" / "list_attr_celeba.txt"
NAMES = ["Blond_Hair", "Male", "Smiling"]


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


def _attrs(num: int) -> list[int]:
    """The attributes of image number ``num`` (0/1), different for neighbouring numbers."""
    return [num % 2, (num // 2) % 2, int(num % 3 == 0)]


def _colour(num: int) -> tuple[int, int, int]:
    """A solid colour that identifies image ``num`` (survives JPEG compression)."""
    return (20 * (num % 10) + 30, 20 * ((num // 10) % 10) + 30, 200)


def _write_images(folder: Path, nums: list[int], size: tuple[int, int] = (12, 14)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for num in nums:
        Image.new("RGB", size, _colour(num)).save(folder / f"{num:06d}.jpg", quality=95)


def _write_attr_txt(path: Path, nums: list[int], names: list[str] = NAMES) -> None:
    """The official layout: count line, names with a trailing space, right-aligned -1/1
    values; CRLF, trailing spaces, no final newline."""
    lines = ["202599 ", " ".join(names) + " "]
    for num in nums:
        vals = "".join(f"{2 * v - 1:>3d}" for v in _attrs(num))
        lines.append(f"{num:06d}.jpg{vals}  ")
    path.write_bytes("\r\n".join(lines).encode())


def _write_attr_csv(path: Path, nums: list[int]) -> None:
    rows = ["image_id," + ",".join(NAMES)]
    rows += [f"{n:06d}.jpg," + ",".join(str(2 * v - 1) for v in _attrs(n)) for n in nums]
    path.write_text("\n".join(rows) + "\n")


def _fake_celeba(root: Path, images: list[int], rows: list[int]) -> Path:
    _write_images(root / "img_align_celeba", images)
    _write_attr_txt(root / "list_attr_celeba.txt", rows)
    return root


def _check_follows_names(ds: ImageDataset) -> None:
    """Each image's attributes and pixels belong to its own file name."""
    assert ds.ids is not None and ds.attributes is not None
    for i, name in enumerate(ds.ids):
        num = int(name.split(".")[0])
        assert ds.attributes[i].tolist() == _attrs(num)
        pixel = ds.images[i, :, 3, 3].float()
        assert torch.allclose(pixel, torch.tensor(_colour(num)).float(), atol=6)


# ---------------------------------------------------------------------------- CelebA files


def test_txt_join_by_file_name_with_dropped_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """CRLF/trailing spaces/no final newline; rows shuffled; the join keeps images with a
    row, labels follow file names, and the dropped rows are counted and logged."""
    root = tmp_path / "celeba"
    rows = [8, 3, 1, 7, 2, 5, 4, 6]  # not in file order; 7 and 8 have no image
    _fake_celeba(root, [1, 2, 3, 4, 5, 6, 9], rows)  # 9 has no attribute row
    table = read_attribute_file(root / "list_attr_celeba.txt")
    assert table.names == NAMES and table.files[0] == "000008.jpg"
    assert table.values[0].tolist() == _attrs(8)
    with caplog.at_level(logging.INFO, logger="taskspace.data.celeba"):
        ds = load_celeba(root, image_size=8, progress=False)
    assert ds.name == "celeba" and ds.images.shape == (6, 3, 8, 8)
    assert ds.ids == [f"{n:06d}.jpg" for n in range(1, 7)]
    assert ds.attribute_names == NAMES and ds.attributes is not None
    assert ds.attributes.dtype == torch.int64
    _check_follows_names(ds)
    assert ds.classes.tolist() == [0] * 6 and ds.class_names == ["face"]
    join = join_celeba(root)
    assert (join.attribute_rows_without_image, join.images_without_attributes) == (2, 1)
    assert (join.images_found, join.attribute_rows, join.dropped) == (7, 8, 3)
    [record] = [r for r in caplog.records if r.name == "taskspace.data.celeba"]
    assert record.levelno == logging.WARNING and "\n" not in record.getMessage()
    assert "2 attribute rows without an image" in record.getMessage()
    assert "1 image without an attribute row" in record.getMessage()


def test_csv_variants_match_txt(tmp_path: Path) -> None:
    """Kaggle CSV files (attributes and partition, with headers) give the same dataset."""
    txt, csv = tmp_path / "txt", tmp_path / "csv"
    nums = [1, 2, 3, 4, 5, 6]
    _fake_celeba(txt, nums, nums)
    (txt / "list_eval_partition.txt").write_text("".join(f"{n:06d}.jpg {n % 3}\n" for n in nums))
    _write_images(csv / "img_align_celeba" / "img_align_celeba", nums)  # the Kaggle nesting
    _write_attr_csv(csv / "list_attr_celeba.csv", list(reversed(nums)))
    (csv / "list_eval_partition.csv").write_text(
        "image_id,partition\r\n" + "".join(f"{n:06d}.jpg,{n % 3}\r\n" for n in nums)
    )
    a = load_celeba(txt, image_size=8, progress=False)
    b = load_celeba(csv, image_size=8, progress=False)
    assert a.ids == b.ids and a.attribute_names == b.attribute_names
    assert a.attributes is not None and b.attributes is not None
    assert torch.equal(a.attributes, b.attributes)
    assert torch.equal(a.images, b.images)
    _check_follows_names(b)
    # partition files found next to the attribute file: 0/1/2 = train/val/test by name
    for ds in (a, b):
        assert {k: v.tolist() for k, v in ds.splits.items()} == {
            "train": [2, 5],  # 000003, 000006
            "val": [0, 3],  # 000001, 000004
            "test": [1, 4],
        }


def test_crop_to_short_side_without_padding(tmp_path: Path) -> None:
    """A 10x20 (tall) and a 20x10 (wide) image become centred squares of their short side:
    the red bands outside the centre are cut, nothing is zero-padded."""
    folder = tmp_path / "c"
    folder.mkdir()
    tall = np.zeros((20, 10, 3), np.uint8)  # h=20, w=10
    tall[:5], tall[5:15], tall[15:] = (255, 0, 0), (0, 200, 0), (255, 0, 0)
    wide = np.ascontiguousarray(tall.transpose(1, 0, 2))  # h=10, w=20
    Image.fromarray(tall).save(folder / "000001.png")
    Image.fromarray(wide).save(folder / "000002.png")
    (folder / "list_attr_celeba.txt").write_text("Male\n000001.png 1\n000002.png -1\n")
    ds = load_celeba(folder, image_size=10, progress=False)
    expect = torch.tensor([0, 200, 0], dtype=torch.uint8).view(3, 1, 1).expand(3, 10, 10)
    assert ds.images.shape == (2, 3, 10, 10)
    assert torch.equal(ds.images[0], expect) and torch.equal(ds.images[1], expect)
    assert ds.attributes is not None and ds.attributes.flatten().tolist() == [1, 0]
    # resized from the square: still no padding and no red at any size
    small = load_celeba(folder, image_size=4, progress=False)
    assert small.images.shape == (2, 3, 4, 4)
    assert int(small.images[:, 0].max()) == 0 and int(small.images[:, 1].min()) == 200


def test_official_ranges(tmp_path: Path) -> None:
    """partition=official splits by file number; numbers outside 1..202599 are dropped."""
    nums = [1, 162770, 162771, 182637, 182638, 202599, 202600]
    root = _fake_celeba(tmp_path / "o", nums, nums)
    ds = load_celeba(root, partition="official", image_size=4, progress=False)
    assert ds.ids is not None and len(ds) == 6
    named = {k: [ds.ids[i] for i in v.tolist()] for k, v in ds.splits.items()}
    assert named == {
        "train": ["000001.jpg", "162770.jpg"],
        "val": ["162771.jpg", "182637.jpg"],
        "test": ["182638.jpg", "202599.jpg"],
    }
    assert join_celeba(root, partition="official").without_partition == 1
    # only train numbers: val and test are left out (asking for them is a clear error)
    part = _fake_celeba(tmp_path / "p", [1, 2, 3], [1, 2, 3])
    ds = load_celeba(part, partition="official", image_size=4, progress=False)
    assert list(ds.splits) == ["train"] and len(ds.split("train")) == 3
    with pytest.raises(TaskspaceError, match="no split 'val'"):
        ds.split("val")


def test_partition_file_join_and_dropped_rows(tmp_path: Path) -> None:
    """A partition file's rows are joined by name; images without a row are dropped."""
    root = _fake_celeba(tmp_path / "f", [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    part = root / "my_partition.txt"
    part.write_bytes(b"000005.jpg 2\r\n000001.jpg 0\r\n000003.jpg 1\r\n000099.jpg 0")
    join = join_celeba(root, partition="my_partition.txt")
    assert (join.without_partition, join.partition_rows_unused) == (2, 1)
    ds = load_celeba(root, partition=str(part), image_size=4, progress=False)
    assert ds.ids == ["000001.jpg", "000003.jpg", "000005.jpg"]
    assert {k: v.tolist() for k, v in ds.splits.items()} == {
        "train": [0],
        "val": [1],
        "test": [2],
    }


def test_seeded_split_deterministic_and_disjoint(tmp_path: Path) -> None:
    """partition=seeded: 60/20/20 of the joined images by split_seed, disjoint, covering."""
    nums = list(range(1, 21))
    root = _fake_celeba(tmp_path / "s", nums, nums)
    a = load_celeba(root, partition="seeded", image_size=4, progress=False)
    b = load_celeba(root, partition="seeded", image_size=4, progress=False)
    c = load_celeba(root, partition="seeded", split_seed=1, image_size=4, progress=False)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 12, "val": 4, "test": 4}
    for k in ("train", "val", "test"):
        assert torch.equal(a.split(k), b.split(k))
        assert torch.equal(a.split_orders[k].sort().values, a.split(k))
    assert not torch.equal(a.split("train"), c.split("train"))
    allidx = torch.cat([a.split(k) for k in ("train", "val", "test")])
    assert sorted(allidx.tolist()) == list(range(20))
    # the default (no partition file anywhere) is seeded too; fractions can be given
    assert torch.equal(load_celeba(root, image_size=4, progress=False).split("val"), a.split("val"))
    d = load_celeba(root, partition="seeded:0.5/0.25/0.25", image_size=4, progress=False)
    assert [len(d.split(k)) for k in ("train", "val", "test")] == [10, 5, 5]


def test_cache_reused_and_never_in_the_data_folder(
    tmp_path: Path, _private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second load reads the cached pixels (no decoding); the data folder is untouched;
    another image size is another entry."""
    root = _fake_celeba(tmp_path / "k", [1, 2, 3], [1, 2, 3])
    before = _files(root)
    first = load_celeba(root, image_size=8, progress=False)
    assert _files(root) == before
    assert any(p.suffix == ".pt" for p in _private_cache.rglob("*"))

    def no_decode(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(celeba, "_decode_squares", no_decode)
    again = load_celeba(root, image_size=8, progress=False)
    assert torch.equal(first.images, again.images) and first.mean == again.mean
    with pytest.raises(AssertionError, match="decoded again"):
        load_celeba(root, image_size=6, progress=False)


def test_parallel_decode_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worker-process decoding gives the same pixels as decoding in-process."""
    nums = list(range(1, 41))
    root = _fake_celeba(tmp_path / "par", nums, nums)
    serial = load_celeba(root, image_size=8, cache=False, progress=False)
    monkeypatch.setattr(celeba, "_PARALLEL_MIN_FILES", 1)
    parallel = load_celeba(root, image_size=8, cache=False, progress=False)
    assert torch.equal(serial.images, parallel.images)


@pytest.mark.parametrize(
    ("edit", "kwargs", "message"),
    [
        (None, {"root": "missing"}, "data folder not found"),
        (None, {"attributes": "nope.txt"}, "attribute file not found"),
        (None, {"images": "nowhere"}, "images folder not found"),
        ("rm_attr", {}, "no attribute file"),
        (b"3\r\nA B\r\n000001.jpg 1 1\r\n000002.jpg 1\r\n", {}, r"line 4: 2 columns, expected 3"),
        (b"A B\n000001.jpg 1 2\n", {}, "line 2: value '2' of B is not -1 or 1"),
        (b"A B\n000001.jpg 1 1\n000001.jpg 1 -1\n", {}, "000001.jpg appears twice"),
        (b"A A\n000001.jpg 1 1\n", {}, "names A more than once"),
        (b"A B\n000777.jpg 1 1\n", {}, "matches none of the 2 images"),
        ("part:000001.jpg 3\n", {}, "line 1: unknown partition value '3'"),
        ("part:000050.jpg 0\n", {}, "partition file .* matches none of the 2 images"),
        ("part:000001.jpg 0 1\n", {}, "line 1: 3 columns, expected 2"),
        (None, {"partition": "elsewhere.txt"}, "partition file not found"),
        (None, {"partition": "seeded:0.5/0.5"}, "three fractions"),
        (None, {"image_size": 0}, "image_size must be a positive"),
        (None, {"strict": True, "rows": [1, 2, 3]}, "1 rows of .* have no image"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, _private_cache: Path, edit: object, kwargs: dict, message: str
) -> None:
    """Every bad input is a one-line TaskspaceError, and nothing is written anywhere."""
    kwargs = dict(kwargs)
    root = _fake_celeba(tmp_path / "bad", [1, 2], kwargs.pop("rows", [1, 2]))
    if edit == "rm_attr":
        (root / "list_attr_celeba.txt").unlink()
    elif isinstance(edit, bytes):
        (root / "list_attr_celeba.txt").write_bytes(edit)
    elif isinstance(edit, str):
        (root / "list_eval_partition.txt").write_text(edit.split(":", 1)[1])
    if "root" in kwargs:
        kwargs["root"] = tmp_path / kwargs["root"]
    before = _files(tmp_path)
    with pytest.raises(TaskspaceError, match=message) as err:
        load_celeba(kwargs.pop("root", root), progress=False, **kwargs)
    assert "\n" not in str(err.value)
    assert _files(tmp_path) == before and not _private_cache.exists()


def test_cli_bad_attribute_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``taskspace agreement data=celeba`` with a broken attribute file: exit 2, one line."""
    root = _fake_celeba(tmp_path / "cli", [1, 2], [1, 2])
    (root / "list_attr_celeba.txt").write_text("A B\n000001.jpg 1 1\n000002.jpg 1 1 1\n")
    out = tmp_path / "run"
    code = cli(
        ["agreement", "data=celeba", f"data.root={root}", "data.image_size=8", f"out={out}"]
        + ["progress=false", "report=false"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "line 3: 4 columns, expected 3" in err
    assert not out.exists()


def test_registry_and_data_config(tmp_path: Path) -> None:
    """load_dataset / DataConfig reach the attribute datasets; their options are refused by
    datasets they do not apply to."""
    for name in ("celeba", "coloured_digits", "waterdigits"):
        assert name in DATASET_NAMES
    root = _fake_celeba(tmp_path / "r", [1, 2, 3, 4, 5], [1, 2, 3, 4, 5])
    attrs = root / "list_attr_celeba.txt"
    cfg = DataConfig(name="celeba", root=str(root), attributes=str(attrs), image_size=16)
    ds = load_data(cfg, progress=False)
    assert ds.images.shape == (5, 3, 16, 16) and set(ds.splits) == {"train", "val", "test"}
    direct = load_dataset("CelebA", root, attributes=attrs, partition="seeded", progress=False)
    assert direct.images.shape == (5, 3, 64, 64)  # the default size
    cfg = build_config(AgreementConfig, ["data=colored-digits", "data.correlation=0.9"])
    ds = load_data(cfg.data, progress=False)
    assert ds.name == "coloured_digits" and ds.attributes is not None
    y, a = ds.attributes[ds.split("train")].T
    assert abs(float((y == a).double().mean()) - 0.9) < 0.002
    with pytest.raises(TaskspaceError, match="correlation=0.9 applies to coloured_digits"):
        load_dataset("digits", correlation=0.9)
    with pytest.raises(TaskspaceError, match="partition=official applies to celeba only"):
        load_dataset("waterdigits", partition="official")
    with pytest.raises(TaskspaceError, match="takes no heldout"):
        load_dataset("celeba", root, heldout=0.1)
    with pytest.raises(TaskspaceError, match="takes no data folder"):
        load_dataset("waterdigits", root)
    sized = load_dataset("waterdigits", train_size=100, heldout=40, test_size=20, image_size=8)
    assert sized.images.shape == (160, 3, 8, 8)
    assert [len(sized.split(k)) for k in ("train", "val", "test")] == [100, 40, 20]


# ---------------------------------------------------------------------------- synthetic


def _groups(ds: ImageDataset, split: str) -> list[int]:
    """Group counts g = 2y + a of ``split``, padded to 4."""
    assert ds.attributes is not None
    g = 2 * ds.attributes[:, 0] + ds.attributes[:, 1]
    return torch.bincount(g[ds.split(split)], minlength=4).tolist()


def test_coloured_digits_correlation_balance_and_colours() -> None:
    """Train P(a = y) = 0.97 (groups 584/18/18/580 of 1,200), val/test group-balanced, the
    colour painted only on background pixels and only by a."""
    ds = load_coloured_digits()
    assert ds.images.shape == (1797, 3, 8, 8) and ds.attribute_names == ["large", "blue"]
    assert ds.attributes is not None and ds.ids is not None
    assert torch.equal(ds.attributes[:, 0], (ds.classes >= 5).long())
    train = _groups(ds, "train")
    assert train == [584, 18, 18, 580] and sum(train) == 1200
    assert abs((train[0] + train[3]) / 1200 - 0.97) < 0.005
    assert _groups(ds, "test") == [75, 75, 75, 75]
    val = _groups(ds, "val")
    assert sum(val) == 297 and max(val) - min(val) <= 1
    allidx = torch.cat([ds.split(k) for k in ("train", "val", "test")])
    assert sorted(allidx.tolist()) == list(range(1797)) and len(set(ds.ids)) == 1797
    values = torch.from_numpy(load_digits().images).round().long()[[int(i) for i in ds.ids]]
    background = values == 0
    a = ds.attributes[:, 1]
    colour = torch.tensor([[128, 0, 0], [0, 0, 128]], dtype=torch.uint8)[a]  # strength 0.5
    img = ds.images.permute(0, 2, 3, 1)  # [N, 8, 8, 3]
    assert torch.equal(img[background], colour[:, None, None, :].expand_as(img)[background])
    fg = img[~background]
    assert torch.equal(fg[:, 0], fg[:, 1]) and torch.equal(fg[:, 1], fg[:, 2])
    assert torch.equal(fg[:, 0], ((values[~background] * 255 + 8) // 16).to(torch.uint8))


def test_waterdigits_shapes_backgrounds_and_test_balance() -> None:
    """16x16 white digits over china.jpg (a = 0) or flower.jpg (a = 1) crops; test
    group-balanced; train correlation 0.95."""
    ds = load_waterdigits()
    assert ds.images.shape == (1797, 3, 16, 16) and ds.attribute_names == ["large", "flower"]
    assert _groups(ds, "test") == [75, 75, 75, 75]
    train = _groups(ds, "train")
    assert abs((train[0] + train[3]) / sum(train) - 0.95) < 0.005
    assert min(train[1], train[2]) >= 25  # both minority groups present
    sample = load_sample_images()
    photos = {
        f.replace("\\", "/").rsplit("/", 1)[-1]: img
        for f, img in zip(sample.filenames, sample.images)
    }
    digits = load_digits().images
    assert ds.attributes is not None and ds.ids is not None
    for i in (0, 1, 2, 3, 1500, 1796):
        alpha = np.kron(digits[int(ds.ids[i])], np.ones((2, 2)))
        bg = alpha == 0
        img = ds.images[i].permute(1, 2, 0).numpy()
        own = photos["flower.jpg" if int(ds.attributes[i, 1]) else "china.jpg"]
        other = photos["china.jpg" if int(ds.attributes[i, 1]) else "flower.jpg"]
        assert _crop_found(own, img, bg) and not _crop_found(other, img, bg)
        full = alpha == 16
        assert (img[full] == 255).all()  # the digit's solid strokes are white


def _crop_found(photo: np.ndarray, img: np.ndarray, bg: np.ndarray) -> bool:
    """Whether ``img``'s background pixels are a 16x16 crop of ``photo``."""
    r, c = np.argwhere(bg)[0]
    hits = np.argwhere((photo == img[r, c]).all(axis=2))
    for y, x in hits:
        top, left = y - r, x - c
        inside = 0 <= top <= photo.shape[0] - 16 and 0 <= left <= photo.shape[1] - 16
        if inside and (photo[top : top + 16, left : left + 16][bg] == img[bg]).all():
            return True
    return False


def test_synthetic_deterministic_by_seed_and_checked() -> None:
    """The same seed gives the same dataset; another seed another; bad options are errors."""
    for loader in (load_coloured_digits, load_waterdigits):
        a, b, c = loader(seed=3), loader(seed=3), loader(seed=4)
        assert torch.equal(a.images, b.images) and a.ids == b.ids
        assert a.attributes is not None and b.attributes is not None
        assert torch.equal(a.attributes, b.attributes)
        assert a.ids != c.ids and not torch.equal(a.images, c.images)
        # the first images of train are class-mixed (dataset.first takes them)
        first = a.attributes[a.first("train", 32), 0]
        assert 0 < int(first.sum()) < 32
    small = load_coloured_digits(correlation=0.5, sizes=(400, 0, 100))
    assert list(small.splits) == ["train", "test"]
    g = _groups(small, "train")
    assert sum(g) == 400 and abs(g[0] - g[1]) <= 1 and abs(g[2] - g[3]) <= 1
    with pytest.raises(TaskspaceError, match="need 1800 digits, but there are 1797"):
        load_waterdigits(sizes=(1500, 200, 100))
    with pytest.raises(TaskspaceError, match=r"correlation must lie in \[0, 1\]"):
        load_coloured_digits(correlation=1.5)
    with pytest.raises(TaskspaceError, match="test split of 1794 needs 897 digits with large=1"):
        load_coloured_digits(sizes=(1, 0, 1794))


# ---------------------------------------------------------------------------- the real subset


@pytest.mark.external
def test_real_celeba_subset(caplog: pytest.LogCaptureFixture) -> None:
    """The team's 10,000 images (89x109) with the 20,000-row CRLF attribute file."""
    if not CELEBA_IMAGES.is_dir() or not CELEBA_ATTRS.is_file():
        pytest.skip(f"the CelebA subset is absent ({CELEBA_IMAGES}, {CELEBA_ATTRS})")
    with caplog.at_level(logging.INFO, logger="taskspace.data.celeba"):
        ds = load_dataset(
            "celeba", CELEBA_IMAGES, attributes=CELEBA_ATTRS, partition="seeded",
            image_size=32, progress=False,
        )  # fmt: skip
    assert ds.images.shape == (10000, 3, 32, 32) and ds.attributes is not None
    assert ds.ids is not None and ds.ids[0] == "000001.jpg" and ds.ids[-1] == "010000.jpg"
    assert ds.attribute_names is not None and len(ds.attribute_names) == 40
    assert ds.attribute_names[9] == "Blond_Hair" and ds.attribute_names[20] == "Male"
    g = 2 * ds.attributes[:, 9] + ds.attributes[:, 20]
    assert torch.bincount(g, minlength=4).tolist() == [4412, 4136, 1371, 81]
    assert [len(ds.split(k)) for k in ("train", "val", "test")] == [6000, 2000, 2000]
    messages = [r.getMessage() for r in caplog.records if r.name == "taskspace.data.celeba"]
    assert len(messages) == 1 and "10,000 attribute rows without an image" in messages[0]
    assert "0 images without an attribute row" in messages[0]
    join = join_celeba(CELEBA_IMAGES, attributes=CELEBA_ATTRS, partition="official")
    assert (join.attribute_rows, join.attribute_rows_without_image) == (20000, 10000)
    assert join.parts is not None and set(join.parts.tolist()) == {0}  # all official train
