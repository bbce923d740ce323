"""Which earlier match should a prompt-lookup draft copy from? Replayed on greedy outputs.

vLLM's ``ngram`` drafts from the earliest occurrence of the longest matching
suffix n-gram, ``swift_vllm.lookup`` from the latest. This generates plain
greedy outputs once, then replays decoding with lookup drafts alone under
each policy (a draft is accepted up to its first token unlike the output)
and counts, per category, the verification steps the output needs, the
draft tokens sent and the tokens accepted. Fewer steps is better.

* ``latest``: the latest occurrence (ours: ``lookup_drafts`` itself);
* ``earliest``: the earliest (vLLM's);
* ``latest-full``: the latest occurrence followed by a whole draft's worth
  of context, else the one followed by the most.

    .venv/bin/python benchmarks/lookup_replay.py --out /tmp/outputs.jsonl
"""

import argparse
import json
from pathlib import Path

import numpy as np

from swift_vllm.lookup import lookup_drafts

POLICIES = ("latest", "earliest", "latest-full")


def match_ends(context: list[int], min_ngram: int, max_ngram: int) -> list[int]:
    """Where earlier copies of the context's longest matching suffix n-gram end."""
    for size in range(max_ngram, min_ngram - 1, -1):
        if len(context) <= size:
            continue
        suffix = context[-size:]
        ends = [
            end
            for end in range(size - 1, len(context) - 1)
            if context[end - size + 1 : end + 1] == suffix
        ]
        if ends:
            return ends
    return []


def draft(context: list[int], policy: str, k: int, min_ngram: int, max_ngram: int) -> list[int]:
    if policy == "latest":  # the proposer's own lookup
        (found,) = lookup_drafts(
            np.array([context]), np.array([len(context)]), min_ngram, max_ngram, np.array([k])
        )
        return found.tolist()
    ends = match_ends(context, min_ngram, max_ngram)
    if not ends:
        return []
    if policy == "earliest":
        end = ends[0]
    else:
        end = max(ends, key=lambda e: (min(len(context) - 1 - e, k), e))
    return context[end + 1 : end + 1 + k]


def replay(prompt: list[int], output: list[int], policy: str, args) -> tuple[int, int, int]:
    """Verification steps, draft tokens and accepted tokens to produce ``output``."""
    done = steps = drafted = accepted = 0
    while done < len(output):
        guess = draft(prompt + output[:done], policy, args.k, args.min_ngram, args.max_ngram)
        alike = 0
        while (
            alike < len(guess)
            and done + alike < len(output)
            and guess[alike] == output[done + alike]
        ):
            alike += 1
        steps, drafted, accepted = steps + 1, drafted + len(guess), accepted + alike
        done += alike + 1
    return steps, drafted, accepted


def generate(args) -> list[dict]:
    from vllm import SamplingParams

    from swift_vllm.commands.bench import resolve_model
    from swift_vllm.engine import chat_prompts, load_questions, make_llm

    llm = make_llm(str(resolve_model(args.model)), None, max_num_seqs=16)
    questions = load_questions(args.dataset)
    outputs = llm.generate(
        chat_prompts(llm, questions), SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    )
    return [
        {
            "category": q.get("category", ""),
            "prompt": list(o.prompt_token_ids),
            "output": list(o.outputs[0].token_ids),
        }
        for q, o in zip(questions, outputs, strict=True)
    ]


def load_outputs(args) -> list[dict]:
    """The greedy outputs in ``args.out``, generated (and written there) if it is missing."""
    out = Path(args.out)
    if out.exists():
        return [json.loads(line) for line in out.open()]
    records = generate(args)
    out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--dataset", help="Spec-Bench JSONL (default: the packaged dev set)")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--k", type=int, default=4, help="most tokens a draft holds")
    parser.add_argument("--min-ngram", type=int, default=2)
    parser.add_argument("--max-ngram", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, required=True, help="outputs file: read if it exists, else written"
    )
    args = parser.parse_args()
    records = load_outputs(args)
    categories = sorted({r["category"] for r in records})
    print(
        f"{'category':>15} {'prompts':>7} {'tokens':>6}  "
        + "  ".join(f"{p + ' steps/drafted/accepted':>36}" for p in POLICIES)
    )
    for category in categories + ["all"]:
        rows = [r for r in records if category in ("all", r["category"])]
        cells = []
        for policy in POLICIES:
            totals = [
                sum(x)
                for x in zip(
                    *(replay(r["prompt"], r["output"], policy, args) for r in rows), strict=True
                )
            ]
            cells.append(f"{'/'.join(str(t) for t in totals):>36}")
        tokens = sum(len(r["output"]) for r in rows)
        print(f"{category:>15} {len(rows):>7} {tokens:>6}  " + "  ".join(cells))


if __name__ == "__main__":
    main()
