"""Find the skip set before serving: run the search on prompts until it stops, and cache it.

A server started without a cached set searches while it serves, which costs
up to ``opt_time_share`` of its time until the search stops. ``tune`` pays
that once, offline: it decodes batches of prompts with self-skip drafting
(guard and lookup off, so every step drafts and the draft/verify costs of
the adaptive ratio get measured) and scoring as often as the search wants,
until the search stops by its own rules. The actor then writes the set to
the cache that later engines (same model, task and cache file) start from.
Writes ``OUT/search.json`` (final status, matchness per iteration) and
``OUT/matchness.png`` when ``--out`` is given.
"""

import argparse
import gc
import itertools
import json
import os
from pathlib import Path

from tqdm import tqdm

from swift_vllm.commands.bench import resolve_model
from swift_vllm.config import METHOD_NAME, SelfSkipConfig
from swift_vllm.engine import chat_prompts, load_questions, make_llm, spread_by_category
from swift_vllm.models import KNOWN_MODELS
from swift_vllm.search.cache import SkipSetCache, cache_key
from swift_vllm.vllm_compat import WORKER_EXTENSION

# Tuning settings that make every step draft and score.
TUNING_OPTIONS = {"guard": False, "lookup": False, "opt_time_share": 1.0}
# The final state is the report: worth waiting longer for than a progress poll.
FINAL_STATUS_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2", help=f"{'|'.join(KNOWN_MODELS)} or a model folder"
    )
    parser.add_argument(
        "--dataset",
        help="Spec-Bench JSONL to decode (default: the packaged dev set); use prompts "
        "like the traffic the server will see",
    )
    parser.add_argument(
        "--options",
        type=json.loads,
        default={},
        help='JSON of self-skip options, e.g. \'{"skip_ratio": 0.2, "task": "code"}\' '
        "(default: adaptive ratio, task 'default', the default cache file)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=8, help="prompts decoded together (default: 8)"
    )
    parser.add_argument(
        "--max-tokens", type=int, default=256, help="new tokens per prompt (default: 256)"
    )
    parser.add_argument(
        "--max-batches",
        type=int,
        default=200,
        help="give up if the search has not stopped after this many batches (default: 200)",
    )
    parser.add_argument(
        "--retune", action="store_true", help="search again even if the cache has a set"
    )
    parser.add_argument("--out", type=Path, help="folder for search.json and matchness.png")


def run(args: argparse.Namespace) -> int:
    options = SelfSkipConfig.from_dict(args.options)
    model = resolve_model(args.model)
    cache = SkipSetCache.of(options.cache_path)
    key = cache_key(model, options.task)
    if args.retune and cache.remove(key):
        print(f"removed the cached set of {key} from {cache.path}")
    elif (entry := cache.load(key, num_layers(model))) is not None:
        print(f"{key} already has a cached set in {cache.path}: {entry.skip_set}")
        print("pass --retune to search again")
        return 0
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    questions = load_questions(args.dataset)
    state = search(model, options, questions, args.batch_size, args.max_tokens, args.max_batches)
    if args.out:
        _write_report(args.out, state)
    if state.get("phase") != "accelerating":
        print(f"the search did not stop within {args.max_batches} batches: {_summary(state)}")
        return 1
    print(f"{key}: {state['phase_reason']} after {state['optimizing_s']:.0f} s of search")
    print(
        f"  skip set: attention {state['current']['attention']} mlp {state['current']['mlp']}"
        f" (ratio {state['skip_ratio']:.3f}), matchness {state['best_matchness']:.3f}, "
        f"predicted speedup {_format(state['predicted_speedup'])}x"
    )
    print(f"  cached in {cache.path}; engines for this model and task start from it")
    return 0


def num_layers(model: str) -> int:
    """Decoder layers of a model folder (its ``config.json``)."""
    return json.loads((Path(model) / "config.json").read_text())["num_hidden_layers"]


def search(
    model: str,
    options: SelfSkipConfig,
    questions: list[dict],
    batch_size: int,
    max_tokens: int,
    max_batches: int,
) -> dict:
    """Decode ``questions`` (cycling, categories in turn) in batches until
    the search for ``model`` and ``options.task`` stops; returns its final
    status. A search sees a dozen or so prompts: taken in file order they
    would be one or two categories, and the set found would fit those."""
    from vllm import SamplingParams

    from swift_vllm.search import disconnect, search_state

    if options.has_fixed_set:
        raise ValueError("tuning searches for a set: drop attention_skip / mlp_skip")
    spec = {"method": METHOD_NAME, "num_speculative_tokens": 4} | options.to_dict()
    spec |= TUNING_OPTIONS
    key = cache_key(model, options.task)
    llm = make_llm(model, spec, worker_extension_cls=WORKER_EXTENSION)
    try:
        spread = spread_by_category(questions, len(questions))
        prompts = itertools.cycle(chat_prompts(llm, spread))
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
        state = search_state(key, {})
        with tqdm(total=max_batches, unit="batch", desc="searching skip set") as progress:
            for _ in range(max_batches):
                if state.get("phase") == "accelerating":
                    break
                llm.generate([next(prompts) for _ in range(batch_size)], params, use_tqdm=False)
                state = search_state(key, state)
                progress.update(1)
                progress.set_postfix_str(_summary(state))
        state = search_state(key, state, timeout_s=FINAL_STATUS_TIMEOUT_S)
    finally:
        disconnect()  # before the engine, whose worker runs the cluster, goes
        llm.llm_engine.engine_core.shutdown()
        del llm
        gc.collect()
    return state


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _summary(state: dict) -> str:
    if not state:
        return "waiting for the search actor"
    return (
        f"{state['phase']}, {state['iterations']} sets scored, best matchness "
        f"{_format(state['best_matchness'])} at ratio {state['skip_ratio']:.2f}"
    )


def _write_report(out: Path, state: dict) -> None:
    from swift_vllm.bench.plots import plot_search_history

    out.mkdir(parents=True, exist_ok=True)
    (out / "search.json").write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
    if state.get("history"):
        plot_search_history(state["history"], state["num_layers"], out / "matchness.png")
    print(f"wrote {out / 'search.json'} and {out / 'matchness.png'}")
