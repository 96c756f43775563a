"""Train many models at once: ``fit_many`` and ``predict_many``.

M models of one architecture, each with its own labels, initialisation seed, data order,
example weights and example mask, are trained together: their parameters are stacked
(``torch.func.stack_module_state``), the forward pass is ``vmap(functional_call)``, the
per-model losses are summed and one ``backward()`` gives every model its own gradient. A
per-model loop (``batched=False``) with stock ``torch.optim`` gives the same result and
serves as the fallback for modules that cannot be vmapped.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state

from taskspace.data.dataset import ImageDataset
from taskspace.engine.batchnorm import use_reduction_batchnorm
from taskspace.engine.cpu import tune_malloc
from taskspace.engine.mlp_step import StackedMLPStep, stacked_mlp_layers
from taskspace.engine.optim import StackedOptimizer, schedule_lr
from taskspace.engine.recipe import Recipe, get_recipe
from taskspace.engine.streams import IndexStream, crop_flip
from taskspace.errors import TaskspaceError
from taskspace.models import create_model


@dataclass
class Ensemble:
    """M trained models of one architecture, as stacked state ``{name: [M, ...]}``."""

    model_name: str
    num_outputs: int
    in_channels: int
    image_size: int
    model_kwargs: dict = field(default_factory=dict)
    params: dict[str, torch.Tensor] = field(default_factory=dict)
    buffers: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    def build(self) -> nn.Module:
        """A fresh module of this ensemble's architecture (random init, CPU)."""
        return create_model(
            self.model_name,
            self.num_outputs,
            in_channels=self.in_channels,
            image_size=self.image_size,
            **self.model_kwargs,
        )

    def model(self, m: int) -> nn.Module:
        """Model ``m`` as an ordinary module, in eval mode."""
        module = self.build()
        state = {k: v[m] for k, v in {**self.params, **self.buffers}.items()}
        module.load_state_dict(state)
        return module.eval()

    def state_dicts(self) -> list[dict[str, torch.Tensor]]:
        both = {**self.params, **self.buffers}
        return [{k: v[m] for k, v in both.items()} for m in range(len(self))]

    @staticmethod
    def concat(parts: Sequence[Ensemble]) -> Ensemble:
        first = parts[0]
        return Ensemble(
            first.model_name,
            first.num_outputs,
            first.in_channels,
            first.image_size,
            dict(first.model_kwargs),
            {k: torch.cat([p.params[k] for p in parts]) for k in first.params},
            {k: torch.cat([p.buffers[k] for p in parts]) for k in first.buffers},
        )


def _as_seeds(seeds: Sequence[int] | torch.Tensor | int, m: int, what: str) -> list[int]:
    if isinstance(seeds, int):
        return [seeds + i for i in range(m)]
    out = [int(s) for s in (seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds)]
    if len(out) != m:
        raise TaskspaceError(f"{what}: got {len(out)} seeds for {m} models")
    return out


def _check_matrix(name: str, t: torch.Tensor | None, m: int, n: int) -> None:
    if t is not None and tuple(t.shape) != (m, n):
        raise TaskspaceError(
            f"{name} must have shape [models, images] = [{m}, {n}], got {tuple(t.shape)}"
        )


def init_models(
    model_name: str, num_outputs: int, seeds: Sequence[int], dataset: ImageDataset, **kw: object
) -> list[nn.Module]:
    """One freshly initialised model per seed (``torch.manual_seed(seed)`` before creation)."""
    models = []
    for s in seeds:
        torch.manual_seed(int(s))
        models.append(
            create_model(
                model_name,
                num_outputs,
                in_channels=dataset.channels,
                image_size=dataset.image_size,
                **kw,
            )
        )
    return models


#: On a CPU, plain MLPs train with the hand-written step of :mod:`taskspace.engine.mlp_step`
#: (benchmarks switch it off to compare it with the vmap + autograd step).
HAND_WRITTEN_MLP_STEP = True


def prefer_batched(model: nn.Module, n_models: int, device: torch.device) -> bool:
    """Whether to train ``n_models`` of ``model`` with vmap (else the per-model loop).

    Measured (benchmarks/bench_engine.py, bench_gpu.py): under vmap a convolution becomes a
    grouped convolution, which ran at 0.4-0.6x the loop's speed (convnet x2/x8 on 2 CPU
    cores, a ResNet-18 pair on an H100), and on CUDA a pair of big models already fills the
    GPU (ViT and reference-MLP pairs: 0.7-1.0x). Everything else stays batched, where many
    small models gain most (64 digits MLPs: 3.0x on a CPU, 10x on an H100) and where, on a
    CPU, results did not change with the thread count (the loop's did).
    """
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        return False
    return not (device.type == "cuda" and n_models < 4)


