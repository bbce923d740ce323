"""Offline benchmark runs: one vLLM engine per method, timed ``generate`` calls per batch size.

Engines run one method after another (``run_method``) or all at once with
every group timed on each method in turn (``run_interleaved``).

Every method gets the same prompts in the same groups: for batch size B the
prompts (sorted by category, so most groups hold one category) go in groups
of B, one ``generate`` call each, so up to B requests decode together.
Prefix caching is off so every repeat does the same prefill work.
"""

import gc
import itertools
import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tqdm import tqdm

from swift_vllm.bench.methods import is_self_skip
from swift_vllm.bench.records import GroupRun, RequestResult
from swift_vllm.engine import chat_prompts, load_questions, make_llm, spread_by_category
from swift_vllm.stats import DraftStats

logger = logging.getLogger(__name__)

WARMUP_TOKENS = 16


@dataclass(frozen=True)
class Workload:
    """What every method is timed on."""

    questions: list[dict]
    batch_sizes: list[int]
    max_tokens: int
    temperature: float
    repeats: int
    """Timed runs of every group per engine."""
    ignore_eos: bool = False
    rounds: int = 1
    """Engines per method, started one method after another in rotating
    order, so the machine's drift between processes (10% here) is shared
    by every method instead of landing on one."""
    engine_args: dict[str, Any] = field(default_factory=dict)
    """vLLM engine arguments that replace ``ENGINE_DEFAULTS`` in every engine."""

    def groups(self, batch_size: int) -> list[range]:
        """Index ranges of the prompt groups at this batch size."""
        n = len(self.questions)
        return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    def num_generate_calls(self) -> int:
        """Timed ``generate`` calls per method, over every round."""
        return self.rounds * self.repeats * sum(len(self.groups(b)) for b in self.batch_sizes)

    def method_order(self, labels: list[str], turn: int) -> list[str]:
        """Turn t (a round, or an interleaved group) starts with the t-th
        method: each takes every place in turn."""
        shift = turn % len(labels)
        return labels[shift:] + labels[:shift]

    def group_order(
        self, labels: list[str], batch_size: int, repeat: int, group: range
    ) -> list[str]:
        """The methods' order for one interleaved group: the first method
        moves on by one from group to group and from repeat to repeat, so
        a group meets a different order in each repeat. (A turn counted
        over all calls gave every group the same order in every repeat
        whenever the groups were a multiple of the methods, and a method
        that ran after another engine on every repeat of a category could
        not be told from a method slower there.)"""
        return self.method_order(labels, repeat + group.start // batch_size)

    def timed_groups(self, batch_size: int, round_index: int = 0) -> Iterator[tuple[int, range]]:
        """(repeat, prompt indices) of every timed call at ``batch_size``;
        repeats are numbered after the earlier rounds' ones."""
        repeats = range(round_index * self.repeats, (round_index + 1) * self.repeats)
        return itertools.product(repeats, self.groups(batch_size))


def select_questions(
    dataset: Path | str | None, num_prompts: int, categories: list[str] | None = None
) -> list[dict]:
    """``num_prompts`` questions (of ``categories`` only, if given) taking
    categories in turn, then sorted by category: with as many prompts per
    category as the batch size, every batch holds one category."""
    questions = load_questions(dataset)
    if categories:
        known = {q["category"] for q in questions}
        unknown = sorted(set(categories) - known)
        if unknown:
            raise ValueError(
                f"unknown categories {unknown}; the dataset has {', '.join(sorted(known))}"
            )
        questions = [q for q in questions if q["category"] in categories]
    questions = spread_by_category(questions, num_prompts)
    return sorted(questions, key=lambda q: q["category"])


@contextmanager
def engine(model: str, speculative_config: dict | None, **overrides: Any) -> Iterator[Any]:
    """An engine that is shut down on exit: vLLM registers only the newest
    engine's metrics and two engines would share the CPUs."""
    llm = make_llm(model, speculative_config, **overrides)
    try:
        yield llm
    finally:
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()


def _draft_stats(llm) -> DraftStats:
    """The self-skip proposer's cumulative counters (first worker)."""
    counters = llm.collective_rpc("self_skip_stats")[0]
    return DraftStats(**{f.name: counters[f.name] for f in fields(DraftStats)})


def _request_result(question: dict, output) -> RequestResult:
    completion = output.outputs[0]
    result = RequestResult(question["question_id"], question["category"], len(completion.token_ids))
    metrics = completion.spec_decode_metrics
    if metrics is None:
        return result
    summary = metrics.to_dict()
    return RequestResult(
        result.question_id,
        result.category,
        result.output_tokens,
        drafts=summary["num_spec_steps"],
        draft_tokens=summary["num_draft_tokens"],
        accepted_tokens=summary["num_accepted_draft_tokens"],
    )


@dataclass
class MethodRun:
    """Everything timed for one method."""

    groups: list[GroupRun] = field(default_factory=list)
    skip_sets: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    """Self-skip only: batch size -> the skip set in use when its runs ended."""
    guard: dict[int, dict | None] = field(default_factory=dict)
    """Self-skip only: batch size -> the guard's status when its runs ended
    (cumulative; None with the guard off)."""
    search: dict[str, Any] = field(default_factory=dict)
    """Self-skip with a search: its state when timing started and ended. A
    search that optimizes during the timed runs puts its cost in them."""

    @property
    def proposer_stats(self) -> dict[tuple[str, int], DraftStats]:
        """Self-skip only: the proposer's own counters per (method, batch
        size), summed over the timed calls."""
        totals: dict[tuple[str, int], DraftStats] = {}
        for group in self.groups:
            if group.proposer is not None:
                key = (group.method, group.batch_size)
                totals[key] = totals[key] + group.proposer if key in totals else group.proposer
        return totals

    def merge(self, later: "MethodRun") -> None:
        """Add a later round's engine: every timing, and the later states
        (the search keeps its first start)."""
        self.groups.extend(later.groups)
        self.skip_sets.update(later.skip_sets)
        self.guard.update(later.guard)
        if later.search:
            self.search = later.search | {"start": self.search.get("start", later.search["start"])}


def engine_overrides(speculative_config: dict | None, workload: Workload) -> dict[str, Any]:
    """``make_llm`` overrides of a benchmark engine."""
    overrides: dict[str, Any] = workload.engine_args | {
        "max_num_seqs": max(workload.batch_sizes),
        "enable_prefix_caching": False,
    }
    if speculative_config is not None:
        overrides["per_request_spec_decode_metrics"] = "summary"
    if is_self_skip(speculative_config):
        from swift_vllm.vllm_compat import WORKER_EXTENSION  # imports vLLM

        overrides["worker_extension_cls"] = WORKER_EXTENSION
    return overrides


class MethodSession:
    """One method's engine through a benchmark: warmed up on start, then
    timing the groups it is given into ``run``."""

    def __init__(self, label: str, llm: Any, workload: Workload, self_skip: bool) -> None:
        from vllm import SamplingParams

        self.label, self.llm, self.workload, self.self_skip = label, llm, workload, self_skip
        self.run = MethodRun()
        self.prompts = chat_prompts(llm, workload.questions)
        self.params = SamplingParams(
            temperature=workload.temperature,
            max_tokens=workload.max_tokens,
            ignore_eos=workload.ignore_eos,
        )
        warmup = SamplingParams(temperature=workload.temperature, max_tokens=WARMUP_TOKENS)
        llm.generate(self.prompts[: max(workload.batch_sizes)], warmup, use_tqdm=False)
        self._stats = _draft_stats(llm) if self_skip else None
        if self_skip:
            self.run.search["start"] = llm.collective_rpc("self_skip_search_status")[0]

    def time(self, batch_size: int, repeat: int, indices: range) -> None:
        """One timed ``generate`` call over the prompts at ``indices``."""
        started, start = time.time(), time.perf_counter()
        outputs = self.llm.generate([self.prompts[i] for i in indices], self.params, use_tqdm=False)
        wall = time.perf_counter() - start
        requests = tuple(
            _request_result(self.workload.questions[i], output)
            for i, output in zip(indices, outputs, strict=True)
        )
        proposer = None
        if self._stats is not None:
            now = _draft_stats(self.llm)
            proposer, self._stats = now - self._stats, now
        self.run.groups.append(
            GroupRun(self.label, batch_size, repeat, wall, requests, proposer, started)
        )

    def end_batch_size(self, batch_size: int) -> None:
        """Record the skip set and the guard's state after a batch size's runs."""
        if self.self_skip:
            self.run.skip_sets[batch_size] = self.llm.collective_rpc("self_skip_current")[0]
            self.run.guard[batch_size] = self.llm.collective_rpc("self_skip_guard")[0]

    def finish(self) -> None:
        """Record the search's state after the last timed run."""
        if self.self_skip:
            self.run.search["end"] = self.llm.collective_rpc("self_skip_search_status")[0]


@contextmanager
def method_session(
    label: str, model: str, speculative_config: dict | None, workload: Workload
) -> Iterator[MethodSession]:
    """A started, warmed-up engine for one method, shut down on exit."""
    overrides = engine_overrides(speculative_config, workload)
    with engine(model, speculative_config, **overrides) as llm:
        yield MethodSession(label, llm, workload, is_self_skip(speculative_config))


def run_method(
    label: str,
    model: str,
    speculative_config: dict | None,
    workload: Workload,
    progress: tqdm,
    round_index: int = 0,
) -> MethodRun:
    """Start an engine, warm up, then time every group at every batch size,
    ``repeats`` times (numbered after the earlier rounds' repeats)."""
    with method_session(label, model, speculative_config, workload) as session:
        for batch_size in workload.batch_sizes:
            progress.set_postfix_str(f"{label} bs{batch_size}")
            for repeat, indices in workload.timed_groups(batch_size, round_index):
                session.time(batch_size, repeat, indices)
                progress.update(1)
            session.end_batch_size(batch_size)
        session.finish()
    return session.run


def run_interleaved(
    configs: dict[str, dict | None],
    model: str,
    workload: Workload,
    progress: tqdm,
    round_index: int = 0,
) -> tuple[dict[str, MethodRun], dict[str, str]]:
    """Every method's engine at once; each group is timed on every method
    back to back, first method rotating from group to group and repeat to
    repeat, so the machine's drift (minutes long, 10% here) lands on every
    method alike. Returns the runs and the methods that failed (a failed method leaves
    the rotation; the others go on)."""
    errors: dict[str, str] = {}

    @contextmanager
    def failing_alone(label: str) -> Iterator[None]:
        try:
            yield
        except Exception as err:  # one broken method must not lose the others' runs
            logger.exception("method %s failed", label)
            errors[label] = f"{type(err).__name__}: {err}"

    with ExitStack() as stack:
        sessions: dict[str, MethodSession] = {}
        for label, config in configs.items():
            with failing_alone(label):
                sessions[label] = stack.enter_context(
                    method_session(label, model, config, workload)
                )
        for batch_size in workload.batch_sizes:
            progress.set_postfix_str(f"bs{batch_size}")
            for repeat, indices in workload.timed_groups(batch_size, round_index):
                for label in workload.group_order(list(configs), batch_size, repeat, indices):
                    if label not in errors:
                        with failing_alone(label):
                            sessions[label].time(batch_size, repeat, indices)
                    progress.update(1)
            for label, session in sessions.items():
                if label not in errors:
                    with failing_alone(label):
                        session.end_batch_size(batch_size)
        for label, session in sessions.items():
            if label not in errors:
                with failing_alone(label):
                    session.finish()
    runs = {label: session.run for label, session in sessions.items() if label not in errors}
    return runs, errors


def write_answers(groups: list[GroupRun], out: Path) -> list[Path]:
    """``out/<method>_bs<B>.jsonl``: one line per request and repeat."""
    out.mkdir(parents=True, exist_ok=True)
    lines: dict[Path, list[str]] = {}
    for group in groups:
        path = out / f"{group.method}_bs{group.batch_size}.jsonl"
        lines.setdefault(path, []).extend(json.dumps(a) for a in group.answer_lines())
    for path, text in lines.items():
        path.write_text("\n".join(text) + "\n")
    return list(lines)
