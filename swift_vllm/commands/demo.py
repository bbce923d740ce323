"""Self-skip speculative generation on a real model vs plain decoding: speedup and acceptance.

Unless the cache already holds a skip set for the model, the search first
runs offline (``swift-vllm tune``) on other dev prompts than the timed
ones, as a deployment would before serving; its time is printed apart.
"""

import argparse
import gc
import json
import time

from swift_vllm.commands.tune import num_layers, search
from swift_vllm.engine import (
    SpecCounters,
    chat_prompts,
    load_questions,
    make_llm,
    spread_by_category,
)
from swift_vllm.models import KNOWN_MODELS, fetch_model
from swift_vllm.search.cache import SkipSetCache, cache_key
from swift_vllm.skip_set import SkipSet
from swift_vllm.vllm_compat import WORKER_EXTENSION, options_in

# The search before the timed run: batches of this many prompts and tokens.
TUNE_BATCH_SIZE = 8
TUNE_MAX_TOKENS = 256
TUNE_MAX_BATCHES = 50


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
    parser.add_argument(
        "--no-tune",
        action="store_true",
        help="without a cached set, search while the timed prompts decode instead of before",
    )


def run(args: argparse.Namespace) -> int:
    from vllm import SamplingParams

    model = str(fetch_model(args.model))
    questions = spread_by_category(load_questions(), args.num_prompts)
    if not args.no_tune:
        _tune_if_needed(model, args.speculative_config, questions)
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


def _tune_if_needed(model: str, speculative_config: dict, timed: list[dict]) -> None:
    """Search for the skip set on dev prompts other than ``timed`` unless
    the config fixes one or the cache has one."""
    options = options_in(speculative_config)
    key = cache_key(model, options.task)
    cache = SkipSetCache.of(options.cache_path)
    if options.has_fixed_set or cache.load(key, num_layers(model)) is not None:
        return
    print(f"no cached skip set for {key}: searching for one first (once per model and task)")
    ids = {q["question_id"] for q in timed}
    others = [q for q in load_questions() if q["question_id"] not in ids]
    started = time.perf_counter()
    state = search(model, options, others, TUNE_BATCH_SIZE, TUNE_MAX_TOKENS, TUNE_MAX_BATCHES)
    elapsed = time.perf_counter() - started
    print(
        f"search {state.get('phase_reason', 'did not stop')} in {elapsed:.0f} s: "
        f"{state.get('current')}, matchness {state.get('best_matchness')}"
    )