def default_chunk_size(n_params: int, batch_size: int, device: torch.device) -> int:
    """How many models fit in one batched chunk: optimiser state plus a guess at activations.

    On a CPU the chunk is also kept small enough that its parameters, gradients and
    optimiser state (16 bytes per parameter) stay within ~64 MB: 64 reference-width digits
    MLPs trained 1.25x faster in chunks of 8 than all at once, while small models still go
    in one chunk.
    """
    per_model = 16 * n_params + 4 * batch_size * 50_000
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(free * 0.6 // per_model))
    return max(1, min(int(4e9 // per_model), int(64e6 // (16 * n_params))))


class _Batcher:
    """Draws each model's next batch: indices, inputs, labels, weights."""

    def __init__(
        self,
        dataset: ImageDataset,
        images: torch.Tensor,
        labels: torch.Tensor,
        weights: torch.Tensor | None,
        pools: list[torch.Tensor],
        order_seeds: list[int],
        recipe: Recipe,
        device: torch.device,
    ) -> None:
        self.dataset, self.images, self.labels, self.weights = dataset, images, labels, weights
        self.recipe, self.device = recipe, device
        self.order_seeds = order_seeds
        self.streams = [IndexStream(p, s) for p, s in zip(pools, order_seeds)]
        # augmentation draws follow the order seed, so a pair sharing batches shares crops too
        self.aug_gens = [torch.Generator().manual_seed(10_007 * s + 1) for s in order_seeds]

    def draw(self, members: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """Next batch of every member: x ``[B, ...]`` when all members read the same batch
        (then ``shared`` is True and vmap broadcasts it), else ``[M, B, ...]``."""
        b = self.recipe.batch_size
        idx = torch.stack([self.streams[m].next(b) for m in members])  # [M, B] CPU
        shared = len({self.order_seeds[m] for m in members}) == 1 and bool((idx == idx[0]).all())
        if shared:
            x = self._inputs(idx[0], members[0])
            if self.recipe.augment:
                for other in members[1:]:
                    self._advance_aug(other)  # keep every member's generator in step
        elif self.recipe.augment:
            x = torch.stack([self._inputs(idx[r], m) for r, m in enumerate(members)])
        else:  # one gather and one normalisation for all members
            x = self.dataset.normalize(self.images[idx.to(self.images.device)])
        mem = torch.tensor(list(members))
        y = self.labels[mem[:, None], idx].to(self.device)
        w = None if self.weights is None else self.weights[mem[:, None], idx].to(self.device)
        return x, y, w, shared

    def _inputs(self, idx: torch.Tensor, member: int) -> torch.Tensor:
        x = self.dataset.normalize(self.images[idx.to(self.images.device)])
        if self.recipe.augment:
            x = crop_flip(x, self.aug_gens[member], self.recipe.crop_padding)
        return x

    def _advance_aug(self, m: int) -> None:
        b = self.recipe.batch_size
        torch.randint(0, 2 * self.recipe.crop_padding + 1, (b, 2), generator=self.aug_gens[m])
        torch.rand(b, generator=self.aug_gens[m])


def _loss(
    logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None
) -> torch.Tensor:
    """Per-model mean (weighted) cross-entropy: logits [M, B, C], y [M, B] -> [M]."""
    ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view_as(y)
    if w is not None:
        ce = ce * w
    return ce.mean(dim=1)


def fit_many(
    model_name: str,
    dataset: ImageDataset,
    labels: torch.Tensor,
    recipe: Recipe | str = "fast",
    seeds: Sequence[int] | torch.Tensor | int = 0,
    *,
    order_seeds: Sequence[int] | torch.Tensor | int | None = None,
    train_idx: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    masks: torch.Tensor | None = None,
    num_outputs: int | None = None,
    device: str | torch.device = "cpu",
    chunk_size: int | None = None,
    batched: bool | None = None,
    model_kwargs: dict | None = None,
    progress: bool = False,
) -> Ensemble:
    """Train M models, one per row of ``labels [M, N]``, and return them as an Ensemble.

    Args:
        model_name: registry name (``mlp``, ``convnet``, ``resnet18``, ...).
        dataset: the images; ``labels`` index into it.
        labels: ``int64 [M, N]`` per-model labels over all N images.
        recipe: a :class:`Recipe` or preset name.
        seeds: per-model initialisation seeds (an int ``s`` means ``s, s+1, ...``).
        order_seeds: per-model data-order seeds; models with equal order seeds and equal
            masks read identical batches (default: the init seeds, i.e. independent orders).
        train_idx: training indices (default: the dataset's ``train`` split).
        weights: optional ``[M, N]`` per-example loss weights (loss = batch mean of w * CE).
        masks: optional ``[M, N]`` bool; model m trains only on ``train_idx`` where
            ``masks[m]`` is true, for ``recipe.epochs`` passes over its own subset.
        num_outputs: outputs per model (default: max label + 1).
        chunk_size: models per batched chunk (default: sized to memory).
        batched: True trains each chunk with vmap, False with the plain per-model loop (the
            same result); None (default) picks the faster for the model, the chunk's size
            and the device (:func:`prefer_batched`).
    """
    recipe = get_recipe(recipe)
    device = torch.device(device)
    tune_malloc()
    if labels.dim() != 2:
        raise TaskspaceError(f"labels must be [models, images], got {tuple(labels.shape)}")
    m_total, n = labels.shape
    if n != len(dataset):
        raise TaskspaceError(
            f"labels have {n} entries per model but the dataset has {len(dataset)} images"
        )
    _check_matrix("weights", weights, m_total, n)
    _check_matrix("masks", masks, m_total, n)
    labels = labels.long()
    if labels.min() < 0:
        raise TaskspaceError("labels must be non-negative class ids")
    num_outputs = int(num_outputs or int(labels.max()) + 1)
    seeds_l = _as_seeds(seeds, m_total, "seeds")
    orders_l = seeds_l if order_seeds is None else _as_seeds(order_seeds, m_total, "order_seeds")
    train_idx = dataset.split("train") if train_idx is None else train_idx.long()
    pools = []
    for m in range(m_total):
        pool = train_idx if masks is None else train_idx[masks[m, train_idx].bool()]
        if len(pool) == 0:
            raise TaskspaceError(f"model {m} has no training examples (empty mask)")
        pools.append(pool)
    kw = dict(model_kwargs or {})
    images = dataset.images.to(device)
    w_all = None if weights is None else weights.float()
    batcher = _Batcher(dataset, images, labels, w_all, pools, orders_l, recipe, device)
    totals = torch.tensor([recipe.num_steps(len(p)) for p in pools])

    probe = init_models(model_name, num_outputs, seeds_l[:1], dataset, **kw)[0]
    if chunk_size is None:
        n_params = sum(p.numel() for p in probe.parameters())
        chunk_size = default_chunk_size(n_params, recipe.batch_size, device)
    parts = []
    chunks = [list(range(i, min(i + chunk_size, m_total))) for i in range(0, m_total, chunk_size)]
    bar = _progress(progress, int(sum(totals[c].max() for c in chunks)), model_name)
    for members in chunks:
        models = init_models(model_name, num_outputs, [seeds_l[m] for m in members], dataset, **kw)
        if batched if batched is not None else prefer_batched(probe, len(members), device):
            try:
                part = _fit_batched(models, members, batcher, totals, recipe, device, bar)
            except (RuntimeError, NotImplementedError) as err:
                if "vmap" not in str(err).lower() and "batch" not in str(err).lower():
                    raise
                warnings.warn(f"{model_name} cannot be vmapped ({err}); using the per-model loop",
                              stacklevel=2)
                batcher = _Batcher(dataset, images, labels, w_all, pools, orders_l, recipe, device)
                models = init_models(
                    model_name, num_outputs, [seeds_l[m] for m in members], dataset, **kw
                )
                part = _fit_loop(models, members, batcher, totals, recipe, device, bar)
        else:
            part = _fit_loop(models, members, batcher, totals, recipe, device, bar)
        parts.append(part)
    if bar is not None:
        bar.close()
    params = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    buffers = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
    return Ensemble(
        model_name, num_outputs, dataset.channels, dataset.image_size, kw, params, buffers
    )


def _progress(enabled: bool, total: int, desc: str):  # noqa: ANN202
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"train {desc}", unit="step", leave=False)


def _autocast(recipe: Recipe, device: torch.device):  # noqa: ANN202
    enabled = recipe.bf16 and device.type == "cuda"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _fit_batched(
    models: list[nn.Module],
    members: list[int],
    batcher: _Batcher,
    totals: torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    bar,  # noqa: ANN001
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    for mod in models:
        mod.to(device).train()
    params, buffers = stack_module_state(models)
    base = use_reduction_batchnorm(copy.deepcopy(models[0]).to("meta"))
    opt = StackedOptimizer(list(params.values()), recipe)
    tot = totals[members]
    has_buffers = len(buffers) > 0

    def fwd(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    def vmap_grads(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None,
                   active: torch.Tensor, shared: bool) -> None:
        """Gradients into ``.grad`` by vmap + autograd; inactive models keep their buffers."""
        if recipe.channels_last and device.type == "cuda" and shared:
            x = x.contiguous(memory_format=torch.channels_last)
        in_dims = (0, 0, None) if shared else (0, 0, 0)
        old_buffers = None
        if has_buffers and not bool(active.all()):
            old_buffers = {k: v.clone() for k, v in buffers.items()}
        with _autocast(recipe, device):
            logits = torch.vmap(fwd, in_dims=in_dims, randomness="different")(params, buffers, x)
        losses = _loss(logits.float(), y, w)
        (losses * active.to(device, losses.dtype)).sum().backward()
        if old_buffers is not None:
            act = active.to(device)
            for k, v in buffers.items():
                v.copy_(torch.where(act.view(-1, *[1] * (v.dim() - 1)), v, old_buffers[k]))

    # plain MLPs on a CPU: the same arithmetic with fewer elementwise passes (measured 1.3x
    # there); on CUDA the vmap step with autocast is kept
    cpu_mlp = HAND_WRITTEN_MLP_STEP and device.type == "cpu"
    layers = stacked_mlp_layers(models[0]) if cpu_mlp else None
    mlp_step = StackedMLPStep(layers) if layers else None
    for step in range(int(tot.max())):
        active = step < tot
        x, y, w, shared = batcher.draw(members)
        if mlp_step is not None:
            mlp_step(params, buffers, x, y, w, active, shared=shared)
        else:
            vmap_grads(x, y, w, active, shared)
        opt.step(schedule_lr(recipe, step, tot), active)
        opt.zero_grad()
        if bar is not None:
            bar.update(1)
    return (
        {k: v.detach().cpu() for k, v in params.items()},
        {k: v.detach().cpu() for k, v in buffers.items()},
    )


def _fit_loop(
    models: list[nn.Module],
    members: list[int],
    batcher: _Batcher,
    totals: torch.Tensor,
    recipe: Recipe,
    device: torch.device,
    bar,  # noqa: ANN001
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The plain reference path: each model with its own torch.optim optimiser."""
    opts = []
    for mod in models:
        mod.to(device).train()
        if recipe.optimizer == "adam":
            opts.append(torch.optim.Adam(mod.parameters(), lr=recipe.lr, betas=recipe.betas,
                                         eps=recipe.eps, weight_decay=recipe.weight_decay))
        else:
            opts.append(torch.optim.SGD(mod.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                        nesterov=recipe.nesterov,
                                        weight_decay=recipe.weight_decay))
    tot = totals[members]
    for step in range(int(tot.max())):
        x, y, w, shared = batcher.draw(members)
        for j, (mod, opt) in enumerate(zip(models, opts)):
            if step >= int(tot[j]):
                continue
            xj = x if shared else x[j]
            if recipe.channels_last and device.type == "cuda":
                xj = xj.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = float(schedule_lr(recipe, step, tot[j : j + 1])[0])
            with _autocast(recipe, device):
                logits = mod(xj)
            loss = _loss(logits.float()[None], y[j : j + 1], None if w is None else w[j : j + 1])
            opt.zero_grad()
            loss.sum().backward()
            opt.step()
        if bar is not None:
            bar.update(1)
    params, buffers = stack_module_state(models)
    return (
        {k: v.detach().cpu() for k, v in params.items()},
        {k: v.detach().cpu() for k, v in buffers.items()},
    )


@torch.no_grad()
def predict_many(
    ensemble: Ensemble,
    dataset: ImageDataset,
    idx: torch.Tensor | None = None,
    *,
    batch_size: int = 1024,
    device: str | torch.device = "cpu",
    chunk_size: int = 64,
) -> torch.Tensor:
    """Eval-mode logits of every model on ``dataset.images[idx]``: ``[M, n, num_outputs]``."""
    device = torch.device(device)
    idx = torch.arange(len(dataset)) if idx is None else idx.long()
    base = ensemble.build().to("meta").eval()
    m_total = len(ensemble)
    out = torch.empty(m_total, len(idx), ensemble.num_outputs)

    def fwd(p: dict, b: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (x,))

    for c0 in range(0, m_total, chunk_size):
        sl = slice(c0, min(c0 + chunk_size, m_total))
        p = {k: v[sl].to(device) for k, v in ensemble.params.items()}
        b = {k: v[sl].to(device) for k, v in ensemble.buffers.items()}
        for i0 in range(0, len(idx), batch_size):
            x = dataset.normalize(dataset.images[idx[i0 : i0 + batch_size]].to(device))
            logits = torch.vmap(fwd, in_dims=(0, 0, None))(p, b, x)
            out[sl, i0 : i0 + batch_size] = logits.float().cpu()
    return out


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-model accuracy of ``logits [M, n, C]`` against ``labels [M, n]`` (or ``[n]``)."""
    pred = logits.argmax(-1)
    if labels.dim() == 1:
        labels = labels[None]
    return (pred == labels).float().mean(-1)


__all__ = ["Ensemble", "accuracy", "default_chunk_size", "fit_many", "init_models",
           "predict_many"]
