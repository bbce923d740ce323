"""Run the target model's decoder with a skip set: the self-drafting forward."""

import torch

from swift_vllm.skip_set import SkipSet
from swift_vllm.vllm_compat import DecoderStack


def skipped_forward(
    stack: DecoderStack,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    skip: SkipSet,
) -> torch.Tensor:
    """Final hidden states of the model with ``skip``'s sub-layers left out.

    Must run inside a forward context (``RunnerView.forward_context``).
    Skipping nothing reproduces the full model exactly.
    """
    skip_attention, skip_mlp = set(skip.attention), set(skip.mlp)
    hidden = stack.embed(input_ids)
    residual = None
    for index in range(stack.num_layers):
        if index not in skip_attention:
            hidden, residual = stack.attention(index, positions, hidden, residual)
        if index not in skip_mlp:
            hidden, residual = stack.mlp(index, hidden, residual)
    return stack.final_norm(hidden, residual)
