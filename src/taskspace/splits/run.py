"""``taskspace split`` and ``taskspace split-eval``: adversarial splits and the headline table.

``taskspace split`` builds adversarial splits and writes a run directory with
``config.yaml``, ``targets.npz`` / ``discovered.npz`` (the tasks used), ``splits/*.npz`` (one
file per split, random baselines of the same sizes included), ``splits.csv`` (sizes, target
positive rate and class counts of both sides) and, with ``export_partitions=true``,
``partitions/*.csv`` in the CelebA ``list_eval_partition.csv`` layout.

- ``discovered=<discovery run dir | tasks file>``: the tasks ``tau_d`` (first
  ``num_discovered``); ``discovered=human`` uses human tasks other than the targets and
  ``discovered=standin`` the signs of random projections of a trained MLP's features (a
  stand-in, see :func:`taskspace.splits.builders.feature_sign_tasks`).
- ``targets=human`` (the reference targets 0, 11, 18, 27, 31, 38, 40 that exist for the
  dataset), a list of human-task indices (``targets=0,11``) or a tasks file.
- ``kind=binary|multiclass|random_network`` (``seeds=0,1,2,3`` and ``net=mlp`` for the
  random network), or ``import_file=<file>`` (a reference ``.torch`` file, a CelebA-layout
  partition ``.csv`` or a split ``.npz``). A reference CIFAR file indexes torchvision's
  ``CIFAR10(train=True)``: it is placed through the image ids of CIFAR loaded from the
  python batches and refused on an ImageFolder tree. An imported split's 2-way target is
  the file's own (``cifar_splits.torch`` keys are human-task indices), else the one task
  ``targets=`` names (``targets=11``); with several (the default ``human``) only the class
  setting is evaluated.
- Task files (``targets=``, ``discovered=``) take ``<file>[:<format>]`` as ``taskspace
  agreement tasks=`` does (:func:`taskspace.tasks.load_tasks`).
- ``random_baseline=matched|reference``: size-matched random splits (default) or the
  reference's one half/half split of the pool, seed ``seed``
  (:func:`taskspace.splits.evaluate.with_random_baselines`); ``random_baselines=false``
  drops them.

``taskspace split-eval`` trains the learner on every split (adversarial and random, many at
once) and writes ``results.csv`` (one row per split and setting), ``headline.csv``,
``headline.png`` and ``split-<name>.png`` pictures; it reads ``splits=<split run dir>`` or
builds the splits itself from the same options. It resumes per chunk of splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from taskspace.agreement.run import DataConfig, dataset_of
from taskspace.config import apply_overrides, to_dict
from taskspace.data import ImageDataset
from taskspace.engine import get_recipe
from taskspace.errors import TaskspaceError
from taskspace.io import atomic_write, read_csv, write_csv, write_yaml
from taskspace.rundir import check_run_config, config_digest
from taskspace.splits.builders import (
    Split,
    adversarial_splits,
    feature_sign_tasks,
    random_network_split,
    resolve_pool,
)
from taskspace.splits.evaluate import (
    HEADLINE_COLUMNS,
    RESULT_COLUMNS,
    check_random_baseline,
    evaluate_splits,
    format_headline,
    summarize_headline,
    with_random_baselines,
)
from taskspace.splits.files import (
    BALANCE_COLUMNS,
    balance_row,
    export_partition,
    import_partition,
    load_reference_splits,
    load_split,
    save_split,
)
from taskspace.tasks import (
    REFERENCE_TARGETS,
    TaskSet,
    human_task_count,
    human_task_name,
    human_task_subset,
    human_tasks,
    load_tasks,
    parse_task_spec,
)


@dataclass
class SplitConfig(DataConfig):
    """Options of ``taskspace split`` (all settable as ``key=value``)."""

    discovered: str = "standin"
    num_discovered: int = 8
    standin_model: str = "mlp"
    targets: str = "human"
    kind: str = "binary"
    flip: bool = False
    pool: str = "nontest"
    net: str = "mlp"
    seeds: list[int] | None = None
    random_baselines: bool = True
    random_baseline: str = "matched"
    import_file: str | None = None
    export_partitions: bool = False
    seed: int = 0
    out: str | None = None
    progress: bool = True


@dataclass
class SplitEvalConfig(SplitConfig):
    """Options of ``taskspace split-eval``: the split options, or ``splits=<run dir>``."""

    splits: str | None = None
    model: str = "mlp"
    widths: list[int] | None = None
    recipe: str = "fast"
    epochs: float | None = None
    steps: int | None = None
    lr: float | None = None
    batch_size: int | None = None
    settings: str = "auto"
    splits_per_job: int = 32
    pictures: int = 2
    per_class: int = 6
    device: str = "cpu"
    chunk_size: int | None = None
    batched: bool | None = None


#: Options that do not change results (a resumed run may change them).
NON_RESULT_KEYS = {"out", "progress", "device", "chunk_size", "batched", "splits_per_job",
                   "pictures", "per_class", "export_partitions"}

KINDS = ("binary", "multiclass", "random_network")


# ----------------------------------------------------------------------------- building
def resolve_tasks_path(value: str) -> Path:
    """A discovery run directory (its ``tasks.npz``) or a tasks file."""
    path = Path(value)
    if path.is_dir():
        cand = path / "tasks.npz"
        if not cand.is_file():
            raise TaskspaceError(f"{path} is a directory without tasks.npz; pass a discovery "
                                 "run directory or a tasks file")
        return cand
    if not path.is_file():
        raise TaskspaceError(f"tasks not found: {value} (use a discovery run directory, a "
                             "tasks .npz/.npy/.csv file, 'human' or 'standin')")
    return path


def build_targets(cfg: SplitConfig, dataset: ImageDataset) -> TaskSet:
    """``targets=human`` (reference targets that exist), human indices, or a tasks file."""
    c = dataset.num_classes
    spec = cfg.targets.strip()
    if spec == "human" or all(p.strip().isdigit() for p in spec.split(",") if p.strip()):
        total = human_task_count(c)
        if spec == "human":
            wanted = [i for i in REFERENCE_TARGETS if i < total]
        else:
            wanted = [int(p) for p in spec.split(",") if p.strip()]
            bad = [i for i in wanted if i >= total]
            if bad:
                raise TaskspaceError(f"target index {bad[0]} out of range: {c} classes give "
                                     f"{total} human tasks")
        if not wanted:
            raise TaskspaceError("no targets: use targets=human or a list of task indices")
        allh = human_tasks(dataset.classes, c, include_original=False,
                           max_tasks=None if total <= 10_000 else 10_000, seed=cfg.seed)
        return allh.select([allh.index(human_task_name(c, i)) for i in wanted])
    return load_task_spec(spec, dataset)


def load_task_spec(spec: str, dataset: ImageDataset) -> TaskSet:
    """Tasks of a ``<run dir | tasks file>[:<format>]`` spec, placed on ``dataset``."""
    path, fmt = parse_task_spec(spec)
    return load_tasks(resolve_tasks_path(path), format=fmt, dataset=dataset)


def build_discovered(cfg: SplitConfig, dataset: ImageDataset, targets: TaskSet) -> TaskSet:
    """The ``tau_d`` tasks named by ``cfg.discovered`` (first ``num_discovered``)."""
    if cfg.num_discovered < 1:
        raise TaskspaceError(f"num_discovered must be >= 1, got {cfg.num_discovered}")
    if cfg.discovered == "standin":
        return feature_sign_tasks(dataset, cfg.num_discovered, seed=cfg.seed,
                                  model=cfg.standin_model)
    if cfg.discovered == "human":
        allh = human_tasks(dataset.classes, dataset.num_classes, include_original=False,
                           max_tasks=64, seed=cfg.seed + 1)
        keep = [i for i, n in enumerate(allh.names) if n not in targets.names]
        return allh.select(keep[: cfg.num_discovered]).renamed(prefix="d-")
    tasks = load_task_spec(cfg.discovered, dataset)
    return tasks.select(list(range(min(cfg.num_discovered, len(tasks)))))


def _check_lengths(tasks: TaskSet, dataset: ImageDataset, what: str) -> None:
    if tasks.num_images != len(dataset):
        raise TaskspaceError(f"{what} label {tasks.num_images} images but the dataset has "
                             f"{len(dataset)}; tasks must come from the same data options")


def build_splits(cfg: SplitConfig, dataset: ImageDataset
                 ) -> tuple[list[Split], TaskSet | None, TaskSet | None]:
    """All splits of a config (adversarial, then random baselines), fully validated."""
    if cfg.kind not in KINDS:
        raise TaskspaceError(f"kind must be one of {', '.join(KINDS)}, got {cfg.kind!r}")
    check_random_baseline(cfg.random_baseline)
    targets = discovered = None
    if cfg.import_file:
        adv = import_splits(cfg.import_file, dataset)
        if any(s.target_labels is None for s in adv):
            adv = with_targets(adv, build_targets(cfg, dataset), cfg.targets)
    elif cfg.kind == "random_network":
        pool = resolve_pool(dataset, cfg.pool)
        adv = [random_network_split(dataset, model=cfg.net, seed=s, pool=pool, flip=cfg.flip)
               for s in (cfg.seeds if cfg.seeds else [cfg.seed])]
    else:
        targets = build_targets(cfg, dataset)
        _check_lengths(targets, dataset, "target tasks")
        discovered = build_discovered(cfg, dataset, targets)
        _check_lengths(discovered, dataset, "discovered tasks")
        adv = adversarial_splits(dataset, targets, discovered, kind=cfg.kind, pool=cfg.pool,
                                 flip=cfg.flip)
    for s in adv:
        s.validate(len(dataset))
    names = [s.name for s in adv]
    if len(set(names)) != len(names):
        raise TaskspaceError("split names are not unique; rename the tasks")
    if cfg.random_baselines:
        return with_random_baselines(adv, cfg.seed, cfg.random_baseline), targets, discovered
    return list(adv), targets, discovered


def import_splits(path_str: str, dataset: ImageDataset) -> list[Split]:
    """Splits from a reference ``.torch`` file, a CelebA partition ``.csv`` or a ``.npz``.

    A reference file's indices are placed on ``dataset`` (see
    :func:`taskspace.splits.files.load_reference_splits`), and a split keyed by a human-task
    index there gets that task as its 2-way target (:func:`human_target`).
    """
    path = Path(path_str)
    n = len(dataset)
    suffix = path.suffix.lower()
    if suffix in (".torch", ".pt", ".pth"):
        splits = load_reference_splits(path, dataset=dataset)
        return [human_target(s, dataset, path) if "target_index" in s.meta else s
                for s in splits]
    if suffix == ".csv":
        split, _ = import_partition(path, n, dataset.ids if dataset.ids else None)
        return [split]
    if suffix == ".npz":
        return [load_split(path, n)]
    raise TaskspaceError(f"unknown split file type {path.name!r}; use .torch, .csv or .npz")


def _retarget(split: Split, labels: torch.Tensor, meta: dict) -> Split:
    """``split`` with 2-way target ``labels`` and extra ``meta``."""
    return Split(split.train_idx, split.test_idx, split.name, split.kind,
                 {**split.meta, **meta}, labels)


def human_target(split: Split, dataset: ImageDataset, path: Path) -> Split:
    """``split`` with the human task its file keys it by as target.

    The reference's ``cifar_splits.torch`` keys splits by human-task index ``t``: task ``t``
    is the ``t``-th ``C/2``-subset of the classes containing class 0
    (:func:`taskspace.tasks.human_task_subset`), label 1 iff the class is in it.
    """
    t = int(split.meta["target_index"])
    c = dataset.num_classes
    total = human_task_count(c)
    if not 0 <= t < total:
        raise TaskspaceError(f"{path}: target {t} is not a human-task index of {c} classes "
                             f"(0..{total - 1})")
    positive = list(human_task_subset(c, t))
    labels = torch.isin(dataset.classes, torch.tensor(positive)).long()
    return _retarget(split, labels, {"target": human_task_name(c, t),
                                     "positive_classes": positive})


def with_targets(splits: list[Split], targets: TaskSet, spec: str) -> list[Split]:
    """Give imported splits without a target the one task ``targets=`` names.

    Several targets (the default ``targets=human``) leave them without one (only the class
    setting is evaluated); several named explicitly are an error, since it is unclear which
    target the file's splits were built for.
    """
    if len(targets) != 1:
        if spec.strip() == "human":
            return splits
        raise TaskspaceError(f"the split file records no target and targets={spec} names "
                             f"{len(targets)} tasks; name one (e.g. targets=11)")
    meta = {"target": targets.names[0]}
    positive = targets.task_meta(0).get("positive_classes")
    if positive:
        meta["positive_classes"] = positive
    labels = targets.labels[0]
    if int(labels.max()) > 1:
        raise TaskspaceError(f"target task {targets.names[0]!r} has "
                             f"{targets.num_classes(0)} classes; a 2-way target must be 0/1")
    return [s if s.target_labels is not None else _retarget(s, labels, meta) for s in splits]


def split_file_name(i: int, split: Split) -> str:
    return f"{i:04d}-{split.name}.npz"


def write_splits(out: Path, splits: list[Split], dataset: ImageDataset,
                 export_partitions: bool = False) -> None:
    """``splits/*.npz`` and ``splits.csv`` (and ``partitions/*.csv``)."""
    rows = []
    for i, s in enumerate(splits):
        save_split(out / "splits" / split_file_name(i, s), s)
        row = balance_row(s, dataset.classes, dataset.num_classes)
        row["file"] = split_file_name(i, s)
        rows.append(row)
        if export_partitions:
            export_partition(out / "partitions" / f"{s.name}.csv", s, len(dataset),
                             dataset.ids if dataset.ids else None)
    write_csv(out / "splits.csv", rows, [*BALANCE_COLUMNS, "file"])


def read_splits(out: Path, n_images: int) -> list[Split]:
    """The splits of a split run directory, in ``splits.csv`` order."""
    table = out / "splits.csv"
    if not table.is_file():
        raise TaskspaceError(f"{out} is not a split run directory (no splits.csv)")
    return [load_split(out / "splits" / r["file"], n_images) for r in read_csv(table)]


def run_split(cfg: SplitConfig, command: str = "split") -> Path:
    """Build (or reuse) the split run directory of ``cfg``; returns it."""
    out = Path(cfg.out) if cfg.out else Path("runs") / (
        f"{command}-{cfg.data}-{cfg.kind}-{config_digest(cfg, NON_RESULT_KEYS)}")
    check_run_config(out, cfg, NON_RESULT_KEYS)
    dataset = dataset_of(cfg)
    if (out / "splits.csv").exists():
        return out
    splits, targets, discovered = build_splits(cfg, dataset)  # every check before any write
    if targets is not None:
        from taskspace.tasks import save_tasks

        save_tasks(out / "targets.npz", targets)
        save_tasks(out / "discovered.npz", discovered)
    write_splits(out, splits, dataset, cfg.export_partitions)
    write_yaml(out / "config.yaml", to_dict(cfg))
    return out


def format_balance(rows: list[dict]) -> str:
    """A short text table of ``splits.csv``."""
    lines = [f"{'split':<40} {'kind':<15} {'n_train':>7} {'n_test':>7} {'pos(tr)':>8} "
             f"{'pos(te)':>8}"]
    for r in rows:
        lines.append(f"{str(r['split'])[:40]:<40} {r['kind']:<15} {int(r['n_train']):>7} "
                     f"{int(r['n_test']):>7} {str(r['train_positive_rate']):>8} "
                     f"{str(r['test_positive_rate']):>8}")
    return "\n".join(lines)


def main(cfg: SplitConfig) -> int:
    out = run_split(cfg)
    rows = read_csv(out / "splits.csv")
    print(format_balance(rows[:20]) + ("\n..." if len(rows) > 20 else ""))
    print(f"{len(rows)} splits; run directory: {out}")
    return 0


# ----------------------------------------------------------------------------- evaluation
def _data_keys() -> list[str]:
    return list(DataConfig.__dataclass_fields__)


def eval_setup(cfg: SplitEvalConfig) -> tuple[Path, ImageDataset, list[Split]]:
    """The eval run directory, the dataset and the splits (read or built), validated."""
    get_recipe(cfg.recipe, epochs=cfg.epochs, steps=cfg.steps, lr=cfg.lr,
               batch_size=cfg.batch_size)
    if cfg.splits_per_job < 1:
        raise TaskspaceError(f"splits_per_job must be >= 1, got {cfg.splits_per_job}")
    if cfg.splits:
        src = Path(cfg.splits)
        if not (src / "config.yaml").is_file():
            raise TaskspaceError(f"{src} is not a split run directory (no config.yaml)")
        import yaml

        old = yaml.safe_load((src / "config.yaml").read_text()) or {}
        cfg_data = apply_overrides(DataConfig(), {k: old[k] for k in _data_keys() if k in old})
        dataset = dataset_of(cfg_data)
        splits = read_splits(src, len(dataset))
    else:
        dataset = dataset_of(cfg)
        splits = None
    out = Path(cfg.out) if cfg.out else Path("runs") / (
        f"split-eval-{cfg.data}-{cfg.model}-{config_digest(cfg, NON_RESULT_KEYS)}")
    check_run_config(out, cfg, NON_RESULT_KEYS)
    if splits is None:
        if (out / "splits.csv").exists():
            splits = read_splits(out, len(dataset))
        else:
            splits, _, _ = build_splits(cfg, dataset)
    return out, dataset, splits


def _recipe(cfg: SplitEvalConfig):  # noqa: ANN202
    return get_recipe(cfg.recipe, epochs=cfg.epochs, steps=cfg.steps, lr=cfg.lr,
                      batch_size=cfg.batch_size)


def _model_kwargs(cfg: SplitEvalConfig) -> dict:
    return {"widths": list(cfg.widths)} if cfg.widths else {}


def run_chunk(out: Path, cfg: SplitEvalConfig, dataset: ImageDataset, splits: list[Split],
              chunk: int, ids: list[int]) -> None:
    """Train on splits ``ids``; write ``parts/chunk-NNNN.csv`` and its predictions."""
    rows, preds = evaluate_splits(
        dataset, [splits[i] for i in ids], settings=cfg.settings, model=cfg.model,
        recipe=_recipe(cfg), seed=cfg.seed, split_ids=ids, device=cfg.device,
        chunk_size=cfg.chunk_size, batched=cfg.batched, model_kwargs=_model_kwargs(cfg),
        progress=cfg.progress, return_predictions=True,
    )
    keys = sorted(preds)
    arrays = {"names": np.array([f"{a}|{b}" for a, b in keys] or [""])}
    arrays["pred"] = (torch.stack([preds[k] for k in keys]).numpy().astype(np.int16)
                      if keys else np.zeros((0, len(dataset)), np.int16))

    def _write(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            np.savez_compressed(fh, **arrays)

    atomic_write(out / "parts" / f"preds-{chunk:04d}.npz", _write)
    write_csv(out / "parts" / f"chunk-{chunk:04d}.csv", rows, RESULT_COLUMNS)


def run_eval(cfg: SplitEvalConfig) -> Path:
    """Run (or resume) ``taskspace split-eval``; returns the run directory."""
    out, dataset, splits = eval_setup(cfg)
    if not (out / "config.yaml").exists():
        write_splits(out, splits, dataset, cfg.export_partitions)
        write_yaml(out / "config.yaml", to_dict(cfg))
    per = cfg.splits_per_job
    chunks = [list(range(i, min(i + per, len(splits)))) for i in range(0, len(splits), per)]
    done = sum((out / "parts" / f"chunk-{c:04d}.csv").exists() for c in range(len(chunks)))
    if done:
        print(f"resuming {out}: {done}/{len(chunks)} chunks already finished")
    for c, ids in enumerate(chunks):
        if not (out / "parts" / f"chunk-{c:04d}.csv").exists():
            run_chunk(out, cfg, dataset, splits, c, ids)
    merge_eval(out, cfg, dataset, splits, len(chunks))
    return out


def _load_preds(out: Path, n_chunks: int) -> dict[str, torch.Tensor]:
    preds: dict[str, torch.Tensor] = {}
    for c in range(n_chunks):
        with np.load(out / "parts" / f"preds-{c:04d}.npz", allow_pickle=False) as z:
            for name, row in zip(z["names"].tolist(), z["pred"]):
                if name:
                    preds[str(name)] = torch.from_numpy(row.astype(np.int64))
    return preds


def merge_eval(out: Path, cfg: SplitEvalConfig, dataset: ImageDataset, splits: list[Split],
               n_chunks: int) -> list[dict]:
    """``results.csv``, ``headline.csv``, ``headline.png`` and split pictures."""
    rows: list[dict] = []
    for c in range(n_chunks):
        rows.extend(read_csv(out / "parts" / f"chunk-{c:04d}.csv"))
    for r in rows:
        for k in ("train_acc", "test_acc"):
            r[k] = float(r[k])
        for k in ("n_train", "n_test", "split_id"):
            r[k] = int(r[k])
    rows.sort(key=lambda r: (r["split_id"], r["setting"]))
    write_csv(out / "results.csv", rows, RESULT_COLUMNS)
    summary = summarize_headline(rows)
    write_csv(out / "headline.csv", summary, HEADLINE_COLUMNS)
    plot_headline(summary, out / "headline.png",
                  title=f"{cfg.model} on {dataset.name}: test-side accuracy")
    if cfg.pictures > 0:
        from taskspace.splits.pictures import split_picture

        preds = _load_preds(out, n_chunks)
        cls = f"{dataset.num_classes}-way"
        adv = [s for s in splits if s.kind != "random"][: cfg.pictures]
        for s in adv:
            p = preds.get(f"{s.name}|{cls}")
            acc = [r for r in rows if r["split"] == s.name]
            info = ", ".join(f"{r['setting']} test acc {r['test_acc']:.2f}" for r in acc)
            split_picture(dataset, s, out / f"split-{s.name}.png", p, per_class=cfg.per_class,
                          seed=cfg.seed, title=f"{s.name} ({info})")
    return summary


def plot_headline(summary: list[dict], path: Path, title: str = "") -> Path:
    """Bars of mean test accuracy (± std) per setting, random vs adversarial."""
    from taskspace.report.plots import _plt

    plt = _plt()
    settings = list(dict.fromkeys(r["setting"] for r in summary))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(settings), 3.4))
    width = 0.38
    for j, (typ, color) in enumerate((("random", "#7a9cc6"), ("adversarial", "#d0605e"))):
        xs, ms, ss = [], [], []
        for i, st in enumerate(settings):
            r = next((r for r in summary if r["setting"] == st and r["type"] == typ), None)
            if r is not None:
                xs.append(i + (j - 0.5) * width)
                ms.append(float(r["mean"]))
                ss.append(float(r["std"]))
        ax.bar(xs, ms, width, yerr=ss, label=typ, color=color, capsize=3)
        for x, m in zip(xs, ms):
            ax.text(x, 0.03, f"{m:.2f}", ha="center", fontsize=8, color="white")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("test-side accuracy")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return path


def main_eval(cfg: SplitEvalConfig) -> int:
    out = run_eval(cfg)
    summary = read_csv(out / "headline.csv")
    print(format_headline(summary))
    print(f"run directory: {out}")
    return 0
