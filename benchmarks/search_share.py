"""How much of a serving engine's wall time the on-the-fly search takes (issue 3).

A self-skip engine with the default options (adaptive ratio, guard and
lookup on, ``opt_time_share`` 0.25) and an empty cache file of its own
serves batches of 512-token generations, dev prompts with categories in
turn, until its search has stopped and a few batches more. Per batch it
records wall time, output tokens, the proposer's candidate-scoring seconds
and the search's phase; the summary gives the share of wall time spent
scoring while the search ran and over the whole run, and tokens/s while
optimizing against after.

    .venv/bin/python benchmarks/search_share.py --out benchmarks/results/smollm2/search-share
"""

import argparse
import json
import sys
import time
from pathlib import Path

from swift_vllm.commands.bench import resolve_model
from swift_vllm.commands.tune import FINAL_STATUS_TIMEOUT_S
from swift_vllm.config import METHOD_NAME
from swift_vllm.engine import chat_prompts, load_questions, make_llm, spread_by_category
from swift_vllm.search import disconnect, search_state
from swift_vllm.search.cache import cache_key
from swift_vllm.vllm_compat import WORKER_EXTENSION

TASK = "search-share"


def serve(model: str, cache: Path, batch_size: int, max_tokens: int, after: int, limit: int):
    """Per batch: wall seconds, output tokens, scoring seconds, the phase after it."""
    from vllm import SamplingParams

    spec = {"method": METHOD_NAME, "num_speculative_tokens": 4}
    spec |= {"task": TASK, "cache_path": str(cache)}
    llm = make_llm(model, spec, worker_extension_cls=WORKER_EXTENSION)
    questions = load_questions()
    prompts = chat_prompts(llm, spread_by_category(questions, len(questions)))
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    key = cache_key(model, TASK)
    batches, left_after = [], after
    scored_before = 0.0
    state: dict = {}
    for number in range(limit):
        batch = [prompts[(number * batch_size + i) % len(prompts)] for i in range(batch_size)]
        started = time.perf_counter()
        outputs = llm.generate(batch, params, use_tqdm=False)
        wall = time.perf_counter() - started
        scored = llm.collective_rpc("self_skip_stats")[0]["scoring_seconds"]
        state = search_state(key, state)
        batches.append(
            {
                "wall_s": wall,
                "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
                "scoring_s": scored - scored_before,
                "phase": state.get("phase"),
                "iterations": state.get("iterations"),
            }
        )
        scored_before = scored
        row = batches[-1]
        print(
            f"batch {number + 1}: {row['output_tokens'] / wall:.1f} tok/s, scoring "
            f"{row['scoring_s']:.1f} of {wall:.1f} s, {row['phase']} "
            f"({row['iterations']} sets scored)",
            flush=True,
        )
        if state.get("phase") == "accelerating":
            left_after -= 1
            if left_after < 0:
                break
    final = search_state(key, state, timeout_s=FINAL_STATUS_TIMEOUT_S)
    disconnect()
    return batches, final


def _rate(rows: list[dict]) -> float | None:
    seconds = sum(r["wall_s"] for r in rows)
    return sum(r["output_tokens"] for r in rows) / seconds if seconds else None


def summarize(batches: list[dict], final: dict) -> dict:
    """Batches up to the one in which the search stopped count as optimizing."""
    stopped = next(
        (i for i, b in enumerate(batches) if b["phase"] == "accelerating"), len(batches) - 1
    )
    optimizing, after = batches[: stopped + 1], batches[stopped + 1 :]
    wall = sum(b["wall_s"] for b in batches)
    optimizing_wall = sum(b["wall_s"] for b in optimizing)
    return {
        "batches_optimizing": len(optimizing),
        "optimizing_wall_s": optimizing_wall,
        "scoring_share_while_optimizing": sum(b["scoring_s"] for b in optimizing) / optimizing_wall,
        "scoring_share_overall": sum(b["scoring_s"] for b in batches) / wall,
        "tok_s_optimizing": _rate(optimizing),
        "tok_s_after": _rate(after),
        "search": {
            k: final.get(k)
            for k in ("phase", "iterations", "skip_ratio", "best_matchness", "optimizing_s")
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--after", type=int, default=2, help="batches after the search stops")
    parser.add_argument("--max-batches", type=int, default=40)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "skip_sets.json"
    cache.unlink(missing_ok=True)  # a cold start
    model = str(resolve_model(args.model))
    batches, final = serve(
        model, cache, args.batch_size, args.max_tokens, args.after, args.max_batches
    )
    summary = summarize(batches, final)
    print(json.dumps(summary, indent=1))
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "settings": vars(args) | {"out": str(args.out)},
        "summary": summary,
        "batches": batches,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
