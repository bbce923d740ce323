"""Greedy self-skip output equals plain greedy output token for token."""

import pytest
from vllm import SamplingParams

pytestmark = pytest.mark.integration

GREEDY = SamplingParams(temperature=0.0, max_tokens=128)
# The first 8 prompts (8 categories) go one at a time and as one batch, and
# all 16 as one batch: batch-1 decoding of all 16 took most of this
# module's 7 minutes.
ONE_BY_ONE = 8
BATCHES = (8, 16)


def _tokens(outputs) -> list[list[int]]:
    return [list(o.outputs[0].token_ids) for o in outputs]


def _one_by_one(llm, prompts):
    return _tokens([llm.generate([p], GREEDY, use_tqdm=False)[0] for p in prompts])


@pytest.fixture(scope="module")
def plain_outputs(plain_engine, dev_prompts):
    llm = plain_engine.llm
    return {"one_by_one": _one_by_one(llm, dev_prompts[:ONE_BY_ONE])} | {
        size: _tokens(llm.generate(dev_prompts[:size], GREEDY, use_tqdm=False)) for size in BATCHES
    }


@pytest.mark.parametrize("skip_name", ["reasonable", "poor"])
def test_greedy_equals_plain(self_skip_engine, plain_outputs, dev_prompts, skip_sets, skip_name):
    llm = self_skip_engine.llm
    skip = skip_sets[skip_name]
    llm.collective_rpc("self_skip_set", args=(skip["attention"], skip["mlp"]))
    assert llm.collective_rpc("self_skip_current") == [skip]

    before = self_skip_engine.draft_stats()
    one_by_one = _one_by_one(llm, dev_prompts[:ONE_BY_ONE])
    assert all(len(t) > 0 for t in one_by_one)
    for i, (got, want) in enumerate(zip(one_by_one, plain_outputs["one_by_one"], strict=True)):
        assert got == want, f"prompt {i} (one by one) diverges at token {_first_diff(got, want)}"
    for size in BATCHES:
        started = self_skip_engine.draft_stats()
        batch = _tokens(llm.generate(dev_prompts[:size], GREEDY, use_tqdm=False))
        in_batch = self_skip_engine.draft_stats() - started
        for i, (got, want) in enumerate(zip(batch, plain_outputs[size], strict=True)):
            assert got == want, (
                f"prompt {i} (batch of {size}) diverges at token {_first_diff(got, want)}"
            )
        # The batch ran both sources, and in the same steps: some requests
        # verified lookup drafts while others verified self-skip drafts.
        assert in_batch.lookup_draft_tokens > 0 and in_batch.draft_tokens > 0
        assert in_batch.mixed_steps > 0
        print(f"{skip_name}, batch of {size}: {in_batch.mixed_steps} steps verified both sources")
    counters = self_skip_engine.draft_stats() - before
    # Drafting really happened, and was partly accepted and partly rejected.
    assert 0 < counters.accepted_tokens < counters.draft_tokens
    print(
        f"{skip_name}: acceptance {counters.acceptance_rate:.2%}, "
        f"mean accepted length {counters.mean_accepted_length:.2f}"
    )


def _first_diff(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )
