"""``taskspace discover``: find the tasks a learner generalises on (AS meta-optimisation).

Meta-trains a task encoder ``h = BN0(P g(x))`` with ``K`` fixed orthonormal heads so that
two learners trained on each head's labels agree on held-out images (see
``reference/task-discovery.md`` sections 4-6), then writes the discovered tasks and what
they look like. Sign convention: task ``k`` labels image ``x`` with ``1[w_k . h(x) > 0]``
(``flip=true`` inverts every label); it is stored in ``tasks.npz`` meta as ``sign``.

Presets: ``preset=digits`` (the default; sized for a 2-core CPU on the built-in digits) and
``preset=reference``, the reference's README command, a GPU preset (``device=cuda``; its
3,200 meta-steps of 50 ResNet-18 inner steps are hours on a GPU and out of reach on a CPU):
CIFAR ResNet-18 encoder backbone and inner learners, d=K=32, T=50, inner lr 0.01, batch 512,
temperature 5, lambda_u 25, one head per step, fixed inner initialisations, the fixed first
held-out batch, held-out split seed 42, and the final tasks' AS by the 100-epoch
``reference`` recipe with ResNet-18 learners. Any option given explicitly overrides the
preset. ``label_bn`` stays ``running`` in both (the reference's encoder never left train
mode, so its labels used batch statistics: ``label_bn=batch`` reproduces that).

Run directory (``runs/discover-...`` or ``out=``): ``config.yaml``, ``splits.npz``,
``checkpoint.pt`` (every ``checkpoint_every`` meta-steps: encoder, Adam, head position,
logs, RNG; rerun the same command to resume), ``log.csv``, ``encoder.safetensors`` (heads
included), ``tasks.npz`` + ``tasks.csv`` (reference CSV layout), ``untrained_tasks.npz``
(the same heads on the untrained encoder), ``agreement.csv`` (AS rows, same protocol as
``taskspace agreement``), ``heads.csv`` (per head: AS, untrained AS, positive rate),
``similarity.csv/.png`` (folded Hamming similarity), ``coverage.csv`` (held-out accuracy of
a linear probe from ``h`` to every human task; ``coverage_probe=reference|fast``),
``galleries/<task>.png``, ``summary.csv`` and, with ``baselines=true``, human and random
tasks in ``agreement.csv`` and ``as_by_kind.png``. ``emb_baselines=N`` (default 0) adds N
random linear tasks on the trained encoder's ``h`` to ``agreement.csv``: random hyperplanes
(the reference's ``emb_lin_task=random``, kind ``emb-random``) or, with ``emb_classes=K``
above 2, K-way angular sectors (kind ``emb-<K>way``; ``discovery/embedding_tasks.py``).

Measured on digits (``taskspace discover``, preset digits: 40 meta-steps of 8 heads, about
10-60 s of meta-training on 2 cores; AS by the ``fast`` recipe with the reference mlp,
held-out / test): discovered 0.969 / 0.967, the same heads on the untrained encoder
0.836 / 0.834, human 5-vs-5 0.985 / 0.988, random 0.741 / 0.734 (human and random from the
same protocol with ``baselines=true``); positive rates 0.39-0.59, mean off-diagonal folded
similarity 0.61. With ``uniformity=1``: discovered 0.935 / 0.931, similarity 0.54.
Meta-training is deterministic for a seed up to the floating-point summation order of
multi-threaded BLAS (MKL's dynamic threading): two processes can drift apart after a few
steps; one process (and a resume) repeats exactly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taskspace.agreement.run import DataConfig, dataset_of
from taskspace.agreement.score import ROW_COLUMNS, agreement_score
from taskspace.config import apply_overrides, to_dict
from taskspace.data import ImageDataset, load_splits, save_splits
from taskspace.discovery.artifacts import (
    COVERAGE_PROBES,
    calibrate_bn,
    coverage,
    encoder_embeddings,
    folded_similarity,
    hard_labels,
    plot_gallery,
    plot_similarity,
)
from taskspace.discovery.embedding_tasks import check_embedding_baselines, embedding_baselines
from taskspace.discovery.encoder import TaskEncoder, load_backbone_weights
from taskspace.discovery.inner import InnerLearners
from taskspace.discovery.metatrain import MetaSettings, MetaTrainer
from taskspace.engine import get_recipe
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, write_csv, write_yaml
from taskspace.rundir import check_run_config, config_digest
from taskspace.tasks import TaskSet, export_tasks_csv, human_tasks, random_tasks, save_tasks

#: Values of the options left unset (None), per preset.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "arch": "mlp", "recipe": "fast", "split_seed": 0, "coverage_probe": "fast",
        "d": 16, "K": 16, "T": 8, "inner_lr": 1.0, "batch_size": 128, "eval_batch_size": 256,
        "temperature": 5.0, "uniformity": 0.25, "meta_steps": 40, "heads_per_step": 8,
        "outer_lr": 3e-3,
        "fixed_inits": False, "fixed_eval_batch": False,
        "as_kwargs": {"widths": [256, 64]},
    },
    "reference": {
        "arch": "resnet18", "recipe": "reference", "split_seed": 42,
        "coverage_probe": "reference",
        "d": 32, "K": 32, "T": 50, "inner_lr": 0.01, "batch_size": 512, "eval_batch_size": 512,
        "temperature": 5.0, "uniformity": 25.0, "meta_steps": 3200, "heads_per_step": 1,
        "outer_lr": 1e-3,
        "fixed_inits": True, "fixed_eval_batch": True, "as_kwargs": {},
    },
}


@dataclass
class DiscoverConfig(DataConfig):
    """Options of ``taskspace discover`` (``key=value``); None means "from the preset"."""

    preset: str = "digits"
    split_seed: int | None = None  # type: ignore[assignment]
    arch: str | None = None
    as_arch: str | None = None
    model_kwargs: Any = None
    as_kwargs: Any = None
    d: int | None = None
    K: int | None = None
    T: int | None = None
    inner_lr: float | None = None
    temperature: float | None = None
    uniformity: float | None = None
    uniformity_t: float = 2.0
    meta_steps: int | None = None
    heads_per_step: int | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    outer_lr: float | None = None
    data_mode: str = "meta"
    fixed_inits: bool | None = None
    fixed_eval_batch: bool | None = None
    learner_bn: str = "train"
    label_bn: str = "running"
    grad_checkpoint: bool = False
    first_order: bool = False
    proj: str = "linear"
    backbone: str | None = None
    freeze_backbone: bool | None = None
    normalize_input: bool = True
    flip: bool = False
    head_seed: int = 0
    seed: int = 0
    checkpoint_every: int = 10
    stop_after: int | None = None
    evaluate: bool = True
    baselines: bool = False
    num_baseline_tasks: int | None = None
    recipe: str | None = None
    as_epochs: float | None = None
    eval_kwargs: Any = None
    pairs: int = 1
    coverage_probe: str | None = None
    gallery_size: int = 10
    device: str = "cpu"
    out: str | None = None
    progress: bool = True
    emb_baselines: int = 0
    emb_classes: int = 2


#: Options that do not change results (a resumed run may change them).
NON_RESULT_KEYS = {"out", "progress", "device", "checkpoint_every", "stop_after", "evaluate",
                   "baselines", "num_baseline_tasks", "gallery_size", "grad_checkpoint",
                   "coverage_probe", "emb_baselines", "emb_classes"}


def resolve(cfg: DiscoverConfig) -> DiscoverConfig:
    """Fill unset options from the preset and check the combination."""
    if cfg.preset not in PRESETS:
        raise TaskspaceError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    preset = dict(PRESETS[cfg.preset])
    preset_as_kwargs = preset.pop("as_kwargs")
    values = {k: v for k, v in preset.items() if getattr(cfg, k) is None}
    cfg = dataclasses.replace(cfg, **values)
    if cfg.as_arch is None:
        cfg = dataclasses.replace(cfg, as_arch=cfg.arch)
    if cfg.as_kwargs is None:  # the preset's learner widths are for the mlp learner only
        cfg = dataclasses.replace(cfg, as_kwargs=preset_as_kwargs if cfg.as_arch == "mlp"
                                  else {})
    if cfg.freeze_backbone is None:
        cfg = dataclasses.replace(cfg, freeze_backbone=cfg.backbone is not None)
    for key in ("model_kwargs", "as_kwargs", "eval_kwargs"):
        v = getattr(cfg, key)
        if v is not None and not isinstance(v, dict):
            raise TaskspaceError(f"{key} must be a mapping like {{widths: [256, 64]}}, got {v!r}")
    if cfg.d < cfg.K:  # type: ignore[operator]
        raise TaskspaceError(f"K={cfg.K} heads need d >= K orthonormal directions, got d={cfg.d};"
                             " lower K or raise d")
    if cfg.meta_steps < 0:  # type: ignore[operator]
        raise TaskspaceError(f"meta_steps must be >= 0, got {cfg.meta_steps}")
    if cfg.coverage_probe not in COVERAGE_PROBES:
        raise TaskspaceError(f"coverage_probe must be one of {list(COVERAGE_PROBES)}, got "
                             f"{cfg.coverage_probe!r}")
    if cfg.label_bn not in ("running", "batch"):
        raise TaskspaceError(f"label_bn must be 'running' or 'batch', got {cfg.label_bn!r}")
    if cfg.freeze_backbone and cfg.backbone is None:
        raise TaskspaceError("freeze_backbone=true needs backbone=<checkpoint file>")
    return cfg


def settings_of(cfg: DiscoverConfig) -> MetaSettings:
    return MetaSettings(
        inner_steps=cfg.T, inner_lr=cfg.inner_lr, batch_size=cfg.batch_size,  # type: ignore
        eval_batch_size=cfg.eval_batch_size, temperature=cfg.temperature,  # type: ignore
        uniformity=cfg.uniformity, uniformity_t=cfg.uniformity_t,  # type: ignore[arg-type]
        outer_lr=cfg.outer_lr, heads_per_step=cfg.heads_per_step,  # type: ignore[arg-type]
        data_mode=cfg.data_mode, fixed_inits=bool(cfg.fixed_inits),
        fixed_eval_batch=bool(cfg.fixed_eval_batch), learner_bn=cfg.learner_bn,
        use_checkpoint=cfg.grad_checkpoint, first_order=cfg.first_order, seed=cfg.seed,
    )


def build_encoder(cfg: DiscoverConfig, ds: ImageDataset) -> TaskEncoder:
    """The task encoder of a resolved config (seeded init; backbone weights loaded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        enc = TaskEncoder(cfg.arch, in_channels=ds.channels, image_size=ds.image_size,
                          dim=cfg.d, num_tasks=cfg.K, proj=cfg.proj,  # type: ignore[arg-type]
                          head_seed=cfg.head_seed, freeze_backbone=bool(cfg.freeze_backbone),
                          normalize_input=cfg.normalize_input, model_kwargs=cfg.model_kwargs)
    if cfg.backbone is not None:
        try:
            load_backbone_weights(enc.backbone, cfg.backbone)
        except RuntimeError as err:  # size mismatches from load_state_dict
            first = str(err).strip().splitlines()
            msg = next((ln.strip() for ln in first if "size mismatch" in ln), first[-1])
            raise TaskspaceError(f"backbone checkpoint {cfg.backbone} does not fit arch "
                                 f"{cfg.arch!r}: {msg}") from None
    return enc


def build_learners(cfg: DiscoverConfig, ds: ImageDataset) -> InnerLearners:
    return InnerLearners(cfg.as_arch or cfg.arch, in_channels=ds.channels,
                         image_size=ds.image_size, model_kwargs=cfg.as_kwargs)


def recipe_of(cfg: DiscoverConfig):  # noqa: ANN201
    """The AS-evaluation recipe (``recipe`` preset, ``as_epochs`` overriding its epochs)."""
    return get_recipe(cfg.recipe, epochs=cfg.as_epochs)


def default_out(cfg: DiscoverConfig) -> Path:
    """Deterministic run directory of a config, so rerunning the command resumes it."""
    return Path("runs") / f"discover-{cfg.data}-{cfg.arch}-{config_digest(cfg, NON_RESULT_KEYS)}"


def _progress(enabled: bool, total: int, initial: int):  # noqa: ANN202
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="meta-steps", leave=False)


