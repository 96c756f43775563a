"""Task2Vec distances against hand computations, matrix helpers, nearest tasks and the plot."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from taskspace.embed.distances import (
    DISTANCES,
    cdist,
    distance,
    nearest,
    pdist,
    variance,
)
from taskspace.embed.embedding import Embedding
from taskspace.embed.plots import cluster_order, plot_distance_matrix
from taskspace.errors import TaskspaceError

pytestmark = pytest.mark.usefixtures("one_thread")

META = {"probe": "tiny", "method": "variational", "skip_layers": 0}


def emb(h: list[float], s: list[float] | None = None, task: str = "") -> Embedding:
    return Embedding(
        np.array(h, float), np.array(s if s else [1.0] * len(h), float), {**META, "task": task}
    )


# h0 = [1, 2, 4], h1 = [2, 2, 1]  ->  v0 = [1, 1/2, 1/4], v1 = [1/2, 1/2, 1]
# s0 = [1, 2, 4], s1 = [2, 1, 1]  ->  v0*s0 = [1, 1, 1], v1*s1 = [1, 1/2, 1]
A = emb([1, 2, 4], [1, 2, 4], "a")
B = emb([2, 2, 1], [2, 1, 1], "b")


def _hb(p: float) -> float:
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def _kl(v0: float, v1: float) -> float:
    return 0.5 * (v0 / v1 - 1 + math.log(v1) - math.log(v0))


# scaled hessians p0 = [1/3, 1/2, 4/5], p1 = [2/3, 1/2, 1/5] (the 1e-8 is below rel 1e-7)
_DOT = 2 / 9 + 1 / 4 + 4 / 25
_N0, _N1 = 1 / 9 + 1 / 4 + 16 / 25, 4 / 9 + 1 / 4 + 1 / 25
# centred variances: [5/12, -1/12, -4/12] and [-1/6, -1/6, 1/3]: dot -1/6, norms^2 42/144, 1/6
_PEARSON = (-1 / 6) / math.sqrt(42 / 144 * 1 / 6)
HAND = {
    "cosine": 1 - _DOT / math.sqrt(_N0 * _N1),
    "normalized_cosine": 1 - (1 + 1 / 2 + 1) / (math.sqrt(3) * math.sqrt(1 + 1 / 4 + 1)),
    # per dimension max(KL(v0||v1), KL(v1||v0)): 0.5(1 - ln 2), 0, 0.5(3 - ln 4)
    "kl": 0.5 * (1 - math.log(2)) + 0.5 * (3 - math.log(4)),
    # KL(v0||v1) per dimension: 0.5(1 - ln 2), 0, 0.5(ln 4 - 3/4)
    "asymmetric_kl": 0.5 * (1 - math.log(2)) + 0.5 * (math.log(4) - 0.75),
    # m = [3/4, 1/2, 5/8]; mean over the 3 dimensions of (KL(v0||m) + KL(v1||m)) / 2
    "jsd": (
        0.5 * (_kl(1, 3 / 4) + _kl(1 / 2, 3 / 4)) + 0 + 0.5 * (_kl(1 / 4, 5 / 8) + _kl(1, 5 / 8))
    )
    / 3,
    "correlation": 1 - _PEARSON,
    "entropy": math.log(2) - (_hb(1 / 3) + _hb(1 / 2) + _hb(4 / 5)) / 3,
}
# The same numbers written out (so a wrong helper above cannot hide a wrong formula).
WRITTEN = {
    "cosine": 0.262692,
    "normalized_cosine": 0.0377496,
    "kl": 0.960279,
    "asymmetric_kl": 0.471574,
    "jsd": 0.0470058,
    "correlation": 1.75593,
    "entropy": 0.0831259,
}


@pytest.mark.parametrize("name", DISTANCES)
def test_each_distance_against_hand_computation(name: str) -> None:
    got = distance(A, B, name, var_eps=0.0)
    assert got == pytest.approx(HAND[name], rel=1e-7)
    assert got == pytest.approx(WRITTEN[name], rel=1e-4)


def test_asymmetric_kl_other_direction_and_kl_is_the_max() -> None:
    # KL(v1||v0) per dimension: 0.5(ln 2 - 1/2), 0, 0.5(3 - ln 4)
    back = 0.5 * (math.log(2) - 0.5) + 0.5 * (3 - math.log(4))
    assert distance(B, A, "asymmetric_kl", var_eps=0.0) == pytest.approx(back, rel=1e-9)
    assert back != pytest.approx(HAND["asymmetric_kl"])


def _random_embeddings(n: int = 5, d: int = 7) -> list[Embedding]:
    rng = np.random.default_rng(0)
    return [
        emb(list(rng.uniform(0.1, 3.0, d)), list(rng.uniform(0.5, 2.0, d)), f"t{i}")
        for i in range(n)
    ]


@pytest.mark.parametrize("name", [n for n in DISTANCES if n != "asymmetric_kl"])
def test_symmetric_distances_have_symmetric_matrix_and_zero_diagonal(name: str) -> None:
    embs = _random_embeddings()
    D = pdist(embs, name)
    assert D.shape == (5, 5)
    np.testing.assert_array_equal(np.diag(D), 0.0)
    for i in range(5):
        assert distance(embs[i], embs[i], name) == pytest.approx(0.0, abs=1e-12)
        for j in range(5):
            if i != j:
                assert D[i, j] == D[j, i]
                if i < j:
                    assert D[i, j] == pytest.approx(distance(embs[i], embs[j], name), rel=1e-12)
                # exact up to the original's absolute 1e-8 in the scaled hessian (entropy)
                assert distance(embs[j], embs[i], name) == pytest.approx(D[i, j], rel=1e-7)
                assert D[i, j] > 0


def test_asymmetric_kl_fills_every_ordered_pair() -> None:
    embs = _random_embeddings()
    D = pdist(embs, "asymmetric_kl")
    for i in range(5):
        for j in range(5):
            assert D[i, j] == pytest.approx(distance(embs[i], embs[j], "asymmetric_kl"), rel=1e-12)
    np.testing.assert_allclose(np.diag(D), 0.0, atol=1e-12)
    assert not np.allclose(D, D.T)


def test_cdist_shape_and_none_entries() -> None:
    embs = _random_embeddings(4)
    C = cdist([embs[0], None, embs[1]], [embs[2], embs[3], None, embs[0]], "kl")
    assert C.shape == (3, 4)
    np.testing.assert_array_equal(C[1], 0.0)
    np.testing.assert_array_equal(C[:, 2], 0.0)
    assert C[0, 0] == pytest.approx(distance(embs[0], embs[2], "kl"))
    assert C[2, 1] == pytest.approx(distance(embs[1], embs[3], "kl"))
    assert C[0, 3] == pytest.approx(0.0, abs=1e-12)
    assert C[2, 3] > 0


def test_zero_fisher_dimension_var_eps() -> None:
    a, b = emb([0.0, 1.0, 2.0], [1, 1, 1]), emb([1.0, 2.0, 1.0], [1, 1, 1])
    # faithful: v = 1/0 = inf; numpy's inf - inf makes some nan, the others inf
    assert distance(b, a, "asymmetric_kl", var_eps=0.0) == math.inf
    for name in ("kl", "asymmetric_kl", "jsd", "correlation", "normalized_cosine"):
        assert not math.isfinite(distance(a, b, name, var_eps=0.0)), name
        assert math.isfinite(distance(a, b, name)), name  # default var_eps > 0
    for name in ("cosine", "entropy"):
        assert distance(a, b, name, var_eps=0.0) == distance(a, b, name)
        assert math.isfinite(distance(a, b, name, var_eps=0.0))
    # default: v = 1 / (h + 1e-6 * mean(h)), mean(h) = 1
    np.testing.assert_allclose(variance(a), [1 / 1e-6, 1 / (1 + 1e-6), 1 / (2 + 1e-6)], rtol=1e-12)
    assert variance(a, var_eps=0.0)[0] == math.inf


def test_errors_unknown_name_and_incomparable() -> None:
    with pytest.raises(TaskspaceError, match="cosine, normalized_cosine, kl, asymmetric_kl, jsd"):
        distance(A, B, "euclid")
    other = Embedding(B.hessian, B.scale, {**META, "probe": "other"})
    with pytest.raises(TaskspaceError, match="probe differs"):
        distance(A, other)
    with pytest.raises(TaskspaceError, match="not comparable"):
        pdist([A, B, other])
    with pytest.raises(TaskspaceError, match="not comparable"):
        cdist([A, None], [other])


def test_nearest_rows() -> None:
    D = np.array(
        [[0.0, 0.3, 0.1, 0.3], [0.3, 0.0, 0.5, 0.2], [0.1, 0.5, 0.0, 0.4], [0.3, 0.2, 0.4, 0.0]]
    )
    rows = nearest(D, ["w", "x", "y", "z"], k=2)
    got = [(r["task"], r["rank"], r["neighbour"], r["distance"]) for r in rows]
    assert got == [
        ("w", 1, "y", 0.1),
        ("w", 2, "x", 0.3),  # tie with z at 0.3: by name
        ("x", 1, "z", 0.2),
        ("x", 2, "w", 0.3),
        ("y", 1, "w", 0.1),
        ("y", 2, "z", 0.4),
        ("z", 1, "x", 0.2),
        ("z", 2, "w", 0.3),
    ]
    assert len(nearest(D, list("wxyz"), k=10)) == 4 * 3
    assert nearest(np.zeros((1, 1)), ["only"], k=3) == []
    with pytest.raises(TaskspaceError, match="shape"):
        nearest(D, ["w", "x"], 1)
    with pytest.raises(TaskspaceError, match="k must be"):
        nearest(D, list("wxyz"), -1)


def _blocks() -> tuple[np.ndarray, list[str]]:
    # tasks 0, 2, 4 form one block, 1, 3 another (interleaved on purpose)
    group = [0, 1, 0, 1, 0]
    D = np.array(
        [
            [
                0.0 if i == j else (0.1 + 0.01 * (i + j) if group[i] == group[j] else 0.9)
                for j in range(5)
            ]
            for i in range(5)
        ]
    )
    return D, [f"task{i}" for i in range(5)]


def test_plot_returns_leaf_order_and_writes_png(tmp_path: Path) -> None:
    import matplotlib.image as mpimg

    D, names = _blocks()
    path = tmp_path / "sub" / "distance_matrix.png"
    fig, order = plot_distance_matrix(D, names, path, title="test")
    assert sorted(order) == [0, 1, 2, 3, 4]
    assert order == cluster_order(D, names)
    pos = [order.index(i) for i in range(5)]
    assert sorted(pos[i] for i in (0, 2, 4)) in ([0, 1, 2], [2, 3, 4])  # blocks are contiguous
    assert fig is not None
    img = mpimg.imread(path)
    assert img.shape[0] > 200 and img.shape[1] > 200
    assert float(img[..., :3].std()) > 0.05  # not blank
    assert [p.name for p in path.parent.iterdir()] == ["distance_matrix.png"]  # no temp file left
    with pytest.raises(TaskspaceError, match="inf or NaN"):
        plot_distance_matrix(np.array([[0.0, np.inf], [np.inf, 0.0]]), ["a", "b"])
