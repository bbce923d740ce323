"""Self-skip speculative generation on a real model vs plain decoding: speedup and acceptance."""

import argparse
import gc
import json
import time

from swift_vllm.engine import (
    SpecCounters,
    chat_prompts,
    load_questions,
    make_llm,
    spread_by_category,
)
from swift_vllm.models import KNOWN_MODELS, fetch_model
from swift_vllm.skip_set import SkipSet
from swift_vllm.vllm_compat import WORKER_EXTENSION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2",
        choices=sorted(KNOWN_MODELS),
        help="model to fetch (once) and run (default: smollm2)",
    )
    parser.add_argument(
        "--num-prompts",
        type=int,
        default=8,
        help="Spec-Bench dev prompts, spread over categories, run one at a time (default: 8)",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="new tokens per prompt (default: 128)"
    )
    parser.add_argument(
        "--speculative-config",
        type=json.loads,
        default={"method": "self-skip", "num_speculative_tokens": 4},
        help="self-skip speculative config as JSON (default: %(default)s: adaptive skip-set "
        "search, prompt lookup and the profitability guard on)",
    )


def run(args: argparse.Namespace) -> int:
    from vllm import SamplingParams

    model = str(fetch_model(args.model))
    questions = spread_by_category(load_questions(), args.num_prompts)
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    results = {}
    for label, spec in (("plain", None), ("self-skip", args.speculative_config)):
        llm = make_llm(model, spec, worker_extension_cls=WORKER_EXTENSION)
        prompts = chat_prompts(llm, questions)
        llm.generate(prompts[:1], SamplingParams(max_tokens=8), use_tqdm=False)  # warm-up
        before = SpecCounters.read(llm)
        start = time.perf_counter()
        outputs = [llm.generate([p], params, use_tqdm=False)[0] for p in prompts]
        elapsed = time.perf_counter() - start
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        results[label] = (tokens, elapsed, SpecCounters.read(llm) - before)
        if spec is not None:
            sources = llm.collective_rpc("self_skip_stats")[0]
            num_layers = llm.llm_engine.model_config.hf_config.num_hidden_layers
            skip_set = SkipSet.from_dict(llm.collective_rpc("self_skip_current")[0])
            search = llm.collective_rpc("self_skip_search_status")[0]
            guard = llm.collective_rpc("self_skip_guard")[0]
        del llm
        gc.collect()

    (plain_tokens, plain_s, _), (spec_tokens, spec_s, counters) = results.values()
    n_tokens = sum(map(len, spec_tokens))
    print(f"\n{args.num_prompts} Spec-Bench prompts, one at a time, {args.max_tokens} new tokens")
    print(f"speculative config: {json.dumps(args.speculative_config)}")
    print(f"plain decoding : {sum(map(len, plain_tokens)) / plain_s:7.2f} tok/s")
    print(f"self-skip      : {n_tokens / spec_s:7.2f} tok/s")
    print(f"speedup        : {plain_s / spec_s:7.2f}x")
    print(f"acceptance rate: {counters.acceptance_rate:7.2%}")
    print(f"mean accepted length (tokens per verify step): {counters.mean_accepted_length:.2f}")
    for source, prefix in (("self-skip drafts", ""), ("lookup drafts", "lookup_")):
        drafted = sources[f"{prefix}draft_tokens"]
        accepted = sources[f"{prefix}accepted_tokens"]
        share = f"{accepted / drafted:.2%} accepted" if drafted else "none"
        print(f"  {source:16}: {drafted:5d} tokens, {share}")
    print(
        f"skip set at the end: attention {list(skip_set.attention)}, MLP {list(skip_set.mlp)} "
        f"(ratio {skip_set.ratio(num_layers):.2f})"
    )
    if search is not None:
        print(f"  search: phase {search['phase']}, best matchness {search['best_matchness']}")
    skipped = sources["guard_skipped_steps"]
    print(f"  steps the profitability guard ran without self-skip drafts: {skipped}")
    if guard:
        print(f"  guard per batch size: {json.dumps(guard)}")
    identical = plain_tokens == spec_tokens
    print(f"greedy output identical to plain decoding: {identical}")
    return 0 if identical else 1
