"""The ``swift_vllm::`` custom ops and their one Python entry point.

Each op has one schema and a kernel per device: Triton on CUDA, C++ on CPU
(when the native library loaded), and the PyTorch reference as the
CompositeExplicitAutograd kernel for every other case (CPU without the
library, or other devices). Because they are dispatcher ops with fake
(meta) kernels, ``torch.compile`` graphs, vLLM's included, hold them as
single nodes.
"""

import torch

from . import native
from .reference import masked_add_rmsnorm_ref

_SCHEMA = (
    "masked_add_rmsnorm(Tensor(a!) x, Tensor(b!) residual, Tensor? mask, "
    "Tensor weight, float eps) -> ()"
)

_lib = torch.library.Library("swift_vllm", "FRAGMENT")
if not native.LOADED:  # the library defines the schema when it loads
    _lib.define(_SCHEMA)
_lib.impl("masked_add_rmsnorm", masked_add_rmsnorm_ref, "CompositeExplicitAutograd")


def _masked_add_rmsnorm_cuda(
    x: torch.Tensor,
    residual: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
) -> None:
    from .triton_ops import masked_add_rmsnorm_triton  # triton only when needed

    masked_add_rmsnorm_triton(x, residual, mask, weight, eps)


_lib.impl("masked_add_rmsnorm", _masked_add_rmsnorm_cuda, "CUDA")


@torch.library.register_fake("swift_vllm::masked_add_rmsnorm", lib=_lib)
def _masked_add_rmsnorm_fake(x, residual, mask, weight, eps) -> None:
    return None


def backend(device: torch.device | str) -> str:
    """Which implementation the ops run on ``device``: triton, native or torch."""
    kind = torch.device(device).type
    if kind == "cuda":
        return "triton"
    return "native" if kind == "cpu" and native.LOADED else "torch"


def masked_add_rmsnorm(
    x: torch.Tensor,
    residual: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
) -> None:
    """Masked residual add fused with RMSNorm, in place on ``x`` and ``residual``.

    ``x [..., H]`` is a sub-layer's output, ``residual [..., H]`` the
    residual stream, ``mask [...]`` a per-row scale (0 skips the sub-layer
    for that row, 1 keeps it; ``None`` means all 1, i.e. vLLM's
    ``fused_add_rms_norm``). Afterwards ``residual += mask * x`` and
    ``x = rmsnorm(residual) * weight``, computed in fp32. Rows with mask 0
    never read ``x``.
    """
    if mask is not None and (
        mask.dtype != torch.float32 or mask.dim() != 1 or not mask.is_contiguous()
    ):  # the kernels read a flat fp32 mask; the check is cheaper than the calls
        mask = mask.reshape(-1).to(torch.float32).contiguous()
    torch.ops.swift_vllm.masked_add_rmsnorm(x, residual, mask, weight, eps)
