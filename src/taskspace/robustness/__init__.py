"""Group robustness: groupings, group metrics, and robust training methods.

A capability library (no run directories, no command line, no plotting):

- groups: :func:`parse_grouping` (``"Task:Attr[,Attr2]"`` against a dataset's attribute
  names) -> :class:`Grouping` (targets, group ids ``g = y 2^k + a1 2^(k-1) + ... + ak`` in
  the written order, padded counts, class counts, train proportions);
- metrics: :func:`group_metrics` / :func:`evaluate_ensemble` -> :class:`GroupMetrics`
  (per-group, worst-group, plain and train-weighted average, class accuracy, Wilson
  intervals; M models at once) and :func:`final_table` (mean and std over seeds);
- methods: :func:`fit_robust` (ERM, JTT, RWY, RWG, SUBY, SUBG, Group DRO through
  ``fit_many``, all seeds in one batched call, selection at every epoch end),
  :data:`PRESETS` (``reference``: CelebA ResNet-50; ``digits``: CPU), :func:`fit_grid`,
  and the data changes on their own (:func:`rebalance_weights`, :func:`subsample`,
  :func:`jtt_error_sets`, :func:`jtt_upsample`, :func:`jtt_stage1`);
- spurious: :func:`fit_attribute_models` (one model per attribute in one ``fit_many``
  call), :func:`delta_matrix` -> :class:`DeltaMatrix` (Agresti-Coull-shrunk deltas with
  named axes, pair list, :func:`delta_histogram`);
- mtl: :func:`fit_mtl` (several groupings in one network, one head each; static task
  weights or LBTW; ERM and JTT with the multi-task error-set merge, :func:`jtt_mtl_merge`)
  -> :class:`MTLResult` (per-task group metrics, per-epoch history, task-weight traces);
- extract: :func:`cocluster`, :func:`svd_kmeans` (:func:`svd_dimension`),
  :func:`association` and :func:`task_pairings` on the delta matrix;
- discovered: discovered tasks as spurious attributes: :func:`match_attribute` /
  :func:`best_match` (folded agreement with an attribute), :func:`task_deltas` (the delta
  of a target model under ``target:task`` for every task), :func:`inferred_groups` and
  :func:`fit_robust_inferred` (train on ``2 y + a_hat``, evaluate on the true groups),
  :func:`with_heldout` (the ``heldout`` split discovery reads, as another name of ``val``).
"""

from taskspace.robustness.discovered import (
    best_match,
    fit_robust_inferred,
    inferred_groups,
    match_attribute,
    task_deltas,
    task_row,
    with_heldout,
)
from taskspace.robustness.extract import (
    CoClusters,
    SvdClusters,
    association,
    cocluster,
    cocluster_input,
    normalize_rows,
    svd_dimension,
    svd_kmeans,
    task_pairings,
)
from taskspace.robustness.groups import (
    Grouping,
    class_counts,
    group_counts,
    group_index,
    parse_grouping,
)
from taskspace.robustness.methods import (
    METHODS,
    PRESETS,
    MethodConfig,
    MethodParts,
    Preset,
    RobustResult,
    fit_grid,
    fit_robust,
    jtt_error_sets,
    jtt_stage1,
    jtt_upsample,
    method_config,
    method_parts,
    rebalance_weights,
    require_groups,
    subsample,
    train_group_ids,
)
from taskspace.robustness.metrics import (
    Z95,
    GroupMetrics,
    count_correct,
    evaluate_ensemble,
    final_table,
    group_metrics,
    wilson_interval,
)
from taskspace.robustness.mtl import (
    MTLResult,
    fit_mtl,
    jtt_mtl_error_sets,
    jtt_mtl_merge,
    jtt_mtl_upsample,
    mtl_instance_weights,
)
from taskspace.robustness.spurious import (
    EPSILON,
    SPURIOUS_RECIPE,
    AttributeModels,
    DeltaHistogram,
    DeltaMatrix,
    delta_from_counts,
    delta_histogram,
    delta_matrix,
    fit_attribute_models,
    shrink_group_accuracy,
)

__all__ = [
    "EPSILON",
    "METHODS",
    "PRESETS",
    "SPURIOUS_RECIPE",
    "Z95",
    "AttributeModels",
    "CoClusters",
    "DeltaHistogram",
    "DeltaMatrix",
    "GroupMetrics",
    "Grouping",
    "MTLResult",
    "MethodConfig",
    "MethodParts",
    "Preset",
    "RobustResult",
    "SvdClusters",
    "association",
    "best_match",
    "class_counts",
    "cocluster",
    "cocluster_input",
    "count_correct",
    "delta_from_counts",
    "delta_histogram",
    "delta_matrix",
    "evaluate_ensemble",
    "final_table",
    "fit_attribute_models",
    "fit_grid",
    "fit_mtl",
    "fit_robust",
    "fit_robust_inferred",
    "group_counts",
    "group_index",
    "group_metrics",
    "inferred_groups",
    "jtt_error_sets",
    "jtt_mtl_error_sets",
    "jtt_mtl_merge",
    "jtt_mtl_upsample",
    "mtl_instance_weights",
    "jtt_stage1",
    "jtt_upsample",
    "match_attribute",
    "method_config",
    "method_parts",
    "normalize_rows",
    "parse_grouping",
    "rebalance_weights",
    "require_groups",
    "shrink_group_accuracy",
    "subsample",
    "svd_dimension",
    "svd_kmeans",
    "task_deltas",
    "task_pairings",
    "task_row",
    "train_group_ids",
    "wilson_interval",
    "with_heldout",
]
