"""Where a self-skip step's time goes, against a plain step (issue 5).

A plain engine and a pure self-skip engine (a fixed set; lookup and guard
off, so every step drafts) decode the same prompts at batch 1, prompt by
prompt in turn (the machine's drift lands on both), under cProfile, which
runs in each engine's worker thread: the one that runs the target forward,
the sampler and the proposer. The report splits a speculative
cycle into its verify step, its draft forwards (skipped layers and the
vocabulary head apart) and the proposer's own bookkeeping, and predicts
the speedup from those parts, to show what the gap between a Leviathan et
al. prediction and the measured speed is made of. cProfile adds a little
to every Python call alike; the forwards run in C++.

    .venv/bin/python benchmarks/step_profile.py --out benchmarks/results/smollm2/step-profile
"""

import argparse
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

# collective_rpc sends this module's functions to the worker by value.
os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"

from vllm import SamplingParams  # noqa: E402

from swift_vllm.bench.methods import fixed_set_config  # noqa: E402
from swift_vllm.commands.bench import resolve_model  # noqa: E402
from swift_vllm.engine import chat_prompts, load_questions, make_llm, spread_by_category  # noqa: E402

# The set the adaptive search found in the ratio race (smollm2/ratio-race).
ADAPTIVE_SET = {"attention": [3, 6, 9, 12, 13], "mlp": [4, 11, 26]}
DRAFT_LEN = 4

# (file suffix, function) of what the report times, as cProfile names them.
PARTS = {
    "worker": ("vllm/v1/executor/multiproc_executor.py", "_execute_worker_rpc"),
    "step": ("vllm/v1/worker/gpu_model_runner.py", "execute_model"),
    # The decoder without the vocabulary head (compute_logits runs apart).
    "forward": ("vllm/v1/worker/gpu_model_runner.py", "_model_forward"),
    "target_head": ("vllm/model_executor/models/llama.py", "compute_logits"),
    "propose": ("swift_vllm/proposer.py", "propose"),
    "draft_layers": ("swift_vllm/layer_skip.py", "skipped_forward"),
    "draft_head": ("swift_vllm/vllm_compat.py", "logits"),
}


def _start_profile(worker) -> None:
    import cProfile

    worker.step_profile = cProfile.Profile()
    worker.step_profile.enable()


def _stop_profile(worker, path: str) -> None:
    worker.step_profile.disable()
    worker.step_profile.dump_stats(path)


def cumulative(stats: pstats.Stats, part: str) -> tuple[int, float]:
    """Calls and cumulative seconds of one of ``PARTS`` (0, 0.0 if never called)."""
    suffix, name = PARTS[part]
    for (path, _, function), (_, calls, _, seconds, _) in stats.stats.items():
        if function == name and path.endswith(suffix):
            return calls, seconds
    return 0, 0.0


def profile(engines: dict, prompts: list[str], params) -> dict:
    """One profiled pass over ``prompts``, prompt by prompt on each engine in
    turn. Per engine: tokens, wall seconds and ``PARTS``' calls and seconds."""
    for llm in engines.values():
        llm.collective_rpc(_start_profile)
    results = {name: {"tokens": 0, "wall_s": 0.0} for name in engines}
    names = list(engines)
    for index, prompt in enumerate(prompts):
        for name in names[index % 2 :] + names[: index % 2]:
            started = time.perf_counter()
            (output,) = engines[name].generate([prompt], params, use_tqdm=False)
            results[name]["wall_s"] += time.perf_counter() - started
            results[name]["tokens"] += len(output.outputs[0].token_ids)
    with tempfile.TemporaryDirectory() as folder:
        for name, llm in engines.items():
            path = str(Path(folder) / f"{name}.prof")
            llm.collective_rpc(_stop_profile, args=(path,))
            stats = pstats.Stats(path)
            results[name]["parts"] = {part: cumulative(stats, part) for part in PARTS}
    return results


