"""What the proposer measures about its own drafts, as vLLM sees them verified."""

import operator
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any, Self


class AcceptanceCounters:
    """Figures derived from cumulative ``drafts`` / ``draft_tokens`` /
    ``accepted_tokens`` counters; the difference of two readings and the sum
    of two engines' counts."""

    drafts: int
    draft_tokens: int
    accepted_tokens: int

    def __sub__(self, other: Self) -> Self:
        return self._fieldwise(operator.sub, other)

    def __add__(self, other: Self) -> Self:
        return self._fieldwise(operator.add, other)

    def _fieldwise(self, op: Callable[[Any, Any], Any], other: Self) -> Self:
        return type(self)(
            **{f.name: op(getattr(self, f.name), getattr(other, f.name)) for f in fields(self)}
        )

    @property
    def acceptance_rate(self) -> float:
        """Accepted draft tokens / verified draft tokens."""
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def mean_accepted_length(self) -> float:
        """Tokens per verification of a draft: accepted drafts + the bonus token."""
        return 1.0 + self.accepted_tokens / self.drafts if self.drafts else 1.0


@dataclass
class DraftStats(AcceptanceCounters):
    """Cumulative counters of one proposer (one worker). ``drafts``,
    ``draft_tokens`` and ``accepted_tokens`` count self-skip drafts only;
    prompt-lookup drafts have their own counters."""

    drafts: int = 0  # requests verified with at least one self-skip draft token
    draft_tokens: int = 0  # self-skip draft tokens verified
    accepted_tokens: int = 0  # self-skip draft tokens accepted
    lookup_drafts: int = 0
    lookup_draft_tokens: int = 0
    lookup_accepted_tokens: int = 0
    mixed_steps: int = 0  # steps that verified drafts of both sources (hybrid at work)
    draft_steps: int = 0  # batched draft forwards
    draft_seconds: float = 0.0
    verify_steps: int = 0  # target forwards between two proposals
    verify_seconds: float = 0.0
    guard_skipped_steps: int = 0  # steps the profitability guard ran without self-skip drafts
    scoring_steps: int = 0  # candidate-scoring forwards of the search
    scoring_seconds: float = 0.0

    def to_dict(self) -> dict[str, float]:
        return asdict(self) | {
            "acceptance_rate": self.acceptance_rate,
            "mean_accepted_length": self.mean_accepted_length,
        }
