"""The ``swift-vllm`` command line: one sub-command per module in ``swift_vllm.commands``."""

import argparse
import importlib
import logging
import sys

# Sub-command name -> module in swift_vllm.commands. Each module defines
# ``add_arguments(parser)`` and ``run(args) -> int`` and a one-line docstring.
# A module with ``PASS_THROUGH = True`` gets the arguments it does not know
# in ``args.passthrough`` (they are vLLM's).
COMMANDS: dict[str, str] = {
    "fetch-model": "fetch_model",
    "serve": "serve",
    "demo": "demo",
    "tune": "tune",
    "status": "status",
    "bench": "bench",
    "bench-serve": "bench_serve",
    "speed": "speed",
    "vllm": "vllm",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swift-vllm", description="SWIFT self-speculative decoding for vLLM."
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"swift_vllm.commands.{module_name}")
        sub = subparsers.add_parser(name, help=module.__doc__.splitlines()[0])
        module.add_arguments(sub)
        sub.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["vllm"]:  # vLLM's own CLI: every argument, --help included, is its
        from swift_vllm.vllm_compat import run_vllm_cli

        return run_vllm_cli(argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args._module, "PASS_THROUGH", False):
        args.passthrough = unknown
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args._module.run(args)


if __name__ == "__main__":
    sys.exit(main())