def report(plain: dict, spec: dict) -> dict:
    """Per-step figures and the speedup they predict."""
    # A plain step is one execute_model call (sampling included); a
    # speculative cycle is one proposal, the rest of its worker time the
    # verify step (target forward, rejection sampler).
    plain_calls, _ = plain["parts"]["step"]
    _, plain_s = plain["parts"]["worker"]
    _, spec_worker_s = spec["parts"]["worker"]
    proposals, propose_s = spec["parts"]["propose"]
    forwards, layers_s = spec["parts"]["draft_layers"]
    _, head_s = spec["parts"]["draft_head"]
    plain_step = plain_s / plain_calls
    verify = (spec_worker_s - propose_s) / proposals
    forward = (layers_s + head_s) / forwards
    tokens_per_cycle = spec["tokens"] / proposals
    forwards_per_cycle = forwards / proposals
    bookkeeping = (propose_s - layers_s - head_s) / proposals
    _, target_head_s = plain["parts"]["target_head"]
    _, plain_forward_s = plain["parts"]["forward"]
    _, verify_forward_s = spec["parts"]["forward"]
    return {
        "plain_step_ms": 1e3 * plain_step,
        "plain_model_ms": 1e3 * plain_forward_s / plain_calls,
        "plain_head_ms": 1e3 * target_head_s / plain_calls,
        "verify_step_ms": 1e3 * verify,
        "verify_model_ms": 1e3 * verify_forward_s / proposals,
        "draft_forward_ms": 1e3 * forward,
        "draft_head_ms": 1e3 * head_s / forwards,
        "draft_cost_ratio": forward / plain_step,
        "draft_forwards_per_cycle": forwards_per_cycle,
        "proposer_bookkeeping_ms": 1e3 * bookkeeping,
        "tokens_per_cycle": tokens_per_cycle,
        # As Leviathan et al. count: a verify step costs a plain one, and
        # drafting costs its forwards only.
        "predicted_verify_as_plain": tokens_per_cycle
        / (1 + forwards_per_cycle * forward / plain_step),
        "predicted_speedup": tokens_per_cycle
        * plain_step
        / (verify + forwards_per_cycle * forward + bookkeeping),
        "measured_speedup": (spec["tokens"] / spec["wall_s"]) / (plain["tokens"] / plain["wall_s"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--num-prompts", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="profiled passes; medians")
    parser.add_argument(
        "--skip-set", type=json.loads, default=ADAPTIVE_SET, help="JSON attention/mlp lists"
    )
    args = parser.parse_args()
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    args.out.mkdir(parents=True, exist_ok=True)
    model = str(resolve_model(args.model))
    engines = {
        name: make_llm(model, spec, max_num_seqs=1)
        for name, spec in (
            ("plain", None),
            ("self-skip", fixed_set_config(args.skip_set, DRAFT_LEN)),
        )
    }
    prompts = chat_prompts(engines["plain"], spread_by_category(load_questions(), args.num_prompts))
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    for llm in engines.values():
        llm.generate(prompts[:1], params, use_tqdm=False)  # warm-up
    passes = []
    for number in range(args.repeats):
        results = profile(engines, prompts, params)
        passes.append({**results, "figures": report(results["plain"], results["self-skip"])})
        print(f"pass {number + 1}/{args.repeats} done", flush=True)
    medians = {
        key: statistics.median(p["figures"][key] for p in passes) for key in passes[0]["figures"]
    }
    record = {"command": " ".join(sys.argv), "skip_set": args.skip_set, "passes": passes}
    (args.out / "results.json").write_text(json.dumps(record | {"medians": medians}, indent=1))
    print(f"{'':>26}  median  (passes)")
    for key, value in medians.items():
        each = " ".join(f"{p['figures'][key]:.3f}" for p in passes)
        print(f"{key:>26}: {value:7.3f}  ({each})")


if __name__ == "__main__":
    main()
