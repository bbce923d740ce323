"""The target model's decoder run with sub-layers skipped.

Two forms of the same computation:

* ``skipped_forward``: one skip set for every row; skipped sub-layers are
  not computed at all. This is the draft step.
* ``masked_forward``: a keep-mask per row and sub-layer; every sub-layer is
  computed and its output added to each row's residual stream scaled by the
  row's mask (``residual += mask * delta``, fused with the next RMSNorm).
  Several candidate skip sets are scored in one forward this way.

``skipped_forward`` runs inside a forward context
(``RunnerView.forward_context``); ``masked_forward`` too unless its caller
supplies the attention op. Skipping nothing reproduces the full model.
"""

import torch

from swift_vllm.kernels import masked_add_rmsnorm
from swift_vllm.skip_set import SkipSet
from swift_vllm.vllm_compat import AttendFn, DecoderStack, rms_norm_params


def skipped_forward(
    stack: DecoderStack, input_ids: torch.Tensor, positions: torch.Tensor, skip: SkipSet
) -> torch.Tensor:
    """Final hidden states of the model without ``skip``'s sub-layers.

    A skipped sub-layer leaves ``(hidden, residual)`` alone: skipping
    attention goes straight to the post-attention norm, skipping the MLP
    carries the attention output into the next layer's input norm.
    """
    skip_attention, skip_mlp = set(skip.attention), set(skip.mlp)
    hidden = stack.embed(input_ids)
    residual = None
    for index in range(stack.num_layers):
        if index not in skip_attention:
            if residual is None:
                residual, normed = hidden, stack.input_norm(index)(hidden)
            else:
                normed, residual = stack.input_norm(index)(hidden, residual)
            hidden = stack.attention(index, positions, normed)
        if index not in skip_mlp:
            normed, residual = stack.post_attention_norm(index)(hidden, residual)
            hidden = stack.mlp(index, normed)
    normed, _ = stack.final_norm()(hidden, residual)
    return normed


def masked_forward(
    stack: DecoderStack,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    attention_keep: torch.Tensor,
    mlp_keep: torch.Tensor,
    attend: AttendFn | None = None,
) -> torch.Tensor:
    """Final hidden states with a per-row keep mask for each sub-layer.

    ``attention_keep`` and ``mlp_keep`` are ``[rows, num_layers]`` in the
    hidden states' dtype: 1 keeps the sub-layer for that row, 0 skips it.
    ``attend`` replaces the attention op (see ``DecoderStack.attention``).
    """
    residual = stack.embed(input_ids)
    delta = torch.zeros_like(residual)
    keep = torch.ones(residual.shape[0], dtype=residual.dtype, device=residual.device)
    for index in range(stack.num_layers):
        masked_add_rmsnorm(delta, residual, keep, *rms_norm_params(stack.input_norm(index)))
        delta = stack.attention(index, positions, delta, attend)
        keep = attention_keep[:, index].contiguous()
        masked_add_rmsnorm(
            delta, residual, keep, *rms_norm_params(stack.post_attention_norm(index))
        )
        delta = stack.mlp(index, delta)
        keep = mlp_keep[:, index].contiguous()
    masked_add_rmsnorm(delta, residual, keep, *rms_norm_params(stack.final_norm()))
    return delta
