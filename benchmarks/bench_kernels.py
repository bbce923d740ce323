"""Fused kernels vs the PyTorch composites they replace, op and draft step.

1. ``masked_add_rmsnorm`` (C++ on CPU, Triton on CUDA) against its PyTorch
   composite over decode- and scoring-sized inputs.
2. One decode step of a SmolLM2-shaped Llama (random weights, no vLLM):
   the full model and a layer-skip draft, each with the fused op and with
   the composite, and the draft/full cost ratio against the fraction of
   weights the draft still runs.

    python benchmarks/bench_kernels.py            # CPU here, CUDA if present
    python benchmarks/bench_kernels.py --device cpu
"""

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from swift_vllm.kernels import backend, masked_add_rmsnorm, masked_add_rmsnorm_ref

EPS = 1e-6
NormFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, float], None]


def time_us(fns: list[Callable[[], object]], device: str) -> list[float]:
    """Median microseconds per call of each fn: do_bench on CUDA; on CPU, timed
    loops taken round-robin so that load from other processes hits all alike."""
    if device == "cuda":
        from triton.testing import do_bench

        return [do_bench(fn, return_mode="median") * 1e3 for fn in fns]
    inner = []
    for fn in fns:
        for _ in range(3):
            fn()
        start = time.perf_counter()
        fn()
        inner.append(max(1, int(2e-3 / (time.perf_counter() - start))))
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(15):
        for fn, n, out in zip(fns, inner, samples, strict=True):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            out.append((time.perf_counter() - start) / n * 1e6)
    return [statistics.median(out) for out in samples]


def _op_times(device: str, dtype: torch.dtype, rows: int, hidden: int) -> list[float]:
    """[composite, fused] microseconds for one input shape, mixed skip mask."""
    x = torch.randn(rows, hidden, dtype=dtype, device=device)
    res = torch.randn(rows, hidden, dtype=dtype, device=device)
    w = torch.ones(hidden, dtype=dtype, device=device)
    mask = (torch.arange(rows, device=device) % 3 != 1).float()
    return time_us(
        [
            lambda fn=fn: fn(x, res, mask, w, EPS)
            for fn in (masked_add_rmsnorm_ref, masked_add_rmsnorm)
        ],
        device,
    )


def bench_op(device: str) -> None:
    print(f"\nmasked_add_rmsnorm, {backend(device)} vs PyTorch composite, {device}, us")
    print(f"{'dtype':>9} {'rows':>5} {'hidden':>6} {'composite':>10} {'fused':>8} speedup")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for hidden in (576, 1536):
            for rows in (1, 4, 64, 400):
                ref, fused = _op_times(device, dtype, rows, hidden)
                name = str(dtype).removeprefix("torch.")
                print(
                    f"{name:>9} {rows:5d} {hidden:6d} {ref:10.1f} {fused:8.1f} {ref / fused:6.2f}x"
                )


@dataclass(frozen=True)
class Shape:
    """SmolLM2-135M: the model the project's fast tests run."""

    layers: int = 30
    hidden: int = 576
    heads: int = 9
    kv_heads: int = 3
    intermediate: int = 1536
    vocab: int = 49152

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


