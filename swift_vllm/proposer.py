"""The self-skip proposer: the served model drafts for itself with sub-layers skipped.

vLLM constructs it through its ``custom_class`` method and calls ``propose``
after every verification step. Each draft step feeds one token per drafting
request through the target's own layers, minus the skip set, over the
target's own paged KV cache: context K/V are exact (written by full-model
passes) and the drafts' K/V land in the speculative slots that the next
verification pass overwrites. No second model, no second cache.
"""

import logging
import time

import numpy as np
import torch

from swift_vllm.config import SelfSkipConfig
from swift_vllm.layer_skip import skipped_forward
from swift_vllm.skip_set import SkipSet, default_skip_set
from swift_vllm.stats import DraftStats
from swift_vllm.vllm_compat import DecoderStack, RunnerView, self_skip_options

logger = logging.getLogger(__name__)

# Below this temperature vLLM samples greedily (it stores 0.0 for greedy).
_GREEDY_TEMPERATURE = 1e-5
# Starting skip ratio when the user fixes neither the layers nor the ratio.
DEFAULT_SKIP_RATIO = 0.2


class SelfSkipProposer:
    """Drafts up to ``max_draft_len`` tokens per request with a skip set."""

    def __init__(self, vllm_config) -> None:
        self.options: SelfSkipConfig = self_skip_options(vllm_config)
        self.num_speculative_tokens = vllm_config.speculative_config.num_speculative_tokens
        self.max_draft_len = self.options.max_draft_len or self.num_speculative_tokens
        self.max_model_len = vllm_config.model_config.max_model_len
        self.skip_set: SkipSet | None = None  # known once the model is loaded
        self.stats = DraftStats()
        self._runner: RunnerView | None = None
        self._stack: DecoderStack | None = None
        # Draft length proposed per request at the last step, to read off
        # how many were accepted at the next one.
        self._last_drafts: dict[str, int] = {}
        self._last_propose_end: float | None = None

    def attach_runner(self, runner: RunnerView) -> None:
        """Called by the patched model runner right after it built us."""
        self._runner = runner

    def load_model(self, target_model: torch.nn.Module) -> None:
        """Take the target's layers apart; the weights are not copied."""
        self._stack = DecoderStack(target_model)
        num_layers = self._stack.num_layers
        self.options.validate(num_layers, self.num_speculative_tokens)
        self.set_skip_set(self._initial_skip_set(num_layers))

    def set_skip_set(self, skip: SkipSet) -> None:
        """Switch the set the next draft uses (between drafting rounds only)."""
        self.skip_set = skip
        logger.info("self-skip drafting skips attention %s and MLP %s", skip.attention, skip.mlp)

    def _initial_skip_set(self, num_layers: int) -> SkipSet:
        if self.options.has_fixed_set:
            return SkipSet(
                attention=tuple(self.options.attention_skip or ()),
                mlp=tuple(self.options.mlp_skip or ()),
            )
        ratio = self.options.skip_ratio
        return default_skip_set(num_layers, DEFAULT_SKIP_RATIO if ratio is None else ratio)

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
        if self._count_verified(req_ids, sampled_token_ids):
            # The runner's verification step ran since our last proposal.
            self.stats.verify_steps += 1
            self.stats.verify_seconds += started - self._last_propose_end
        drafts = self._propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        self._last_drafts = {r: len(d) for r, d in zip(req_ids, drafts, strict=True) if d}
        self._last_propose_end = time.perf_counter()
        return drafts

    def _count_verified(self, req_ids: list[str], sampled_token_ids: list[list[int]]) -> bool:
        """Count the acceptance of the previous step's drafts (a request that
        drafted ``d`` tokens gets ``accepted + 1`` tokens back); False if
        none of them was verified in this step."""
        verified = False
        for req_id, sampled in zip(req_ids, sampled_token_ids, strict=True):
            drafted = self._last_drafts.get(req_id, 0)
            if drafted and sampled:
                verified = True
                self.stats.drafts += 1
                self.stats.draft_tokens += drafted
                self.stats.accepted_tokens += min(len(sampled) - 1, drafted)
        return verified

    def _propose(
        self,
        sampled_token_ids: list[list[int]],
        num_tokens_no_spec: np.ndarray,
        token_ids_cpu: np.ndarray,
    ) -> list[list[int]]:
        num_reqs = len(sampled_token_ids)
        drafts: list[list[int]] = [[] for _ in range(num_reqs)]
        lengths = num_tokens_no_spec[:num_reqs].astype(np.int64)
        budgets = np.minimum(self.max_draft_len, self.max_model_len - lengths)
        rows = [i for i in range(num_reqs) if sampled_token_ids[i] and budgets[i] > 0]
        if not rows:
            return drafts
        with torch.inference_mode():
            self._draft(rows, lengths, budgets, token_ids_cpu, drafts)
        return drafts

    def _draft(
        self,
        rows: list[int],
        lengths: np.ndarray,
        budgets: np.ndarray,
        token_ids_cpu: np.ndarray,
        drafts: list[list[int]],
    ) -> None:
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
            step_started = time.perf_counter()
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
            self.stats.draft_steps += 1
            self.stats.draft_seconds += time.perf_counter() - step_started
            keep = (confidence >= self.options.stop_threshold) & (budget[active] > step + 1)
            if not bool(keep.any()):
                break
            active, positions, input_ids = (
                active[keep],
                positions[keep] + 1,
                tokens[keep],
            )
        if draft_probs is not None:
            runner.set_draft_probs(draft_probs, runner.req_ids)


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
