"""Spurious-correlation identification: Agresti-Coull shrinkage and delta against hand
computations, NaN handling, the SVD dimension (the original's off-by-one fixed), the
histogram and pair list; CelebA-lite (seeded, the copula oracle, the registry); and the
done-when check on CelebA-lite: exactly the planted pairs pass the threshold, in the
core -> shortcut direction only, and co-clustering and SVD + KMeans keep each planted
pair together."""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from taskspace.data import load_dataset
from taskspace.data.synthetic import (
    CELEBA_LITE_ATTRIBUTES,
    CELEBA_LITE_PLANTED,
    celeba_lite_sigma,
    load_celeba_lite,
)
from taskspace.engine import Ensemble
from taskspace.errors import TaskspaceError
from taskspace.report.spurious_plots import (
    plot_delta_heatmap,
    plot_delta_histogram,
    plot_task_heatmaps,
)
from taskspace.robustness import (
    EPSILON,
    Z95,
    AttributeModels,
    DeltaMatrix,
    association,
    cocluster,
    cocluster_input,
    delta_from_counts,
    delta_histogram,
    delta_matrix,
    fit_attribute_models,
    normalize_rows,
    shrink_group_accuracy,
    svd_dimension,
    svd_kmeans,
    task_pairings,
)

pytestmark = pytest.mark.usefixtures("one_thread")

MLP = {"widths": (32,)}
SEEDS = (0, 1, 2)


def _interval(c: float, n: float) -> tuple[float, float]:
    """Agresti-Coull 95 %, written out: n~ = n + z^2, p~ = (c + z^2/2)/n~,
    h = z sqrt(p~(1 - p~)/n~)."""
    z = 1.95996
    nt = n + z * z
    pt = (c + z * z / 2) / nt
    h = z * math.sqrt(pt * (1 - pt) / nt)
    return pt - h, pt + h


# ------------------------------------------------------------------ shrinkage and delta


def test_shrinkage_inside_and_clipped_by_hand() -> None:
    """Class 0 (g0, g1): 85/100 correct, inside both groups' intervals, so both take
    85 %. Class 1 (g2, g3): 20/40 = 50 %, outside both small groups' intervals, so g2 takes
    its upper bound and g3 its lower bound."""
    correct = torch.tensor([45, 40, 2, 18])
    total = torch.tensor([50, 50, 20, 20])
    # the intervals, by hand
    assert _interval(45, 50) == pytest.approx((0.78206, 0.96086), abs=1e-4)
    assert _interval(40, 50) == pytest.approx((0.66769, 0.88950), abs=1e-4)
    lo2, hi2 = _interval(2, 20)
    lo3, hi3 = _interval(18, 20)
    assert (lo2, hi2) == pytest.approx((0.015656, 0.313244), abs=1e-4)
    assert (lo3, hi3) == pytest.approx((0.686756, 0.984344), abs=1e-4)
    s = shrink_group_accuracy(correct, total)
    assert s.tolist() == pytest.approx([85.0, 85.0, 100 * hi2, 100 * lo3], abs=1e-3)
    assert s.tolist() == pytest.approx([85.0, 85.0, 31.3244, 68.6756], abs=1e-3)
    d = delta_from_counts(correct, total)
    assert float(d) == pytest.approx(abs(85 + 68.6756 - 85 - 31.3244), abs=1e-3)
    assert float(d) == pytest.approx(37.3512, abs=1e-3)
    assert abs(Z95 - 1.95996) < 1e-5


