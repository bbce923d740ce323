"""Matchness of candidate skip sets on tokens the full model already produced.

SWIFT scores a candidate by running the skipped model over the last
``context_window`` generated tokens in one parallel forward and counting how
often its argmax equals the token the full model produced next. The model's
own output is the ground truth, so no labels are needed. Unlike the
reference, whose windows at successive steps overlap, each generated token
is scored once (``WindowPicker``).

As in SWIFT's reference, the window runs on top of the exact K/V of the
context before it (read back from the paged cache, which stays untouched)
and attends causally to the skipped model's own K/V of the window tokens so
far, itself included; those are kept out of the cache, in the scorer's own
attention. All candidates are scored in one forward, the window tokens
stacked once per candidate, each copy with its own per-row sub-layer mask.
"""

from dataclasses import dataclass

import numpy as np
import torch

from swift_vllm.layer_skip import masked_forward
from swift_vllm.skip_set import SkipSet
from swift_vllm.vllm_compat import DecoderStack, RunnerView

# Windows shorter than this say too little about a candidate.
MIN_WINDOW_TOKENS = 8


@dataclass(frozen=True)
class Window:
    """Generated tokens of one request: inputs at ``start..start+len-1``,
    each predicting the next token of the sequence."""

    row: int  # the request's row in the runner's batch
    start: int  # position of the first input token
    inputs: np.ndarray
    targets: np.ndarray


class WindowPicker:
    """Chooses the windows to score on: generated tokens that no earlier
    scored window held. Overlapping windows would count one passage many
    times: at batch 1, successive windows of the last ``budget`` tokens are
    one request a few decoding steps apart, so a set that did well on one
    easy paragraph looked well measured, and a playoff of 8 windows' worth
    of tokens took 128 forwards."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        """Window tokens per scoring forward (``context_window``)."""
        self._scored_until: dict[str, int] = {}
        """Per running request, the position its last scored window ended at."""

    def select(
        self,
        rows: list[int],
        req_ids: list[str],
        lengths: np.ndarray,
        prompt_lengths: np.ndarray,
        token_ids: np.ndarray,
    ) -> list[Window]:
        """A window's worth of unscored generated tokens, from the requests
        with the most first; empty until there is one (the budget filled to
        within ``MIN_WINDOW_TOKENS``).

        Request ``i`` holds ``lengths[i]`` tokens; positions ``< lengths[i] - 1``
        have exact K/V. The last token of each request is a target only (it has
        no K/V yet); the first input is at most the last prompt token, whose
        successor is the first generated token.
        """
        first = {
            row: max(int(prompt_lengths[row]) - 1, self._scored_until.get(req_ids[row], 0))
            for row in rows
        }
        unscored = {row: int(lengths[row]) - 1 - first[row] for row in rows}
        windows, budget = [], self.budget
        for row in sorted(rows, key=lambda r: -unscored[r]):
            size = min(budget, unscored[row])
            if size < MIN_WINDOW_TOKENS:
                break
            end = int(lengths[row])  # exclusive; tokens start..end-1 are targets' span
            start = end - 1 - size
            sequence = token_ids[row, start:end]
            windows.append(Window(row, start, sequence[:-1].copy(), sequence[1:].copy()))
            budget -= size
            if budget < MIN_WINDOW_TOKENS:
                return windows
        return []

    def mark_scored(self, windows: list[Window], req_ids: list[str]) -> None:
        """Remember where ``windows`` (rows of the batch ``req_ids``) ended;
        forget finished requests."""
        running = set(req_ids)
        self._scored_until = {r: end for r, end in self._scored_until.items() if r in running}
        for window in windows:
            self._scored_until[req_ids[window.row]] = window.start + len(window.inputs)


def score_candidates(
    runner: RunnerView, stack: DecoderStack, windows: list[Window], candidates: list[SkipSet]
) -> list[float]:
    """Matchness of each candidate over all windows (share of correct argmaxes)."""
    device = runner.device
    positions = np.concatenate([np.arange(w.start, w.start + len(w.inputs)) for w in windows])
    inputs = np.concatenate([w.inputs for w in windows])
    targets = torch.as_tensor(np.concatenate([w.targets for w in windows]), device=device)
    copies = len(candidates)  # every window token once per candidate
    input_ids = torch.as_tensor(np.tile(inputs, copies), device=device)
    dtype = stack.embed(input_ids[:1]).dtype
    attention_keep = torch.ones(copies, stack.num_layers, dtype=dtype, device=device)
    mlp_keep = torch.ones_like(attention_keep)
    for c, skip in enumerate(candidates):
        attention_keep[c, list(skip.attention)] = 0
        mlp_keep[c, list(skip.mlp)] = 0
    token_candidate = torch.arange(copies, device=device).repeat_interleave(len(inputs))
    hidden = masked_forward(
        stack,
        input_ids,
        torch.as_tensor(np.tile(positions, copies), device=device),
        attention_keep[token_candidate],
        mlp_keep[token_candidate],
        attend=_WindowAttention(runner, windows, copies),
    )
    predicted = stack.logits(hidden).argmax(dim=-1).view(copies, len(inputs))
    return (predicted == targets).float().mean(dim=1).tolist()


class _WindowAttention:
    """The scoring forward's attention op: each stacked copy of a window
    attends to the window's exact cached context and, causally, to its own
    K/V of the window tokens."""

    def __init__(self, runner: RunnerView, windows: list[Window], copies: int) -> None:
        self._runner = runner
        self._windows = windows
        self._copies = copies
        self._tokens = sum(len(w.inputs) for w in windows)  # per copy

    def __call__(
        self, attention: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        heads, kv_heads = attention.num_heads, attention.num_kv_heads
        head_size = attention.head_size
        # [copies, tokens, heads, head_size] -> [copies, heads, tokens, head_size]
        q, k, v = (
            t.reshape(self._copies, self._tokens, -1, head_size).transpose(1, 2) for t in (q, k, v)
        )
        out = torch.empty_like(q)
        offset = 0
        for window in self._windows:
            span = slice(offset, offset + len(window.inputs))
            offset = span.stop
            cached_k, cached_v = self._runner.cached_kv(attention, window.row, window.start)
            keys = torch.cat((cached_k.expand(self._copies, -1, -1, -1), k[:, :, span]), dim=2)
            values = torch.cat((cached_v.expand(self._copies, -1, -1, -1), v[:, :, span]), dim=2)
            out[:, :, span] = torch.nn.functional.scaled_dot_product_attention(
                q[:, :, span],
                keys,
                values,
                attn_mask=_visible(window, attention.sliding_window, q.device),
                scale=attention.impl.scale,
                enable_gqa=heads != kv_heads,
            )
        return out.transpose(1, 2).reshape(self._copies * self._tokens, heads * head_size)


def _visible(window: Window, sliding_window: int | None, device: torch.device) -> torch.Tensor:
    """``[window tokens, start + window tokens]``: which key positions each
    window token sees (causal, within the sliding window if the layer has one)."""
    queries = torch.arange(window.start, window.start + len(window.inputs), device=device)
    keys = torch.arange(window.start + len(window.inputs), device=device)
    visible = keys[None, :] <= queries[:, None]
    if sliding_window is not None:
        visible &= queries[:, None] - keys[None, :] < sliding_window
    return visible
