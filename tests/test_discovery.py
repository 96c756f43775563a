"""Task discovery: encoder, uniformity, the differentiable unroll, meta-training, commands."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from taskspace.cli import main as cli_main
from taskspace.commands.demo import compare_with_baselines
from taskspace.data import load_dataset
from taskspace.discovery import (
    InnerLearners,
    MetaSettings,
    MetaTrainer,
    TaskEncoder,
    haar_orthogonal,
    soft_labels,
    uniformity_loss,
)
from taskspace.discovery.artifacts import folded_similarity, hard_labels
from taskspace.discovery.ssl_pretrain import augment, nt_xent
from taskspace.tasks import load_tasks

TINY = {"widths": [8]}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(ds, *, dtype=torch.float64, heads=2, **kw) -> MetaTrainer:
    torch.manual_seed(0)
    enc = TaskEncoder(
        "mlp", in_channels=1, image_size=8, dim=4, num_tasks=4, model_kwargs={"widths": [16]}
    )
    learners = InnerLearners("mlp", in_channels=1, image_size=8, model_kwargs=TINY)
    s = MetaSettings(
        inner_steps=3,
        inner_lr=0.5,
        batch_size=16,
        eval_batch_size=24,
        heads_per_step=heads,
        uniformity=0.5,
        **kw,
    )
    return MetaTrainer(enc, learners, ds, s, dtype=dtype)


def _grads(mt: MetaTrainer, heads: list[int]) -> list[torch.Tensor]:
    mt.enc.zero_grad(set_to_none=True)
    loss, _ = mt.objective(heads, step=0)
    return list(torch.autograd.grad(loss, mt.enc.meta_parameters()))


# ---------------------------------------------------------------- encoder and losses
def test_heads_are_orthonormal_and_bn_shift_is_frozen():
    q = haar_orthogonal(8, seed=3)
    assert torch.allclose(q @ q.t(), torch.eye(8), atol=1e-5)
    assert torch.equal(q, haar_orthogonal(8, seed=3))
    enc = TaskEncoder("mlp", in_channels=1, image_size=8, dim=8, num_tasks=5)
    assert enc.heads.shape == (5, 8)
    assert not enc.bn.bias.requires_grad and enc.bn.weight.requires_grad
    assert all(p is not enc.bn.bias for p in enc.meta_parameters())
    # the zero-shift BN makes every head's score zero-mean over a batch: roughly balanced
    x = torch.randn(256, 1, 8, 8)
    s = enc.train()(x)
    assert s.mean(0).abs().max() < 1e-4
    # class 1 of the soft label <=> s > 0 (taskspace convention), as the hard labels
    q = soft_labels(torch.tensor([2.0, -2.0]), 5.0)
    assert q[0, 1] > 0.99 and q[1, 0] > 0.99
    assert hard_labels(torch.tensor([[2.0], [-2.0]])).tolist() == [[1, 0]]
    assert hard_labels(torch.tensor([[2.0], [-2.0]]), flip=True).tolist() == [[0, 1]]


def test_uniformity_prefers_spread_embeddings():
    g = torch.Generator().manual_seed(0)
    spread = torch.randn(256, 16, generator=g)
    clustered = torch.randn(1, 16, generator=g) + 0.05 * torch.randn(256, 16, generator=g)
    u_spread, u_clust = uniformity_loss(spread), uniformity_loss(clustered)
    assert u_clust > 7.5  # all pairs at distance ~0: log(1) + 4t = 8
    # uniform on the 16-sphere: |z_i - z_j|^2 = 2 - 2 cos, cos ~ N(0, 1/16), so
    # log E exp(-4 + 4 cos) + 8 = -4 + 0.5 + 8 = 4.5
    assert abs(float(u_spread) - 4.5) < 0.15
    assert torch.isfinite(torch.autograd.functional.jacobian(uniformity_loss, spread)).all()


def test_folded_similarity():
    a = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1]])
    sim = folded_similarity(a)
    assert sim[0, 1] == 1.0  # complementary tasks are the same task
    assert sim[0, 2] == 0.5 and sim[0, 0] == 1.0


# ---------------------------------------------------------------- meta-gradient
def test_meta_gradient_matches_finite_differences(digits):
    """The full second-order unroll gives the derivative of the meta-loss (float64)."""
    mt = _trainer(digits)
    params = mt.enc.meta_parameters()
    grads = _grads(mt, [0, 2])
    g = torch.Generator().manual_seed(1)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    analytic = sum(float((gr * v).sum()) for gr, v in zip(grads, direction))
    eps = 1e-5

    def loss_at(sign: float) -> float:
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.add_(sign * eps * v)
        loss, _ = mt.objective([0, 2], step=0)  # the inner loop itself needs autograd
        with torch.no_grad():
            for p, v in zip(params, direction):
                p.sub_(sign * eps * v)
        return float(loss.detach())

    numeric = (loss_at(1.0) - loss_at(-1.0)) / (2 * eps)
    assert abs(analytic) > 1e-4
    assert abs(numeric - analytic) / abs(analytic) <= 1e-3


def test_checkpointed_unroll_gives_the_same_gradient(digits):
    plain = _grads(_trainer(digits), [1, 3])
    ckpt = _grads(_trainer(digits, use_checkpoint=True), [1, 3])
    for a, b in zip(plain, ckpt):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_checkpointed_meta_step_equals_the_plain_one(digits):
    """Encoder checkpointing too: the same encoder after a meta-step, running statistics
    included (the recomputed forward pass must not update them a second time)."""
    plain, ckpt = _trainer(digits), _trainer(digits, use_checkpoint=True)
    plain.meta_step()
    ckpt.meta_step()
    a, b = plain.enc.state_dict(), ckpt.enc.state_dict()
    for k in a:
        assert torch.allclose(a[k].double(), b[k].double(), rtol=1e-9, atol=1e-12), k


def test_batched_heads_equal_one_head_at_a_time(digits):
    """vmap over heads x learners == the mean of per-head meta-gradients (fixed inits)."""
    batched = _grads(_trainer(digits, heads=2, fixed_inits=True), [0, 3])
    single = [_grads(_trainer(digits, heads=1, fixed_inits=True), [h]) for h in (0, 3)]
    for i, b in enumerate(batched):
        assert torch.allclose(b, 0.5 * (single[0][i] + single[1][i]), rtol=1e-8, atol=1e-12)


def test_first_order_differs_but_is_close_in_direction(digits):
    full = torch.cat([g.flatten() for g in _grads(_trainer(digits), [0, 1])])
    first = torch.cat([g.flatten() for g in _grads(_trainer(digits, first_order=True), [0, 1])])
    assert not torch.allclose(full, first)
    assert torch.isfinite(first).all()


def test_meta_steps_descend_the_meta_loss(digits):
    """Adam on the meta-gradient lowers the meta-loss of a fixed meta-batch (same inner
    batches, inits and held-out batch every step), and the learners agree more."""
    torch.manual_seed(0)
    enc = TaskEncoder(
        "mlp", in_channels=1, image_size=8, dim=8, num_tasks=8, model_kwargs={"widths": [32]}
    )
    learners = InnerLearners("mlp", in_channels=1, image_size=8, model_kwargs={"widths": [16]})
    s = MetaSettings(
        inner_steps=3,
        inner_lr=1.0,
        batch_size=64,
        eval_batch_size=128,
        heads_per_step=4,
        uniformity=0.1,
        outer_lr=2e-2,
        fixed_inits=True,
        fixed_eval_batch=True,
    )
    mt = MetaTrainer(enc, learners, digits, s, dtype=torch.float32)
    heads = mt.heads_at(0, 4)
    first = mt.objective(heads, 0)[1]
    for _ in range(6):
        mt.step, mt.head_pos = 0, 0  # the same meta-batch every time
        mt.meta_step()
    last = mt.objective(heads, 0)[1]
    assert last["loss"] < first["loss"] - 0.02
    assert last["l_ag"] < first["l_ag"]


# ---------------------------------------------------------------- commands
def _discover(tmp: Path, name: str, *extra: str) -> int:
    return cli_main(
        [
            "discover",
            f"out={tmp / name}",
            "encoder.K=2",
            "encoder.d=2",
            "meta.T=2",
            "meta.batch_size=16",
            "meta.eval_batch_size=16",
            "meta.heads_per_step=2",
            "progress=false",
            "encoder.kwargs={widths: [16]}",
            "model.kwargs={widths: [8]}",
            *extra,
        ]
    )


def test_resume_gives_identical_encoder(tmp_path):
    from safetensors.torch import load_file

    assert _discover(tmp_path, "whole", "meta.meta_steps=4", "evaluate=false") == 0
    assert (
        _discover(
            tmp_path,
            "split",
            "meta.meta_steps=4",
            "evaluate=false",
            "stop_after=2",
            "checkpoint_every=1",
        )
        == 0
    )
    state = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2
    assert _discover(tmp_path, "split", "meta.meta_steps=4", "evaluate=false") == 0
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for k in a["encoder"]:
        assert torch.equal(a["encoder"][k], b["encoder"][k]), k
    assert [r["loss"] for r in a["logs"]] == [r["loss"] for r in b["logs"]]
    assert not (tmp_path / "whole" / "encoder.safetensors").exists()  # evaluate=false
    del load_file


def test_bad_input_gives_exit_status_2(tmp_path, capsys):
    assert _discover(tmp_path, "k", "encoder.K=5", "encoder.d=4") == 2
    assert "K=5" in capsys.readouterr().err
    assert not (tmp_path / "k").exists()  # no partial output
    assert _discover(tmp_path, "a", "model=nosuchnet") == 2
    assert "nosuchnet" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({"foo.weight": torch.zeros(3)}, bad)
    assert _discover(tmp_path, "b", f"encoder.backbone={bad}") == 2
    assert "does not match" in capsys.readouterr().err
    wrong = tmp_path / "wrong.pt"
    torch.save({"1.weight": torch.zeros(3, 3), "1.bias": torch.zeros(3)}, wrong)
    assert _discover(tmp_path, "c", f"encoder.backbone={wrong}") == 2
    err = capsys.readouterr().err
    assert "does not fit" in err and len(err.strip().splitlines()) == 1
    assert _discover(tmp_path, "d", f"encoder.backbone={tmp_path / 'missing.pt'}") == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
def test_regulated_discovery_end_to_end(tmp_path, digits):
    """pretrain (SimCLR) -> discover with the frozen backbone -> tasks, AS, galleries."""
    from safetensors.torch import load_file

    assert (
        cli_main(
            [
                "pretrain",
                f"out={tmp_path / 'ssl'}",
                "simclr.steps=20",
                "simclr.batch_size=64",
                "model.kwargs={widths: [32, 16]}",
                "progress=false",
            ]
        )
        == 0
    )
    ckpt = tmp_path / "ssl" / "backbone.safetensors"
    assert ckpt.exists() and (tmp_path / "ssl" / "config.yaml").exists()
    run = tmp_path / "reg"
    assert (
        cli_main(
            [
                "discover",
                f"out={run}",
                f"encoder.backbone={ckpt}",
                "encoder.normalize_input=false",
                "encoder.kwargs={widths: [32, 16]}",
                "model.kwargs={widths: [8]}",
                "encoder.K=3",
                "encoder.d=4",
                "meta.T=2",
                "meta.meta_steps=2",
                "meta.heads_per_step=3",
                "meta.batch_size=32",
                "evaluation.epochs=1",
                "evaluation.model.kwargs={widths: [16]}",
                "evaluation.baselines=true",
                "evaluation.num_baseline_tasks=2",
                "progress=false",
            ]
        )
        == 0
    )
    enc = load_file(str(run / "encoder.safetensors"))
    pre = load_file(str(ckpt))
    for k, v in pre.items():  # the frozen backbone is unchanged by meta-training
        assert torch.equal(enc[f"backbone.{k}"], v), k
    assert enc["heads"].shape == (3, 4)
    tasks = load_tasks(run / "tasks.npz")
    assert tasks.labels.shape == (3, len(digits)) and set(tasks.kinds) == {"discovered"}
    assert tasks.meta["sign"] == "label = 1[w_k . h(x) > 0]"
    for f in (
        "tasks.csv",
        "heads.csv",
        "similarity.png",
        "similarity.csv",
        "coverage.csv",
        "agreement.csv",
        "summary.csv",
        "galleries/discovered-00.png",
        "splits.npz",
    ):
        assert (run / f).exists(), f
    import csv

    heads = list(csv.DictReader((run / "heads.csv").open()))
    assert len(heads) == 3 and all(0.0 <= float(h["as_test"]) <= 1.0 for h in heads)
    summary = compare_with_baselines(run, num_tasks=2)  # reuses the run's baseline rows
    kinds = {(s["kind"], s["split"]): s for s in summary}
    for kind in ("discovered", "untrained", "human", "random"):
        assert (kind, "test") in kinds and (kind, "heldout") in kinds
    assert kinds[("human", "test")]["count"] == 2 and kinds[("discovered", "test")]["count"] == 3
    assert (run / "as_by_kind.png").exists() and (run / "as_by_kind_summary.csv").exists()


def test_simclr_pieces():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 16, 16, generator=g)
    y = augment(x, g)
    assert y.shape == x.shape and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    z = torch.randn(8, 4, generator=g)
    assert nt_xent(z, z) < nt_xent(z, torch.randn(8, 4, generator=g))
    assert math.isfinite(float(nt_xent(z, z)))


def test_label_bn_modes_leave_the_encoder_untouched(digits):
    from taskspace.discovery.artifacts import calibrate_bn, encoder_embeddings, mixed_order

    torch.manual_seed(0)
    enc = TaskEncoder(
        "mlp", in_channels=1, image_size=8, dim=4, num_tasks=4, model_kwargs={"widths": [16]}
    )
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    h_batch = encoder_embeddings(enc, digits, "batch", batch_size=512)
    h_run = encoder_embeddings(enc, digits, "running")
    for k, v in enc.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert h_batch.shape == h_run.shape == (len(digits), 4)
    # batch statistics centre every (seeded, class-mixed) batch; running statistics do not
    assert h_batch[mixed_order(len(digits))[:512]].mean(0).abs().max() < 1e-4
    calibrate_bn(enc, digits, digits.split("train"))
    h_cal = encoder_embeddings(enc, digits, "running")
    tr = digits.split("train")
    off_before = h_run[tr].mean(0).abs().max()
    off_after = h_cal[tr].mean(0).abs().max()
    assert off_after < 0.1 < off_before  # nearly centred after calibration


def test_digits_discovery_meets_the_targets(tmp_path):
    """Default digits preset, K=16, AS of every kind under one protocol (what ``make demo``
    runs): discovered AS >= human AS - 0.03 and >= random AS + 0.15, every positive rate in
    [0.2, 0.8], mean off-diagonal folded similarity <= 0.7, and meta-training raises the
    heads' AS above the same heads on the untrained encoder."""
    from taskspace.commands.demo import discovery_stage
    from taskspace.io import read_csv

    run = tmp_path / "discover"
    summary = discovery_stage(run, num_tasks=16, seed=0, progress=False)
    mean = {(r["kind"], r["split"]): float(r["mean"]) for r in summary}
    for split in ("heldout", "test"):
        found = mean[("discovered", split)]
        assert found >= mean[("human", split)] - 0.03
        assert found >= mean[("random", split)] + 0.15
        assert found > mean[("untrained", split)]
    heads = read_csv(run / "heads.csv")
    assert len(heads) == 16
    assert all(0.2 <= float(h["positive_rate"]) <= 0.8 for h in heads)
    metrics = {r["metric"]: float(r["value"]) for r in read_csv(run / "summary.csv")}
    assert metrics["similarity_offdiag_mean"] <= 0.7
