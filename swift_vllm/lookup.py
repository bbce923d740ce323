"""Prompt lookup: draft what followed the latest earlier occurrence of the
context's last n-gram (the idea behind vLLM's ``ngram`` method).

Plain numpy rather than vLLM's numba matcher: loading numba and its JIT
costs the worker process some 200 MiB of resident memory, more than the
whole self-skip proposer otherwise adds. It runs on every step for the
whole batch at once, in one pass over the contexts: only positions holding
a context's last token can end a match, and only those are compared further
back. A per-request loop of window compares cost 0.1-2 ms a request at
512-16k tokens of context (``benchmarks/bench_lookup.py``), a GPU step's
worth at batch 64.
"""

import numpy as np


def lookup_drafts(
    tokens: np.ndarray, lengths: np.ndarray, min_ngram: int, max_ngram: int, k: np.ndarray
) -> list[np.ndarray]:
    """Per row, up to ``k[row]`` tokens that followed the latest earlier
    occurrence of the longest suffix n-gram (sizes ``max_ngram`` down to
    ``min_ngram``) of the row's context ``tokens[row, :lengths[row]]``
    (what lies beyond it is never read); empty where no size matches."""
    width = int(lengths.max(initial=0))
    drafts = [tokens[row, :0] for row in range(len(lengths))]
    if width < 2:
        return drafts
    # A row of one token or none has no position before its last.
    last = tokens[np.arange(len(lengths)), np.maximum(lengths - 1, 0)]
    # Where an earlier n-gram could end: at a copy of the last token, never
    # at the last position itself (np.nonzero lists them row by row).
    before_last = np.arange(width) < (lengths - 1)[:, None]
    row, end = np.nonzero((tokens[:, :width] == last[:, None]) & before_last)
    if not len(end):
        return drafts
    # How far back from each end the row's suffix goes on matching (an
    # n-gram can only start at or after position 0).
    matched = np.ones(len(end), dtype=np.int64)
    still = np.ones(len(end), dtype=bool)
    suffix_end = lengths[row] - 1
    for back in range(1, max_ngram):
        still &= end >= back
        going = np.flatnonzero(still)
        still[going] = (
            tokens[row[going], end[going] - back] == tokens[row[going], suffix_end[going] - back]
        )
        matched += still
    # Per row, the longest match, latest on ties: the largest matched * width + end.
    key = matched * width + end
    firsts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    for first, best in zip(firsts, np.maximum.reduceat(key, firsts), strict=True):
        if best // width >= min_ngram:
            r, follow = row[first], best % width + 1
            drafts[r] = tokens[r, follow : min(follow + k[r], lengths[r])]
    return drafts


class UnsentDrafts:
    """Lookup drafts a step did not send, scored against the tokens the model
    then generated. A lookup draft is fixed in advance (a one-hot draft
    distribution), so vLLM would accept its next token with exactly the
    probability that plain decoding samples that token, greedy or not: the
    length of the generated continuation's prefix that matches the draft is
    distributed as the draft's accepted count. The profitability guard thus
    learns each request's lookup acceptance while it runs plain steps; it
    otherwise knew only the acceptance of the requests it had drafted for, and
    a new request that copies its prompt looked like the average one."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[np.ndarray, int]] = {}  # request -> draft, first position

    def add(self, request: str, draft: list[int], position: int) -> bool:
        """``draft`` guessed ``request``'s tokens from ``position`` on and was
        not sent, or not all of it. One pending draft per request: a later one
        overlaps it. Returns whether this one is kept."""
        if request in self._pending:
            return False
        self._pending[request] = (np.asarray(draft), position)
        return True

    def resolve(
        self, req_ids: list[str], lengths: np.ndarray, tokens: np.ndarray
    ) -> dict[str, tuple[int, int]]:
        """Per pending draft whose outcome the running requests' tokens
        (``tokens[row, :lengths[row]]`` for ``req_ids[row]``) now show: its
        tokens and how many the model generated alike. Drafts of requests
        that are no longer running are dropped."""
        if not self._pending:  # the common case: every step, nothing held back
            return {}
        outcomes, pending = {}, {}
        for row, request in enumerate(req_ids):
            if request not in self._pending:
                continue
            draft, position = self._pending[request]
            seen = tokens[row, position : min(int(lengths[row]), position + len(draft))]
            mismatch = np.flatnonzero(seen != draft[: len(seen)])
            if len(mismatch):
                outcomes[request] = (len(draft), int(mismatch[0]))
            elif len(seen) == len(draft):
                outcomes[request] = (len(draft), len(draft))
            else:
                pending[request] = self._pending[request]
        self._pending = pending
        return outcomes
