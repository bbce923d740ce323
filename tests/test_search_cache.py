"""The skip-set cache file, and how the search actor's state uses it (no Ray:
the actor class is called directly)."""

import json
import logging

import pytest

from swift_vllm.config import SelfSkipConfig
from swift_vllm.search import cache as cache_module
from swift_vllm.search.actor import SearchActor
from swift_vllm.search.cache import SkipSetCache
from swift_vllm.skip_set import SkipSet

FOUND = SkipSet(attention=(5, 9), mlp=(3, 12, 20))


def test_store_writes_the_reference_shape_and_keeps_other_entries(tmp_path):
    path = tmp_path / "sets.json"
    path.write_text(json.dumps({"other_default": {"attention": [1], "mlp": []}}))
    cache = SkipSetCache(path)
    cache.store("smol_default", FOUND, num_layers=30, score=0.8)

    entries = json.loads(path.read_text())
    assert entries["other_default"] == {"attention": [1], "mlp": []}
    assert entries["smol_default"]["attention"] == [5, 9]
    assert entries["smol_default"]["mlp"] == [3, 12, 20]
    assert entries["smol_default"]["num_layers"] == 30
    assert [p.name for p in tmp_path.iterdir()] == ["sets.json"]  # no temp file left
    loaded = cache.load("smol_default", 30)
    assert loaded.skip_set == FOUND and loaded.score == 0.8


def test_a_failed_write_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "sets.json"
    cache = SkipSetCache(path)
    cache.store("smol_default", FOUND, 30, 0.8)
    before = path.read_text()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.json, "dump", crash)
    with pytest.raises(OSError):
        cache.store("smol_default", SkipSet(mlp=(4,)), 30, 0.9)
    assert path.read_text() == before


def test_reference_entries_without_our_keys_load(tmp_path):
    path = tmp_path / "sets.json"
    path.write_text(json.dumps({"smol_default": {"attention": [5, 9], "mlp": [3, 12, 20]}}))
    entry = SkipSetCache(path).load("smol_default", 30)
    assert entry.skip_set == FOUND and entry.score is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({"smol_default": {"attention": "x"}}), "malformed"),
        (json.dumps({"smol_default": {**FOUND.to_dict(), "score": 1.2}}), "not a matchness"),
        (json.dumps({"smol_default": {**FOUND.to_dict(), "num_layers": 24}}), "24-layer"),
        (json.dumps({"smol_default": {"attention": [29], "mlp": []}}), "outside 1..28"),
    ],
)
def test_bad_cache_content_warns_and_misses(tmp_path, caplog, content, message):
    path = tmp_path / "sets.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING, logger="swift_vllm.search.cache"):
        assert SkipSetCache(path).load("smol_default", 30) is None
    assert message in caplog.text


def test_actor_state_from_cache_hit_and_miss(tmp_path, caplog):
    """A hit skips the optimization phase; a corrupt file or another model's
    entry gives a logged fresh search; a finished search writes the file."""
    path = tmp_path / "sets.json"
    config = SelfSkipConfig(skip_ratio=0.2, cache_path=str(path), max_score=0.9)
    actor = SearchActor()

    path.write_text("{corrupt")
    with caplog.at_level(logging.WARNING):
        fresh = actor.open("smol_default", 30, config, 8)
    assert fresh.phase == "optimizing" and "unreadable" in caplog.text

    for _ in range(20):  # every set scores above max_score: the search stops (its playoff first)
        batch = actor.propose("smol_default", 2).candidates
        done = actor.report_scores("smol_default", [(s, 0.95) for s in batch], 50, 0.0)
        if done.phase == "accelerating":
            break
    assert done.phase == "accelerating"
    assert "playoff" in actor.status()["smol_default"]["phase_reason"]
    stored = json.loads(path.read_text())["smol_default"]
    assert SkipSet(tuple(stored["attention"]), tuple(stored["mlp"])) == done.skip_set

    hit = SearchActor().open("smol_default", 30, config, 8)
    assert hit.phase == "accelerating" and hit.skip_set == done.skip_set
    assert hit.score == pytest.approx(0.95)

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        other_model = SearchActor().open("smol_default", 24, config, 8)
    assert other_model.phase == "optimizing" and "30-layer" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.INFO):
        unknown = SearchActor().open("big_default", 30, config, 8)
    assert unknown.phase == "optimizing" and "no cached skip set for big_default" in caplog.text
