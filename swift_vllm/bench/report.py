"""From timed group runs to ``results.json`` rows and printed tables.

Rows are per method, batch size and category (plus ``all``). Timing is the
median over repeats; acceptance counts are summed over repeats (they are
counts, not noisy timings). A group may mix categories (prompts are sorted
by category, so only at category borders): its wall time is then split
between its requests by their share of the group's output tokens, since
every decoding step of a batch serves all of its requests.
"""

import json
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

from swift_vllm.bench.methods import BASELINE
from swift_vllm.bench.records import GroupRun
from swift_vllm.stats import DraftStats

ALL = "all"


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def summarize(
    groups: list[GroupRun], proposer_stats: dict[tuple[str, int], DraftStats] | None = None
) -> list[dict[str, Any]]:
    """One row per (method, batch size, category), ``all`` first per cell.

    ``proposer_stats`` (self-skip's own counters per method and batch size)
    add the measured draft/verify cost ratio and the speedup Leviathan et
    al.'s formula predicts from it, to set against the measured speedup."""
    # (method, batch, category) -> repeat -> [tokens, attributed seconds]
    timing: dict[tuple, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0.0]))
    counts: dict[tuple, list[int | None]] = {}  # -> [requests, drafts, draft tok, accepted]
    sources: dict[tuple, np.ndarray] = defaultdict(lambda: np.zeros(2 * len(_SOURCE_COUNTERS)))
    for group in groups:
        group_tokens = sum(r.output_tokens for r in group.requests)
        for request in group.requests:
            share = (
                request.output_tokens / group_tokens if group_tokens else 1 / len(group.requests)
            )
            for category in (ALL, request.category):
                key = (group.method, group.batch_size, category)
                cell = timing[key][group.repeat]
                cell[0] += request.output_tokens
                cell[1] += group.wall_time * share
                if group.proposer is not None:
                    sources[key] += share * _source_counts(group.proposer)
                total = counts.setdefault(key, [0, None, None, None])
                total[0] += 1
                for index, value in enumerate(
                    (request.drafts, request.draft_tokens, request.accepted_tokens), start=1
                ):
                    if value is not None:
                        total[index] = (total[index] or 0) + value
    # Tokens/s per repeat: the row's median, and the pairs its speedup is made of.
    rates = {
        key: {r: tokens / seconds for r, (tokens, seconds) in repeats.items()}
        for key, repeats in timing.items()
    }
    rows = []
    for key, repeats in timing.items():
        method, batch_size, category = key
        requests, drafts, draft_tokens, accepted = counts[key]
        row: dict[str, Any] = {
            "method": method,
            "batch_size": batch_size,
            "category": category,
            "num_requests": requests // len(repeats),
            "output_tokens": median(t for t, _ in repeats.values()),
            "wall_time_s": median(s for _, s in repeats.values()),
            "output_tokens_per_s": median(rates[key].values()),
        }
        if drafts is not None:
            row["acceptance_rate"] = _ratio(accepted, draft_tokens)
            row["mean_accepted_length"] = 1.0 + accepted / drafts if drafts else 1.0
            row["mean_draft_length"] = _ratio(draft_tokens, drafts)
        if key in sources:
            row["draft_sources"] = _draft_sources(sources[key])
        rows.append(row)
    # Speedups are paired: each repeat's rate over vanilla's rate in the same
    # repeat (same round; with --interleave, the same minute), then the median.
    for row in rows:
        mine = rates[(row["method"], row["batch_size"], row["category"])]
        base = rates.get((BASELINE, row["batch_size"], row["category"]), {})
        paired = [mine[r] / base[r] for r in mine if base.get(r)]
        row["speedup"] = median(paired) if paired else None
        # The spread between repeats is this cell's own noise: a difference
        # between methods smaller than it is not a measured difference.
        row["speedup_range"] = [min(paired), max(paired)] if paired else None
        stats = (proposer_stats or {}).get((row["method"], row["batch_size"]))
        if stats is not None and row["category"] == ALL:
            row |= _prediction(stats)
    order = {m: i for i, m in enumerate(dict.fromkeys(g.method for g in groups))}
    rows.sort(
        key=lambda r: (order[r["method"]], r["batch_size"], r["category"] != ALL, r["category"])
    )
    return rows


# Per draft source, the proposer's counters of draft tokens verified and accepted.
_SOURCE_COUNTERS = {
    "self-skip": ("draft_tokens", "accepted_tokens"),
    "lookup": ("lookup_draft_tokens", "lookup_accepted_tokens"),
}