def test_shrinkage_small_groups_add_no_signal() -> None:
    """A tiny group that disagrees with its class still lies within its wide interval:
    delta 0; the same disagreement in large groups gives a large delta."""
    # g1 and g3: 1 of 2 correct, interval [0.095, 0.905], which holds the class's 91/102
    assert _interval(1, 2) == pytest.approx((0.0948, 0.9052), abs=1e-3)
    small = delta_from_counts(torch.tensor([90, 1, 90, 1]), torch.tensor([100, 2, 100, 2]))
    assert float(small) == pytest.approx(0.0, abs=1e-9)
    big = delta_from_counts(torch.tensor([900, 0, 0, 900]), torch.tensor([1000, 100, 100, 1000]))
    # every group clipped to the end of its interval nearest its class accuracy
    lo0, _ = _interval(900, 1000)
    _, hi1 = _interval(0, 100)
    assert float(big) > 150
    s = shrink_group_accuracy(torch.tensor([900, 0, 0, 900]), torch.tensor([1000, 100, 100, 1000]))
    assert float(s[0]) == pytest.approx(100 * lo0, abs=1e-3)  # class 900/1100 is below
    assert float(s[1]) == pytest.approx(100 * hi1, abs=1e-3)


def test_empty_groups_and_nan() -> None:
    """An empty group's interval is [0, 1], so it takes its class accuracy (the diagonal
    Task:Task has empty g1 and g2 and delta 0); only an empty class gives NaN."""
    s = shrink_group_accuracy(torch.tensor([10, 0, 5, 5]), torch.tensor([20, 0, 10, 10]))
    assert float(s[1]) == pytest.approx(50.0)
    diag = delta_from_counts(torch.tensor([70, 0, 0, 80]), torch.tensor([100, 0, 0, 100]))
    assert float(diag) == pytest.approx(0.0, abs=1e-9)
    empty_class = delta_from_counts(torch.tensor([0, 0, 5, 5]), torch.tensor([0, 0, 10, 10]))
    assert math.isnan(float(empty_class))
    # batched: [..., 4]
    both = delta_from_counts(
        torch.tensor([[70, 0, 0, 80], [0, 0, 5, 5]]),
        torch.tensor([[100, 0, 0, 100], [0, 0, 10, 10]]),
    )
    assert both[0] == pytest.approx(0.0, abs=1e-9) and math.isnan(float(both[1]))
    with pytest.raises(TaskspaceError):
        shrink_group_accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 2, 3]))


def _matrix(values: list[list[float]], names: list[str]) -> DeltaMatrix:
    v = torch.tensor(values, dtype=torch.float64)
    k = len(names)
    zeros = torch.zeros(k, k, 4, dtype=torch.long)
    return DeltaMatrix(
        v, list(names), list(names), zeros, zeros, zeros.double(), {n: 0.9 for n in names}
    )


def test_pairs_histogram_and_transpose_by_hand() -> None:
    """Pairs above epsilon sorted descending, named by meaning; NaN and the diagonal never
    count; the histogram bins the off-diagonal cells in 1-point bins over [0, 101] with
    deltas >= 100 in the last bin; transpose swaps the axes explicitly."""
    nan = float("nan")
    d = _matrix([[0.0, 150.0, 33.0], [2.5, 0.0, 40.0], [nan, 99.5, 50.0]], ["A", "B", "C"])
    assert [(p["task"], p["attr"], p["delta"]) for p in d.pairs()] == [
        ("A", "B", 150.0),
        ("C", "B", 99.5),
        ("B", "C", 40.0),
    ]  # 33.0 is not above 33; (C, C) = 50 is on the diagonal
    h = delta_histogram(d)
    assert h.edges.tolist() == list(range(102)) and h.counts.shape == (101,)
    assert int(h.counts.sum()) == 5  # 6 off-diagonal cells, one NaN
    assert int(h.counts[100]) == 1 and int(h.counts[99]) == 1 and int(h.counts[2]) == 1
    assert int(h.counts[33]) == 1 and int(h.counts[40]) == 1
    assert h.by_attr.sum(0).tolist() == h.counts.tolist()
    assert int(h.by_attr[1].sum()) == 2  # column B: 150 and 99.5
    t = d.transpose()
    assert t.axes == ("attr", "task") and t.rows == d.cols and t.cols == d.rows
    assert t.tasks == d.tasks and t.attrs == d.attrs  # names by meaning
    assert torch.allclose(t.values, d.values.T, equal_nan=True)
    assert t.cell("A", "B") == d.cell("A", "B") == 150.0
    assert [(p["task"], p["attr"]) for p in t.pairs()] == [("A", "B"), ("C", "B"), ("B", "C")]
    assert t.transpose().axes == ("task", "attr")
    assert d.row("C") == {"A": None, "B": 99.5, "C": 50.0}
    assert d.to_json()["values"][2][0] is None


