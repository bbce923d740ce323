"""A self-skip engine's steps take vLLM's speculative path only where they
verify drafts, and its drafts reach the scheduler with the step's output,
not in a second call to the worker (``vllm_compat``'s two patches for the
cost of a speculative engine), with greedy output unchanged.

Counters put into the engine's worker count its steps, the steps that
verified drafts, the rejection sampler's runs and the engine core's calls
for drafts."""

import os
import sys

import cloudpickle
import pytest
from vllm import SamplingParams

pytestmark = pytest.mark.integration

# A fixed set, lookup on, no guard: every decode step drafts, the prefill
# step cannot.
CONFIG = {
    "method": "self-skip",
    "num_speculative_tokens": 4,
    "mlp_skip": [24, 25, 26, 27],
    "guard": False,
}
GREEDY = SamplingParams(temperature=0.0, max_tokens=24)
PROMPTS = 4


def _install_counters(worker) -> None:
    runner = worker.model_runner
    counts = {"steps": 0, "drafted_steps": 0, "rejection_sampler": 0, "draft_calls": 0}
    worker.step_counts = counts
    execute_model = runner.execute_model
    reject = runner.rejection_sampler.forward
    take_drafts = worker.take_draft_token_ids

    def counted_execute(scheduler_output, *args, **kwargs):
        counts["steps"] += 1
        counts["drafted_steps"] += bool(scheduler_output.scheduled_spec_decode_tokens)
        return execute_model(scheduler_output, *args, **kwargs)

    def counted_reject(*args, **kwargs):
        counts["rejection_sampler"] += 1
        return reject(*args, **kwargs)

    def counted_take_drafts(*args, **kwargs):
        counts["draft_calls"] += 1
        return take_drafts(*args, **kwargs)

    runner.execute_model = counted_execute
    runner.rejection_sampler.forward = counted_reject
    worker.take_draft_token_ids = counted_take_drafts


def _counts(worker) -> dict[str, int]:
    return dict(worker.step_counts)


@pytest.fixture(scope="module")
def counted_run(smollm2, engine_class, dev_prompts):
    """Greedy outputs of the first prompts as one batch, and the counts."""
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        engine = engine_class(smollm2, CONFIG)
        engine.llm.collective_rpc(_install_counters)
        outputs = engine.llm.generate(dev_prompts[:PROMPTS], GREEDY, use_tqdm=False)
        counts = engine.llm.collective_rpc(_counts)[0]
        stats = engine.draft_stats()
        del engine
    finally:
        os.environ.pop("VLLM_ALLOW_INSECURE_SERIALIZATION", None)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    return [list(o.outputs[0].token_ids) for o in outputs], counts, stats


def test_greedy_output_unchanged(counted_run, plain_engine, dev_prompts):
    tokens, _, stats = counted_run
    plain = plain_engine.llm.generate(dev_prompts[:PROMPTS], GREEDY, use_tqdm=False)
    assert tokens == [list(o.outputs[0].token_ids) for o in plain]
    assert stats.accepted_tokens > 0


def test_only_steps_with_drafts_run_the_rejection_sampler(counted_run):
    _, counts, _ = counted_run
    assert 0 < counts["drafted_steps"] < counts["steps"], counts
    assert counts["rejection_sampler"] == counts["drafted_steps"], counts


def test_drafts_reach_the_scheduler_without_a_call_of_their_own(counted_run):
    _, counts, stats = counted_run
    assert counts["draft_calls"] == 0, counts
    # Drafts were verified, so they reached the scheduler another way.
    assert counts["drafted_steps"] > 0 and stats.draft_tokens > 0
