"""What a discovery run shows: hard labels, task similarity and coverage (pictures are drawn
by :mod:`taskspace.report.plots`).

- :func:`encoder_scores` / :func:`hard_labels`: task scores ``s [N, K]`` of every image and
  the hard labels ``1[s > 0]`` (``flip`` inverts them), with BatchNorm running statistics
  (``label_bn=running``, recommended) or batch statistics (``batch``, the reference's
  accidental behaviour: labels then depend on batch composition).
- :func:`folded_similarity`: pairwise Hamming agreement folded as ``max(a, 1 - a)`` (0.5 for
  unrelated binary tasks, 1 for identical or complementary ones).
- :func:`coverage`: how well a linear probe on the standardised embedding ``h`` predicts
  each human task (the reference's coverage monitor, or a faster full-batch probe).
"""

from __future__ import annotations

import copy

import torch

from taskspace.data.dataset import ImageDataset
from taskspace.discovery.encoder import TaskEncoder
from taskspace.errors import TaskspaceError

__all__ = [
    "COVERAGE_PROBES",
    "calibrate_bn",
    "coverage",
    "encoder_inputs",
    "encoder_scores",
    "folded_similarity",
    "hard_labels",
    "mixed_order",
]


def encoder_inputs(enc: TaskEncoder, ds: ImageDataset, idx: torch.Tensor) -> torch.Tensor:
    """Float encoder inputs of ``ds.images[idx]`` (normalised, or raw [0, 1] pixels)."""
    x = ds.images[idx]
    dtype = next(enc.parameters()).dtype
    device = next(enc.parameters()).device
    x = x.to(device)
    return (ds.normalize(x) if enc.normalize_input else x.float() / 255.0).to(dtype)