# ------------------------------------------------------------------ SVD dimension


def test_svd_dimension_smallest_count_reaching_gamma() -> None:
    """s = (3, 2, 1): shares 9/14, 13/14, 1; gamma 0.9 needs 2 (the original's
    argmax(cumsum > gamma) gave 1). s1 alone above gamma gives 1 (the original: 0). A
    share equal to gamma counts."""
    assert svd_dimension([3.0, 2.0, 1.0], 0.9) == 2
    assert int(np.argmax(np.cumsum([9, 4, 1]) / 14 > 0.9)) == 1  # the original's off-by-one
    assert svd_dimension([10.0, 1.0, 1.0], 0.9) == 1
    assert int(np.argmax(np.cumsum([100, 1, 1]) / 102 > 0.9)) == 0  # the original kept none
    assert svd_dimension([3.0, 1.0], 0.9) == 1  # 9/10 == gamma
    assert svd_dimension([1.0, 1.0, 1.0, 1.0], 0.5) == 2
    assert svd_dimension([1.0, 1.0, 1.0, 1.0], 0.0) == 1
    with pytest.raises(TaskspaceError):
        svd_dimension([1.0], 1.0)
    with pytest.raises(TaskspaceError):
        svd_dimension([0.0, 0.0], 0.5)


def test_row_normalisation_protects_empty_rows() -> None:
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    z = normalize_rows(x, "zscore")
    assert np.all(z[0] == 1e-7) and np.all(z[2] == 1e-7)
    assert z[1] == pytest.approx([-math.sqrt(1.5), 0.0, math.sqrt(1.5)])
    s = normalize_rows(x, "softmax")
    assert np.all(s[0] == 1e-7) and s[1].sum() == pytest.approx(1.0)
    assert s[2] == pytest.approx([1 / 3] * 3)
    with pytest.raises(TaskspaceError):
        normalize_rows(x, "norm")  # type: ignore[arg-type]


# ------------------------------------------------------------------ CelebA-lite


def test_celeba_lite_seeded_oracle_and_registry() -> None:
    """Same seed, same dataset; the copula's Sigma is the oracle (planted pairs correlated,
    the rest independent), and the drawn attributes follow it; the registry reaches it."""
    a = load_celeba_lite(seed=5, sizes=(400, 200, 200))
    b = load_celeba_lite(seed=5, sizes=(400, 200, 200))
    assert torch.equal(a.images, b.images) and torch.equal(a.attributes, b.attributes)
    assert a.images.shape == (800, 3, 16, 16) and a.images.dtype == torch.uint8
    assert a.attribute_names == list(CELEBA_LITE_ATTRIBUTES)
    assert [len(a.split(s)) for s in ("train", "val", "test")] == [400, 200, 200]
    sigma = celeba_lite_sigma()
    names = list(CELEBA_LITE_ATTRIBUTES)
    planted = {frozenset(p) for p in CELEBA_LITE_PLANTED}
    for i in range(8):
        for j in range(8):
            pair = frozenset((names[i], names[j]))
            want = 1.0 if i == j else (0.95 if pair in planted else 0.0)
            assert sigma[i, j] == want
    big = load_celeba_lite(seed=0)
    x = big.attributes.double().numpy()
    phi = np.corrcoef(x.T)
    for i in range(8):
        for j in range(i + 1, 8):
            if frozenset((names[i], names[j])) in planted:
                assert phi[i, j] > 0.7
            else:
                assert abs(phi[i, j]) < 0.08
    ds = load_dataset("celeba-lite", split_seed=5, train_size=400, heldout=200, test_size=200)
    assert torch.equal(ds.images, a.images)
    with pytest.raises(TaskspaceError, match="no data folder"):
        load_dataset("celeba_lite", "/tmp")
    with pytest.raises(TaskspaceError, match="correlation"):
        load_dataset("digits", correlation=0.9)
    with pytest.raises(TaskspaceError):
        celeba_lite_sigma(1.0)


