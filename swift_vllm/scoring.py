"""Matchness of candidate skip sets on tokens the full model already produced.

SWIFT scores a candidate by running the skipped model over the last
``context_window`` generated tokens in one parallel forward and counting how
often its argmax equals the token the full model produced next. The model's
own output is the ground truth, so no labels are needed.

The windows are re-read with K/V writes disabled: their positions already
hold exact K/V from full-model passes, which stay untouched. Each window
token attends to the exact K/V of the tokens before it (as a first draft
step does) but not to its own slot, whose exact K/V would leak the full
model's answer. All candidates are scored in one forward, the window tokens
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


def select_windows(
    rows: list[int],
    lengths: np.ndarray,
    prompt_lengths: np.ndarray,
    token_ids: np.ndarray,
    budget: int,
) -> list[Window]:
    """Up to ``budget`` generated tokens, taken from the longest outputs first.

    Request ``i`` holds ``lengths[i]`` tokens; positions ``< lengths[i] - 1``
    have exact K/V. The last token of each request is a target only (it has
    no K/V yet); the first input is the last prompt token, whose successor is
    the first generated token.
    """
    generated = {row: int(lengths[row] - prompt_lengths[row]) for row in rows}
    windows = []
    for row in sorted(rows, key=lambda r: -generated[r]):
        size = min(budget, generated[row])
        if size < MIN_WINDOW_TOKENS:
            break
        end = int(lengths[row])  # exclusive; tokens start..end-1 are targets' span
        start = end - 1 - size
        sequence = token_ids[row, start:end]
        windows.append(Window(row, start, sequence[:-1].copy(), sequence[1:].copy()))
        budget -= size
        if budget < MIN_WINDOW_TOKENS:
            break
    return windows


def score_candidates(
    runner: RunnerView, stack: DecoderStack, windows: list[Window], candidates: list[SkipSet]
) -> list[float]:
    """Matchness of each candidate over all windows (share of correct argmaxes)."""
    device = runner.device
    rows = np.concatenate([np.full(len(w.inputs), w.row) for w in windows])
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
    positions_t = torch.as_tensor(np.tile(positions, copies), device=device)
    with runner.forward_context(
        torch.as_tensor(np.tile(rows, copies), device=device), positions_t, write_kv=False
    ):
        hidden = masked_forward(
            stack,
            input_ids,
            positions_t,
            attention_keep[token_candidate],
            mlp_keep[token_candidate],
        )
        predicted = stack.logits(hidden).argmax(dim=-1).view(copies, len(inputs))
    return (predicted == targets).float().mean(dim=1).tolist()
