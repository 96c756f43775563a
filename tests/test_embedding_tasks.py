"""Random linear tasks on an encoder's embedding: K-way sectors and random hyperplanes."""

from __future__ import annotations

import math

import pytest
import torch

from taskspace.cli import main as cli_main
from taskspace.discovery import TaskEncoder, haar_orthogonal
from taskspace.discovery.artifacts import encoder_embeddings
from taskspace.discovery.embedding_tasks import (
    kway_directions,
    kway_tasks,
    plane_seed,
    random_hyperplane_tasks,
    sector_labels,
)
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv


@pytest.fixture(scope="module")
def h_digits(digits) -> torch.Tensor:
    """``h`` of an untrained 16-d encoder on every digits image (batch statistics)."""
    torch.manual_seed(0)
    enc = TaskEncoder(
        "mlp", in_channels=1, image_size=8, dim=16, num_tasks=16, model_kwargs={"widths": [32]}
    )
    return encoder_embeddings(enc, digits, "batch")


def test_sector_labels_match_a_hand_computation():
    """K=4 in a 2-D plane: the directions are b1, b0, -b1, -b0 (from (0, 1), 90 deg apart),
    and a point at angle phi from b1 towards b0 falls in sector round(phi / 90) mod 4."""
    b = haar_orthogonal(2, seed=3)
    u = kway_directions(2, 4, seed=3)
    assert torch.allclose(u, torch.stack([b[1], b[0], -b[1], -b[0]]), atol=1e-6)
    phis = [10.0, 80.0, 100.0, 190.0, 260.0, 350.0, 40.0, 140.0]
    expected = [0, 1, 1, 2, 3, 0, 0, 2]
    pts = torch.stack(
        [2.5 * (math.sin(math.radians(p)) * b[0] + math.cos(math.radians(p)) * b[1]) for p in phis]
    )
    assert sector_labels(pts, u).tolist() == expected
    # K=3 in d=5: sectors of 120 deg around 0, 120, 240; off-plane components do not count
    q = haar_orthogonal(5, seed=7)
    u3 = kway_directions(5, 3, seed=7)
    g = torch.Generator().manual_seed(0)
    phis3 = [50.0, 70.0, 170.0, 190.0, 300.0]
    pts3 = torch.stack(
        [
            math.sin(math.radians(p)) * q[0]
            + math.cos(math.radians(p)) * q[1]
            + (torch.randn(3, generator=g) * 5) @ q[2:]
            for p in phis3
        ]
    )
    assert sector_labels(pts3, u3).tolist() == [0, 1, 1, 2, 2]


def test_kway_tasks_use_every_class_on_digits(h_digits):
    tasks = kway_tasks(h_digits, 3, 5, seed=0)
    assert tasks.names == ["emb-5way-00", "emb-5way-01", "emb-5way-02"]
    assert set(tasks.kinds) == {"discovered"} and tasks.meta["variant"] == "emb-5way"
    for k in range(3):
        counts = torch.bincount(tasks.labels[k], minlength=5)
        assert len(counts) == 5 and int(counts.min()) > 0.05 * len(h_digits)
        assert tasks.num_classes(k) == 5
    u = kway_directions(16, 5, plane_seed(0, 1))
    assert torch.equal(tasks.labels[1], sector_labels(h_digits, u))


def test_random_hyperplane_tasks_are_balanced_seeded_and_the_two_class_sectors(h_digits):
    tasks = random_hyperplane_tasks(h_digits, 8, seed=0)
    rates = tasks.labels.float().mean(1)
    assert float(rates.min()) > 0.3 and float(rates.max()) < 0.7
    assert torch.equal(tasks.labels, random_hyperplane_tasks(h_digits, 8, seed=0).labels)
    other = random_hyperplane_tasks(h_digits, 8, seed=1).labels
    assert (other != tasks.labels).float().mean() > 0.2
    assert len({tuple(r.tolist()) for r in tasks.labels}) == 8
    # reference: K=2 sectors, class 0 <=> b1 . h > 0; taskspace: label 1 <=> b1 . h > 0
    assert torch.equal(tasks.labels, 1 - kway_tasks(h_digits, 8, 2, seed=0).labels)
    flipped = random_hyperplane_tasks(h_digits, 8, seed=0, flip=True)
    assert torch.equal(flipped.labels, 1 - tasks.labels)
    assert tasks.meta["sign"] == "label = 1[w . h(x) > 0]"
    # a plane seed is never the raw seed of the default heads (head_seed=0)
    heads = haar_orthogonal(16, 0)
    w = kway_directions(16, 2, plane_seed(0, 0))[0]
    assert float((heads @ w).abs().max()) < 0.99


def test_bad_embedding_baselines_raise(h_digits):
    with pytest.raises(TaskspaceError, match="2 classes"):
        kway_tasks(h_digits, 2, 1)
    with pytest.raises(TaskspaceError, match=">= 0"):
        random_hyperplane_tasks(h_digits, -1)
    with pytest.raises(TaskspaceError, match="d >= 2"):
        random_hyperplane_tasks(h_digits[:, :1], 2)
    with pytest.raises(TaskspaceError, match=r"\[N, d\]"):
        kway_tasks(h_digits[:, 0], 2, 3)


def test_discover_scores_embedding_baselines(tmp_path, capsys):
    """``evaluation.emb_baselines=2 evaluation.emb_classes=3``: two 3-way sector tasks on the
    trained encoder in ``agreement.csv`` under their own kind; a bad option fails before any
    output."""
    args = [
        "discover",
        "encoder.K=2",
        "encoder.d=2",
        "meta.T=2",
        "meta.batch_size=16",
        "meta.eval_batch_size=16",
        "meta.heads_per_step=2",
        "meta.meta_steps=1",
        "progress=false",
        "encoder.kwargs={widths: [16]}",
        "model.kwargs={widths: [8]}",
        "evaluation.epochs=1",
        "evaluation.model.kwargs={widths: [8]}",
        "evaluation.gallery_size=2",
    ]
    run = tmp_path / "run"
    assert (
        cli_main([*args, f"out={run}", "evaluation.emb_baselines=2", "evaluation.emb_classes=3"])
        == 0
    )
    rows = read_csv(run / "agreement.csv")
    kinds = {r["task"]: r["kind"] for r in rows}
    assert kinds["emb-3way-00"] == kinds["emb-3way-01"] == "emb-3way"
    assert kinds["discovered-00"] == "discovered" and kinds["untrained-00"] == "untrained"
    assert all(0.0 <= float(r["agreement"]) <= 1.0 for r in rows)
    assert (
        cli_main(
            [
                *args,
                f"out={tmp_path / 'bad'}",
                "evaluation.emb_classes=1",
                "evaluation.emb_baselines=1",
            ]
        )
        == 2
    )
    assert "2 classes" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
