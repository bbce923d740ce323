"""The search actor: one named, detached Ray actor per cluster.

It holds, per key (``"<model>_<task>"``), the searcher (observations, GP,
best set, counters) and is the only writer of the cache file, so every
batch, request, worker and engine in the cluster shares one search, and an
engine started later begins from what earlier ones found. Ray runs its
methods one at a time, so the state needs no locks.
"""

import logging
from dataclasses import dataclass, field

import ray
import threadpoolctl
import torch

from swift_vllm.config import SelfSkipConfig
from swift_vllm.search.cache import SkipSetCache
from swift_vllm.search.phase import Phase
from swift_vllm.search.searcher import AcceptanceReport, Searcher
from swift_vllm.skip_set import SkipSet

logger = logging.getLogger(__name__)

ACTOR_NAME = "swift_vllm_search"
NAMESPACE = "swift_vllm"


@dataclass(frozen=True)
class Snapshot:
    """What a client needs after each call: the set to draft with, and
    whether to ask for candidates."""

    skip_set: SkipSet
    phase: str
    score: float | None
    candidates: tuple[SkipSet, ...] = field(default=())
    """Sets to score together on one window (``propose`` only): the current
    best first, then new candidates."""


class SearchActor:
    def __init__(self) -> None:
        # GP fitting and the additive model on one thread each for torch and
        # BLAS: the CPUs belong to serving, and threads fighting over them made
        # fits 20x slower (measured).
        torch.set_num_threads(1)
        threadpoolctl.threadpool_limits(1)
        self._searchers: dict[str, Searcher] = {}
        self._caches: dict[str, SkipSetCache] = {}

    def open(
        self,
        key: str,
        num_layers: int,
        config: SelfSkipConfig,
        draft_len: int,
        start: SkipSet | None = None,
    ) -> Snapshot:
        """Join ``key``'s search, creating it (from the cache, else from
        ``start``) if it does not exist. The first opener's options win."""
        searcher = self._searchers.get(key)
        if searcher is not None and searcher.num_layers != num_layers:
            logger.warning(
                "%s was searched for %d layers, now opened with %d: starting over",
                key,
                searcher.num_layers,
                num_layers,
            )
            searcher = None
        if searcher is None:
            cache = SkipSetCache.of(config.cache_path)
            self._caches[key] = cache
            self._searchers[key] = Searcher(
                num_layers, config, draft_len, start, cache.load(key, num_layers)
            )
        return self._snapshot(key)

    def propose(self, key: str, count: int) -> Snapshot:
        candidates = self._searchers[key].propose(count)
        return self._snapshot(key, tuple(c.skip_set for c in candidates))

    def report_scores(
        self,
        key: str,
        scores: list[tuple[SkipSet, float]],
        window_tokens: int,
        scoring_s: float,
    ) -> Snapshot:
        searcher = self._searchers[key]
        was_optimizing = searcher.phase.phase is Phase.OPTIMIZING
        searcher.report_scores(scores, window_tokens, scoring_s)
        if was_optimizing and searcher.phase.phase is Phase.ACCELERATING:
            self._store(key)
        return self._snapshot(key)

    def report_acceptance(self, key: str, report: AcceptanceReport) -> Snapshot:
        self._searchers[key].report_acceptance(report)
        return self._snapshot(key)

    def status(self) -> dict[str, dict]:
        return {key: searcher.status() for key, searcher in self._searchers.items()}

    def _snapshot(self, key: str, candidates: tuple[SkipSet, ...] = ()) -> Snapshot:
        searcher = self._searchers[key]
        incumbent = searcher.incumbent()
        return Snapshot(
            incumbent, searcher.phase.phase.value, searcher.score(incumbent), candidates
        )

    def _store(self, key: str) -> None:
        searcher = self._searchers[key]
        incumbent = searcher.incumbent()
        logger.info("%s: search stopped (%s); caching %s", key, searcher.phase.reason, incumbent)
        try:
            self._caches[key].store(key, incumbent, searcher.num_layers, searcher.score(incumbent))
        except OSError as exc:
            logger.warning("could not write the skip-set cache: %r", exc)


# Zero CPUs: the actor must be placeable on a cluster whose CPUs serving
# already holds; it idles between short calls.
RemoteSearchActor = ray.remote(num_cpus=0)(SearchActor)
