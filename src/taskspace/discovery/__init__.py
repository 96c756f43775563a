"""Task discovery: find the labellings a learner generalises on (AS meta-optimisation).

- :class:`TaskEncoder` (``h = BN0(P g(x))`` + fixed orthonormal heads) and
  :func:`uniformity_loss`;
- :class:`InnerLearners`: the differentiable, vmapped inner loop (hand-written SGD,
  optional per-step checkpointing);
- :class:`MetaTrainer`: the resumable meta-training loop;
- :func:`discover_tasks` (discovery as one library call, no run directory),
  :func:`train_encoder` (resumable meta-training) and :func:`discovered_taskset`;
- :func:`pretrain_simclr` / :class:`SimCLRTrainer` for regulated discovery.

Sign convention everywhere: task ``k`` labels ``x`` with ``1[w_k . h(x) > 0]`` (``flip``
inverts); stored in the task set's meta as ``sign``.
"""

from taskspace.discovery.api import Discovery, discover_tasks, discovered_taskset, train_encoder
from taskspace.discovery.encoder import TaskEncoder, haar_orthogonal, soft_labels
from taskspace.discovery.inner import InnerLearners, symmetric_agreement_loss
from taskspace.discovery.metatrain import MetaSettings, MetaTrainer
from taskspace.discovery.ssl_pretrain import SimCLRSettings, SimCLRTrainer, pretrain_simclr
from taskspace.discovery.uniformity import uniformity_loss

__all__ = [
    "Discovery",
    "InnerLearners",
    "MetaSettings",
    "MetaTrainer",
    "SimCLRSettings",
    "SimCLRTrainer",
    "TaskEncoder",
    "discover_tasks",
    "discovered_taskset",
    "haar_orthogonal",
    "pretrain_simclr",
    "soft_labels",
    "symmetric_agreement_loss",
    "train_encoder",
    "uniformity_loss",
]
