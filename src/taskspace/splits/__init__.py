"""Adversarial train/test splits: build them, save and import them, train on many at once.

- builders: :class:`Split`, :func:`binary_split`, :func:`multiclass_split`,
  :func:`random_network_split`, :func:`random_split_like`, :func:`reference_random_split`,
  :func:`adversarial_splits`;
- files: :func:`save_split` / :func:`load_split` (``.npz``), CelebA partition files
  (:func:`export_partition` / :func:`import_partition`), the reference's ``.torch`` files
  (:func:`load_reference_splits`, safe loading only), :func:`split_balance`;
- evaluation: :func:`evaluate_splits` (one ``fit_many`` call for all splits),
  :func:`headline_table` and :func:`format_headline` (the paper's table);
- sources: :class:`SplitOptions` and :func:`build_splits` (targets, discovered tasks or
  an imported file -> validated splits), :func:`write_splits` / :func:`read_splits`.

Pictures of splits are drawn by :mod:`taskspace.report.split_pictures`.
"""

from taskspace.splits.builders import (
    SPLIT_KINDS,
    Split,
    adversarial_splits,
    binary_split,
    class_partition,
    default_pool,
    lower_half_per_class,
    multiclass_split,
    random_network_logits,
    random_network_split,
    random_split_like,
    reference_random_split,
    resolve_pool,
)
from taskspace.splits.evaluate import (
    HEADLINE_COLUMNS,
    RANDOM_BASELINES,
    RESULT_COLUMNS,
    evaluate_splits,
    format_headline,
    headline_table,
    summarize_headline,
    with_random_baselines,
)
from taskspace.splits.files import (
    export_partition,
    import_partition,
    load_reference_splits,
    load_split,
    read_partition,
    save_split,
    split_balance,
)
from taskspace.splits.sources import (
    SplitOptions,
    build_splits,
    import_splits,
    read_splits,
    write_splits,
)

__all__ = [
    "HEADLINE_COLUMNS",
    "RANDOM_BASELINES",
    "RESULT_COLUMNS",
    "SPLIT_KINDS",
    "Split",
    "SplitOptions",
    "adversarial_splits",
    "binary_split",
    "build_splits",
    "class_partition",
    "default_pool",
    "evaluate_splits",
    "export_partition",
    "format_headline",
    "headline_table",
    "import_partition",
    "import_splits",
    "load_reference_splits",
    "load_split",
    "lower_half_per_class",
    "multiclass_split",
    "random_network_logits",
    "random_network_split",
    "random_split_like",
    "read_partition",
    "read_splits",
    "reference_random_split",
    "resolve_pool",
    "save_split",
    "split_balance",
    "summarize_headline",
    "with_random_baselines",
    "write_splits",
]
