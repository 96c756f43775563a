"""Task discovery: find the labellings a learner generalises on (AS meta-optimisation).

- :class:`TaskEncoder` (``h = BN0(P g(x))`` + fixed orthonormal heads) and
  :func:`uniformity_loss`;
- :class:`InnerLearners`: the differentiable, vmapped inner loop (hand-written SGD,
  optional per-step checkpointing);
- :class:`MetaTrainer`: the resumable meta-training loop;
- :func:`discover_tasks` (the ``taskspace discover`` command as a function),
  :func:`compare_with_baselines` (discovered vs human vs random AS, one protocol) and
  :func:`discovery_demo_rows` (what the demo runs);
- :func:`pretrain_simclr` (``taskspace pretrain``) for regulated discovery.

Sign convention everywhere: task ``k`` labels ``x`` with ``1[w_k . h(x) > 0]`` (``flip``
inverts); stored in the task set's meta as ``sign``.
"""

from taskspace.discovery.api import compare_with_baselines, discover_tasks, discovery_demo_rows
from taskspace.discovery.encoder import TaskEncoder, haar_orthogonal, soft_labels
from taskspace.discovery.inner import InnerLearners, symmetric_agreement_loss
from taskspace.discovery.metatrain import MetaSettings, MetaTrainer
from taskspace.discovery.runner import DiscoverConfig, run_discover
from taskspace.discovery.ssl_pretrain import SimCLRSettings, SimCLRTrainer, pretrain_simclr
from taskspace.discovery.uniformity import uniformity_loss

__all__ = [
    "DiscoverConfig",
    "InnerLearners",
    "MetaSettings",
    "MetaTrainer",
    "SimCLRSettings",
    "SimCLRTrainer",
    "TaskEncoder",
    "compare_with_baselines",
    "discover_tasks",
    "discovery_demo_rows",
    "haar_orthogonal",
    "pretrain_simclr",
    "run_discover",
    "soft_labels",
    "symmetric_agreement_loss",
    "uniformity_loss",
]
