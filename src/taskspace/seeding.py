"""Seeds: one stable function from integers to a seed, and named streams instead of magic
salts.

Every random draw of a run comes from a generator seeded by ``derive_seed(base, stream,
...)``: the base seed, a :class:`Stream` naming what is drawn, and the draw's coordinates
(task, pair, step, head). Results then do not depend on how work is chunked, resumed or
fanned out. The stream values are fixed forever (changing one changes results).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Stream", "derive_seed"]


class Stream(IntEnum):
    """What a seed is for (the value is the salt mixed into :func:`derive_seed`)."""

    PAIR_ORDER = 7_919  # the batch order both models of AS pair p read
    HEAD_ORDER = 11  # discovery: per-epoch permutation of the heads
    INNER_BATCHES = 13  # discovery: the inner loop's training batches of a meta-step
    EVAL_BATCH = 17  # discovery: the random held-out batch of a meta-step
    FIXED_INITS = 19  # discovery: the one stored pair of learner initialisations
    INITS = 23  # discovery: fresh learner initialisations of a meta-step
    SPLIT_ORDER = 17  # adversarial splits: a learner's data order (after the init seed)
    RANDOM_SPLIT = 31  # adversarial splits: the size-matched random baseline
    EMBEDDING_TASK = 37  # random linear tasks on an encoder's embedding


def derive_seed(*parts: int) -> int:
    """A stable 31-bit seed from integers (base seed, stream, task, pair, step, ...)."""
    h = 0x9E3779B9
    for p in parts:
        h = (h * 0x01000193) ^ (int(p) & 0xFFFFFFFF)
        h = (h ^ (h >> 15)) * 0x2C1B3C6D & 0xFFFFFFFFFFFF
    return int(h % (2**31 - 1))
