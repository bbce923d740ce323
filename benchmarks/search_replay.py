"""Replay the skip-set search offline and score what it finds (issue 3).

The real ``Searcher`` runs from its random start at a fixed ratio; each step
its candidates are scored on one ``context_window``-token window of
SmolLM2's own greedy output by the Hugging Face reference matchness
(``tests/integration/hf_matchness.py``), as the proposer would score them
on the tokens it just generated. The set it ends on is then scored like
``tests/integration/test_search_engine.py`` scores the in-engine search: on
the last 50 tokens of the first 8 prompts' outputs, against the starting set
and the same 60 random sets. No vLLM and no Ray, so a search variant can be
judged in minutes, over several seeds (one window draw per seed).

    .venv/bin/python benchmarks/search_replay.py --seeds 0,1

``--score-cache FILE`` replays nothing: it scores each set of a skip-set
cache file (e.g. the one ``ratio_race.py`` writes after full searches) the
same way, against the middle-out starting set and 60 random sets of its size.
"""

import argparse
import copy
import json
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "integration"))
from hf_matchness import HFMatchness  # noqa: E402  (the test suite's reference)

from swift_vllm.commands.bench import resolve_model  # noqa: E402
from swift_vllm.config import SelfSkipConfig  # noqa: E402
from swift_vllm.engine import load_questions, spread_by_category  # noqa: E402
from swift_vllm.search.phase import Phase  # noqa: E402
from swift_vllm.search.searcher import Searcher, starting_set  # noqa: E402
from swift_vllm.skip_set import SkipSet, default_skip_set  # noqa: E402

NUM_LAYERS = 30  # SmolLM2-135M
EVAL_PROMPTS = 8  # as the engine test
RANDOM_SETS = 60
# A window ends at least this far into an output, so it has a full window.
MIN_WINDOW_END = 60


def greedy_outputs(model_dir: str, count: int, max_tokens: int, cache: Path) -> list[dict]:
    """Prompt and greedy output token ids of ``count`` dev questions (cached)."""
    if cache.exists():
        return json.loads(cache.read_text())
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outputs = []
    for question in spread_by_category(load_questions(), count):
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": question["turns"][0]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_tokens, do_sample=False)
        outputs.append({"prompt": ids[0].tolist(), "output": out[0, ids.shape[1] :].tolist()})
        print(f"generated {len(outputs)}/{count}", file=sys.stderr)
    cache.write_text(json.dumps(outputs))
    return outputs


def score_on_window(scorer: HFMatchness, sequence: list[int], start: int, sets: list[SkipSet]):
    """Matchness of each set on ``sequence[start:]`` over the exact context's K/V."""
    ids = torch.tensor([sequence])
    with torch.no_grad():
        context = scorer.model(ids[:, :start], use_cache=True).past_key_values
        inputs, targets = ids[:, start:-1], ids[0, start + 1 :]
        scores = []
        for skip_set in sets:
            scorer.skip = skip_set
            logits = scorer.model(inputs, past_key_values=copy.deepcopy(context)).logits
            scores.append(float((logits[0].argmax(-1) == targets).float().mean()))
        scorer.skip = SkipSet()
    return scores


def random_sets(size: int) -> list[SkipSet]:
    """The engine test's 60 random sets of ``size`` sub-layers."""
    rng = random.Random(0)
    coordinates = [(kind, layer) for kind in ("attention", "mlp") for layer in range(1, 29)]
    sets = []
    for _ in range(RANDOM_SETS):
        picked = rng.sample(coordinates, size)
        sets.append(
            SkipSet(
                tuple(layer for kind, layer in picked if kind == "attention"),
                tuple(layer for kind, layer in picked if kind == "mlp"),
            )
        )
    return sets


