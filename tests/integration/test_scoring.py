"""The in-engine scorer against an independent reference.

A real engine decodes three prompts; when every request has generated 70
tokens, a hook in the worker runs the real scorer (``score_candidates``) on
the proposer's windows for several skip sets and keeps the windows' tokens.
A Hugging Face implementation of SWIFT's matchness then scores the same
sets on the same windows: the two must agree.
"""

import os
import random
import sys

import cloudpickle
import pytest
from hf_matchness import HFMatchness
from vllm import SamplingParams

from swift_vllm.skip_set import SkipSet

pytestmark = pytest.mark.integration

SCORE_AT_GENERATED = 70  # generated tokens per request when the hook scores
CONFIG = {
    "method": "self-skip",
    "num_speculative_tokens": 4,
    "attention_skip": [],
    "mlp_skip": [],
    "guard": False,
    "lookup": False,
}


def _candidate_sets() -> list[SkipSet]:
    """Skipping nothing, then random sets of 3, 6 and 11 sub-layers."""
    rng = random.Random(1)
    coordinates = [(kind, layer) for kind in ("attention", "mlp") for layer in range(1, 29)]
    sets = [SkipSet()]
    for size in (3, 3, 6, 6, 11, 11):
        picked = rng.sample(coordinates, size)
        sets.append(
            SkipSet(
                tuple(sorted(layer for kind, layer in picked if kind == "attention")),
                tuple(sorted(layer for kind, layer in picked if kind == "mlp")),
            )
        )
    return sets


def _install_scoring_hook(worker, set_dicts: list[dict]) -> None:
    """Runs in the worker: score the sets once, at the first step where
    every decoding request has ``SCORE_AT_GENERATED`` tokens or more."""
    import numpy as np
    import torch

    from swift_vllm.scoring import WindowPicker, score_candidates

    sets = [SkipSet.from_dict(d) for d in set_dicts]
    proposer = worker.model_runner.drafter
    proposer.scoring_check = None
    propose = proposer.propose

    def hooked(sampled, num_tokens_no_spec, token_ids, *args, **kwargs):
        count = len(sampled)
        lengths = num_tokens_no_spec[:count].astype(np.int64)
        prompt_lengths = proposer._runner.prompt_lengths(count)
        rows = [i for i in range(count) if sampled[i]]
        generated = lengths - prompt_lengths
        if rows and proposer.scoring_check is None and min(generated[rows]) >= SCORE_AT_GENERATED:
            windows = WindowPicker(50 * len(rows)).select(
                rows, [str(row) for row in range(count)], lengths, prompt_lengths, token_ids
            )
            with torch.inference_mode():
                scores = score_candidates(proposer._runner, proposer._stack, windows, sets)
            sequences = [token_ids[w.row, : lengths[w.row]].tolist() for w in windows]
            proposer.scoring_check = {
                "scores": scores,
                "windows": [(seq, w.start) for seq, w in zip(sequences, windows, strict=True)],
            }
        return propose(sampled, num_tokens_no_spec, token_ids, *args, **kwargs)

    proposer.propose = hooked


def _scoring_check(worker) -> dict:
    return worker.model_runner.drafter.scoring_check


@pytest.fixture(scope="module")
def engine_scores(smollm2, engine_class, dev_prompts):
    """Scores and windows from the engine (its own, so functions may be sent
    to its worker)."""
    os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        engine = engine_class(smollm2, CONFIG)
        sets = _candidate_sets()
        engine.llm.collective_rpc(_install_scoring_hook, args=([s.to_dict() for s in sets],))
        params = SamplingParams(temperature=0.0, max_tokens=90, ignore_eos=True)
        engine.llm.generate(dev_prompts[:3], params, use_tqdm=False)
        check = engine.llm.collective_rpc(_scoring_check)[0]
        del engine
    finally:
        os.environ.pop("VLLM_ALLOW_INSECURE_SERIALIZATION", None)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert check is not None, "the scoring hook never ran"
    return sets, check


def test_scorer_matches_reference(engine_scores, smollm2):
    sets, check = engine_scores
    reference = HFMatchness(smollm2, [tuple(w) for w in check["windows"]])
    tokens = sum(len(sequence) - 1 - start for sequence, start in check["windows"])
    assert tokens >= 100
    for skip, score in zip(sets, check["scores"], strict=True):
        expected = reference(skip)
        print(f"{skip}: engine {score:.3f}, reference {expected:.3f}")
        # fp32 kernels differ in summation order: allow one flipped argmax.
        assert abs(score - expected) <= 1.0 / tokens + 1e-9
    assert check["scores"][0] == 1.0  # skipping nothing is the full model
