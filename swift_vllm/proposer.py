"""The self-skip proposer: the served model drafts for itself with sub-layers skipped.

vLLM constructs it through its ``custom_class`` method and calls ``propose``
after every verification step. Each draft step feeds one token per drafting
request through the target's own layers, minus the skip set, over the
target's own paged KV cache: context K/V are exact (written by full-model
passes) and the drafts' K/V land in the speculative slots that the next
verification pass overwrites. No second model, no second cache.

Around the drafting, each step also reads off how the previous drafts fared
(for the statistics, the profitability guard and the search), and, while the
search optimizes, scores candidate skip sets on the tokens just generated.
"""

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch

from swift_vllm.config import SelfSkipConfig
from swift_vllm.guard import Cycle, Decision, Mode, ProfitabilityGuard
from swift_vllm.layer_skip import skipped_forward
from swift_vllm.lookup import UnsentDrafts, lookup_drafts
from swift_vllm.scoring import WindowPicker, score_candidates
from swift_vllm.skip_set import SkipSet
from swift_vllm.stats import DraftStats
from swift_vllm.vllm_compat import DecoderStack, RunnerView, self_skip_options

logger = logging.getLogger(__name__)

# Below this temperature vLLM samples greedily (it stores 0.0 for greedy).
_GREEDY_TEMPERATURE = 1e-5
# Idle time earns scoring time only up to this much, so a search that
# restarts after a quiet hour does not score in one long burst.
_MAX_SCORING_CREDIT_S = 5.0


@dataclass(frozen=True)
class _Round:
    """What one ``propose`` call did, read back at the next call."""

    req_ids: frozenset[str]
    drafted: dict[str, int]  # request -> self-skip draft tokens proposed
    looked_up: dict[str, int]  # request -> prompt-lookup draft tokens proposed
    # Requests whose lookup draft went out cut short: the guard learns how the
    # whole draft fares from ``UnsentDrafts``, not from the part verified.
    cut: frozenset[str]
    skip_set: SkipSet
    scored: bool  # whether candidate sets were scored (an optimization cost)
    draft_s: float | None  # seconds spent drafting; None if nothing was drafted
    draft_steps: int
    started: float
    ended: float


@dataclass(frozen=True)
class _Verified:
    """How the previous round's drafts fared in this step's verification."""

    outcomes: dict[str, tuple[int, int]]  # request -> draft tokens, accepted tokens

    @property
    def requests(self) -> int:
        return len(self.outcomes)

    @property
    def drafted(self) -> int:
        return sum(tokens for tokens, _ in self.outcomes.values())

    @property
    def accepted(self) -> int:
        return sum(accepted for _, accepted in self.outcomes.values())

    @property
    def rejected(self) -> int:
        """Requests whose draft was cut short by a rejection."""
        return sum(accepted < tokens for tokens, accepted in self.outcomes.values())


