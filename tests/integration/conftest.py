"""One plain and one self-skip vLLM engine on the real SmolLM2 model, shared by
every integration test of the session (engine start-up dominates on CPU)."""

import psutil
import pytest

from swift_vllm.engine import chat_prompts, load_questions, make_llm, spread_by_category
from swift_vllm.stats import DraftStats
from swift_vllm.vllm_compat import WORKER_EXTENSION

NUM_SPECULATIVE_TOKENS = 4
# A fixed set (no search) that the tests switch through RPC, and no guard:
# these tests exercise drafting and verification whether or not it pays.
SELF_SKIP_CONFIG = {
    "method": "self-skip",
    "num_speculative_tokens": NUM_SPECULATIVE_TOKENS,
    "mlp_skip": [24, 25, 26, 27],
    "guard": False,
}


class Engine:
    """A running LLM plus the OS processes it started (for memory checks)."""

    def __init__(self, model: str, speculative_config: dict | None) -> None:
        before = _child_pids()
        self.llm = make_llm(model, speculative_config, worker_extension_cls=WORKER_EXTENSION)
        self.pids = _child_pids() - before

    def draft_stats(self) -> DraftStats:
        """The self-skip proposer's cumulative counters (first worker)."""
        counters = self.llm.collective_rpc("self_skip_stats")[0]
        return DraftStats(**{k: v for k, v in counters.items() if k in DraftStats.__annotations__})

    def resident_bytes(self) -> int:
        """Anonymous resident memory (``RssAnon``: weights, KV cache, buffers)
        of the engine's own processes (engine core and workers). File-backed
        pages, such as the mmapped checkpoint, come and go with the page
        cache, and helpers such as multiprocessing's resource tracker belong
        to whichever engine started first."""
        total = 0
        for pid in self.pids:
            if psutil.Process(pid).name().startswith("VLLM::"):
                total += _rss_anon_bytes(pid)
        return total


def _rss_anon_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no RssAnon for process {pid}")


def _child_pids() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="session")
def plain_engine(smollm2) -> Engine:
    return Engine(smollm2, None)


@pytest.fixture(scope="session")
def self_skip_engine(smollm2) -> Engine:
    return Engine(smollm2, SELF_SKIP_CONFIG)


@pytest.fixture(scope="session")
def dev_questions() -> list[dict]:
    """16 Spec-Bench dev questions covering all 13 categories."""
    questions = spread_by_category(load_questions(), 16)
    assert len({q["category"] for q in questions}) == 13
    return questions


@pytest.fixture(scope="session")
def dev_prompts(plain_engine, dev_questions) -> list[str]:
    return chat_prompts(plain_engine.llm, dev_questions)


@pytest.fixture(scope="session")
def skip_sets() -> dict[str, dict[str, list[int]]]:
    """A reasonable set (MLP of a few late layers) and a poor one (a third of
    all sub-layers, attention included): the poor one is rejected most of
    the time, which exercises the rejection and KV-overwrite paths hardest."""
    return {
        "reasonable": {"attention": [], "mlp": [24, 25, 26, 27]},
        "poor": {"attention": list(range(2, 29, 3)), "mlp": list(range(1, 28, 3))},
    }


@pytest.fixture(scope="session")
def engine_class() -> type[Engine]:
    """For modules that start engines of their own."""
    return Engine