# ------------------------------------------------------------------ the done-when check


Trained = tuple[int, AttributeModels, DeltaMatrix, float]


@functools.cache
def _train(seed: int) -> Trained:
    """CelebA-lite of ``seed``, its 8 attribute models and their delta matrix (once per
    seed for the whole module), and the seconds that took."""
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    ds = load_celeba_lite(seed=seed)
    models = fit_attribute_models(ds, model_kwargs=MLP, seed=seed)
    d = delta_matrix(models, ds)
    return seed, models, d, time.perf_counter() - t0


@pytest.fixture(params=SEEDS)
def trained(request: pytest.FixtureRequest) -> Trained:
    return _train(int(request.param))


@pytest.fixture
def trained0() -> Trained:
    return _train(SEEDS[0])


def test_planted_pairs_pass_and_nothing_else(
    trained: Trained,
) -> None:
    """Every planted pair (core, shortcut) is above the threshold, no other cell is, the
    core -> shortcut direction only (the easier feature is the shortcut), with margin."""
    seed, _, d, seconds = trained
    found = {(p["task"], p["attr"]) for p in d.pairs(EPSILON)}
    assert found == set(CELEBA_LITE_PLANTED), f"seed {seed}: {d.pairs(EPSILON)}"
    off = d.off_diagonal()
    planted = torch.zeros_like(off)
    for core, shortcut in CELEBA_LITE_PLANTED:
        planted[d.tasks.index(core), d.attrs.index(shortcut)] = True
        assert d.cell(core, shortcut) > 2 * EPSILON  # high
        assert d.cell(shortcut, core) < EPSILON / 3  # low: the shortcut's model needs none
    assert float(d.values[planted].min()) > 2 * EPSILON
    assert float(d.values[off & ~planted].max()) < EPSILON / 3
    assert float(d.values.diagonal().abs().max()) < 1e-9  # g1, g2 empty on the diagonal
    assert int(d.total[0, 0, 1]) == 0 and int(d.total[0, 0, 2]) == 0
    assert bool((d.total.sum(-1) == 2000).all())
    assert torch.allclose(d.values, delta_from_counts(d.correct, d.total), equal_nan=True)
    assert seconds < 20


def test_selection_history_and_saved_ensemble(trained0: Trained, tmp_path: Path) -> None:
    """One model per attribute, selected by the best val plain average over its epoch
    ends; the ensemble saves and loads to the same predictions."""
    seed, models, d, _ = trained0
    assert models.tasks == list(CELEBA_LITE_ATTRIBUTES) and len(models.ensemble) == 8
    for m, task in enumerate(models.tasks):
        rows = [r for r in models.history if r["model"] == m]
        assert {r["metric"] for r in rows} == {"avg_acc"} and {r["set"] for r in rows} == {"val"}
        assert len(rows) >= 6  # every epoch end
        best = max(r["value"] for r in rows)
        assert models.best[task][0] == pytest.approx(best)
        assert d.avg_acc[task] == pytest.approx(best, abs=1e-6)
    models.save(tmp_path / "attr")
    loaded = Ensemble.load(tmp_path / "attr")
    ds = load_celeba_lite(seed=seed)
    again = delta_matrix(loaded, ds, models.tasks)
    assert torch.equal(again.values, d.values)


