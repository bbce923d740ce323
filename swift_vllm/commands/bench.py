"""Offline benchmark: tokens/s, speedup and acceptance of speculative methods per batch size.

One engine per method and round (methods in rotating order, vanilla first in
the first round: the speedups are relative to it), a warm-up, then the same
prompts in groups of each batch size, ``--repeats`` times per engine
(medians over every round's repeats). Writes ``OUT/results.json``, per-request answer files
``OUT/answers/<method>_bs<B>.jsonl`` (inputs of ``swift-vllm speed``) and
PNG plots, and prints the tables.
"""

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from importlib.metadata import version
from pathlib import Path

from tqdm import tqdm

from swift_vllm.bench import methods as bench_methods
from swift_vllm.bench.offline import (
    MethodRun,
    Workload,
    engine_overrides,
    run_interleaved,
    run_method,
    select_questions,
    write_answers,
)
from swift_vllm.bench.plots import write_plots
from swift_vllm.bench.report import (
    category_table,
    overall_table,
    source_table,
    summarize,
    write_results,
)
from swift_vllm.engine import DEV_PROMPTS, ENGINE_DEFAULTS, parse_engine_args
from swift_vllm.models import KNOWN_MODELS, fetch_model

logger = logging.getLogger(__name__)


def int_list(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def engine_args(text: str) -> dict:
    try:
        return parse_engine_args(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--engine-args: {err}") from None


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared with ``bench-serve``: model, data and speculative settings."""
    parser.add_argument(
        "--model", default="smollm2", help=f"{'|'.join(KNOWN_MODELS)} or a model folder"
    )
    parser.add_argument(
        "--dataset",
        help="Spec-Bench JSONL: question_id, category, turns (default: the packaged dev set)",
    )
    parser.add_argument(
        "--categories",
        type=lambda text: [c for c in text.split(",") if c],
        help="comma-separated categories to draw prompts from (default: all)",
    )
    parser.add_argument(
        "--max-tokens", type=int, default=128, help="new tokens per request (default: 128)"
    )
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="0 is greedy decoding (default: 0)"
    )
    parser.add_argument(
        "--num-speculative-tokens",
        type=int,
        default=4,
        help="draft tokens per step, for every speculative method (default: 4)",
    )
    parser.add_argument(
        "--speculative-config",
        type=json.loads,
        default={},
        help="JSON of self-skip options merged into every self-skip method",
    )
    parser.add_argument(
        "--engine-args",
        type=engine_args,
        default={},
        help="JSON of vLLM engine arguments replacing the CPU-sized defaults for every "
        'method, e.g. \'{"dtype": "bfloat16", "enforce_eager": false, '
        '"gpu_memory_utilization": 0.9}\' on a GPU (default: fp32, eager, 2048 tokens)',
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--methods",
        type=bench_methods.parse_labels,
        default="vanilla,ngram,self-skip",
        help=f"comma-separated, from: {', '.join(bench_methods.METHODS)}",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int_list,
        default="1,4,16",
        help="requests per generate call; the prompts run in groups of each (default: 1,4,16)",
    )
    parser.add_argument(
        "--num-prompts",
        type=int,
        default=64,
        help="prompts, spread over the categories; a multiple of the largest batch size "
        "per category gives batches of one category (default: 64)",
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=3,
        help="timed runs per batch size and engine; medians (default: 3)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        default=1,
        help="fresh engines per method, in rotating order; more than 1 spreads the "
        "machine's drift between processes over every method (default: 1)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="start every method's engine at once and time each group on every method "
        "back to back, so the machine's drift lands on every method alike (speedups are "
        "then paired, call by call); needs memory for all the engines together",
    )
    parser.add_argument("--ignore-eos", action="store_true", help="always decode --max-tokens")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def resolve_model(name: str) -> str:
    return str(fetch_model(name)) if name in KNOWN_MODELS else name


def environment() -> dict[str, str]:
    """Versions and machine, recorded with every result."""
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    return {
        "vllm": __import__("vllm").__version__,
        "torch": torch.__version__,
        "swift_vllm": version("swift-vllm"),
        "python": platform.python_version(),
        "device": device or platform.machine(),
        "cpus": str(os.cpu_count()),
    }


def method_configs(args: argparse.Namespace) -> dict[str, dict | None]:
    """The selected methods' speculative configs, vanilla first (the baseline)."""
    labels = list(dict.fromkeys([bench_methods.BASELINE, *args.methods]))
    return bench_methods.speculative_configs(
        labels, args.num_speculative_tokens, args.speculative_config
    )


def common_meta(args: argparse.Namespace, model: str, configs: dict) -> dict:
    """What every results file records: the command, data, methods and machine."""
    return {
        "command": shlex.join(["swift-vllm", *sys.argv[1:]]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "dataset": args.dataset or f"packaged dev set ({DEV_PROMPTS.name})",
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "methods": configs,
        "notes": bench_methods.notes(list(configs)),
        "environment": environment(),
    }


def run_rounds(
    labels: list[str],
    model: str,
    configs: dict[str, dict | None],
    workload: Workload,
    interleave: bool = False,
) -> tuple[dict[str, MethodRun], dict[str, str]]:
    """Every method's runs over every round, and the methods that failed
    (with the error; a failed method is not run again)."""
    runs: dict[str, MethodRun] = {}
    errors: dict[str, str] = {}

    def merge(label: str, run: MethodRun) -> None:
        if label in runs:
            runs[label].merge(run)
        else:
            runs[label] = run

    with tqdm(total=len(labels) * workload.num_generate_calls(), unit="batch") as progress:
        for round_index in range(workload.rounds):
            if interleave:
                alive = {label: configs[label] for label in labels if label not in errors}
                done, failed = run_interleaved(alive, model, workload, progress, round_index)
                for label, run in done.items():
                    merge(label, run)
                for label in failed:
                    runs.pop(label, None)
                errors |= failed
                continue
            for label in workload.method_order(labels, round_index):
                if label in errors:
                    continue
                try:
                    run = run_method(label, model, configs[label], workload, progress, round_index)
                except Exception as err:  # one broken method must not lose the others' hours
                    logger.exception("method %s failed", label)
                    errors[label] = f"{type(err).__name__}: {err}"
                    runs.pop(label, None)
                    left = workload.rounds - round_index
                    progress.update(workload.num_generate_calls() // workload.rounds * left)
                    continue
                merge(label, run)
    return runs, errors


def run(args: argparse.Namespace) -> int:
    configs = method_configs(args)
    labels = list(configs)
    model = resolve_model(args.model)
    workload = Workload(
        questions=select_questions(args.dataset, args.num_prompts, args.categories),
        batch_sizes=args.batch_sizes,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        repeats=args.repeats,
        ignore_eos=args.ignore_eos,
        rounds=args.rounds,
        engine_args=args.engine_args,
    )
    # vLLM's per-step INFO lines would bury the progress bar; VLLM_LOGGING_LEVEL overrides.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    runs, errors = run_rounds(labels, model, configs, workload, args.interleave)

    groups = [group for run in runs.values() for group in run.groups]
    proposer = {key: s for run in runs.values() for key, s in run.proposer_stats.items()}
    rows = summarize(groups, proposer)
    meta = common_meta(args, model, configs) | {
        "num_prompts": len(workload.questions),
        "batch_sizes": workload.batch_sizes,
        "repeats": workload.repeats,
        "rounds": workload.rounds,
        "interleaved": args.interleave,
        "ignore_eos": workload.ignore_eos,
        "engine": ENGINE_DEFAULTS | engine_overrides(None, workload),
        "self_skip_sets": {label: run.skip_sets for label, run in runs.items() if run.skip_sets},
        "self_skip_search": {label: run.search for label, run in runs.items() if run.search},
        "self_skip_guard": {label: run.guard for label, run in runs.items() if run.guard},
        "errors": errors,
    }
    write_results(args.out / "results.json", meta, rows)
    write_answers(groups, args.out / "answers")
    plots = write_plots(rows, args.out) if rows else []
    print("\n" + "\n".join(bench_methods.notes(labels)))
    print(
        f"\n{len(workload.questions)} prompts, {workload.max_tokens} new tokens, "
        f"median of {workload.repeats} repeat(s) x {workload.rounds} round(s)\n"
    )
    print(overall_table(rows))
    print("\nspeedup over vanilla by category\n")
    print(category_table(rows))
    if any("draft_sources" in row for row in rows):
        print("\ndraft tokens from prompt lookup (acceptance: lookup/self-skip) by category\n")
        print(source_table(rows))
    print(
        f"\nwrote {args.out / 'results.json'}, {args.out / 'answers'}/, "
        + ", ".join(p.name for p in plots)
    )
    for label, run in runs.items():
        scoring = sum(stats.scoring_seconds for stats in run.proposer_stats.values())
        if scoring:
            print(
                f"note: {label}'s skip-set search scored candidates for {scoring:.1f} s of its "
                "timed runs; run `swift-vllm tune` first to time the steady state"
            )
    for label, message in errors.items():
        print(f"FAILED {label}: {message}")
    return 1 if errors else 0
