"""Agreement score (AS) and proxy AS."""

from taskspace.agreement.score import (
    ROW_COLUMNS,
    agreement_score,
    pair_seeds,
    proxy_agreement_score,
    summarize,
)

__all__ = ["ROW_COLUMNS", "agreement_score", "pair_seeds", "proxy_agreement_score", "summarize"]
