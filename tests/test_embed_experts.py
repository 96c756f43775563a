"""Expert selection: trivial embedding, asymmetric distance, ranking, brute force, regret."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from taskspace.embed.distances import distance
from taskspace.embed.embedding import Embedding
from taskspace.embed.experts import (
    asymmetric_distance,
    brute_force_errors,
    rank_experts,
    regret_table,
    trivial_embedding,
)
from taskspace.errors import TaskspaceError

pytestmark = pytest.mark.usefixtures("one_thread")

VAR = {"probe": "tiny", "method": "variational"}
MC = {"probe": "tiny", "method": "montecarlo"}


def emb(h: list[float], s: list[float], meta: dict | None = None, task: str = "") -> Embedding:
    return Embedding(np.array(h, float), np.array(s, float), {**(meta or VAR), "task": task})


def test_trivial_embedding_and_mc_refusal() -> None:
    e = emb([1.0, 3.0, 5.0], [2.0, 2.0, 7.0])
    t0 = trivial_embedding(e)
    np.testing.assert_array_equal(t0.hessian, [2.0, 2.0, 7.0])
    np.testing.assert_array_equal(t0.scale, [2.0, 2.0, 7.0])
    np.testing.assert_array_equal(e.hessian, [1.0, 3.0, 5.0])  # the input is untouched
    mc = emb([1.0, 3.0, 5.0], [1.0, 1.0, 1.0], MC)
    with pytest.raises(TaskspaceError, match="variational.*'montecarlo'"):
        trivial_embedding(mc)
    with pytest.raises(TaskspaceError, match="variational"):
        asymmetric_distance(mc, mc, alpha=0.0)


def test_asymmetric_distance_by_hand() -> None:
    # a: h [1, 3], t0(a): h = s = [3, 1]; b: h [3, 1]
    # scaled hessians [1/4, 3/4] vs [3/4, 1/4]: cosine = 1 - (3/16 + 3/16) / (10/16) = 0.4
    a = emb([1.0, 3.0], [3.0, 1.0], task="a")
    b = emb([3.0, 1.0], [5.0, 5.0], task="b")
    assert distance(a, b) == pytest.approx(0.4, rel=1e-7)
    assert asymmetric_distance(a, b, alpha=0.0) == distance(a, b)
    assert asymmetric_distance(a, b, alpha=0.15) == pytest.approx(0.4 - 0.15 * 0.4, rel=1e-7)
    # t0(b) = [5, 5]: d_sym(b, t0(b)) = cos([3/8, 1/6], [5/8, 5/6])
    p, q = np.array([3 / 8, 1 / 6]), np.array([5 / 8, 5 / 6])
    d_b0 = 1 - p @ q / (np.linalg.norm(p) * np.linalg.norm(q))
    assert asymmetric_distance(b, a, alpha=0.15) == pytest.approx(0.4 - 0.15 * d_b0, rel=1e-7)
    assert asymmetric_distance(b, a) != pytest.approx(asymmetric_distance(a, b))


def _experts() -> tuple[Embedding, dict[str, Embedding]]:
    rng = np.random.default_rng(1)
    query = emb(list(rng.uniform(0.5, 2, 6)), list(rng.uniform(0.5, 2, 6)), task="q")
    same = list(rng.uniform(0.5, 2, 6)), list(rng.uniform(0.5, 2, 6))
    experts = {
        "zeta": emb(*same, task="zeta"),
        "alpha": emb(*same, task="alpha"),  # identical to zeta: tie broken by name
        "near": emb(list(query.hessian * 1.1), list(query.scale), task="near"),
        "far": emb(list(rng.uniform(0.01, 20, 6)), list(rng.uniform(0.5, 2, 6)), task="far"),
    }
    return query, experts


@pytest.mark.parametrize("kind", ["cosine", "asymmetric"])
def test_rank_experts_sorted_deterministic_ties_by_name(kind: str) -> None:
    query, experts = _experts()
    ranking = rank_experts(query, experts, distance=kind, alpha=0.15)
    assert ranking == rank_experts(query, dict(reversed(list(experts.items()))), distance=kind)
    names = [n for n, _ in ranking]
    assert names.index("alpha") == names.index("zeta") - 1
    ds = [d for _, d in ranking]
    assert ds == sorted(ds)
    for name, d in ranking:
        want = (
            distance(query, experts[name])
            if kind == "cosine"
            else asymmetric_distance(experts[name], query, 0.15)
        )
        assert d == want
    if kind == "cosine":
        assert ranking[0] == ("near", pytest.approx(0.0, abs=1e-12))  # h scaled by 1.1


def test_rank_experts_errors() -> None:
    query, experts = _experts()
    with pytest.raises(TaskspaceError, match="cosine, asymmetric"):
        rank_experts(query, experts, distance="kl")
    mc = {"m": emb([1.0] * 6, [1.0] * 6, MC)}
    with pytest.raises(TaskspaceError, match="not comparable"):
        rank_experts(query, mc)
    mc_query = emb([1.0] * 6, [1.0] * 6, MC)
    assert rank_experts(mc_query, mc)[0][0] == "m"
    with pytest.raises(TaskspaceError, match="variational"):
        rank_experts(mc_query, mc, distance="asymmetric")


def test_regret_table_hand_example() -> None:
    errors = {
        "q1": {"e1": 0.10, "e2": 0.30, "e3": 0.20},
        "q2": {"e1": 0.40, "e2": 0.25, "e3": 0.25},
    }
    rankings = {
        "q1": [("e3", 0.1), ("e1", 0.2), ("e2", 0.3)],
        "q2": [("e2", 0.05), ("e1", 0.2), ("e3", 0.3)],
    }
    rows = regret_table(rankings, errors, fixed="e1")
    assert rows[0] == {
        "task": "q1",
        "selected": "e3",
        "selected_error": 0.20,
        "best": "e1",
        "best_error": 0.10,
        "regret": pytest.approx(0.10),
        "random_regret": pytest.approx((0.0 + 0.2 + 0.1) / 3),
        "fixed": "e1",
        "fixed_regret": 0.0,
    }
    assert rows[1]["best"] == "e2"  # tie e2/e3 at 0.25: by name
    assert rows[1]["regret"] == 0.0
    assert rows[1]["random_regret"] == pytest.approx((0.15 + 0.0 + 0.0) / 3)
    assert rows[1]["fixed_regret"] == pytest.approx(0.15)
    with pytest.raises(TaskspaceError, match="no brute-force errors"):
        regret_table({"q3": [("e1", 0.0)]}, errors)


def test_brute_force_errors_ranks_informative_features_first() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 2, generator=g)
    y = (x[:, 0] > 0).long()  # the label depends on the first coordinate only
    module = nn.Linear(2, 3)
    with torch.no_grad():
        module.weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
        module.bias.zero_()
    module.train()
    features = {
        "informative": lambda t: t[:, :1],
        "irrelevant": lambda t: t[:, 1:],
        "module": module,
    }
    kw = {"seed": 0}
    errs = brute_force_errors(features, x[:200], y[:200], x[200:], y[200:], **kw)
    assert set(errs) == {"informative", "irrelevant", "module"}
    assert errs["informative"] < 0.08
    assert errs["module"] < 0.08
    assert errs["irrelevant"] > 0.3
    assert module.training  # mode restored
    assert errs == brute_force_errors(features, x[:200], y[:200], x[200:], y[200:], **kw)
    with pytest.raises(TaskspaceError, match="single class"):
        brute_force_errors(features, x[:5], torch.zeros(5, dtype=torch.long), x[5:9], y[5:9])
