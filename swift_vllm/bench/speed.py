"""The SWIFT / Spec-Bench ``speed.py`` report from two per-request answer files.

Like the reference: per task (the eight MT-bench categories together as
``mt_bench``, each other category alone, then ``overall``), tokens/s is the
mean over requests of output tokens / wall time, the speedup is the ratio of
those means, and the mean accepted tokens is tokens per decoding step over
all steps (1.0 for plain decoding). Acceptance (accepted / drafted tokens)
needs draft counts, which ``swift-vllm bench`` answer files carry.

Reads ``swift-vllm bench`` answer lines (``output_tokens``, ``wall_time``,
optional ``drafts`` / ``draft_tokens`` / ``accepted_tokens``) and the
reference's own lines (``choices[0]`` with ``new_tokens``, ``wall_time``,
``accept_lengths`` lists).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any

MT_BENCH_CATEGORIES = frozenset(
    {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
)
OVERALL = "overall"


@dataclass(frozen=True)
class Answer:
    category: str
    tokens: int
    wall_time: float
    decode_tokens: int  # tokens from decoding steps (all but the prefill's first)
    decode_steps: int
    draft_tokens: int | None = None
    accepted_tokens: int | None = None


def _answer(record: dict[str, Any]) -> Answer:
    if "choices" in record:  # the reference's format: lists per turn / per step
        choice = record["choices"][0]
        lengths = choice.get("accept_lengths") or []
        tokens = sum(choice["new_tokens"])
        return Answer(
            record["category"],
            tokens,
            sum(choice["wall_time"]),
            sum(lengths) if lengths else tokens - 1,
            len(lengths) if lengths else tokens - 1,
        )
    tokens = record["output_tokens"]
    accepted = record.get("accepted_tokens")
    # Each decoding step yields one token plus the drafts it accepted.
    steps = max(tokens - 1 - (accepted or 0), 1) if tokens > 1 else 0
    return Answer(
        record["category"],
        tokens,
        record["wall_time"],
        max(tokens - 1, 0),
        steps,
        record.get("draft_tokens"),
        accepted,
    )


def load_answers(path: Path | str) -> list[Answer]:
    with Path(path).open() as handle:
        return [_answer(json.loads(line)) for line in handle if line.strip()]


def task_of(category: str) -> str:
    return "mt_bench" if category in MT_BENCH_CATEGORIES else category


def speed_report(run: list[Answer], base: list[Answer]) -> list[dict[str, Any]]:
    """Rows per task (in order of first appearance in ``run``), ``overall`` last."""
    tasks = list(dict.fromkeys(task_of(a.category) for a in run))
    rows = []
    for task in [*tasks, OVERALL]:
        mine = [a for a in run if task in (OVERALL, task_of(a.category))]
        theirs = [a for a in base if task in (OVERALL, task_of(a.category))]
        if not mine or not theirs:
            continue
        speed = mean(a.tokens / a.wall_time for a in mine)
        base_speed = mean(a.tokens / a.wall_time for a in theirs)
        steps = sum(a.decode_steps for a in mine)
        drafted = [a for a in mine if a.draft_tokens is not None]
        draft_tokens = sum(a.draft_tokens for a in drafted)
        rows.append(
            {
                "task": task,
                "requests": len(mine),
                "tokens_per_s": speed,
                "base_tokens_per_s": base_speed,
                "speedup": speed / base_speed,
                "mean_accepted_tokens": sum(a.decode_tokens for a in mine) / steps
                if steps
                else 1.0,
                "acceptance_rate": sum(a.accepted_tokens or 0 for a in drafted) / draft_tokens
                if draft_tokens
                else None,
            }
        )
    return rows