def _source_counts(stats: DraftStats) -> np.ndarray:
    return np.array([getattr(stats, name) for pair in _SOURCE_COUNTERS.values() for name in pair])


def _draft_sources(counts: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per source: draft tokens verified (a group's counts split between its
    requests by output tokens), their share of all draft tokens, acceptance."""
    pairs = dict(zip(_SOURCE_COUNTERS, counts.reshape(-1, 2).tolist(), strict=True))
    total = sum(tokens for tokens, _ in pairs.values())
    return {
        source: {
            "draft_tokens": tokens,
            "share": _ratio(tokens, total),
            "acceptance_rate": _ratio(accepted, tokens),
        }
        for source, (tokens, accepted) in pairs.items()
    }


def _prediction(stats: DraftStats) -> dict[str, Any]:
    """The proposer's own counters (draft, verify and search-scoring time, steps
    the guard skipped), its cost ratio and the speedup predicted from them."""
    # Imported here: the search package pulls in Ray, which `speed` never needs.
    from swift_vllm.search.speedup import expected_speedup

    draft_step = _ratio(stats.draft_seconds, stats.draft_steps)
    verify_step = _ratio(stats.verify_seconds, stats.verify_steps)
    measured = {"proposer": stats.to_dict()}
    if not draft_step or not verify_step or not stats.drafts:
        return measured | {"cost_ratio": None, "predicted_speedup": None}
    cost_ratio = draft_step / verify_step
    draft_len = stats.draft_tokens / stats.drafts
    return measured | {
        "cost_ratio": cost_ratio,
        "predicted_speedup": expected_speedup(stats.acceptance_rate, draft_len, cost_ratio),
    }


def write_results(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta | {"results": rows}, indent=2) + "\n")


def format_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A plain fixed-width text table; floats with 2 decimals, ``None`` as ``-``."""

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


def overall_table(rows: list[dict[str, Any]]) -> str:
    """Per method and batch size, all categories together."""
    headers = ["method", "batch", "tok/s", "speedup", "range", "accept", "acc len", "draft len"]
    headers += ["wall s", "cost c", "predicted"]
    keys = ["acceptance_rate", "mean_accepted_length", "mean_draft_length", "wall_time_s"]
    keys += ["cost_ratio", "predicted_speedup"]
    body = [
        [
            r["method"],
            r["batch_size"],
            r["output_tokens_per_s"],
            r["speedup"],
            _range(r["speedup_range"]),
            *(r.get(k) for k in keys),
        ]
        for r in rows
        if r["category"] == ALL
    ]
    return format_table(headers, body)


def _range(bounds: list[float] | None) -> str | None:
    """``low-high`` of a cell's paired speedups over repeats; one repeat has none."""
    if bounds is None or bounds[0] == bounds[1]:
        return None
    return f"{bounds[0]:.2f}-{bounds[1]:.2f}"


def category_table(rows: list[dict[str, Any]]) -> str:
    """Speedup over vanilla per category (rows) and method at each batch size (columns)."""
    columns = list(dict.fromkeys((r["method"], r["batch_size"]) for r in rows))
    columns = [(m, b) for m, b in columns if m != BASELINE]
    categories = sorted({r["category"] for r in rows}, key=lambda c: (c != ALL, c))
    speedup = {(r["method"], r["batch_size"], r["category"]): r["speedup"] for r in rows}
    headers = ["category", *(f"{m} bs{b}" for m, b in columns)]
    body = [[c, *(speedup.get((m, b, c)) for m, b in columns)] for c in categories]
    return format_table(headers, body)


def source_table(rows: list[dict[str, Any]]) -> str:
    """Share of draft tokens from prompt lookup, and each source's acceptance,
    per category (rows) and self-skip method at each batch size (columns)."""
    cells = {
        (r["method"], r["batch_size"], r["category"]): r["draft_sources"]
        for r in rows
        if "draft_sources" in r
    }
    columns = list(dict.fromkeys((m, b) for m, b, _ in cells))
    categories = sorted({c for _, _, c in cells}, key=lambda c: (c != ALL, c))

    def cell(sources: dict | None) -> str | None:
        if sources is None or sources["lookup"]["share"] is None:
            return None
        acceptance = [sources[s]["acceptance_rate"] for s in ("lookup", "self-skip")]
        shown = ["-" if a is None else f"{a:.2f}" for a in acceptance]
        return f"{sources['lookup']['share']:.0%} ({shown[0]}/{shown[1]})"

    headers = ["category", *(f"{m} bs{b}" for m, b in columns)]
    body = [[c, *(cell(cells.get((m, b, c))) for m, b in columns)] for c in categories]
    return format_table(headers, body)
