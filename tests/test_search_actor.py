"""The shared search through a real Ray runtime: clients, actor, status."""

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import pytest
import ray

from swift_vllm.cli import main
from swift_vllm.config import SelfSkipConfig
from swift_vllm.search import SearchClient, search_state, status
from swift_vllm.search.actor import ACTOR_NAME, NAMESPACE
from swift_vllm.skip_set import SkipSet

T = TypeVar("T")


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(
        address="local",
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 * 2**20,
    )
    yield
    ray.shutdown()


def wait_for(probe: Callable[[], T], timeout_s: float = 60.0) -> T:
    """Poll ``probe`` the way a proposer would, once per "step"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = probe()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {probe}")


def find_a_better_set(client: SearchClient) -> SkipSet:
    """Score one batch so that its last new candidate is the clear best."""
    batch = wait_for(client.candidates)
    best = batch[-1]
    client.report_scores([(s, 0.9 if s == best else 0.3) for s in batch], 50, 0.01)
    wait_for(lambda: client.current() == best)
    return best


def test_second_client_starts_from_the_first_clients_best(ray_cluster, tmp_path):
    config = SelfSkipConfig(skip_ratio=0.2, cache_path=str(tmp_path / "sets.json"))
    first = SearchClient("share-model", 30, config, draft_len=8)
    started = time.perf_counter()
    first.current(), first.candidates()  # while the actor is still being created
    assert time.perf_counter() - started < 0.1
    best = find_a_better_set(first)

    second = SearchClient("share-model", 30, config, draft_len=8)
    wait_for(lambda: second.status()["connected"])
    assert second.current() == best
    assert second.status()["best_matchness"] == pytest.approx(0.9)
    first.close()
    second.close()


def test_status_reports_each_search(ray_cluster, tmp_path, capsys):
    config = SelfSkipConfig(skip_ratio=0.2, cache_path=str(tmp_path / "sets.json"))
    client = SearchClient("status-model", 30, config, draft_len=8)
    best = find_a_better_set(client)
    client.report_acceptance(best, 6, 2, draft_step_s=0.01, verify_step_s=0.05, batch_size=4)

    searches = status()
    entry = searches["status-model_default"]
    assert entry["phase"] == "optimizing"
    assert entry["iterations"] == 5  # the starting set and 4 candidates
    assert entry["best_matchness"] == pytest.approx(0.9)
    assert entry["skipped"] == 11 and entry["skip_ratio"] == pytest.approx(11 / 56, abs=1e-3)
    assert entry["current"] == best.to_dict()
    assert entry["optimizing_s"] > 0 and entry["scoring_s"] == pytest.approx(0.01)

    assert main(["status"]) == 0
    printed = capsys.readouterr().out
    assert "status-model_default: optimizing" in printed
    assert "best matchness 0.900" in printed
    client.close()


def test_killed_actor_keeps_the_last_set_warns_and_recovers(ray_cluster, tmp_path, caplog):
    config = SelfSkipConfig(skip_ratio=0.2, cache_path=str(tmp_path / "sets.json"))
    client = SearchClient("kill-model", 30, config, draft_len=8)
    best = find_a_better_set(client)

    ray.kill(ray.get_actor(ACTOR_NAME, namespace=NAMESPACE))
    with caplog.at_level(logging.WARNING, logger="swift_vllm.search.client"):

        def noticed() -> bool:  # a proposer's step: no call may raise
            assert client.current() == best
            client.candidates()
            client.report_acceptance(best, 3, 1, 0.01, 0.05, 1)
            return not client.status()["connected"]

        wait_for(noticed)
    assert caplog.text.count("search actor unavailable") == 1  # once, not per call
    assert client.current() == best

    # A new actor is created and continues from the client's set.
    wait_for(lambda: client.status()["connected"])
    assert client.current() == best
    assert status()["kill-model_default"]["current"] == best.to_dict()
    assert wait_for(client.candidates)[0] == best
    client.close()


def test_a_late_status_answer_keeps_the_last_state(ray_cluster, tmp_path, caplog):
    # A tune polls between batches for half an hour; a busy actor (fitting its
    # GP on a loaded machine) must not end it.
    config = SelfSkipConfig(skip_ratio=0.2, cache_path=str(tmp_path / "sets.json"))
    client = SearchClient("late-model", 30, config, draft_len=8)
    wait_for(lambda: client.status()["connected"])
    with pytest.raises(TimeoutError, match="did not answer within 0 s"):
        status(timeout_s=0.0)

    last = {"phase": "optimizing", "iterations": -1}
    with caplog.at_level(logging.WARNING, logger="swift_vllm.search.client"):
        assert search_state("late-model_default", last, timeout_s=0.0) is last
    assert "keeping the state it gave before" in caplog.text
    assert search_state("late-model_default", last)["iterations"] >= 0  # answers in time
    client.close()
