"""Meta-training of the task encoder: AS meta-optimisation with a uniformity penalty.

One meta-step (reference ``AgreementLoss.forward``, generalised to several heads at once):

1. pick ``heads_per_step`` heads from a seeded stream of per-epoch head permutations;
2. reset a pair of inner learners per head (fixed stored initialisations, or fresh ones);
3. for ``T`` inner steps: encode a fresh training batch (encoder in train mode), soft
   labels ``q = softmax(temp [-s_k, s_k])`` (class 1 <=> s_k > 0), uniformity of ``h``;
   learner A trains on the first half of the batch and B on the second (``data_mode=meta``)
   or both on all of it (``full``), one differentiable SGD step on ``0.5 (L_A + L_B)``;
4. meta-loss ``mean_heads L_ag(A, B) + lambda_u * mean_t U_t`` on a held-out batch, where
   ``L_ag`` is the symmetric soft cross-entropy between the two learners;
5. one Adam step on the encoder.

All heads of a meta-step share the inner batches and are trained as one vmapped stack of
``2 x heads`` learners. Every random draw of step ``n`` (batches, inits, held-out batch)
comes from a generator seeded by ``(seed, n)`` and the head order from ``(seed, epoch)``,
so a resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from taskspace.data.dataset import ImageDataset
from taskspace.discovery.encoder import TaskEncoder, soft_labels
from taskspace.discovery.inner import InnerLearners, symmetric_agreement_loss
from taskspace.discovery.uniformity import uniformity_loss
from taskspace.engine.cpu import tune_malloc
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write
from taskspace.seeding import Stream, derive_seed

__all__ = ["MetaSettings", "MetaTrainer"]


@dataclass
class MetaSettings:
    """Everything that defines the meta-optimisation (resolved values, no presets)."""

    inner_steps: int = 10
    inner_lr: float = 0.01
    batch_size: int = 128
    eval_batch_size: int = 256
    temperature: float = 5.0
    uniformity: float = 25.0
    uniformity_t: float = 2.0
    outer_lr: float = 1e-3
    heads_per_step: int = 8
    data_mode: str = "meta"
    fixed_inits: bool = False
    fixed_eval_batch: bool = False
    learner_bn: str = "train"
    use_checkpoint: bool = False
    first_order: bool = False  # label path only, no Hessians (inner.py); False: the reference
    seed: int = 0

    def check(self, num_heads: int) -> None:
        """Raise :class:`TaskspaceError` on impossible values."""
        if self.inner_steps < 1:
            raise TaskspaceError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if self.batch_size < 4 or (self.data_mode == "meta" and self.batch_size % 2):
            raise TaskspaceError(
                f"batch_size must be >= 4 (and even for data_mode=meta), got {self.batch_size}"
            )
        if self.eval_batch_size < 2:
            raise TaskspaceError(f"eval_batch_size must be >= 2, got {self.eval_batch_size}")
        if not 1 <= self.heads_per_step <= num_heads:
            raise TaskspaceError(
                f"heads_per_step must be between 1 and K={num_heads}, got {self.heads_per_step}"
            )
        if self.data_mode not in ("meta", "full"):
            raise TaskspaceError(f"data_mode must be 'meta' or 'full', got {self.data_mode!r}")
        if self.learner_bn not in ("train", "eval"):
            raise TaskspaceError(f"learner_bn must be 'train' or 'eval', got {self.learner_bn!r}")
        if self.inner_lr <= 0 or self.outer_lr <= 0:
            raise TaskspaceError("inner_lr and outer_lr must be > 0")


class MetaTrainer:
    """Meta-trains a :class:`TaskEncoder` on a dataset; checkpointable and resumable.

    Args:
        encoder: the task encoder (its trainable parameters are meta-trained).
        learners: the inner learners (``as_arch``).
        dataset: images; inner batches come from ``train``, meta-eval from ``heldout``.
        settings: :class:`MetaSettings`.
        device: torch device.
        dtype: float32 (default) or float64 (for gradient checks).
    """

    def __init__(
        self,
        encoder: TaskEncoder,
        learners: InnerLearners,
        dataset: ImageDataset,
        settings: MetaSettings,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        settings.check(encoder.num_tasks)
        tune_malloc()
        self.enc = encoder.to(device=device, dtype=dtype)
        self.learners = learners
        self.ds = dataset
        self.s = settings
        self.device = torch.device(device)
        self.dtype = dtype
        self.opt = torch.optim.Adam(self.enc.meta_parameters(), lr=settings.outer_lr)
        self.step = 0
        self.head_pos = 0
        self.logs: list[dict] = []
        self.train_idx = dataset.split("train")
        self.eval_idx = dataset.split("heldout")
        if len(self.train_idx) < 2:
            raise TaskspaceError("the train split needs at least 2 images")
        self._fixed_init: tuple[dict, dict] | None = None

    # ------------------------------------------------------------------ draws
    def _gen(self, *parts: int) -> torch.Generator:
        return torch.Generator().manual_seed(derive_seed(self.s.seed, *parts))

    def heads_at(self, pos: int, count: int) -> list[int]:
        """Heads at positions ``pos .. pos+count-1`` of the seeded head stream."""
        k = self.enc.num_tasks
        out = []
        for j in range(pos, pos + count):
            perm = torch.randperm(k, generator=self._gen(Stream.HEAD_ORDER, j // k))
            out.append(int(perm[j % k]))
        return out

    def _inputs(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.ds.images[idx].to(self.device)
        x = self.ds.normalize(x) if self.enc.normalize_input else x.float() / 255.0
        return x.to(self.dtype)

    def _inner_batches(self, step: int) -> torch.Tensor:
        """``[T, B]`` image indices: consecutive batches of fresh permutations of train."""
        g = self._gen(Stream.INNER_BATCHES, step)
        need = self.s.inner_steps * self.s.batch_size
        parts, n = [], 0
        while n < need:
            parts.append(self.train_idx[torch.randperm(len(self.train_idx), generator=g)])
            n += len(self.train_idx)
        if len(self.train_idx) < self.s.batch_size:
            raise TaskspaceError(
                f"batch_size={self.s.batch_size} is larger than the train split "
                f"({len(self.train_idx)} images)"
            )
        return torch.cat(parts)[:need].view(self.s.inner_steps, self.s.batch_size)

    def _eval_batch(self, step: int) -> torch.Tensor:
        n = min(self.s.eval_batch_size, len(self.eval_idx))
        if self.s.fixed_eval_batch:  # the reference's first held-out batch, class-mixed
            return self.ds.first("heldout", n)
        g = self._gen(Stream.EVAL_BATCH, step)
        return self.eval_idx[torch.randperm(len(self.eval_idx), generator=g)[:n]]

    def _inits(self, step: int, n_heads: int) -> tuple[dict, dict]:
        """Stacked initial (params, buffers) for ``n_heads`` pairs, ordered (head, A/B)."""
        if self.s.fixed_inits:
            if self._fixed_init is None:
                seeds = [derive_seed(self.s.seed, Stream.FIXED_INITS, r) for r in (0, 1)]
                self._fixed_init = self.learners.init(seeds, self.dtype, self.device)
            p, b = self._fixed_init
            rep = lambda v: v.repeat(n_heads, *[1] * (v.dim() - 1))  # noqa: E731
            return {k: rep(v) for k, v in p.items()}, {k: rep(v) for k, v in b.items()}
        seeds = [
            derive_seed(self.s.seed, Stream.INITS, step, h, r)
            for h in range(n_heads)
            for r in (0, 1)
        ]
        return self.learners.init(seeds, self.dtype, self.device)

    # ------------------------------------------------------------------ the objective
    def objective(self, heads: list[int], step: int) -> tuple[torch.Tensor, dict]:
        """Meta-loss of meta-step ``step`` for ``heads`` (graph to the encoder) and logs."""
        s = self.s
        self.enc.train()
        idx = self._inner_batches(step)
        w = self.enc.heads[heads]  # [H, d]
        n_h = len(heads)
        xs, qs, unif = [], [], []
        for t in range(s.inner_steps):
            x = self._inputs(idx[t])
            h = self._embed(x)
            unif.append(uniformity_loss(h, s.uniformity_t))
            q = soft_labels(h @ w.t(), s.temperature).permute(1, 0, 2)  # [H, B, 2]
            if s.data_mode == "meta":
                half = s.batch_size // 2
                xa = torch.stack([x[:half], x[half : 2 * half]])  # [2, b, ...]
                xs.append(xa.unsqueeze(0).expand(n_h, *xa.shape).reshape(2 * n_h, *xa.shape[1:]))
                qa = torch.stack([q[:, :half], q[:, half : 2 * half]], dim=1)  # [H, 2, b, 2]
                qs.append(qa.reshape(2 * n_h, half, 2))
            else:
                xs.append(x)
                qs.append(q.repeat_interleave(2, dim=0))
        p0, b0 = self._inits(step, n_h)
        p_t, b_t = self.learners.unroll(
            p0,
            b0,
            xs,
            qs,
            s.inner_lr,
            shared=s.data_mode == "full",
            use_checkpoint=s.use_checkpoint,
            first_order=s.first_order,
        )
        xv = self._inputs(self._eval_batch(step))
        lv = self.learners.forward(p_t, b_t, xv, shared=True, train=s.learner_bn == "train")
        lv = lv.view(n_h, 2, *lv.shape[1:])
        l_ag = symmetric_agreement_loss(lv[:, 0], lv[:, 1])  # [H]
        u = torch.stack(unif).mean()
        loss = l_ag.mean() + s.uniformity * u
        with torch.no_grad():
            agree = (lv[:, 0].argmax(-1) == lv[:, 1].argmax(-1)).float().mean(-1)
        log = {
            "step": step,
            "loss": float(loss.detach()),
            "l_ag": float(l_ag.detach().mean()),
            "uniformity": float(u.detach()),
            "proxy_as": float(agree.mean()),
            "heads": " ".join(map(str, heads)),
        }
        return loss, log

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """``h`` of one inner batch. With ``use_checkpoint`` the encoder's activations are
        not kept for the meta-backward but recomputed there (kept, they grow memory with
        every inner step; figures: see the README's benchmark table); the recomputation
        leaves the BatchNorm running statistics as the first pass left them."""
        if not self.s.use_checkpoint:
            return self.enc.embed(x)
        passes = [0]

        def run(x_: torch.Tensor) -> torch.Tensor:
            passes[0] += 1
            if passes[0] == 1:
                return self.enc.embed(x_)
            with frozen_batchnorm_statistics(self.enc):
                return self.enc.embed(x_)

        return checkpoint(run, x, use_reentrant=False)

    def meta_step(self) -> dict:
        """One meta-step (forward, backward, Adam); returns its log row."""
        t0 = time.perf_counter()
        heads = self.heads_at(self.head_pos, self.s.heads_per_step)
        loss, log = self.objective(heads, self.step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        self.head_pos += len(heads)
        log["seconds"] = time.perf_counter() - t0
        self.logs.append(log)
        return log

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """Everything needed to continue exactly: encoder, Adam, position, logs, RNG."""
        return {
            "encoder": self.enc.state_dict(),
            "optimizer": self.opt.state_dict(),
            "step": self.step,
            "head_pos": self.head_pos,
            "logs": [dict(r) for r in self.logs],
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.enc.load_state_dict(state["encoder"])
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.head_pos = int(state["head_pos"])
        self.logs = list(state["logs"])
        torch.set_rng_state(state["torch_rng"])

    def save(self, path: str | Path) -> Path:
        """Atomic checkpoint (``torch.save`` of plain tensors and lists; weights-only safe)."""
        state = self.state_dict()
        return atomic_write(path, lambda p: torch.save(state, p))

    def load(self, path: str | Path) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001  (a corrupt checkpoint is a user-facing error)
            raise TaskspaceError(
                f"cannot read checkpoint {path}: {err}; delete it to restart"
            ) from None
        self.load_state_dict(state)


@contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Batch statistics as usual, but running statistics left untouched (momentum 0 and the
    batch counter restored): for a checkpoint's recomputation of a forward pass."""
    saved = []
    for m in module.modules():
        if (
            isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.track_running_stats
            and m.num_batches_tracked is not None
        ):
            saved.append((m, m.momentum, m.num_batches_tracked.clone()))
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum, count in saved:
            m.momentum = momentum
            if m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(count)
