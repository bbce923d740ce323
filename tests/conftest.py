"""Shared fixtures: the real SmolLM2 model folder."""

import os

import pytest

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")


@pytest.fixture(scope="session")
def smollm2() -> str:
    """Path of the converted SmolLM2-135M-Instruct folder (fetched once)."""
    from swift_vllm.models import fetch_model

    return str(fetch_model("smollm2"))
