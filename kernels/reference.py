"""PyTorch reference of the fused ops: the test oracle and the fallback path."""

import torch


def masked_add_rmsnorm_ref(
    x: torch.Tensor,
    residual: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
) -> None:
    """In place: ``residual += mask[:, None] * x``; ``x = rmsnorm(residual) * weight``.

    Math in fp32, each result rounded once to the tensors' dtype; the norm
    reads the rounded residual, as the next layer will. Rows with mask 0
    keep their residual and ignore ``x`` (even NaN there).
    """
    hidden = x.shape[-1]
    x2, res2 = x.view(-1, hidden), residual.view(-1, hidden)
    delta = x2.float()
    if mask is not None:
        m = mask.reshape(-1, 1).float()
        delta = torch.where(m != 0, delta * m, 0.0)
    res2.copy_(res2.float() + delta)
    r = res2.float()
    normed = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps)
    x2.copy_(normed * weight.float())