def meta_train(cfg: DiscoverConfig, ds: ImageDataset, out: Path) -> MetaTrainer:
    """Run (or resume) the meta-training of a resolved config inside run directory ``out``."""
    enc = build_encoder(cfg, ds)
    trainer = MetaTrainer(enc, build_learners(cfg, ds), ds, settings_of(cfg), device=cfg.device)
    ckpt = out / "checkpoint.pt"
    if ckpt.exists():
        trainer.load(ckpt)
        print(f"resuming {out} at meta-step {trainer.step}/{cfg.meta_steps}")
    bar = _progress(cfg.progress, cfg.meta_steps, trainer.step)  # type: ignore[arg-type]
    done_here = 0
    while trainer.step < cfg.meta_steps:  # type: ignore[operator]
        if cfg.stop_after is not None and done_here >= cfg.stop_after:
            break
        log = trainer.meta_step()
        done_here += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(proxy_as=f"{log['proxy_as']:.3f}", loss=f"{log['loss']:.3f}")
        if trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.meta_steps:
            trainer.save(ckpt)
            write_csv(out / "log.csv", trainer.logs, LOG_COLUMNS)
    if bar is not None:
        bar.close()
    trainer.save(ckpt)
    write_csv(out / "log.csv", trainer.logs, LOG_COLUMNS)
    return trainer


