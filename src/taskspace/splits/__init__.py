"""Adversarial train/test splits: build them, save and import them, train on many at once.

- builders: :class:`Split`, :func:`binary_split`, :func:`multiclass_split`,
  :func:`random_network_split`, :func:`random_split_like`, :func:`reference_random_split`,
  :func:`adversarial_splits`;
- files: :func:`save_split` / :func:`load_split` (``.npz``), CelebA partition files
  (:func:`export_partition` / :func:`import_partition`), the reference's ``.torch`` files
  (:func:`load_reference_splits`, safe loading only), :func:`split_balance`;
- evaluation: :func:`evaluate_splits` (one ``fit_many`` call for all splits),
  :func:`headline_table` and :func:`format_headline` (the paper's table);
- pictures: :func:`split_picture` (train / test / mistakes grids, indexed by dataset index).
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

__all__ = [
    "HEADLINE_COLUMNS",
    "RANDOM_BASELINES",
    "RESULT_COLUMNS",
    "SPLIT_KINDS",
    "Split",
    "adversarial_splits",
    "binary_split",
    "class_partition",
    "default_pool",
    "evaluate_splits",
    "export_partition",
    "format_headline",
    "headline_table",
    "import_partition",
    "load_reference_splits",
    "load_split",
    "lower_half_per_class",
    "multiclass_split",
    "random_network_logits",
    "random_network_split",
    "random_split_like",
    "read_partition",
    "reference_random_split",
    "resolve_pool",
    "save_split",
    "split_balance",
    "summarize_headline",
    "with_random_baselines",
]