class SelfSkipProposer:
    """Drafts up to ``max_draft_len`` tokens per request with a skip set."""

    def __init__(self, vllm_config) -> None:
        self.options: SelfSkipConfig = self_skip_options(vllm_config)
        self.num_speculative_tokens = vllm_config.speculative_config.num_speculative_tokens
        self.max_draft_len = self.options.max_draft_len or self.num_speculative_tokens
        self.max_model_len = vllm_config.model_config.max_model_len
        self.model_name = vllm_config.model_config.model
        self.skip_set: SkipSet | None = None  # known once the model is loaded
        self.stats = DraftStats()
        self._guard = ProfitabilityGuard(self.options.lookup) if self.options.guard else None
        self._unsent = UnsentDrafts()  # lookup drafts the guard held back
        self._search = None  # a SearchClient unless the set is fixed
        self._runner: RunnerView | None = None
        self._stack: DecoderStack | None = None
        self._previous: _Round | None = None
        # Token bucket for scoring time: it fills at opt_time_share seconds
        # per wall second (up to _MAX_SCORING_CREDIT_S) and each scoring
        # forward spends its duration.
        self._scoring_credit = 0.0
        self._credit_updated: float | None = None
        self._windows = WindowPicker(self.options.context_window)

    def attach_runner(self, runner: RunnerView) -> None:
        """Called by the patched model runner right after it built us."""
        self._runner = runner

    def load_model(self, target_model: torch.nn.Module) -> None:
        """Take the target's layers apart; the weights are not copied."""
        self._stack = DecoderStack(target_model)
        num_layers = self._stack.num_layers
        self.options.validate(num_layers, self.num_speculative_tokens)
        if self.options.has_fixed_set:
            skip = SkipSet(
                tuple(self.options.attention_skip or ()), tuple(self.options.mlp_skip or ())
            )
        else:
            from swift_vllm.search import SearchClient  # Ray only when searching

            self._search = SearchClient(
                self.model_name, num_layers, self.options, self.max_draft_len
            )
            skip = self._search.current()
        self.set_skip_set(skip)
        logger.info(
            "self-skip drafting skips attention %s and MLP %s%s",
            skip.attention,
            skip.mlp,
            "" if self._search is None else " (to start with; the search refines it)",
        )

    def set_skip_set(self, skip: SkipSet) -> None:
        """Switch the set the next draft uses (between drafting rounds only)."""
        if skip != self.skip_set:
            logger.debug("self-skip set: attention %s, MLP %s", skip.attention, skip.mlp)
        self.skip_set = skip

    def search_status(self) -> dict | None:
        """The shared search's status for this model and task (None with a fixed set)."""
        return None if self._search is None else self._search.status()

    def guard_status(self) -> dict[str, dict] | None:
        """The profitability guard's choices, costs and gains (None when off)."""
        return None if self._guard is None else self._guard.status()

    def propose(
        self,
        sampled_token_ids: list[list[int]],
        num_tokens_no_spec: np.ndarray,
        token_ids_cpu: np.ndarray,
        slot_mappings=None,
    ) -> list[list[int]]:
        """Draft tokens for every request in the runner's batch order.

        ``sampled_token_ids[i]`` is empty for requests still in prefill (no
        draft); the newest token of request i is ``token_ids_cpu[i, n_i - 1]``
        with ``n_i = num_tokens_no_spec[i]``; it has no K/V yet, so the first
        draft step feeds it at position ``n_i - 1``.
        """
        assert self._runner is not None and self._stack is not None
        started = time.perf_counter()
        num_reqs = len(sampled_token_ids)
        req_ids = self._runner.req_ids[:num_reqs]
        self._observe(req_ids, sampled_token_ids, started)

        lengths = num_tokens_no_spec[:num_reqs].astype(np.int64)
        self._observe_unsent(req_ids, lengths, token_ids_cpu)
        budgets = np.minimum(self.max_draft_len, self.max_model_len - lengths)
        rows = [i for i in range(num_reqs) if sampled_token_ids[i] and budgets[i] > 0]
        scored = self._search is not None and self._search_step(
            rows, req_ids, lengths, token_ids_cpu
        )

        drafts: list[list[int]] = [[] for _ in range(num_reqs)]
        if self.options.lookup:
            self._lookup(rows, lengths, token_ids_cpu, drafts)
        # Only requests without a lookup draft run the skipped model.
        self_skip_rows = [i for i in rows if not drafts[i]]
        decision = self._decide(req_ids, rows, self_skip_rows, drafts, lengths)
        cut = set()
        for i in rows:
            sent = decision.lookup.get(req_ids[i], 0)
            if sent < len(drafts[i]):
                if self._unsent.add(req_ids[i], drafts[i], int(lengths[i])) and sent:
                    cut.add(req_ids[i])
                drafts[i] = drafts[i][:sent]
        looked_up = {req_ids[i]: len(drafts[i]) for i in rows if drafts[i]}
        draft_s, steps, draft_probs = None, 0, None
        if self_skip_rows and decision.mode.self_skips:
            draft_started = time.perf_counter()
            with torch.inference_mode():
                steps, draft_probs = self._draft(
                    self_skip_rows, lengths, budgets, token_ids_cpu, drafts
                )
            draft_s = time.perf_counter() - draft_started
            self.stats.draft_steps += steps
            self.stats.draft_seconds += draft_s
        if draft_probs is not None:
            # Lookup drafts are deterministic: a one-hot q makes min(1, p/q)
            # exact for them in the same batch.
            for i in range(num_reqs):
                if req_ids[i] in looked_up:
                    draft_probs[i, torch.arange(len(drafts[i])), drafts[i]] = 1.0
            self._runner.set_draft_probs(draft_probs, self._runner.req_ids)
        self._previous = _Round(
            req_ids=frozenset(req_ids),
            drafted={
                r: len(d) for r, d in zip(req_ids, drafts, strict=True) if d and r not in looked_up
            },
            looked_up=looked_up,
            cut=frozenset(cut),
            skip_set=self.skip_set,
            scored=scored,
            draft_s=draft_s,
            draft_steps=steps,
            started=started,
            ended=time.perf_counter(),
        )
        return drafts

    def _decide(
        self,
        req_ids: list[str],
        rows: list[int],
        self_skip_rows: list[int],
        drafts: list[list[int]],
        lengths: np.ndarray,
    ) -> Decision:
        """The drafters this step runs and the lookup drafts it sends: the
        guard's choice, if it is on."""
        lookup = {req_ids[i]: len(drafts[i]) for i in rows if drafts[i]}
        if not rows:  # nobody can draft: a plain step, whatever the guard says
            return Decision(Mode.PLAIN, {})
        if self._guard is None:
            return Decision(Mode.SELF_SKIP, lookup)
        decision = self._guard.choose(
            len(req_ids),
            lookup,
            [req_ids[i] for i in self_skip_rows],
            {req_ids[i]: int(lengths[i]) for i in rows},
        )
        if self_skip_rows and not decision.mode.self_skips:
            self.stats.guard_skipped_steps += 1
        return decision

    def _observe(self, req_ids: list[str], sampled: list[list[int]], started: float) -> None:
        """Feed the previous round's outcome to the stats, guard and search."""
        previous = self._previous
        if previous is None:
            return
        verified = _verified(previous.drafted, req_ids, sampled)
        step_s = started - previous.ended  # the runner's target step (and its overheads)
        if verified is not None:
            self.stats.drafts += verified.requests
            self.stats.draft_tokens += verified.drafted
            self.stats.accepted_tokens += verified.accepted
            self.stats.verify_steps += 1
            self.stats.verify_seconds += step_s
        looked_up = _verified(previous.looked_up, req_ids, sampled)
        if looked_up is not None:
            self.stats.lookup_drafts += looked_up.requests
            self.stats.lookup_draft_tokens += looked_up.drafted
            self.stats.lookup_accepted_tokens += looked_up.accepted
        if verified is not None and looked_up is not None:
            self.stats.mixed_steps += 1
        if self._guard is not None:
            self._observe_for_guard(previous, req_ids, sampled, started, verified, looked_up)
        if self._search is not None and verified is not None:
            self._search.report_acceptance(
                previous.skip_set,
                verified.accepted,
                verified.rejected,
                previous.draft_s / previous.draft_steps,
                step_s,
                len(req_ids),
            )

    def _observe_unsent(
        self, req_ids: list[str], lengths: np.ndarray, token_ids: np.ndarray
    ) -> None:
        """Tell the guard how the lookup drafts it held back would have fared."""
        outcomes = self._unsent.resolve(req_ids, lengths, token_ids)
        if outcomes and self._guard is not None:
            self._guard.observe_drafts(Mode.LOOKUP, outcomes)

    def _observe_for_guard(
        self,
        previous: _Round,
        req_ids: list[str],
        sampled: list[list[int]],
        started: float,
        verified: "_Verified | None",
        looked_up: "_Verified | None",
    ) -> None:
        """Each source's acceptance; and the step's cost if it decoded the
        same requests as the round before (no prefill mixed in, nobody joined
        or left) and scored no candidates."""
        if verified is not None:
            self._guard.observe_drafts(Mode.SELF_SKIP, verified.outcomes)
        if looked_up is not None:
            whole = {r: o for r, o in looked_up.outcomes.items() if r not in previous.cut}
            self._guard.observe_drafts(Mode.LOOKUP, whole)
        if previous.req_ids == frozenset(req_ids) and all(sampled) and not previous.scored:
            draft_tokens = sum(previous.drafted.values()) + sum(previous.looked_up.values())
            accepted = sum(outcome.accepted for outcome in (verified, looked_up) if outcome)
            self._guard.observe(
                Cycle(
                    len(req_ids),
                    draft_tokens,
                    previous.draft_steps,
                    accepted,
                    started - previous.started,
                    previous.draft_s or 0.0,
                )
            )

    def _search_step(
        self, rows: list[int], req_ids: list[str], lengths: np.ndarray, token_ids: np.ndarray
    ) -> bool:
        """Take up the search's best set; while it optimizes, score its
        candidates on the tokens the full model just generated. Returns
        whether it scored."""
        self.set_skip_set(self._search.current())
        if not self._search.optimizing:
            return False
        windows = self._windows.select(
            rows, req_ids, lengths, self._runner.prompt_lengths(len(lengths)), token_ids
        )
        if not windows or not self._scoring_within_budget():
            return False
        candidates = self._search.candidates()
        if not candidates:
            return False
        started = time.perf_counter()
        with torch.inference_mode():
            scores = score_candidates(self._runner, self._stack, windows, candidates)
        seconds = time.perf_counter() - started
        self._scoring_credit -= seconds
        self.stats.scoring_steps += 1
        self.stats.scoring_seconds += seconds
        self._windows.mark_scored(windows, req_ids)
        self._search.report_scores(
            list(zip(candidates, scores, strict=True)),
            sum(len(w.inputs) for w in windows),
            seconds,
        )
        return True

    def _scoring_within_budget(self) -> bool:
        """Scoring's share of the wall time stays under ``opt_time_share``."""
        now = time.perf_counter()
        if self._credit_updated is not None:
            earned = self.options.opt_time_share * (now - self._credit_updated)
            self._scoring_credit = min(self._scoring_credit + earned, _MAX_SCORING_CREDIT_S)
        self._credit_updated = now
        return self._scoring_credit >= 0.0

    def _lookup(
        self, rows: list[int], lengths: np.ndarray, token_ids: np.ndarray, drafts: list[list[int]]
    ) -> None:
        """Prompt-lookup drafts (up to ``num_speculative_tokens``) where the
        context repeats its latest n-gram."""
        if not rows:
            return
        found = lookup_drafts(
            token_ids[rows, : int(lengths[rows].max())],
            lengths[rows],
            self.options.prompt_lookup_min,
            self.options.prompt_lookup_max,
            np.minimum(self.num_speculative_tokens, self.max_model_len - lengths[rows]),
        )
        for i, draft in zip(rows, found, strict=True):
            drafts[i] = draft.tolist()

    def _draft(
        self,
        rows: list[int],
        lengths: np.ndarray,
        budgets: np.ndarray,
        token_ids_cpu: np.ndarray,
        drafts: list[list[int]],
    ) -> tuple[int, torch.Tensor | None]:
        """Fill ``drafts`` for ``rows``; return the number of draft forwards
        and, when any request samples, the draft distributions
        ``[num_reqs, num_speculative_tokens, vocab]``.

        Every step runs only the requests still drafting: a request stops at
        its budget or once the draft's top-1 probability falls below
        ``stop_threshold`` (the low-confidence token itself is kept).
        """
        runner, stack = self._runner, self._stack
        device = runner.device
        active = torch.tensor(rows, dtype=torch.long, device=device)
        positions = torch.as_tensor(lengths[rows] - 1, device=device)
        input_ids = torch.as_tensor(
            token_ids_cpu[rows, lengths[rows] - 1], dtype=torch.long, device=device
        )
        budget = torch.as_tensor(budgets, device=device)
        temperatures = runner.temperatures(len(drafts))
        draft_probs = None
        for step in range(self.max_draft_len):
            with runner.forward_context(active, positions):
                hidden = skipped_forward(stack, input_ids, positions, self.skip_set)
                logits = stack.logits(hidden).float()
            confidence = torch.softmax(logits, dim=-1).amax(dim=-1)
            if temperatures is None:
                tokens = logits.argmax(dim=-1)
            else:
                tokens, probs = _sample(logits, temperatures[active])
                if draft_probs is None:
                    draft_probs = logits.new_zeros(
                        len(drafts), self.num_speculative_tokens, logits.shape[-1]
                    )
                draft_probs[active, step] = probs
            for row, token in zip(active.tolist(), tokens.tolist(), strict=True):
                drafts[row].append(token)
            keep = (confidence >= self.options.stop_threshold) & (budget[active] > step + 1)
            if not bool(keep.any()):
                break
            active, positions, input_ids = active[keep], positions[keep] + 1, tokens[keep]
        return step + 1, draft_probs