class TinyLlama:
    """A Llama decode step in plain torch, run the way the self-drafter runs it:
    each executed sub-layer first folds the pending delta into the residual
    with the fused add+norm; a skipped sub-layer costs nothing."""

    def __init__(self, s: Shape, context: int, device: str, dtype: torch.dtype):
        def w(*size: int) -> torch.Tensor:
            return torch.randn(*size, device=device, dtype=dtype) * 0.02

        kv = s.kv_heads * s.head_dim
        self.s = s
        self.attn = [
            (w(s.hidden + 2 * kv, s.hidden), w(s.hidden, s.hidden)) for _ in range(s.layers)
        ]
        self.mlp = [
            (w(2 * s.intermediate, s.hidden), w(s.hidden, s.intermediate)) for _ in range(s.layers)
        ]
        self.norms = [
            torch.ones(s.hidden, device=device, dtype=dtype) for _ in range(2 * s.layers + 1)
        ]
        self.cache = [
            (
                w(s.kv_heads, context, s.head_dim) * 50,
                w(s.kv_heads, context, s.head_dim) * 50,
            )
            for _ in range(s.layers)
        ]
        self.lm_head = w(s.vocab, s.hidden)

    def _attention(self, i: int, h: torch.Tensor) -> torch.Tensor:
        s, (w_qkv, w_o), (k_ctx, v_ctx) = self.s, self.attn[i], self.cache[i]
        rows, kv = h.shape[0], s.kv_heads * s.head_dim
        q, k, v = F.linear(h, w_qkv).split([s.hidden, kv, kv], dim=-1)
        q = q.view(rows, s.heads, s.head_dim).transpose(0, 1)
        k = torch.cat([k_ctx, k.view(rows, s.kv_heads, s.head_dim).transpose(0, 1)], 1)
        v = torch.cat([v_ctx, v.view(rows, s.kv_heads, s.head_dim).transpose(0, 1)], 1)
        out = F.scaled_dot_product_attention(q[None], k[None], v[None], enable_gqa=True)
        return F.linear(out[0].transpose(0, 1).reshape(rows, s.hidden), w_o)

    def _mlp(self, i: int, h: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(h, self.mlp[i][0]).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.mlp[i][1])

    def step(self, x: torch.Tensor, skip: frozenset[int], norm: NormFn) -> torch.Tensor:
        """Sub-layer 2*i is layer i's attention, 2*i+1 its MLP; returns logits."""
        residual = torch.zeros_like(x)
        for sub in range(2 * self.s.layers):
            if sub in skip:
                continue
            norm(x, residual, None, self.norms[sub], EPS)
            x = (self._attention if sub % 2 == 0 else self._mlp)(sub // 2, x)
        norm(x, residual, None, self.norms[-1], EPS)
        return F.linear(x, self.lm_head)

    def weight_fraction(self, skip: frozenset[int]) -> float:
        """Fraction of the weights read by a step that skips ``skip``."""
        per_sub = [
            sum(t.numel() for t in (self.attn if sub % 2 == 0 else self.mlp)[sub // 2])
            for sub in range(2 * self.s.layers)
        ]
        head = self.lm_head.numel()
        return (head + sum(n for sub, n in enumerate(per_sub) if sub not in skip)) / (
            head + sum(per_sub)
        )


def bench_draft_step(device: str, rows: int, ratio: float, context: int) -> None:
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    s = Shape()
    model = TinyLlama(s, context, device, dtype)
    candidates = list(range(2, 2 * s.layers - 2))  # first and last layer always run
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(candidates), generator=g)[: round(ratio * len(candidates))]
    skip = frozenset(candidates[i] for i in pick.tolist())
    x = torch.randn(rows, s.hidden, device=device, dtype=dtype)
    fused: NormFn = masked_add_rmsnorm
    configs = [
        (name, label, sk, fn)
        for name, sk in (("full", frozenset()), ("draft", skip))
        for label, fn in (("composite", masked_add_rmsnorm_ref), ("fused", fused))
    ]
    with torch.inference_mode():
        measured = time_us(
            [lambda sk=sk, fn=fn: model.step(x.clone(), sk, fn) for *_, sk, fn in configs],
            device,
        )
    times = {(name, label): t for (name, label, *_), t in zip(configs, measured, strict=True)}
    print(
        f"\ndecode step, SmolLM2 shape, {rows} rows, {context} context tokens, "
        f"{str(dtype).removeprefix('torch.')}, {device} ({backend(device)}), ms"
    )
    print(f"{'step':>6} {'composite':>10} {'fused':>8} {'speedup':>8}")
    for name in ("full", "draft"):
        ref, fus = times[(name, "composite")], times[(name, "fused")]
        print(f"{name:>6} {ref / 1e3:10.2f} {fus / 1e3:8.2f} {ref / fus:7.2f}x")
    cost = times[("draft", "fused")] / times[("full", "fused")]
    weights = model.weight_fraction(skip)
    print(
        f"draft skips {len(skip)} of {len(candidates)} sub-layers: cost ratio "
        f"{cost:.3f}, weight fraction {weights:.3f} ({cost / weights - 1:+.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rows", type=int, default=4, help="rows in the decode step")
    parser.add_argument("--skip-ratio", type=float, default=0.45)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument(
        "--threads", type=int, help="CPU threads (torch default; 1 is steadier on shared machines)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench_op(args.device)
    bench_draft_step(args.device, args.rows, args.skip_ratio, args.context)


if __name__ == "__main__":
    main()