LOG_COLUMNS = ["step", "loss", "l_ag", "uniformity", "proxy_as", "heads", "seconds"]
HEAD_COLUMNS = ["head", "task", "as_heldout", "as_test", "untrained_as_heldout",
                "untrained_as_test", "positive_rate", "untrained_positive_rate",
                "max_similarity"]


def save_encoder(enc: TaskEncoder, path: Path) -> None:
    from safetensors.torch import save_file

    from taskspace.io import atomic_write

    state = {k: v.detach().cpu().contiguous() for k, v in enc.state_dict().items()}
    atomic_write(path, lambda p: save_file(state, str(p)))


def discovered_taskset(enc: TaskEncoder, ds: ImageDataset, cfg: DiscoverConfig,
                       prefix: str = "discovered") -> tuple[TaskSet, torch.Tensor]:
    """Hard labels of every head over all images, with the sign convention in meta."""
    h = encoder_embeddings(enc, ds, cfg.label_bn)
    scores = h @ enc.heads.float().cpu().t()
    labels = hard_labels(scores, cfg.flip)
    names = [f"{prefix}-{k:02d}" for k in range(cfg.K)]  # type: ignore[arg-type]
    meta = {
        "sign": "label = 1[w_k . h(x) <= 0]" if cfg.flip else "label = 1[w_k . h(x) > 0]",
        "flip": bool(cfg.flip), "dataset": cfg.data, "encoder_arch": cfg.arch,
        "as_arch": cfg.as_arch, "d": cfg.d, "label_bn": cfg.label_bn, "seed": cfg.seed,
        "head_seed": cfg.head_seed,
        "tasks": {n: {"head": k} for k, n in enumerate(names)},
    }
    return TaskSet(labels, names, ["discovered"] * len(names), meta), scores