def replay(
    searcher: Searcher, scorer: HFMatchness, outputs: list[dict], seed: int, window: int
) -> int:
    """Run the search to its end; returns the windows scored."""
    rng = random.Random(seed)
    windows = 0
    while searcher.phase.phase is Phase.OPTIMIZING:
        candidates = [c.skip_set for c in searcher.propose(searcher.config.candidates_per_step)]
        if not candidates:
            break
        chosen = outputs[rng.randrange(len(outputs))]
        end = rng.randrange(min(MIN_WINDOW_END, len(chosen["output"])), len(chosen["output"]) + 1)
        sequence = chosen["prompt"] + chosen["output"][:end]
        start = len(sequence) - 1 - min(window, end)
        scores = score_on_window(scorer, sequence, start, candidates)
        searcher.report_scores(
            list(zip(candidates, scores, strict=True)), len(sequence) - 1 - start, 0.0
        )
        windows += 1
    return windows


def score_cache(evaluator: HFMatchness, path: Path) -> None:
    """Each cached set's matchness beside its size's starting and random sets."""
    for key, entry in json.loads(path.read_text()).items():
        found = SkipSet.from_dict(entry)
        start = default_skip_set(NUM_LAYERS, found.ratio(NUM_LAYERS))
        baseline = sorted(evaluator(s) for s in random_sets(found.size))
        print(
            f"{key.rsplit('_', 1)[-1]} ({found.size} sub-layers): found {evaluator(found):.3f}, "
            f"middle-out start {evaluator(start):.3f}, {RANDOM_SETS} random sets: "
            f"best {baseline[-1]:.3f}, median {baseline[RANDOM_SETS // 2]:.3f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated window-draw seeds")
    parser.add_argument("--skip-ratio", type=float, default=0.2)
    parser.add_argument("--max-opt-iter", type=int, default=100)
    parser.add_argument("--search-start", choices=["random", "middle"], default="random")
    parser.add_argument("--playoff-windows", type=int, default=SelfSkipConfig.playoff_windows)
    parser.add_argument("--num-prompts", type=int, default=24, help="outputs the windows come from")
    parser.add_argument("--max-tokens", type=int, default=192)
    parser.add_argument("--outputs", type=Path, default=Path("/tmp/search_replay_outputs.json"))
    parser.add_argument("--score-cache", type=Path, help="score this cache file's sets instead")
    args = parser.parse_args()
    torch.set_num_threads(2)

    model_dir = str(resolve_model("smollm2"))
    outputs = greedy_outputs(model_dir, args.num_prompts, args.max_tokens, args.outputs)
    evaluator = HFMatchness(
        model_dir,
        [
            (
                o["prompt"] + o["output"],
                len(o["prompt"]) + len(o["output"]) - 1 - min(50, len(o["output"])),
            )
            for o in outputs[:EVAL_PROMPTS]
        ],
    )
    if args.score_cache:
        score_cache(evaluator, args.score_cache)
        return
    config = SelfSkipConfig(
        skip_ratio=args.skip_ratio,
        search_start=args.search_start,
        max_opt_iter=args.max_opt_iter,
        playoff_windows=args.playoff_windows,
    )
    start = starting_set(NUM_LAYERS, config)
    baseline = [evaluator(s) for s in random_sets(start.size)]
    print(
        f"starting set {evaluator(start):.3f}; {RANDOM_SETS} random sets: "
        f"best {max(baseline):.3f}, median {sorted(baseline)[RANDOM_SETS // 2]:.3f}"
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        searcher = Searcher(NUM_LAYERS, config, draft_len=4)
        windows = replay(searcher, evaluator, outputs, seed, config.context_window)
        found = searcher.incumbent()
        print(
            f"seed {seed}: {windows} windows, {searcher.phase.total_iterations} iterations; "
            f"found {evaluator(found):.3f} (its own estimate {searcher.score(found):.3f}): "
            f"{json.dumps(found.to_dict())}"
        )
        playoff = searcher.status()["playoff"]
        if playoff is not None:
            # The search's number 1 is what it would have chosen without the playoff.
            held_out = [evaluator(SkipSet.from_dict(f["set"])) for f in playoff["finalists"]]
            means = [f["mean_matchness"] for f in playoff["finalists"]]
            print(
                "  playoff finalists (the search's ranking), held-out / playoff mean: "
                + ", ".join(f"{h:.3f}/{m:.3f}" for h, m in zip(held_out, means, strict=True))
            )


if __name__ == "__main__":
    main()
