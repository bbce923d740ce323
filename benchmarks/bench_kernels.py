"""Fused kernels vs the PyTorch composites they replace, op and draft step.

1. ``masked_add_rmsnorm`` (C++ on CPU, Triton on CUDA) against its PyTorch
   composite over decode- and scoring-sized inputs.
2. One decode step of a SmolLM2- or Qwen2.5-1.5B-shaped Llama (random
   weights, no vLLM): the full model and a layer-skip draft, each with the
   fused op and with the composite, and the draft/full cost ratio against
   the fraction of weights the draft still runs. On CUDA each step is also
   timed replayed from a CUDA graph, as vLLM runs its decode steps; the
   self-skip drafter runs its draft forwards eagerly, so "eager draft /
   graphed full" is what a draft forward costs against a verify step there.

    python benchmarks/bench_kernels.py            # CPU here, CUDA if present
    python benchmarks/bench_kernels.py --device cpu
    python benchmarks/bench_kernels.py --shape qwen2.5-1.5b --rows 1,8,32
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
    """The sizes of a Llama-shaped decoder."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# The project's two benchmark models (swift_vllm.models).
SHAPES = {
    "smollm2": Shape(layers=30, hidden=576, heads=9, kv_heads=3, intermediate=1536, vocab=49152),
    "qwen2.5-1.5b": Shape(
        layers=28, hidden=1536, heads=12, kv_heads=2, intermediate=8960, vocab=151936
    ),
}


def cuda_graph(fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` captured in a CUDA graph (after warm-up on a side stream); returns its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


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


def bench_draft_step(device: str, shape: str, rows: int, ratio: float, context: int) -> None:
    graphed = device == "cuda"  # vLLM replays decode steps from CUDA graphs there
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    s = SHAPES[shape]
    model = TinyLlama(s, context, device, dtype)
    candidates = list(range(2, 2 * s.layers - 2))  # first and last layer always run
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(candidates), generator=g)[: round(ratio * len(candidates))]
    skip = frozenset(candidates[i] for i in pick.tolist())
    x = torch.randn(rows, s.hidden, device=device, dtype=dtype)
    steps = {
        (name, label): (sk, fn)
        for name, sk in (("full", frozenset()), ("draft", skip))
        for label, fn in (("composite", masked_add_rmsnorm_ref), ("fused", masked_add_rmsnorm))
    }
    with torch.inference_mode():
        fns = {
            key: lambda sk=sk, fn=fn: model.step(x.clone(), sk, fn)
            for key, (sk, fn) in steps.items()
        }
        if graphed:
            for name in ("full", "draft"):
                fns[(name, "graphed")] = cuda_graph(fns[(name, "fused")])
        times = dict(zip(fns, time_us(list(fns.values()), device), strict=True))
    print(
        f"\ndecode step, {shape} shape, {rows} rows, {context} context tokens, "
        f"{str(dtype).removeprefix('torch.')}, {device} ({backend(device)}), ms"
    )
    print(
        f"{'step':>6} {'composite':>10} {'fused':>8} {'speedup':>8}"
        + (" graphed" if graphed else "")
    )
    for name in ("full", "draft"):
        ref, fus = times[(name, "composite")], times[(name, "fused")]
        line = f"{name:>6} {ref / 1e3:10.2f} {fus / 1e3:8.2f} {ref / fus:7.2f}x"
        print(line + (f" {times[(name, 'graphed')] / 1e3:8.3f}" if graphed else ""))
    weights = model.weight_fraction(skip)
    ratios = {"eager": times[("draft", "fused")] / times[("full", "fused")]}
    if graphed:
        ratios["graphed"] = times[("draft", "graphed")] / times[("full", "graphed")]
        ratios["eager draft / graphed full"] = (
            times[("draft", "fused")] / times[("full", "graphed")]
        )
    print(
        f"draft skips {len(skip)} of {len(candidates)} sub-layers, weight fraction "
        f"{weights:.3f}; cost ratio "
        + ", ".join(f"{name} {value:.3f}" for name, value in ratios.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument(
        "--rows", default="4", help="comma-separated rows (batch sizes) of the decode step"
    )
    parser.add_argument("--skip-ratio", type=float, default=0.45)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--no-op", action="store_true", help="skip the op table")
    parser.add_argument(
        "--threads", type=int, help="CPU threads (torch default; 1 is steadier on shared machines)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not args.no_op:
        bench_op(args.device)
    for rows in (int(r) for r in args.rows.split(",")):
        bench_draft_step(args.device, args.shape, rows, args.skip_ratio, args.context)


if __name__ == "__main__":
    main()
