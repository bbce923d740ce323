"""Self-skip on the larger Qwen2.5-Coder-1.5B-Instruct (Qwen2 decoder layers):
greedy output equals plain greedy output token for token.

The model runs at about 1-3 tokens/s on 2 CPU cores, so this test is short:
three prompts (coding, math, summarization) as one batch, 24 new tokens,
hybrid drafting (lookup and self-skip in the same batch).
"""

import gc

import pytest
from vllm import SamplingParams

from swift_vllm.config import METHOD_NAME
from swift_vllm.engine import chat_prompts, load_questions
from swift_vllm.skip_set import default_skip_set

pytestmark = pytest.mark.integration

CATEGORIES = ("coding", "math", "summarization")
NUM_LAYERS = 28
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def qwen() -> str:
    """The converted model folder (fetched and converted once, then cached)."""
    from swift_vllm.models import fetch_model

    return str(fetch_model("qwen2.5-coder-1.5b"))


def test_greedy_equals_plain(qwen, engine_class):
    questions = [
        next(q for q in load_questions() if q["category"] == category) for category in CATEGORIES
    ]
    skip = default_skip_set(NUM_LAYERS, 0.25)
    spec = {
        "method": METHOD_NAME,
        "num_speculative_tokens": 4,
        "attention_skip": list(skip.attention),
        "mlp_skip": list(skip.mlp),
        "guard": False,
    }
    params = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    tokens, stats = {}, None
    for label, config in (("plain", None), (METHOD_NAME, spec)):
        engine = engine_class(qwen, config)
        prompts = chat_prompts(engine.llm, questions)
        outputs = engine.llm.generate(prompts, params, use_tqdm=False)
        tokens[label] = [list(o.outputs[0].token_ids) for o in outputs]
        if config is not None:
            stats = engine.draft_stats()
        del engine
        gc.collect()

    print(
        f"Qwen2.5-Coder-1.5B, skip set {skip.to_dict()}: self-skip acceptance "
        f"{stats.acceptance_rate:.2f} over {stats.draft_tokens} draft tokens, lookup "
        f"{stats.lookup_accepted_tokens}/{stats.lookup_draft_tokens} accepted"
    )
    assert all(len(t) > 0 for t in tokens["plain"])
    assert tokens[METHOD_NAME] == tokens["plain"]
    assert stats.draft_tokens > 0 and stats.accepted_tokens > 0
