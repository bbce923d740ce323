"""Adaptive skip ratio against fixed ratios, searched and raced on one machine (issue 3).

For each ratio (0.1, 0.2, 0.3, 0.45 and adaptive) ``swift-vllm tune`` runs
the search from a cold start into a cache file of this run's own (task
``ratio-<label>``), and reports the matchness and the speedup the search
predicts for the set it found. Then one plain engine and one pure self-skip
engine per found set (lookup and guard off, the set fixed), and one with
the set a search at ratio 0.2 starts from (``start-0.2``), decode the same
prompts, each prompt on every engine in turn, so every ratio's speedup is
timed side by side with plain decoding on this noisy machine; medians over
the rounds. Each set's speedup is also predicted (Leviathan et al.) from
its acceptance and draft/verify step costs as measured in the race, the
same way for every set: each search predicts with the costs its own run
measured, which differ by more than the sets do.

    .venv/bin/python benchmarks/ratio_race.py --out benchmarks/results/smollm2/ratio-race
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from swift_vllm.bench.methods import fixed_set_config
from swift_vllm.commands.bench import resolve_model
from swift_vllm.config import SelfSkipConfig
from swift_vllm.engine import (
    chat_prompts,
    load_questions,
    make_llm,
    spread_by_category,
)
from swift_vllm.search.cache import SkipSetCache, cache_key
from swift_vllm.search.searcher import starting_set
from swift_vllm.search.speedup import best_speedup
from swift_vllm.vllm_compat import WORKER_EXTENSION

RATIOS = ["0.1", "0.2", "0.3", "0.45", "adaptive"]
START = "start-0.2"
DRAFT_LEN = 4


def tune(model: str, label: str, cache: Path, batch_size: int, out: Path) -> dict:
    """Search from a cold start for ``label``'s ratio; the search's final status."""
    options = {"task": f"ratio-{label}", "cache_path": str(cache)}
    if label != "adaptive":
        options["skip_ratio"] = float(label)
    command = [
        str(Path(sys.executable).with_name("swift-vllm")),
        "tune",
        "--model",
        model,
        "--batch-size",
        str(batch_size),
        "--options",
        json.dumps(options),
        "--out",
        str(out / f"tune-{label}"),
    ]
    if not (out / f"tune-{label}" / "search.json").exists():
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return json.loads((out / f"tune-{label}" / "search.json").read_text())


def race(model: str, sets: dict[str, dict], num_prompts: int, max_tokens: int, rounds: int):
    """Tokens/s per round of plain decoding and of each fixed set, interleaved;
    per set its acceptance, accepted length and draft-step / verify-step
    cost ratio."""
    from vllm import SamplingParams

    engines = {"vanilla": make_llm(model, max_num_seqs=1)}
    for label, skip_set in sets.items():
        # Per-request counters: vLLM's global metrics follow the newest engine only.
        engines[label] = make_llm(
            model,
            fixed_set_config(skip_set, DRAFT_LEN),
            max_num_seqs=1,
            per_request_spec_decode_metrics="summary",
            worker_extension_cls=WORKER_EXTENSION,
        )
    questions = spread_by_category(load_questions(), num_prompts)
    prompts = chat_prompts(engines["vanilla"], questions)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    for llm in engines.values():  # warm-up
        llm.generate(prompts[:1], params, use_tqdm=False)
    labels = list(engines)
    rates: dict[str, list[float]] = {label: [] for label in labels}
    steps = dict.fromkeys(labels, 0)  # verifications that carried a draft
    drafted = dict.fromkeys(labels, 0)
    accepted = dict.fromkeys(labels, 0)
    for number in range(rounds):
        tokens = dict.fromkeys(labels, 0)
        seconds = dict.fromkeys(labels, 0.0)
        # Prompt by prompt, every engine in turn (first one rotating): the
        # machine's drift lands on all of them alike.
        for index, prompt in enumerate(prompts):
            shift = (number * len(prompts) + index) % len(labels)
            for label in labels[shift:] + labels[:shift]:
                started = time.perf_counter()
                (output,) = engines[label].generate([prompt], params, use_tqdm=False)
                seconds[label] += time.perf_counter() - started
                tokens[label] += len(output.outputs[0].token_ids)
                metrics = output.outputs[0].spec_decode_metrics
                if metrics is not None:
                    summary = metrics.to_dict()
                    steps[label] += summary["num_spec_steps"]
                    drafted[label] += summary["num_draft_tokens"]
                    accepted[label] += summary["num_accepted_draft_tokens"]
        for label in labels:
            rates[label].append(tokens[label] / seconds[label])
        print(
            f"round {number + 1}/{rounds}: "
            + ", ".join(f"{label} {rates[label][-1]:.1f}" for label in labels)
            + " tok/s",
            flush=True,
        )
    measured = {}
    for label in labels[1:]:
        # Step costs as the proposer timed them, the same way for every set
        # (each search predicted with the costs it measured in its own run).
        stats = engines[label].collective_rpc("self_skip_stats")[0]
        cost_ratio = (stats["draft_seconds"] / stats["draft_steps"]) / (
            stats["verify_seconds"] / stats["verify_steps"]
        )
        measured[label] = (
            accepted[label] / drafted[label],
            1 + accepted[label] / steps[label],
            cost_ratio,
        )
    return rates, measured


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tune-batch-size", type=int, default=1, help="as the race decodes")
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # six engines share the memory
    model = str(resolve_model(args.model))
    cache = args.out / "skip_sets.json"

    states = {label: tune(model, label, cache, args.tune_batch_size, args.out) for label in RATIOS}
    entries = SkipSetCache.of(str(cache))
    sets = {}
    for label in RATIOS:
        entry = entries.load(cache_key(model, f"ratio-{label}"), states[label]["num_layers"])
        if entry is None:
            raise SystemExit(f"the search for ratio {label} cached no set in {cache}")
        sets[label] = entry.skip_set.to_dict()
    start = starting_set(states["0.2"]["num_layers"], SelfSkipConfig(skip_ratio=0.2))
    sets[START] = start.to_dict()
    rates, measured = race(model, sets, args.num_prompts, args.max_tokens, args.rounds)

    plain = rates["vanilla"]
    rows = []
    print(
        f"\n{'ratio':>9} {'skipped':>7} {'matchness':>9} {'predicted':>9} "
        f"{'measured':>8} {'acceptance':>10} {'acc len':>7} {'cost':>5} {'race pred':>9}"
    )
    for label in [*RATIOS, START]:
        state = states.get(label, {})
        speedups = [rate / base for rate, base in zip(rates[label], plain, strict=True)]
        acceptance_rate, accepted_length, cost_ratio = measured[label]
        row = {
            "ratio": label,
            "found_ratio": state.get("skip_ratio"),
            "skipped": len(sets[label]["attention"]) + len(sets[label]["mlp"]),
            "skip_set": sets[label],
            "matchness": state.get("best_matchness"),
            "predicted_speedup": state.get("predicted_speedup"),
            "measured_speedups": speedups,
            "measured_speedup": statistics.median(speedups),
            "acceptance": acceptance_rate,
            "accepted_length": accepted_length,
            "cost_ratio": cost_ratio,
            # Leviathan et al. from what the race measured: comparable across sets.
            "race_predicted_speedup": best_speedup(acceptance_rate, cost_ratio, DRAFT_LEN),
            "search_s": state.get("optimizing_s"),
        }
        rows.append(row)
        print(
            f"{label:>9} {row['skipped']:>7} {_cell(row['matchness'], '.3f'):>9} "
            f"{_cell(row['predicted_speedup'], '.2f', 'x'):>9} {row['measured_speedup']:>7.2f}x "
            f"{row['acceptance']:>10.3f} {row['accepted_length']:>7.2f} "
            f"{row['cost_ratio']:>5.2f} {row['race_predicted_speedup']:>8.2f}x"
        )
    result = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "vanilla_tok_s": plain,
        "rows": rows,
        "settings": vars(args) | {"out": str(args.out), "draft_len": DRAFT_LEN},
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
