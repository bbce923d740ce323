"""Drafting acceptance of a searched skip set against the set its search started from (issue 3).

Each set of a skip-set cache file (e.g. one ``swift-vllm tune`` wrote) and
the middle-out starting set of its size draft greedily, as pure self-skip
(lookup and guard off: acceptance does not depend on them), for the same
dev prompts, categories in turn; acceptance is vLLM's own count of accepted
over verified draft tokens, per output length, with the mean accepted
length (tokens per verify step, the bonus token included): a set that
drafts on past its first miss has a lower acceptance for as many accepted
tokens.

    .venv/bin/python benchmarks/set_acceptance.py --cache /tmp/tune/skip_sets.json
"""

import argparse
import json
from pathlib import Path

from vllm import SamplingParams

from swift_vllm.bench.methods import fixed_set_config
from swift_vllm.commands.bench import resolve_model
from swift_vllm.engine import chat_prompts, load_questions, make_llm, spread_by_category
from swift_vllm.skip_set import SkipSet, default_skip_set

DRAFT_LEN = 4


def acceptance(
    model: str, skip_set: SkipSet, questions: list[dict], lengths: list[int]
) -> dict[int, tuple[float, float]]:
    """Per output length: accepted / verified draft tokens over the prompts,
    and the mean accepted length."""
    spec = fixed_set_config(skip_set.to_dict(), DRAFT_LEN)
    llm = make_llm(model, spec, max_num_seqs=8, per_request_spec_decode_metrics="summary")
    rates = {}
    for length in lengths:
        params = SamplingParams(temperature=0.0, max_tokens=length, ignore_eos=True)
        drafted = accepted = steps = 0
        for output in llm.generate(chat_prompts(llm, questions), params, use_tqdm=False):
            metrics = output.outputs[0].spec_decode_metrics.to_dict()
            drafted += metrics["num_draft_tokens"]
            accepted += metrics["num_accepted_draft_tokens"]
            steps += metrics["num_spec_steps"]
        rates[length] = (accepted / drafted, 1 + accepted / steps)
    del llm
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="skip-set cache file")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--num-prompts", type=int, default=8)
    parser.add_argument("--lengths", default="64,256", help="output lengths, comma-separated")
    args = parser.parse_args()
    model = str(resolve_model(args.model))
    lengths = [int(n) for n in args.lengths.split(",")]
    questions = spread_by_category(load_questions(), args.num_prompts)

    for key, entry in json.loads(args.cache.read_text()).items():
        found = SkipSet.from_dict(entry)
        start = default_skip_set(entry["num_layers"], found.ratio(entry["num_layers"]))
        for label, skip_set in (("found", found), ("middle-out start", start)):
            rates = acceptance(model, skip_set, questions, lengths)
            cells = ", ".join(
                f"{n} tokens {rate:.3f} (accepted length {length:.2f})"
                for n, (rate, length) in rates.items()
            )
            print(f"{key.rsplit('_', 1)[-1]} {label} {skip_set.to_dict()}: {cells}", flush=True)


if __name__ == "__main__":
    main()