def test_clusters_keep_planted_pairs_together(
    trained: Trained,
) -> None:
    """Co-clustering (binary and row-normalised inputs, seeded) puts each core row with its
    shortcut column and the two pairs apart; SVD + KMeans of the association matrix puts
    each pair in one cluster; both are deterministic given the seed."""
    seed, _, d, _ = trained
    k = len(CELEBA_LITE_PLANTED) + 1
    for matrix, norm in (("binary", "zscore"), ("normalized", "softmax")):
        c = cocluster(d, k, matrix=matrix, normalize=norm, seed=seed)  # type: ignore[arg-type]
        pair_labels = []
        for core, shortcut in CELEBA_LITE_PLANTED:
            r = int(c.row_labels[c.rows.index(core)])
            assert r == int(c.column_labels[c.cols.index(shortcut)]), (matrix, c.row_clusters())
            pair_labels.append(r)
        assert len(set(pair_labels)) == len(pair_labels)
        assert sorted(c.row_order.tolist()) == list(range(8))
        again = cocluster(d, k, matrix=matrix, normalize=norm, seed=seed)  # type: ignore[arg-type]
        assert np.array_equal(again.row_labels, c.row_labels)
    n = len(CELEBA_LITE_ATTRIBUTES) - len(CELEBA_LITE_PLANTED)
    sv = svd_kmeans(association(d), n, names=d.tasks, seed=seed)
    clusters = sv.clusters()
    for core, shortcut in CELEBA_LITE_PLANTED:
        assert any({core, shortcut} <= set(members) for members in clusters.values()), clusters
    a = association(d)
    assert sv.d == svd_dimension(np.linalg.svd(a / np.linalg.norm(a, axis=1, keepdims=True))[1])
    again = svd_kmeans(association(d), n, names=d.tasks, seed=seed)
    assert np.array_equal(again.labels, sv.labels)
    assert all(isinstance(k, int) for k in clusters)


def test_task_pairing_and_inputs(trained0: Trained) -> None:
    """The disjoint pairing of CelebA-lite is its two planted pairs; there is no
    non-disjoint one; clusters restrict the pairings; the co-clustering inputs."""
    seed, _, d, _ = trained0
    assert task_pairings(d, "disjoint", seed=seed) == [[f"{c}:{s}" for c, s in CELEBA_LITE_PLANTED]]
    assert task_pairings(d.transpose(), "disjoint") == task_pairings(d, "disjoint")
    with pytest.raises(TaskspaceError, match="no nondisjoint pairing"):
        task_pairings(d, "nondisjoint")
    # within clusters: the two cores never share a cluster of their own
    with pytest.raises(TaskspaceError):
        task_pairings(d, "disjoint", clusters={0: ["Square", "Red"], 1: ["Dot", "Frame"]})
    poor = task_pairings(d, "dpoor")  # the two cores are the two poorest tasks
    assert poor == [[f"{c}:{s}" for c, s in CELEBA_LITE_PLANTED]]
    x, rows, cols = cocluster_input(d, "binary")
    assert x.min() == pytest.approx(1e-7) and rows == cols == list(CELEBA_LITE_ATTRIBUTES)
    assert int((x == 1).sum()) == len(CELEBA_LITE_PLANTED)
    assert cocluster_input(d, "cosine_tt")[0].shape == (8, 8)
    assert cocluster_input(d, "cosine_ta")[0].shape == (8, 8)
    assert cocluster_input(d, "normalized", normalize="zscore")[0].min() > 0


def test_plots(trained0: Trained, tmp_path: Path) -> None:
    """Every picture is written as a PNG (atomically, through taskspace.io)."""
    seed, _, d, _ = trained0
    c = cocluster(d, 3, seed=seed)
    paths = [
        plot_delta_heatmap(d, tmp_path / "T.png"),
        plot_delta_heatmap(
            d.transpose(), tmp_path / "A.png", row_order=c.column_order, col_order=c.row_order
        ),
        plot_delta_histogram(d.histogram(), tmp_path / "hist.png"),
        *plot_task_heatmaps(d, "Square", tmp_path / "tasks"),
    ]
    assert len(paths) == 6
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
