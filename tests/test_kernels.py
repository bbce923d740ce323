"""swift_vllm.kernels against the PyTorch reference.

The C++ ops run natively. The Triton kernels run on CUDA when there is a
GPU; on CPU they run in Triton's interpreter, which must be switched on
before triton is imported, so a test re-runs this module's Triton tests
in a subprocess with ``TRITON_INTERPRET=1``.
"""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from swift_vllm.kernels import (
    backend,
    masked_add_rmsnorm,
    masked_add_rmsnorm_ref,
    native,
)

EPS = 1e-6
ROWS = (1, 3, 17, 64)
HIDDEN = (64, 576, 1536)
DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MASKS = ("none", "all_skip", "mixed", "fractional")
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-3}

TRITON_LIVE = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TRITON_CASES = len(ROWS) * len(HIDDEN) * len(DTYPES) * len(MASKS) + 1


def make_case(rows, hidden, dtype, mask_kind, device="cpu", seed=0):
    """Inputs for one case; x is NaN on rows with mask 0, which must not read it."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, hidden, generator=g).to(dtype)
    residual = (4 * torch.randn(rows, hidden, generator=g)).to(dtype)
    weight = (1 + 0.1 * torch.randn(hidden, generator=g)).to(dtype)
    mask = {
        "none": None,
        "all_skip": torch.zeros(rows),
        "mixed": (torch.arange(rows) % 3 != 1).float(),
        "fractional": torch.rand(rows, generator=g) * (torch.arange(rows) % 4 != 2),
    }[mask_kind]
    if mask is not None:
        x[mask == 0] = float("nan")
        mask = mask.to(device)
    return x.to(device), residual.to(device), mask, weight.to(device)


def check(op, rows, hidden, dtype, mask_kind, device="cpu"):
    x, residual, mask, weight = make_case(rows, hidden, dtype, mask_kind, device)
    want_x, want_res = x.clone(), residual.clone()
    masked_add_rmsnorm_ref(want_x, want_res, mask, weight, EPS)
    residual_before = residual.clone()
    op(x, residual, mask, weight, EPS)
    tol = TOL[dtype]
    torch.testing.assert_close(residual, want_res, atol=tol, rtol=tol)
    torch.testing.assert_close(x, want_x, atol=tol, rtol=tol)
    if mask is not None:  # skipped rows keep their residual exactly
        skipped = mask == 0
        assert torch.equal(residual[skipped], residual_before[skipped])


def test_reference_is_the_composite():
    """The reference itself, against the unfused textbook formulation."""
    x, residual, _, weight = make_case(5, 576, torch.float32, "none")
    mask = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.25])
    want_res = residual + mask[:, None] * x
    want_x = want_res / want_res.pow(2).mean(-1, keepdim=True).add(EPS).sqrt() * weight
    masked_add_rmsnorm_ref(x, residual, mask, weight, EPS)
    torch.testing.assert_close(residual, want_res)
    torch.testing.assert_close(x, want_x)


native_only = pytest.mark.skipif(
    not native.LIBRARY.exists() or os.environ.get("SWIFT_VLLM_NATIVE") == "0",
    reason="native library not built (pip install -e . builds it)",
)


@native_only
def test_native_library_loaded():
    assert native.LOADED and backend("cpu") == "native"


@native_only
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("rows", ROWS)
def test_native_matches_reference(rows, hidden, dtype, mask_kind):
    check(torch.ops.swift_vllm.masked_add_rmsnorm, rows, hidden, dtype, mask_kind)


def test_dispatch_strided_and_batched_inputs():
    """A strided x (a view into a wider buffer) and [B, T, H] tensors, in place."""
    x, residual, mask, weight = make_case(6, 576, torch.bfloat16, "fractional")
    wide = torch.zeros(6, 600, dtype=x.dtype)
    wide[:, :576] = x
    want_x, want_res = x.clone(), residual.clone()
    masked_add_rmsnorm_ref(want_x, want_res, mask, weight, EPS)
    res3 = residual.view(2, 3, 576)
    masked_add_rmsnorm(wide[:, :576].view(2, 3, 576), res3, mask.view(2, 3), weight, EPS)
    torch.testing.assert_close(wide[:, :576], want_x, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(residual, want_res, atol=2e-2, rtol=2e-2)
    assert not wide[:, 576:].any()


def test_no_mask_equals_all_ones():
    x, residual, _, weight = make_case(3, 576, torch.float32, "none")
    x1, r1 = x.clone(), residual.clone()
    masked_add_rmsnorm(x, residual, None, weight, EPS)
    masked_add_rmsnorm(x1, r1, torch.ones(3), weight, EPS)
    assert torch.equal(x, x1) and torch.equal(residual, r1)


def test_compiled_graph_holds_the_op():
    def layer_tail(x, residual, mask, weight):
        masked_add_rmsnorm(x, residual, mask, weight, EPS)
        return x * 2

    x, residual, mask, weight = make_case(4, 576, torch.float32, "mixed")
    x = torch.nan_to_num(x)
    x1, r1 = x.clone(), residual.clone()
    compiled = torch.compile(layer_tail, backend="aot_eager", fullgraph=True)
    out = compiled(x, residual, mask, weight)
    assert torch.equal(out, layer_tail(x1, r1, mask, weight))
    assert torch.equal(residual, r1)


def test_missing_or_broken_library_warns(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("SWIFT_VLLM_NATIVE", raising=False)
    broken = tmp_path / "broken.so"
    broken.write_bytes(b"not a shared library")
    for path in (tmp_path / "missing.so", broken):
        monkeypatch.setattr(native, "LIBRARY", path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=native.__name__):
            assert native._load() is False
        assert len(caplog.records) == 1 and "fall back" in caplog.text


def test_pytorch_fallback_without_native():
    """SWIFT_VLLM_NATIVE=0: the schema comes from Python, CPU runs the reference."""
    code = (
        "import torch\n"
        "from swift_vllm.kernels import backend, masked_add_rmsnorm\n"
        "assert backend('cpu') == 'torch'\n"
        "x, r, w = torch.ones(2, 8), torch.ones(2, 8), torch.ones(8)\n"
        "masked_add_rmsnorm(x, r, torch.tensor([1.0, 0.0]), w, 0.0)\n"
        "assert r[:, 0].tolist() == [2.0, 1.0] and x.eq(1).all(), (x, r)\n"
    )
    env = {**os.environ, "SWIFT_VLLM_NATIVE": "0"}
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


if TRITON_LIVE:

    @pytest.mark.parametrize("mask_kind", MASKS)
    @pytest.mark.parametrize("dtype", DTYPES, ids=str)
    @pytest.mark.parametrize("hidden", HIDDEN)
    @pytest.mark.parametrize("rows", ROWS)
    def test_triton_matches_reference(rows, hidden, dtype, mask_kind):
        from swift_vllm.kernels.triton_ops import masked_add_rmsnorm_triton

        check(masked_add_rmsnorm_triton, rows, hidden, dtype, mask_kind, TRITON_DEVICE)

    def test_triton_dispatch():
        """The public entry point reaches the kernel (through the CUDA op on a GPU)."""
        op = masked_add_rmsnorm
        if TRITON_DEVICE == "cpu":
            from swift_vllm.kernels.triton_ops import masked_add_rmsnorm_triton as op
        check(op, 5, 576, torch.bfloat16, "mixed", TRITON_DEVICE)

else:

    def test_triton_interpreted():
        """Runs the Triton tests above in Triton's interpreter, on CPU."""
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        cmd += [str(Path(__file__)), "-k", "triton"]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        summary = run.stdout.strip().splitlines()[-1]
        assert re.search(rf"\b{TRITON_CASES} passed\b", summary), summary
        assert "skipped" not in summary, summary
