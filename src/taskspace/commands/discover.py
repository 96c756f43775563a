"""``taskspace discover``: find the tasks a learner generalises on (AS meta-optimisation).

Meta-trains a task encoder ``h = BN0(P g(x))`` with ``K`` fixed orthonormal heads so that
two learners trained on each head's labels agree on held-out images (see
``reference/task-discovery.md`` sections 4-6), then writes the discovered tasks and what
they look like. Sign convention: task ``k`` labels image ``x`` with ``1[w_k . h(x) > 0]``
(``flip=true`` inverts every label); it is stored in ``tasks.npz`` meta as ``sign``.

``model`` is the learner (the inner learners, and by default the AS evaluation's learner);
``encoder`` is the encoder's backbone (default: the learner's architecture, as in the
reference; regulated discovery: ``encoder=resnet50 encoder.backbone=<simclr weights>``).

Presets fill every option left unset: ``preset=digits`` (the default; sized for a 2-core
CPU on the built-in digits) and ``preset=reference``, the reference's README command, a
GPU preset (``device=cuda``; its 3,200 meta-steps of 50 ResNet-18 inner steps are hours
on a GPU and out of reach on a CPU): CIFAR ResNet-18 encoder backbone and inner learners,
d=K=32, T=50, inner lr 0.01, batch 512, temperature 5, lambda_u 25, one head per step,
fixed inner initialisations, the fixed first held-out batch, held-out split seed 42, and
the final tasks' AS by the 100-epoch ``reference`` recipe with ResNet-18 learners.
``label_bn`` stays ``running`` in both (the reference's encoder never left train mode, so
its labels used batch statistics: ``label_bn=batch`` reproduces that).

Run directory (``runs/discover-...`` or ``out=``): ``config.yaml``, ``splits.npz``,
``checkpoint.pt`` (every ``checkpoint_every`` meta-steps: encoder, Adam, head position,
logs, RNG; rerun the same command to resume), ``log.csv``, ``encoder.safetensors`` (heads
included), ``tasks.npz`` + ``tasks.csv`` (the reference's CSV layout where the dataset
allows it), ``untrained_tasks.npz`` (the same heads on the untrained encoder),
``agreement.csv`` (AS rows, same protocol as ``taskspace agreement``), ``heads.csv`` (per
head: AS, untrained AS, positive rate), ``similarity.csv/.png`` (folded Hamming
similarity), ``coverage.csv`` (held-out accuracy of a linear probe from ``h`` to every
human task; ``evaluation.coverage_probe=reference|fast``), ``galleries/<task>.png``,
``summary.csv`` and, with ``evaluation.baselines=true``, human and random tasks in
``agreement.csv`` and ``as_by_kind.png``. ``evaluation.emb_baselines=N`` adds N random
linear tasks on the trained encoder's ``h`` (the reference's ``emb_lin_task=random``, or
K-way angular sectors with ``evaluation.emb_classes=K``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from taskspace.agreement.score import ROW_COLUMNS, agreement_score
from taskspace.commands.report import write_run_report
from taskspace.config import apply_overrides, flatten, option
from taskspace.data import ImageDataset, load_splits, save_splits
from taskspace.data.config import DataConfig, load_data
from taskspace.discovery.api import discovered_taskset, train_encoder
from taskspace.discovery.artifacts import (
    COVERAGE_PROBES,
    calibrate_bn,
    coverage,
    encoder_embeddings,
    folded_similarity,
)
from taskspace.discovery.embedding_tasks import check_embedding_baselines, embedding_baselines
from taskspace.discovery.encoder import TaskEncoder, load_backbone_weights
from taskspace.discovery.inner import InnerLearners
from taskspace.discovery.metatrain import MetaSettings, MetaTrainer
from taskspace.engine.recipe import Recipe, get_recipe
from taskspace.errors import TaskspaceError
from taskspace.io import read_csv, save_safetensors, write_csv
from taskspace.report.plots import plot_agreement_by_kind, plot_gallery, plot_similarity
from taskspace.runs import RunDir
from taskspace.tasks import (
    TaskSet,
    export_tasks_csv,
    human_tasks,
    random_tasks,
    save_tasks,
)

__all__ = ["DiscoverConfig", "main", "resolve", "run_discover"]


@dataclass
class LearnerConfig:
    """The learner: a registry architecture and its overrides (unset: from the preset)."""

    name: str | None = option(None, "architecture (preset digits: mlp, reference: resnet18)")
    kwargs: dict[str, Any] | None = option(
        None, "architecture overrides (preset digits with the mlp: {widths: [256, 64]})"
    )


@dataclass
class EncoderConfig:
    """The task encoder ``h = BN0(P g(x))`` and its ``K`` fixed heads."""

    name: str | None = option(None, "backbone architecture g (default: the learner's)")
    kwargs: dict[str, Any] | None = option(None, "backbone overrides")
    d: int | None = option(None, "size of h (preset digits 16, reference 32)")
    K: int | None = option(None, "number of heads (tasks), K <= d")
    proj: str = option("linear", "projection P: linear (reference) or mlp")
    head_seed: int = option(0, "seed of the Haar-random heads")
    backbone: str | None = option(None, "pre-trained backbone weights (regulated discovery)")
    freeze_backbone: bool | None = option(None, "keep g frozen (default: with backbone=)")
    normalize_input: bool = option(True, "mean/std inputs (false: raw [0, 1], e.g. SimCLR)")


@dataclass
class MetaConfig:
    """The meta-optimisation (unset options come from the preset)."""

    T: int | None = option(None, "inner SGD steps per meta-step")
    inner_lr: float | None = option(None, "inner SGD lr on 0.5 (L_A + L_B)")
    temperature: float | None = option(None, "soft-label temperature")
    uniformity: float | None = option(None, "lambda_u, weight of the uniformity loss")
    uniformity_t: float = option(2.0, "uniformity loss temperature t")
    meta_steps: int | None = option(None, "outer Adam steps")
    heads_per_step: int | None = option(None, "heads trained per meta-step (reference 1)")
    batch_size: int | None = option(None, "inner batch (split between the two learners)")
    eval_batch_size: int | None = option(None, "held-out batch of the agreement loss")
    outer_lr: float | None = option(None, "encoder Adam lr")
    data_mode: str = option("meta", "meta (learners see disjoint halves) or full")
    fixed_inits: bool | None = option(None, "one stored pair of learner inits (reference)")
    fixed_eval_batch: bool | None = option(None, "the first held-out batch every step")
    learner_bn: str = option("train", "learners' BatchNorm at meta-eval: train or eval")
    grad_checkpoint: bool = option(False, "recompute inner steps in the backward (memory)")
    first_order: bool = option(False, "first-order meta-gradient (label path only)")


@dataclass
class EvaluationConfig:
    """How the discovered tasks are scored and shown."""

    model: LearnerConfig = option(
        factory=LearnerConfig,
        selector="name",
        help="AS learner (default: model.name, default widths)",
    )
    recipe: str | None = option(None, "AS recipe preset (digits: fast, reference: reference)")
    epochs: float | None = option(None, "AS recipe epochs override")
    pairs: int = option(1, "seeded pairs per task")
    baselines: bool = option(False, "also score human and random tasks")
    num_baseline_tasks: int | None = option(None, "human and random tasks each (default K)")
    emb_baselines: int = option(0, "random linear tasks on the trained h (emb_lin_task=random)")
    emb_classes: int = option(2, "classes of those tasks (K-way angular sectors when > 2)")
    coverage_probe: str | None = option(None, "reference (Adam 1e-3, 20 epochs) or fast")
    gallery_size: int = option(10, "images per gallery row")


@dataclass
class DiscoverConfig:
    """Options of ``taskspace discover``."""

    RENAMED: ClassVar[dict[str, str]] = {
        "root": "data.root",
        "split_seed": "data.split_seed",
        "heldout": "data.heldout",
        "train_size": "data.train_size",
        "test_size": "data.test_size",
        "arch": "model",
        "as_arch": "model",
        "as_kwargs": "model.kwargs",
        "model_kwargs": "encoder.kwargs",
        "eval_kwargs": "evaluation.model.kwargs",
        **{
            k: f"encoder.{k}"
            for k in (
                "d",
                "K",
                "proj",
                "head_seed",
                "backbone",
                "freeze_backbone",
                "normalize_input",
            )
        },
        **{
            k: f"meta.{k}"
            for k in (
                "T",
                "inner_lr",
                "temperature",
                "uniformity",
                "uniformity_t",
                "meta_steps",
                "heads_per_step",
                "batch_size",
                "eval_batch_size",
                "outer_lr",
                "data_mode",
                "fixed_inits",
                "fixed_eval_batch",
                "learner_bn",
                "grad_checkpoint",
                "first_order",
            )
        },
        **{
            k: f"evaluation.{k}"
            for k in (
                "recipe",
                "pairs",
                "baselines",
                "num_baseline_tasks",
                "emb_baselines",
                "emb_classes",
                "coverage_probe",
                "gallery_size",
            )
        },
        "as_epochs": "evaluation.epochs",
    }

    data: DataConfig = option(factory=DataConfig, selector="name", help="the images")
    preset: str = option("digits", "digits (CPU) or reference (the paper's command; GPU)")
    model: LearnerConfig = option(factory=LearnerConfig, selector="name", help="the learner")
    encoder: EncoderConfig = option(factory=EncoderConfig, selector="name", help="the task encoder")
    meta: MetaConfig = option(factory=MetaConfig, help="the meta-optimisation")
    evaluation: EvaluationConfig = option(
        factory=EvaluationConfig, help="AS of the tasks, baselines, pictures"
    )
    label_bn: str = option("running", "labels with BatchNorm running (eval) or batch statistics")
    flip: bool = option(False, "label 1 <=> w_k . h(x) <= 0")
    seed: int = option(0, "seed of the encoder, inits, batches, head order")
    checkpoint_every: int = option(10, "meta-steps between checkpoints")
    stop_after: int | None = option(None, "stop after this many meta-steps (rerun to resume)")
    evaluate: bool = option(True, "score and draw the tasks after meta-training")
    device: str = option("cpu", "cpu or cuda")
    out: str | None = option(None, "run directory (default runs/discover-<data>-<model>-<hash>)")
    progress: bool = option(True, "progress bars")
    report: bool = option(True, "write report.html into the run directory at the end")


#: Values of the options left unset, per preset (dotted keys).
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {
        "model.name": "mlp",
        "evaluation.recipe": "fast",
        "data.split_seed": 0,
        "evaluation.coverage_probe": "fast",
        "encoder.d": 16,
        "encoder.K": 16,
        "meta.T": 8,
        "meta.inner_lr": 1.0,
        "meta.batch_size": 128,
        "meta.eval_batch_size": 256,
        "meta.temperature": 5.0,
        "meta.uniformity": 0.25,
        "meta.meta_steps": 40,
        "meta.heads_per_step": 8,
        "meta.outer_lr": 3e-3,
        "meta.fixed_inits": False,
        "meta.fixed_eval_batch": False,
    },
    "reference": {
        "model.name": "resnet18",
        "evaluation.recipe": "reference",
        "data.split_seed": 42,
        "evaluation.coverage_probe": "reference",
        "encoder.d": 32,
        "encoder.K": 32,
        "meta.T": 50,
        "meta.inner_lr": 0.01,
        "meta.batch_size": 512,
        "meta.eval_batch_size": 512,
        "meta.temperature": 5.0,
        "meta.uniformity": 25.0,
        "meta.meta_steps": 3200,
        "meta.heads_per_step": 1,
        "meta.outer_lr": 1e-3,
        "meta.fixed_inits": True,
        "meta.fixed_eval_batch": True,
    },
}
#: The digits preset's learner widths (for the mlp learner only).
PRESET_LEARNER_KWARGS = {"digits": {"widths": [256, 64]}, "reference": {}}

#: Options that do not change meta-training results (a resumed run may change them).
NON_RESULT_KEYS = {
    "out",
    "report",
    "progress",
    "device",
    "checkpoint_every",
    "stop_after",
    "evaluate",
    "meta.grad_checkpoint",
    *(
        f"evaluation.{k}"
        for k in (
            "baselines",
            "num_baseline_tasks",
            "gallery_size",
            "coverage_probe",
            "emb_baselines",
            "emb_classes",
        )
    ),
}


def resolve(cfg: DiscoverConfig) -> DiscoverConfig:
    """Fill unset options from the preset and check the combination."""
    if cfg.preset not in PRESETS:
        raise TaskspaceError(f"unknown preset {cfg.preset!r}; choose one of {sorted(PRESETS)}")
    current = flatten(cfg)
    fill = {k: v for k, v in PRESETS[cfg.preset].items() if current[k] is None}
    cfg = apply_overrides(cfg, fill) if fill else cfg
    model, enc, ev = cfg.model, cfg.encoder, cfg.evaluation
    if model.kwargs is None:  # the preset's learner widths are for the mlp learner only
        model = dataclasses.replace(
            model, kwargs=dict(PRESET_LEARNER_KWARGS[cfg.preset]) if model.name == "mlp" else {}
        )
    enc = dataclasses.replace(
        enc,
        name=enc.name or model.name,
        freeze_backbone=enc.backbone is not None
        if enc.freeze_backbone is None
        else enc.freeze_backbone,
    )
    ev = dataclasses.replace(
        ev, model=dataclasses.replace(ev.model, name=ev.model.name or model.name)
    )
    cfg = dataclasses.replace(cfg, model=model, encoder=enc, evaluation=ev)
    _check(cfg)
    return cfg


def _check(cfg: DiscoverConfig) -> None:
    enc, ev = cfg.encoder, cfg.evaluation
    if enc.d < enc.K:  # type: ignore[operator]
        raise TaskspaceError(
            f"K={enc.K} heads need d >= K orthonormal directions, got "
            f"d={enc.d}; lower encoder.K or raise encoder.d"
        )
    if cfg.meta.meta_steps < 0:  # type: ignore[operator]
        raise TaskspaceError(f"meta.meta_steps must be >= 0, got {cfg.meta.meta_steps}")
    if ev.coverage_probe not in COVERAGE_PROBES:
        raise TaskspaceError(
            f"evaluation.coverage_probe must be one of "
            f"{list(COVERAGE_PROBES)}, got {ev.coverage_probe!r}"
        )
    if cfg.label_bn not in ("running", "batch"):
        raise TaskspaceError(f"label_bn must be 'running' or 'batch', got {cfg.label_bn!r}")
    if enc.freeze_backbone and enc.backbone is None:
        raise TaskspaceError("encoder.freeze_backbone=true needs encoder.backbone=<weights>")
    if cfg.checkpoint_every < 1:
        raise TaskspaceError(f"checkpoint_every must be >= 1, got {cfg.checkpoint_every}")
    check_embedding_baselines(ev.emb_baselines, ev.emb_classes, enc.d)  # type: ignore[arg-type]


def settings_of(cfg: DiscoverConfig) -> MetaSettings:
    """The :class:`MetaSettings` of a resolved config."""
    m = cfg.meta
    return MetaSettings(
        inner_steps=m.T,  # type: ignore[arg-type]
        inner_lr=m.inner_lr,  # type: ignore[arg-type]
        batch_size=m.batch_size,  # type: ignore[arg-type]
        eval_batch_size=m.eval_batch_size,  # type: ignore[arg-type]
        temperature=m.temperature,  # type: ignore[arg-type]
        uniformity=m.uniformity,  # type: ignore[arg-type]
        uniformity_t=m.uniformity_t,
        outer_lr=m.outer_lr,  # type: ignore[arg-type]
        heads_per_step=m.heads_per_step,  # type: ignore[arg-type]
        data_mode=m.data_mode,
        fixed_inits=bool(m.fixed_inits),
        fixed_eval_batch=bool(m.fixed_eval_batch),
        learner_bn=m.learner_bn,
        use_checkpoint=m.grad_checkpoint,
        first_order=m.first_order,
        seed=cfg.seed,
    )


def build_encoder(cfg: DiscoverConfig, ds: ImageDataset) -> TaskEncoder:
    """The task encoder of a resolved config (seeded init; backbone weights loaded)."""
    e = cfg.encoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        enc = TaskEncoder(
            e.name,  # type: ignore[arg-type]
            in_channels=ds.channels,
            image_size=ds.image_size,
            dim=e.d,  # type: ignore[arg-type]
            num_tasks=e.K,  # type: ignore
            proj=e.proj,  # type: ignore[arg-type]
            head_seed=e.head_seed,
            freeze_backbone=bool(e.freeze_backbone),
            normalize_input=e.normalize_input,
            model_kwargs=e.kwargs,
        )
    if e.backbone is not None:
        try:
            load_backbone_weights(enc.backbone, e.backbone)
        except RuntimeError as err:  # size mismatches from load_state_dict
            first = str(err).strip().splitlines()
            msg = next((ln.strip() for ln in first if "size mismatch" in ln), first[-1])
            raise TaskspaceError(
                f"backbone checkpoint {e.backbone} does not fit encoder {e.name!r}: {msg}"
            ) from None
    return enc


def build_learners(cfg: DiscoverConfig, ds: ImageDataset) -> InnerLearners:
    return InnerLearners(
        cfg.model.name,  # type: ignore[arg-type]
        in_channels=ds.channels,
        image_size=ds.image_size,
        model_kwargs=cfg.model.kwargs,
    )


def eval_recipe(cfg: DiscoverConfig) -> Recipe:
    """The AS-evaluation recipe (preset, ``evaluation.epochs`` overriding its epochs)."""
    return get_recipe(cfg.evaluation.recipe, epochs=cfg.evaluation.epochs)  # type: ignore


def run_dir_of(cfg: DiscoverConfig) -> RunDir:
    return RunDir.for_config(
        cfg, "discover", NON_RESULT_KEYS, cfg.out, [cfg.data.name, cfg.model.name or ""]
    )


LOG_COLUMNS = ["step", "loss", "l_ag", "uniformity", "proxy_as", "heads", "seconds"]
HEAD_COLUMNS = [
    "head",
    "task",
    "as_heldout",
    "as_test",
    "untrained_as_heldout",
    "untrained_as_test",
    "positive_rate",
    "untrained_positive_rate",
    "max_similarity",
]


def meta_train(cfg: DiscoverConfig, ds: ImageDataset, rd: RunDir) -> MetaTrainer:
    """Run (or resume) the meta-training of a resolved config in its run directory."""
    trainer = MetaTrainer(
        build_encoder(cfg, ds), build_learners(cfg, ds), ds, settings_of(cfg), device=cfg.device
    )
    return train_encoder(
        trainer,
        cfg.meta.meta_steps,  # type: ignore[arg-type]
        checkpoint=rd / "checkpoint.pt",
        checkpoint_every=cfg.checkpoint_every,
        stop_after=cfg.stop_after,
        progress=cfg.progress,
        on_checkpoint=lambda t: write_csv(rd / "log.csv", t.logs, LOG_COLUMNS),
    )


def _task_meta(cfg: DiscoverConfig) -> dict[str, Any]:
    return {
        "dataset": cfg.data.name,
        "as_arch": cfg.model.name,
        "seed": cfg.seed,
        "head_seed": cfg.encoder.head_seed,
    }


def _as_per_task(rows: list[dict]) -> dict[tuple[str, str], float]:
    acc: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        acc.setdefault((r["task"], r["split"]), []).append(float(r["agreement"]))
    return {k: sum(v) / len(v) for k, v in acc.items()}


def score_tasks(
    cfg: DiscoverConfig, ds: ImageDataset, enc: TaskEncoder, tasks: TaskSet, untrained: TaskSet
) -> list[dict]:
    """AS rows of the discovered tasks, the untrained heads and the baselines."""
    ev = cfg.evaluation
    k = len(tasks)
    sets = [tasks, untrained]
    if ev.baselines:
        n = ev.num_baseline_tasks or k
        sets += [
            human_tasks(
                ds.classes, ds.num_classes, max_tasks=n, seed=cfg.seed, include_original=False
            ),
            random_tasks(len(ds), n, seed=cfg.seed),
        ]
    emb_kind: dict[str, str] = {}  # random linear tasks on the trained encoder's h
    if ev.emb_baselines:
        emb = embedding_baselines(
            encoder_embeddings(enc, ds, cfg.label_bn),
            ev.emb_baselines,
            ev.emb_classes,
            seed=cfg.seed,
            flip=cfg.flip,
        )
        sets.append(emb)
        emb_kind = {n: emb.meta["variant"] for n in emb.names}
    rows = agreement_score(
        ds,
        TaskSet.concat(*sets),
        model=ev.model.name,  # type: ignore
        recipe=eval_recipe(cfg),
        pairs=ev.pairs,
        seed=cfg.seed,
        device=cfg.device,
        progress=cfg.progress,
        model_kwargs=ev.model.kwargs,
    )
    for r in rows:  # untrained heads and embedding baselines get their own kind label
        if str(r["task"]).startswith("untrained-"):
            r["kind"] = "untrained"
        r["kind"] = emb_kind.get(r["task"], r["kind"])
    return rows


def evaluate_run(
    cfg: DiscoverConfig, ds: ImageDataset, trainer: MetaTrainer, rd: RunDir
) -> list[dict]:
    """Write tasks, AS, similarity, coverage and galleries of a finished meta-training."""
    enc = trainer.enc.float().cpu()
    save_safetensors(rd / "encoder.safetensors", enc.state_dict())
    tasks, scores = discovered_taskset(
        enc, ds, label_bn=cfg.label_bn, flip=cfg.flip, meta=_task_meta(cfg)
    )
    save_tasks(rd / "tasks.npz", tasks)
    export_tasks_csv(rd / "tasks.csv", tasks, dataset=ds)
    fresh = calibrate_bn(build_encoder(cfg, ds), ds, ds.split("train"))
    untrained, _ = discovered_taskset(
        fresh, ds, label_bn=cfg.label_bn, flip=cfg.flip, prefix="untrained", meta=_task_meta(cfg)
    )
    save_tasks(rd / "untrained_tasks.npz", untrained)
    if not (rd / "agreement.csv").exists():
        write_csv(rd / "agreement.csv", score_tasks(cfg, ds, enc, tasks, untrained), ROW_COLUMNS)
    rows = read_csv(rd / "agreement.csv")
    per = _as_per_task(rows)
    k = len(tasks)
    sim = folded_similarity(tasks.labels)
    write_csv(
        rd / "similarity.csv",
        [
            {"task": tasks.names[i], **{tasks.names[j]: float(sim[i, j]) for j in range(k)}}
            for i in range(k)
        ],
        ["task", *tasks.names],
    )
    plot_similarity(sim, tasks.names, rd / "similarity.png")
    pos = tasks.labels.float().mean(1)
    upos = untrained.labels.float().mean(1)
    off = sim.clone()
    off.fill_diagonal_(0.0)
    heads = [
        {
            "head": i,
            "task": tasks.names[i],
            "as_heldout": per.get((tasks.names[i], "heldout")),
            "as_test": per.get((tasks.names[i], "test")),
            "untrained_as_heldout": per.get((untrained.names[i], "heldout")),
            "untrained_as_test": per.get((untrained.names[i], "test")),
            "positive_rate": float(pos[i]),
            "untrained_positive_rate": float(upos[i]),
            "max_similarity": float(off[i].max()) if k > 1 else None,
        }
        for i in range(k)
    ]
    write_csv(rd / "heads.csv", heads, HEAD_COLUMNS)
    h = encoder_embeddings(enc, ds, cfg.label_bn)
    human = human_tasks(ds.classes, ds.num_classes, seed=cfg.seed, include_original=False)
    cov = coverage(
        h,
        human.labels,
        ds.split("train"),
        ds.split("heldout"),
        probe=cfg.evaluation.coverage_probe,  # type: ignore[arg-type]
        seed=cfg.seed,
    )
    write_csv(
        rd / "coverage.csv",
        [{"task": n, "probe_accuracy": float(a)} for n, a in zip(human.names, cov)],
        ["task", "probe_accuracy"],
    )
    for i in range(k):
        as_h = per.get((tasks.names[i], "heldout"))
        title = (
            f"{tasks.names[i]}  AS {as_h:.3f}  pos rate {float(pos[i]):.2f}"
            if as_h is not None
            else tasks.names[i]
        )
        plot_gallery(
            ds,
            scores[:, i],
            ds.split("train"),
            rd / "galleries" / f"{tasks.names[i]}.png",
            title=title,
            n=cfg.evaluation.gallery_size,
        )
    summary = summarize_run(rows, heads, sim, cov)
    write_csv(rd / "summary.csv", summary, ["metric", "value"])
    plot_agreement_by_kind(rows, rd / "as_by_kind.png")
    return summary


def summarize_run(
    rows: list[dict], heads: list[dict], sim: torch.Tensor, cov: torch.Tensor
) -> list[dict]:
    """Headline numbers: mean AS by kind and split, positive rates, similarity, coverage."""
    out: list[dict] = []
    per_kind: dict[tuple[str, str], dict[str, list[float]]] = {}
    for r in rows:
        per_kind.setdefault((r["kind"], r["split"]), {}).setdefault(r["task"], []).append(
            float(r["agreement"])
        )
    for (kind, split), tasks in sorted(per_kind.items()):
        vals = [sum(v) / len(v) for v in tasks.values()]
        out.append({"metric": f"as_{split}_{kind}", "value": sum(vals) / len(vals)})
    k = sim.shape[0]
    pos = [float(h["positive_rate"]) for h in heads]
    out += [
        {"metric": "positive_rate_min", "value": min(pos)},
        {"metric": "positive_rate_max", "value": max(pos)},
        {
            "metric": "similarity_offdiag_mean",
            "value": float(sim[~torch.eye(k, dtype=torch.bool)].mean()) if k > 1 else 0.0,
        },
        {"metric": "coverage_mean", "value": float(cov.mean())},
    ]
    return out


def run_discover(cfg: DiscoverConfig) -> Path:
    """Run (or resume) ``taskspace discover``; returns the run directory."""
    cfg = resolve(cfg)
    rd = run_dir_of(cfg)
    rd.check(cfg)
    ds = load_data(cfg.data, progress=cfg.progress)
    if (rd / "splits.npz").exists():
        ds.use_splits(load_splits(rd / "splits.npz"))
    build_encoder(cfg, ds)  # validate arch, dims and backbone before writing anything
    build_learners(cfg, ds)
    settings_of(cfg).check(cfg.encoder.K)  # type: ignore[arg-type]
    rd.start(cfg, lambda: save_splits(rd / "splits.npz", ds.splits))
    trainer = meta_train(cfg, ds, rd)
    if trainer.step < cfg.meta.meta_steps:  # type: ignore[operator]
        print(f"stopped at meta-step {trainer.step}/{cfg.meta.meta_steps}; rerun to resume")
        return rd.path
    if cfg.evaluate:
        summary = evaluate_run(cfg, ds, trainer, rd)
        rd.mark_finished({s["metric"]: round(float(s["value"]), 6) for s in summary})
    return rd.path


def format_summary(summary: list[dict]) -> str:
    w = max([32, *(len(str(s["metric"])) + 1 for s in summary)])
    lines = [f"{'metric':<{w}} {'value':>8}"]
    lines += [f"{s['metric']:<{w}} {float(s['value']):>8.3f}" for s in summary]
    return "\n".join(lines)


def main(cfg: DiscoverConfig) -> int:
    out = run_discover(cfg)
    if (out / "summary.csv").exists():
        print(format_summary(read_csv(out / "summary.csv")))
    print(f"run directory: {out}")
    write_run_report(out, cfg.report)
    return 0
