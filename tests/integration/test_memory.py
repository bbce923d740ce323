"""Self-skip adds no second copy of weights or KV cache to the engine."""

import pytest
from vllm import SamplingParams

pytestmark = pytest.mark.integration


def test_resident_memory_within_5_percent(plain_engine, self_skip_engine, dev_prompts):
    params = SamplingParams(temperature=0.0, max_tokens=32)
    for engine in (plain_engine, self_skip_engine):
        engine.llm.generate(dev_prompts, params, use_tqdm=False)
    plain, self_skip = plain_engine.resident_bytes(), self_skip_engine.resident_bytes()
    print(f"resident memory: plain {plain / 2**20:.0f} MiB, self-skip {self_skip / 2**20:.0f} MiB")
    assert plain > 0 and self_skip > 0
    assert abs(self_skip - plain) <= 0.05 * plain
