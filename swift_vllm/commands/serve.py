"""Run ``vllm serve`` with ``--speculative-model [self-skip]`` mapped onto vLLM 0.32's flags.

vLLM 0.32 dropped ``--speculative-model``; this maps the old spelling (and
``--num-speculative-tokens``) into ``--speculative-config`` and hands every
other argument to ``vllm serve`` unchanged.
"""

import argparse
import json

from swift_vllm.config import METHOD_ALIAS, METHOD_NAME
from swift_vllm.vllm_compat import run_vllm_cli

DEFAULT_NUM_SPECULATIVE_TOKENS = 4
PASS_THROUGH = True  # every other argument goes to `vllm serve`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model folder or name, as for `vllm serve`")
    parser.add_argument(
        "--speculative-model",
        help=f"{METHOD_ALIAS} (or {METHOD_NAME}) turns on self-skip speculative decoding",
    )
    parser.add_argument(
        "--num-speculative-tokens",
        type=int,
        help=f"draft tokens per step (default {DEFAULT_NUM_SPECULATIVE_TOKENS})",
    )
    parser.add_argument(
        "--speculative-config",
        type=json.loads,
        help="JSON merged into the speculative config (self-skip options go here)",
    )


def build_vllm_argv(args: argparse.Namespace) -> list[str]:
    """The ``vllm serve`` command line for these arguments."""
    argv = ["serve", args.model, *args.passthrough]
    spec = dict(args.speculative_config or {})
    if args.speculative_model is not None:
        if args.speculative_model not in (METHOD_ALIAS, METHOD_NAME):
            raise SystemExit(
                f"--speculative-model {args.speculative_model!r} is not supported here; "
                f"use {METHOD_ALIAS} or vLLM's own --speculative-config"
            )
        spec["method"] = METHOD_NAME
    if args.num_speculative_tokens is not None:
        spec["num_speculative_tokens"] = args.num_speculative_tokens
    if spec.get("method") in (METHOD_NAME, METHOD_ALIAS):
        spec.setdefault("num_speculative_tokens", DEFAULT_NUM_SPECULATIVE_TOKENS)
    if spec:
        argv += ["--speculative-config", json.dumps(spec)]
    return argv


def run(args: argparse.Namespace) -> int:
    argv = build_vllm_argv(args)
    print("vllm", " ".join(argv), flush=True)
    return run_vllm_cli(argv)
