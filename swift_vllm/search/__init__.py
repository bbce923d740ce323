"""On-the-fly skip-set search: random + Bayesian candidates, scored by the
proposer, shared across engines through a Ray actor, cached on disk."""

from swift_vllm.search.client import SearchClient, disconnect, search_state, status

__all__ = ["SearchClient", "disconnect", "search_state", "status"]
