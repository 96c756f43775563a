"""Task2Vec: task embeddings from the Fisher information of a probe network.

A frozen probe with its head refit per task; the diagonal Fisher of its weights, averaged
per filter, is the task's embedding (Monte-Carlo or variational estimate); distances
between embeddings, the clustered distance matrix, and expert selection.
"""

from taskspace.embed.api import EmbedOptions, embed_task, embed_tasks
from taskspace.embed.distances import DISTANCES, cdist, distance, nearest, pdist
from taskspace.embed.embedding import (
    COMPARE_KEYS,
    Embedding,
    check_comparable,
    load_embeddings,
    save_embeddings,
)
from taskspace.embed.experts import (
    asymmetric_distance,
    brute_force_errors,
    rank_experts,
    regret_table,
    trivial_embedding,
)
from taskspace.embed.plots import plot_distance_matrix
from taskspace.embed.probe import Probe, as_probe, fresh_probe, load_probe, probe_digest
from taskspace.embed.variational import variational_fisher

__all__ = [
    "COMPARE_KEYS",
    "DISTANCES",
    "EmbedOptions",
    "Embedding",
    "Probe",
    "as_probe",
    "asymmetric_distance",
    "brute_force_errors",
    "cdist",
    "check_comparable",
    "distance",
    "embed_task",
    "embed_tasks",
    "fresh_probe",
    "load_embeddings",
    "load_probe",
    "nearest",
    "pdist",
    "plot_distance_matrix",
    "probe_digest",
    "rank_experts",
    "regret_table",
    "save_embeddings",
    "trivial_embedding",
    "variational_fisher",
]