def _as_per_task(rows: list[dict]) -> dict[tuple[str, str], float]:
    acc: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        acc.setdefault((r["task"], r["split"]), []).append(float(r["agreement"]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def evaluate_run(cfg: DiscoverConfig, ds: ImageDataset, trainer: MetaTrainer, out: Path) -> list:
    """Write tasks, AS, similarity, coverage and galleries of a finished meta-training."""
    enc = trainer.enc.float().cpu()
    save_encoder(enc, out / "encoder.safetensors")
    tasks, scores = discovered_taskset(enc, ds, cfg)
    save_tasks(out / "tasks.npz", tasks)
    export_tasks_csv(out / "tasks.csv", tasks)
    fresh = calibrate_bn(build_encoder(cfg, ds), ds, ds.split("train"))
    untrained, _ = discovered_taskset(fresh, ds, cfg, prefix="untrained")
    save_tasks(out / "untrained_tasks.npz", untrained)
    k = len(tasks)
    if not (out / "agreement.csv").exists():
        sets = [tasks, untrained]
        if cfg.baselines:
            n = cfg.num_baseline_tasks or k
            sets += [human_tasks(ds.classes, ds.num_classes, max_tasks=n, seed=cfg.seed,
                                 include_original=False),
                     random_tasks(len(ds), n, seed=cfg.seed)]
        emb_kind: dict[str, str] = {}  # random linear tasks on the trained encoder's h
        if cfg.emb_baselines:
            emb = embedding_baselines(encoder_embeddings(enc, ds, cfg.label_bn),
                                      cfg.emb_baselines, cfg.emb_classes, seed=cfg.seed,
                                      flip=cfg.flip)
            sets.append(emb)
            emb_kind = {n: emb.meta["variant"] for n in emb.names}
        every = TaskSet.concat(*sets)
        rows = agreement_score(ds, every, model=cfg.as_arch or cfg.arch,
                               recipe=recipe_of(cfg), pairs=cfg.pairs, seed=cfg.seed,
                               device=cfg.device, progress=cfg.progress,
                               model_kwargs=cfg.eval_kwargs)
        for r in rows:  # untrained heads and embedding baselines get their own kind label
            if str(r["task"]).startswith("untrained-"):
                r["kind"] = "untrained"
            r["kind"] = emb_kind.get(r["task"], r["kind"])
        write_csv(out / "agreement.csv", rows, ROW_COLUMNS)
    rows = read_csv(out / "agreement.csv")
    per = _as_per_task(rows)
    sim = folded_similarity(tasks.labels)
    write_csv(out / "similarity.csv",
              [{"task": tasks.names[i], **{tasks.names[j]: float(sim[i, j]) for j in range(k)}}
               for i in range(k)], ["task", *tasks.names])
    plot_similarity(sim, tasks.names, out / "similarity.png")
    pos = tasks.labels.float().mean(1)
    upos = untrained.labels.float().mean(1)
    off = sim.clone()
    off.fill_diagonal_(0.0)
    heads = []
    for i in range(k):
        heads.append({
            "head": i, "task": tasks.names[i],
            "as_heldout": per.get((tasks.names[i], "heldout")),
            "as_test": per.get((tasks.names[i], "test")),
            "untrained_as_heldout": per.get((untrained.names[i], "heldout")),
            "untrained_as_test": per.get((untrained.names[i], "test")),
            "positive_rate": float(pos[i]), "untrained_positive_rate": float(upos[i]),
            "max_similarity": float(off[i].max()) if k > 1 else None,
        })
    write_csv(out / "heads.csv", heads, HEAD_COLUMNS)
    h = encoder_embeddings(enc, ds, cfg.label_bn)
    human = human_tasks(ds.classes, ds.num_classes, seed=cfg.seed, include_original=False)
    cov = coverage(h, human.labels, ds.split("train"), ds.split("heldout"),
                   probe=cfg.coverage_probe, seed=cfg.seed)
    write_csv(out / "coverage.csv",
              [{"task": n, "probe_accuracy": float(a)} for n, a in zip(human.names, cov)],
              ["task", "probe_accuracy"])
    gal_idx = ds.split("train")
    for i in range(k):
        as_h = per.get((tasks.names[i], "heldout"))
        title = (f"{tasks.names[i]}  AS {as_h:.3f}  pos rate {float(pos[i]):.2f}"
                 if as_h is not None else tasks.names[i])
        plot_gallery(ds, scores[:, i], gal_idx, out / "galleries" / f"{tasks.names[i]}.png",
                     title=title, n=cfg.gallery_size)
    summary = summarize_run(rows, heads, sim, cov)
    write_csv(out / "summary.csv", summary, ["metric", "value"])
    from taskspace.report.plots import plot_agreement_by_kind

    plot_agreement_by_kind(rows, out / "as_by_kind.png")
    return summary


def summarize_run(rows: list[dict], heads: list[dict], sim: torch.Tensor,
                  cov: torch.Tensor) -> list[dict]:
    """Headline numbers: mean AS by kind and split, positive rates, similarity, coverage."""
    out: list[dict] = []
    per_kind: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        per_kind.setdefault((r["kind"], r["split"]), {}).setdefault(r["task"], []).append(
            float(r["agreement"]))
    for (kind, split), tasks in sorted(per_kind.items()):
        vals = [sum(v) / len(v) for v in tasks.values()]
        out.append({"metric": f"as_{split}_{kind}", "value": sum(vals) / len(vals)})
    k = sim.shape[0]
    pos = [float(h["positive_rate"]) for h in heads]
    out += [
        {"metric": "positive_rate_min", "value": min(pos)},
        {"metric": "positive_rate_max", "value": max(pos)},
        {"metric": "similarity_offdiag_mean",
         "value": float(sim[~torch.eye(k, dtype=torch.bool)].mean()) if k > 1 else 0.0},
        {"metric": "coverage_mean", "value": float(cov.mean())},
    ]
    return out


def run_discover(cfg: DiscoverConfig) -> Path:
    """Run (or resume) ``taskspace discover``; returns the run directory."""
    cfg = resolve(cfg)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    check_run_config(out, cfg, NON_RESULT_KEYS)
    ds = dataset_of(cfg)
    if (out / "splits.npz").exists():
        ds.use_splits(load_splits(out / "splits.npz"))
    build_encoder(cfg, ds)  # validate arch, dims and backbone before writing anything
    build_learners(cfg, ds)
    settings_of(cfg).check(cfg.K)  # type: ignore[arg-type]
    check_embedding_baselines(cfg.emb_baselines, cfg.emb_classes, cfg.d)  # type: ignore
    if not (out / "config.yaml").exists():
        save_splits(out / "splits.npz", ds.splits)
        write_yaml(out / "config.yaml", to_dict(cfg))
    trainer = meta_train(cfg, ds, out)
    if trainer.step < cfg.meta_steps:  # type: ignore[operator]
        print(f"stopped at meta-step {trainer.step}/{cfg.meta_steps}; rerun to resume")
        return out
    if cfg.evaluate:
        evaluate_run(cfg, ds, trainer, out)
    return out


def load_run_config(run_dir: str | Path) -> DiscoverConfig:
    """The resolved config stored in a run directory."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise TaskspaceError(f"{run_dir} is not a discovery run directory (no config.yaml)")
    return apply_overrides(DiscoverConfig(), yaml.safe_load(path.read_text()) or {})


def format_summary(summary: list[dict]) -> str:
    lines = [f"{'metric':<32} {'value':>8}"]
    lines += [f"{s['metric']:<32} {float(s['value']):>8.3f}" for s in summary]
    return "\n".join(lines)


def main(cfg: DiscoverConfig) -> int:
    out = run_discover(cfg)
    if (out / "summary.csv").exists():
        print(format_summary(read_csv(out / "summary.csv")))
    print(f"run directory: {out}")
    return 0
