"""Online benchmark: TTFT, TPOT and throughput of real vLLM servers per method and concurrency.

Starts one ``vllm serve`` per method on 127.0.0.1 (plain for ``vanilla``,
the method's speculative config otherwise), runs vLLM's own ``vllm bench
serve`` on the benchmark prompts at each ``--concurrency`` level, stops the
server, and writes ``OUT/serve_results.json`` (plus vLLM's raw result JSONs
and the server logs in ``OUT/serve/``) and a table.
"""

import argparse
import importlib.util
import logging
from pathlib import Path

from tqdm import tqdm

from swift_vllm.bench import methods as bench_methods
from swift_vllm.bench.offline import select_questions
from swift_vllm.bench.online import (
    ServeWorkload,
    add_speedups,
    run_method,
    server_args,
    write_prompts,
)
from swift_vllm.bench.report import format_table, write_results
from swift_vllm.commands.bench import (
    add_model_arguments,
    common_meta,
    int_list,
    method_configs,
    resolve_model,
)

logger = logging.getLogger(__name__)

TABLE = {
    "req/s": "request_throughput",
    "out tok/s": "output_throughput",
    "speedup": "speedup",
    "TTFT ms": "median_ttft_ms",
    "TPOT ms": "median_tpot_ms",
    "p99 TPOT": "p99_tpot_ms",
    "E2E ms": "median_e2el_ms",
    "accept": "acceptance_rate",
    "acc len": "acceptance_length",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument(
        "--methods",
        type=bench_methods.parse_labels,
        default="vanilla,self-skip",
        help=f"comma-separated, from: {', '.join(bench_methods.METHODS)}",
    )
    parser.add_argument(
        "--concurrency",
        type=int_list,
        default="1,4,16",
        help="requests in flight, one load level each (default: 1,4,16)",
    )
    parser.add_argument(
        "--num-prompts", type=int, default=32, help="requests per load level (default: 32)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("pandas") is None:  # checked before minutes of server start-up
        raise SystemExit("vllm bench serve reads custom datasets with pandas: pip install pandas")
    configs = method_configs(args)
    labels = list(configs)
    raw = args.out / "serve"
    raw.mkdir(parents=True, exist_ok=True)
    questions = select_questions(args.dataset, args.num_prompts, args.categories)
    work = ServeWorkload(
        model=resolve_model(args.model),
        prompts_file=write_prompts(questions, raw / "prompts.jsonl"),
        concurrency=args.concurrency,
        num_prompts=len(questions),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        engine_args=args.engine_args,
    )
    rows: list[dict] = []
    errors: dict[str, str] = {}
    with tqdm(total=len(labels) * len(work.concurrency), unit="level") as progress:
        for label in labels:
            try:
                rows += run_method(label, configs[label], work, raw, progress)
            except Exception as err:  # keep the other methods' results
                logger.exception("method %s failed (logs in %s)", label, raw)
                errors[label] = f"{type(err).__name__}: {err}"
    add_speedups(rows)
    meta = common_meta(args, work.model, configs) | {
        "num_prompts": work.num_prompts,
        "concurrency": work.concurrency,
        "server_args": server_args(max(work.concurrency), work.engine_args),
        "load": "vllm bench serve, openai backend (/v1/completions), request rate inf, "
        "--max-concurrency per level, one warm-up request per concurrent slot",
        "errors": errors,
    }
    write_results(args.out / "serve_results.json", meta, rows)
    print("\n" + "\n".join(bench_methods.notes(labels)) + "\n")
    body = [[r["method"], r["concurrency"], *(r[k] for k in TABLE.values())] for r in rows]
    print(format_table(["method", "conc", *TABLE], body))
    print(f"\nwrote {args.out / 'serve_results.json'} and {raw}/")
    for label, message in errors.items():
        print(f"FAILED {label}: {message}")
    return 1 if errors else 0
