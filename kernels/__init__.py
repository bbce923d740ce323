"""Fused ops for layer-skip forwarding (installed as ``swift_vllm.kernels``).

``masked_add_rmsnorm`` is the residual update of a possibly skipped
sub-layer fused with the RMSNorm that follows it; it runs Triton on CUDA,
C++ on CPU, or PyTorch where neither is available. See docs/kernels.md.
"""

from .ops import backend, masked_add_rmsnorm
from .reference import masked_add_rmsnorm_ref

__all__ = ["backend", "masked_add_rmsnorm", "masked_add_rmsnorm_ref"]