def mixed_order(n: int, seed: int = 0) -> torch.Tensor:
    """A seeded permutation of ``range(n)``: the order in which batch-statistics passes
    visit images. Storage order is often class by class (an ImageFolder tree), and a
    BatchNorm over a single-class batch normalises within that class; the reference's
    shuffled loader gave class-mixed batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def encoder_embeddings(
    enc: TaskEncoder,
    ds: ImageDataset,
    label_bn: str = "running",
    batch_size: int = 512,
    idx: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """``h [n, d]`` of images ``idx`` (default all), without touching the encoder's state.

    ``label_bn=running`` uses eval mode; ``batch`` uses batch statistics over seeded,
    class-mixed batches of ``batch_size`` images (:func:`mixed_order`; on a copy, so
    running statistics are not updated). Rows come back in the order of ``idx``.
    """
    idx = torch.arange(len(ds)) if idx is None else idx
    if label_bn not in ("running", "batch"):
        raise ValueError(f"label_bn must be 'running' or 'batch', got {label_bn!r}")
    was_training = enc.training
    if label_bn == "running":
        model, order = enc.eval(), torch.arange(len(idx))
    else:
        model, order = copy.deepcopy(enc).train(), mixed_order(len(idx), seed)
    out = []
    for i in range(0, len(idx), batch_size):
        pos = order[i : i + batch_size]
        if label_bn == "batch" and len(pos) < 2:  # a lone last image joins the one before
            pos = order[-2:]
            out.append(model.embed(encoder_inputs(enc, ds, idx[pos]))[-1:].float().cpu())
            continue
        out.append(model.embed(encoder_inputs(enc, ds, idx[pos])).float().cpu())
    enc.train(was_training)
    h = torch.empty_like(torch.cat(out))
    h[order] = torch.cat(out)
    return h


@torch.no_grad()
def calibrate_bn(
    enc: TaskEncoder, ds: ImageDataset, idx: torch.Tensor, batch_size: int = 512, seed: int = 0
) -> TaskEncoder:
    """Set the encoder's BatchNorm running statistics to averages over images ``idx``.

    Used for the untrained encoder, whose running statistics are still the initial 0/1
    (labels ``1[s > 0]`` would then be nearly constant). Batches are seeded and class-mixed
    (:func:`mixed_order`): averaging the variances of single-class batches would leave out
    the variance between classes. Trainable weights are untouched.
    """
    bns = [
        m
        for m in enc.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
        and not (enc.freeze_backbone and any(m is b for b in enc.backbone.modules()))
    ]
    saved = [m.momentum for m in bns]
    was_training = enc.training
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    enc.train()
    idx = idx[mixed_order(len(idx), seed)]
    for i in range(0, len(idx), batch_size):
        chunk = idx[i : i + batch_size]
        if len(chunk) >= 2:
            enc.embed(encoder_inputs(enc, ds, chunk))
    for m, mom in zip(bns, saved):
        m.momentum = mom
    enc.train(was_training)
    return enc


def encoder_scores(
    enc: TaskEncoder, ds: ImageDataset, label_bn: str = "running", batch_size: int = 512
) -> torch.Tensor:
    """Task scores ``s [N, K]`` of every image of the dataset."""
    h = encoder_embeddings(enc, ds, label_bn, batch_size)
    return h @ enc.heads.float().cpu().t()


def hard_labels(scores: torch.Tensor, flip: bool = False) -> torch.Tensor:
    """``int64 [K, N]``: ``1[s > 0]`` per task (``flip``: ``1[s <= 0]``)."""
    lab = (scores > 0).t().long()
    return 1 - lab if flip else lab


def folded_similarity(labels: torch.Tensor) -> torch.Tensor:
    """``[K, K]`` folded Hamming similarity ``max(a, 1 - a)`` of binary labels ``[K, N]``."""
    y = labels.float()
    a = (y @ y.t() + (1 - y) @ (1 - y).t()) / y.shape[1]
    return torch.maximum(a, 1 - a)


#: Coverage probes: ``reference`` is the reference's monitor (skorch ``NeuralNetClassifier``:
#: one ``nn.Linear`` with a sigmoid output per human task, BCE, Adam lr 1e-3, 20 shuffled
#: epochs of batch 128, PyTorch default initialisation); ``fast`` is full-batch Adam at lr
#: 0.05 for 300 steps from a small seeded initialisation.
COVERAGE_PROBES = ("reference", "fast")


def coverage(
    h: torch.Tensor,
    targets: torch.Tensor,
    train_idx: torch.Tensor,
    eval_idx: torch.Tensor,
    *,
    probe: str = "reference",
    seed: int = 0,
) -> torch.Tensor:
    """Accuracy on ``eval_idx`` of a linear probe ``standardised h -> each binary target``.

    ``h [N, d]``, ``targets [T, N]`` in {0, 1}; one logistic output per target, all trained
    at once on ``train_idx`` with the embedding standardised by train statistics (the
    reference's ``StandardScaler``). ``probe`` is one of :data:`COVERAGE_PROBES`. Returns
    ``[T]`` accuracies.
    """
    if probe not in COVERAGE_PROBES:
        raise TaskspaceError(f"coverage probe must be one of {COVERAGE_PROBES}, got {probe!r}")
    mu, sd = h[train_idx].mean(0), h[train_idx].std(0, unbiased=False).clamp_min(1e-6)
    z = ((h - mu) / sd).float()
    ytr = targets[:, train_idx].t().float()
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lin = torch.nn.Linear(z.shape[1], targets.shape[0])
    if probe == "fast":
        with torch.no_grad():
            lin.weight.copy_(0.01 * torch.randn(lin.weight.shape, generator=g))
            lin.bias.zero_()
        opt = torch.optim.Adam(lin.parameters(), lr=0.05)
        batches = [torch.arange(len(train_idx))] * 300
    else:
        opt = torch.optim.Adam(lin.parameters(), lr=1e-3)
        batches = [
            b for _ in range(20) for b in torch.randperm(len(train_idx), generator=g).split(128)
        ]
    ztr = z[train_idx]
    for b in batches:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(ztr[b]), ytr[b])
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = lin(z[eval_idx]) > 0
        return (pred.t().long() == targets[:, eval_idx]).float().mean(1)
