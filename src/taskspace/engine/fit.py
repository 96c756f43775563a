"""Train many models at once: ``fit_many``, composed of swappable parts.

M models of one architecture, each with its own labels, initialisation seed, data order,
example weights and example mask, are trained together: their parameters are stacked
(``torch.func.stack_module_state``), the forward pass is ``vmap(functional_call)``, the
per-model losses are summed and one ``backward()`` gives every model its own gradient. A
per-model loop (``batched=False``) with stock ``torch.optim`` gives the same result and
serves as the fallback for modules that cannot be vmapped.

What differs between training methods is a part handed to ``fit_many``: a *sampler*
(which examples each model reads: :mod:`~taskspace.engine.samplers`), an *objective* (what
it minimises: :mod:`~taskspace.engine.objectives`) and *hooks* (evaluation, checkpoints,
logging: :mod:`~taskspace.engine.hooks`). The defaults (seeded permutations,
cross-entropy, no hooks) are plain ERM.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import nn

from taskspace.data.dataset import ImageDataset
from taskspace.engine.batches import Batcher, FitData
from taskspace.engine.context import FitContext
from taskspace.engine.cpu import tune_malloc
from taskspace.engine.ensemble import Ensemble
from taskspace.engine.hooks import Hook
from taskspace.engine.objectives import CrossEntropy, MultiTask, Objective
from taskspace.engine.predict import accuracy, predict_many
from taskspace.engine.recipe import Recipe, get_recipe
from taskspace.engine.samplers import Permutation, Sampler
from taskspace.engine.trainers import BatchedTrainer, ChunkTrainer, LoopTrainer
from taskspace.errors import TaskspaceError
from taskspace.models import create_model
from taskspace.progress import progress_bar


def _per_model(
    what: str,
    values: Sequence[float] | torch.Tensor | None,
    m: int,
    default: float,
    positive: bool = False,
) -> torch.Tensor | None:
    """Per-model hyper-parameters as a float64 ``[M]`` tensor, or ``None`` when absent or
    all equal to the recipe's (so a plain fit takes exactly the plain path)."""
    if values is None:
        return None
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if len(t) != m:
        raise TaskspaceError(f"{what}: got {len(t)} values for {m} models")
    if bool((t <= 0).any()) if positive else bool((t < 0).any()):
        raise TaskspaceError(f"{what} must be {'> 0' if positive else '>= 0'}, got {t.tolist()}")
    return None if bool((t == default).all()) else t


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
    models: list[nn.Module] = []
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


def prefer_batched(model: nn.Module, n_models: int, device: torch.device) -> bool:
    """Whether to train ``n_models`` of ``model`` with vmap (else the per-model loop).

    Chosen from measurements (benchmarks/bench_engine.py and bench_gpu.py; figures in the
    README): under vmap a convolution becomes a grouped convolution, which ran slower than
    the loop on CPUs and on an H100, and on CUDA a pair of big models already fills the
    GPU. Everything else stays batched, where many small models gain most and where, on a
    CPU, results did not change with the thread count (the loop's did).
    """
    if any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()):
        return False
    return not (device.type == "cuda" and n_models < 4)


