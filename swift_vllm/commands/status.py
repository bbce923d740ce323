"""Show the running skip-set searches: phase, iterations, best matchness, set, time.

Joins ``$RAY_ADDRESS`` or the Ray cluster running on this machine and asks
the search actor; starts nothing.
"""

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the raw status as JSON")


def _format(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def run(args: argparse.Namespace) -> int:
    # Imported here: Ray, torch and BoTorch take seconds, the other commands
    # should not pay for them.
    from swift_vllm.search import status

    try:
        searches = status()
    except TimeoutError as error:
        print(f"swift-vllm status: {error}; try again")
        return 1
    if args.json:
        print(json.dumps(searches, indent=1, sort_keys=True))
        return 0
    if not searches:
        print("no skip-set search is running (no Ray cluster, or no search actor in it)")
        return 0
    for key, s in sorted(searches.items()):
        print(f"{key}: {s['phase']} ({s['phase_reason']})")
        print(
            f"  iterations {s['iterations']} ({s['bayes_proposals']} of "
            f"{s['proposals']} proposals Bayesian), {s['windows_scored']} windows scored, "
            f"{s['restarts']} restarts"
        )
        print(
            f"  best matchness {_format(s['best_matchness'], '.3f')} over "
            f"{s['best_windows']} windows, skip ratio {s['skip_ratio']:.3f} "
            f"({s['skipped']} sub-layers{', adaptive' if s['adaptive'] else ''}), "
            f"predicted speedup {_format(s['predicted_speedup'], '.2f')}x"
        )
        print(f"  current set: attention {s['current']['attention']} mlp {s['current']['mlp']}")
        print(
            f"  time optimizing {s['optimizing_s']:.1f} s (scoring {s['scoring_s']:.1f} s, "
            f"search {s['search_s']:.1f} s); recent acceptance "
            f"{_format(s['recent_acceptance'], '.3f')}"
        )
    return 0
