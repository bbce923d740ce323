"""What one timed benchmark run records, kept apart from vLLM so reports and
tests work on plain data."""

from dataclasses import asdict, dataclass

from swift_vllm.stats import DraftStats


@dataclass(frozen=True)
class RequestResult:
    """One request of a timed group. The spec-decode counts are vLLM's
    per-request metrics and are ``None`` for plain decoding."""

    question_id: int | str
    category: str
    output_tokens: int
    drafts: int | None = None  # verification steps that carried a draft
    draft_tokens: int | None = None  # draft tokens proposed
    accepted_tokens: int | None = None  # draft tokens accepted


@dataclass(frozen=True)
class GroupRun:
    """One timed ``llm.generate`` call over a group of ``batch_size`` prompts."""

    method: str
    batch_size: int
    repeat: int
    wall_time: float
    requests: tuple[RequestResult, ...]
    proposer: DraftStats | None = None
    """Self-skip only: the proposer's counters for this call (they tell the
    prompt-lookup drafts from the self-skip ones, which vLLM's do not)."""
    started: float | None = None
    """Unix time the call started: when each method ran, side by side."""

    def answer_lines(self) -> list[dict]:
        """Per-request answer records; every request carries its group's wall time."""
        common = {
            "method": self.method,
            "batch_size": self.batch_size,
            "repeat": self.repeat,
            "wall_time": self.wall_time,
        } | ({} if self.started is None else {"started": self.started})
        return [
            common | {k: v for k, v in asdict(request).items() if v is not None}
            for request in self.requests
        ]
