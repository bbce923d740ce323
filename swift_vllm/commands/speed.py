"""Speed report from two per-request answer files: speedup, mean accepted tokens, acceptance.

The SWIFT / Spec-Bench ``speed.py`` report: per task and overall, for a run
against a baseline run of the same questions, e.g. the answer files of
``swift-vllm bench``: ``--file OUT/answers/self-skip_bs1.jsonl --base
OUT/answers/vanilla_bs1.jsonl``.
"""

import argparse
import json
from pathlib import Path

from swift_vllm.bench.report import format_table
from swift_vllm.bench.speed import load_answers, speed_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, required=True, help="answers of the method")
    parser.add_argument("--base", type=Path, required=True, help="answers of the baseline")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = speed_report(load_answers(args.file), load_answers(args.base))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    headers = ["task", "requests", "tok/s", "base tok/s", "speedup", "mean accepted", "accept"]
    print(format_table(headers, [list(row.values()) for row in rows]))
    return 0
