"""Triton kernels: the GPU side of the fused ops (twins of kernels/csrc/).

Imported only when a CUDA tensor reaches an op, or by tests that run the
kernels on CPU tensors under ``TRITON_INTERPRET=1``.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def _masked_add_rmsnorm_kernel(
    x_ptr,
    res_ptr,
    mask_ptr,
    w_ptr,
    x_row_stride,
    res_row_stride,
    hidden,
    eps,
    HAS_MASK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per row; the whole row sits in registers, so the residual
    # is read once and written once, and x is read once and written once.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    in_row = cols < hidden
    x_row = x_ptr + row * x_row_stride
    res_row = res_ptr + row * res_row_stride

    r = tl.load(res_row + cols, mask=in_row, other=0.0).to(tl.float32)
    if HAS_MASK:
        # A skipped row (m == 0) does not read x at all: no traffic, and
        # whatever x holds there (even NaN) cannot leak into the residual.
        m = tl.load(mask_ptr + row).to(tl.float32)
        x_cols = tl.where(m != 0.0, hidden, 0)
        x = tl.load(x_row + cols, mask=cols < x_cols, other=0.0)
        r += m * x.to(tl.float32)
    else:
        r += tl.load(x_row + cols, mask=in_row, other=0.0).to(tl.float32)
    r_out = r.to(res_ptr.dtype.element_ty)
    tl.store(res_row + cols, r_out, mask=in_row)

    r = r_out.to(tl.float32)
    inv_rms = tl.rsqrt(tl.sum(r * r, axis=0) / hidden + eps)
    w = tl.load(w_ptr + cols, mask=in_row, other=0.0).to(tl.float32)
    tl.store(x_row + cols, (r * inv_rms * w).to(x_ptr.dtype.element_ty), mask=in_row)


def masked_add_rmsnorm_triton(
    x: torch.Tensor,
    residual: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float,
) -> None:
    """Launches the kernel; same contract as ``reference.masked_add_rmsnorm_ref``."""
    hidden = x.shape[-1]
    x2, res2 = x.view(-1, hidden), residual.view(-1, hidden)
    if x2.stride(1) != 1 or res2.stride(1) != 1:
        raise ValueError("x and residual need a contiguous last dimension")
    rows = x2.shape[0]
    if rows == 0:
        return
    block = triton.next_power_of_2(hidden)
    _masked_add_rmsnorm_kernel[(rows,)](
        x2,
        res2,
        mask if mask is not None else x2,  # unused when HAS_MASK is False
        weight,
        x2.stride(0),
        res2.stride(0),
        hidden,
        eps,
        HAS_MASK=mask is not None,
        BLOCK=block,
        num_warps=min(max(block // 256, 1), 16),
    )