def _verified(
    drafted: dict[str, int], req_ids: list[str], sampled: list[list[int]]
) -> _Verified | None:
    """Acceptance of last round's drafts: a request that drafted ``d`` tokens
    gets ``accepted + 1`` tokens back. None if none of them was verified."""
    outcomes = {}
    for req_id, tokens in zip(req_ids, sampled, strict=True):
        count = drafted.get(req_id, 0)
        if count and tokens:
            outcomes[req_id] = (count, min(len(tokens) - 1, count))
    return _Verified(outcomes) if outcomes else None


def _sample(logits: torch.Tensor, temperatures: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Draft tokens and the distributions they were drawn from.

    Greedy rows take the argmax; sampled rows draw from softmax(logits / T).
    The rejection sampler then accepts a draft with min(1, p / q), which keeps
    the target distribution for any q, as long as q is the one sampled from.
    """
    greedy = temperatures < _GREEDY_TEMPERATURE
    scaled = logits / torch.where(greedy, 1.0, temperatures).unsqueeze(-1)
    probs = torch.softmax(scaled, dim=-1)
    # Exponential-race sampling: argmax(q / Exp(1)) is a draw from q.
    sampled = probs.div(torch.empty_like(probs).exponential_()).argmax(dim=-1)
    return torch.where(greedy, logits.argmax(dim=-1), sampled), probs