def default_chunk_size(n_params: int, batch_size: int, device: torch.device) -> int:
    """How many models fit in one batched chunk: optimiser state plus a guess at activations.

    On a CPU the chunk is also kept small enough that its parameters, gradients and
    optimiser state (16 bytes per parameter) stay within ~64 MB: reference-width digits
    MLPs trained faster in chunks of 8 than all 64 at once (cache-sized working sets),
    while small models still go in one chunk.
    """
    per_model = 16 * n_params + 4 * batch_size * 50_000
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, int(free * 0.6 // per_model))
    return max(1, min(int(4e9 // per_model), int(64e6 // (16 * n_params))))


def _check_groups(groups: torch.Tensor | None, m: int, n: int) -> torch.Tensor | None:
    """``groups`` as ``[M, N]`` (or ``[M, N, T]``) int64; ``[N]`` is shared by all models."""
    if groups is None:
        return None
    groups = groups.long()
    if groups.dim() == 1:
        groups = groups.expand(m, -1)
    if tuple(groups.shape[:2]) != (m, n) or groups.dim() > 3:
        raise TaskspaceError(
            f"groups must have shape [images], [models, images] or [models, "
            f"images, tasks] with {m} models and {n} images, got "
            f"{tuple(groups.shape)}"
        )
    if int(groups.min()) < 0:
        raise TaskspaceError("groups must be non-negative ids")
    return groups


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
    groups: torch.Tensor | None = None,
    sampler: Sampler | None = None,
    objective: Objective | None = None,
    hooks: Sequence[Hook] = (),
    mlp_step: bool = True,
    lrs: Sequence[float] | torch.Tensor | None = None,
    weight_decays: Sequence[float] | torch.Tensor | None = None,
) -> Ensemble:
    """Train M models, one per row of ``labels``, and return them as an Ensemble.

    Args:
        model_name: registry name (``mlp``, ``convnet``, ``resnet18``, ...).
        dataset: the images; ``labels`` index into it.
        labels: ``int64 [M, N]`` per-model labels over all N images, or ``[M, N, T]`` for
            T tasks per model (one head each; the default objective is then
            :class:`~taskspace.engine.objectives.MultiTask`).
        recipe: a :class:`Recipe` or preset name.
        seeds: per-model initialisation seeds (an int ``s`` means ``s, s+1, ...``).
        order_seeds: per-model data-order seeds; models with equal order seeds and equal
            examples read identical batches (default: the init seeds, i.e. independent
            orders).
        train_idx: training indices (default: the dataset's ``train`` split).
        weights: optional ``[M, N]`` per-example loss weights (loss = batch mean of w * CE).
        masks: optional ``[M, N]`` bool; model m trains only on ``train_idx`` where
            ``masks[m]`` is true, for ``recipe.epochs`` passes over its own subset.
        num_outputs: outputs per model (default: what the objective needs, e.g. max
            label + 1).
        chunk_size: models per batched chunk (default: sized to memory).
        batched: True trains each chunk with vmap, False with the plain per-model loop (the
            same result); None (default) picks the faster for the model, the chunk's size
            and the device (:func:`prefer_batched`).
        groups: optional ``[N]`` or ``[M, N]`` int group ids carried with every batch
            (Group DRO, group-balanced sampling, worst-group evaluation).
        sampler: which examples each model reads (default
            :class:`~taskspace.engine.samplers.Permutation`: seeded per-epoch
            permutations); an epoch is the sampler's epoch length.
        objective: what each model minimises (default
            :class:`~taskspace.engine.objectives.CrossEntropy`).
        hooks: evaluation, checkpoints, logging (:mod:`taskspace.engine.hooks`).
        mlp_step: use the hand-written MLP step where it applies (plain MLPs on a CPU
            with plain cross-entropy); False always uses vmap + autograd (same result).
        lrs: optional per-model base learning rates (the recipe's schedule scales each);
            with ``weight_decays``, a hyper-parameter grid trains as one batched fit.
        weight_decays: optional per-model weight decays.
    """
    recipe = get_recipe(recipe)
    device = torch.device(device)
    tune_malloc()
    if labels.dim() not in (2, 3):
        raise TaskspaceError(
            f"labels must be [models, images] (or [models, images, tasks]), "
            f"got {tuple(labels.shape)}"
        )
    m_total, n = labels.shape[:2]
    if n != len(dataset):
        raise TaskspaceError(
            f"labels have {n} entries per model but the dataset has {len(dataset)} images"
        )
    _check_matrix("weights", weights, m_total, n)
    _check_matrix("masks", masks, m_total, n)
    groups = _check_groups(groups, m_total, n)
    labels = labels.long()
    objective = objective or (CrossEntropy() if labels.dim() == 2 else MultiTask())
    if labels.min() < 0 and not objective.missing_labels:
        raise TaskspaceError("labels must be non-negative class ids")
    objective.check(labels, groups)
    num_outputs = int(num_outputs or objective.num_outputs(labels))
    lrs_t = _per_model("lrs", lrs, m_total, recipe.lr, positive=True)
    wds_t = _per_model("weight_decays", weight_decays, m_total, recipe.weight_decay)
    seeds_l = _as_seeds(seeds, m_total, "seeds")
    orders_l = seeds_l if order_seeds is None else _as_seeds(order_seeds, m_total, "order_seeds")
    sampler = sampler or Permutation()
    pools = _pools(dataset, sampler, train_idx, masks, m_total)
    w_all = None if weights is None else weights.float()
    data = FitData(labels, groups, w_all, pools, orders_l)
    streams = sampler.streams(data)
    batcher = Batcher(dataset, dataset.images.to(device), data, streams, recipe, device)
    totals = torch.tensor([recipe.num_steps(s.epoch_length) for s in streams])
    kw = dict(model_kwargs or {})

    probe = init_models(model_name, num_outputs, seeds_l[:1], dataset, **kw)[0]
    if chunk_size is None:
        n_params = sum(p.numel() for p in probe.parameters())
        chunk_size = default_chunk_size(n_params, recipe.batch_size, device)
    chunks = [list(range(i, min(i + chunk_size, m_total))) for i in range(0, m_total, chunk_size)]
    config = {
        "model_name": model_name,
        "num_outputs": num_outputs,
        "model_kwargs": kw,
        "recipe": recipe,
        "seeds": seeds_l,
        "order_seeds": orders_l,
        "labels": labels,
        "weights": w_all,
        "groups": groups,
        "pools": pools,
        "sampler": sampler,
        "objective": objective,
        "chunk_size": chunk_size,
        "batched": batched,
        "mlp_step": mlp_step,
        "lrs": lrs_t,
        "weight_decays": wds_t,
    }
    ctx = FitContext(
        model_name=model_name,
        dataset=dataset,
        recipe=recipe,
        device=device,
        data=data,
        objective=objective,
        objective_state=objective.init_state(data, device),
        batcher=batcher,
        totals=totals,
        chunks=chunks,
        hooks=sorted(hooks, key=lambda h: h.order),
        config=config,
        probe=probe,
    )
    for h in ctx.hooks:
        h.on_fit_start(ctx)

    def make_trainer(members: list[int], vmap: bool) -> ChunkTrainer:
        models = init_models(model_name, num_outputs, [seeds_l[m] for m in members], dataset, **kw)
        args = (models, totals[members], recipe, device, objective, ctx.objective_state)
        lr = None if lrs_t is None else lrs_t[members]
        wd = None if wds_t is None else wds_t[members]
        if vmap:
            return BatchedTrainer(*args, lr, wd, mlp_step=mlp_step)
        return LoopTrainer(*args, lr, wd)

    bar = progress_bar(
        int(sum(totals[c].max() for c in chunks)), f"train {model_name}", progress, unit="step"
    )
    for ci, members in enumerate(chunks):
        ctx.chunk, ctx.members = ci, members
        if ci in ctx.parts:  # finished before a resume
            _advance(bar, int(totals[members].max()))
            continue
        vmap = batched if batched is not None else prefer_batched(probe, len(members), device)
        try:
            _train_chunk(ctx, make_trainer(members, vmap), bar, vmap)
        except _VmapFailed as failed:
            warnings.warn(
                f"{model_name} cannot be vmapped ({failed.__cause__}); using the per-model loop",
                stacklevel=2,
            )
            _rewind(ctx)
            _train_chunk(ctx, make_trainer(members, False), bar, False)
    if bar is not None:
        bar.close()
    for h in ctx.hooks:
        h.on_fit_end(ctx)
    parts = [ctx.parts[c] for c in range(len(chunks))]
    params = {k: torch.cat([p[0][k] for p in parts]) for k in parts[0][0]}
    buffers = {k: torch.cat([p[1][k] for p in parts]) for k in parts[0][1]}
    return Ensemble(
        model_name,
        num_outputs,
        dataset.channels,
        dataset.image_size,
        kw,
        params,
        buffers,
        objective.num_tasks(labels),
        {k: v.detach().cpu() for k, v in ctx.objective_state.items()},
    )


def _pools(
    dataset: ImageDataset,
    sampler: Sampler,
    train_idx: torch.Tensor | None,
    masks: torch.Tensor | None,
    m_total: int,
) -> list[torch.Tensor]:
    """Each model's training examples: ``train_idx`` (default: the train split) where its
    mask is true, or the sampler's own lists."""
    if sampler.owns_pools and (train_idx is not None or masks is not None):
        raise TaskspaceError(
            f"{type(sampler).__name__} lists each model's examples itself; "
            "leave train_idx and masks unset"
        )
    train_idx = dataset.split("train") if train_idx is None else train_idx.long()
    pools = []
    for m in range(m_total):
        pool = train_idx if masks is None else train_idx[masks[m, train_idx].bool()]
        if len(pool) == 0:
            raise TaskspaceError(f"model {m} has no training examples (empty mask)")
        pools.append(pool)
    return sampler.pools(pools, len(dataset))


def _rewind(ctx: FitContext) -> None:
    """Put the current chunk's streams and objective state back to their start."""
    ctx.batcher.reset(ctx.members)
    fresh = ctx.objective.init_state(ctx.data, ctx.device)
    for k, v in ctx.objective_state.items():
        v[ctx.members] = fresh[k][ctx.members]


class _VmapFailed(Exception):
    """A batched step raised an error that says the model cannot be vmapped."""


def _train_chunk(ctx: FitContext, trainer: ChunkTrainer, bar, vmap: bool) -> None:  # noqa: ANN001
    """Train the chunk ``ctx.members`` to the end, calling the hooks; from the saved step
    when the fit was restored in the middle of this chunk."""
    start = 0
    resume = ctx.resume
    if resume is not None and resume.chunk == ctx.chunk:
        ctx.resume = None
        if resume.trainer is not None:
            trainer.load_state_dict(resume.trainer)
            torch.set_rng_state(resume.rng)
            start = resume.step
            _advance(bar, start)
    ctx.trainer = trainer
    for h in ctx.hooks:
        h.on_chunk_start(ctx)
    tot = ctx.chunk_totals
    for step in range(start, int(tot.max())):
        batch = ctx.batcher.draw(ctx.members, step, step < tot)
        try:
            losses = trainer.step(batch)
        except (RuntimeError, NotImplementedError) as err:
            msg = str(err).lower()
            if vmap and ("vmap" in msg or "batch" in msg):
                raise _VmapFailed from err
            raise
        ctx.step, ctx.batch, ctx.losses = step, batch, losses
        for h in ctx.hooks:
            h.on_step_end(ctx)
        _advance(bar, 1)
    ctx.parts[ctx.chunk] = trainer.result()
    ctx.trainer = None
    for h in ctx.hooks:
        h.on_chunk_end(ctx)


def _advance(bar, steps: int) -> None:  # noqa: ANN001
    if bar is not None and steps:
        bar.update(steps)


__all__ = [
    "Ensemble",
    "accuracy",
    "default_chunk_size",
    "fit_many",
    "init_models",
    "predict_many",
    "prefer_batched",
]
