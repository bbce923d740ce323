"""Prompt lookup: draft what followed the latest earlier occurrence of the
context's last n-gram (the idea behind vLLM's ``ngram`` method).

Plain numpy rather than vLLM's numba matcher: loading numba and its JIT
costs the worker process some 200 MiB of resident memory, more than the
whole self-skip proposer otherwise adds.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def lookup_draft(tokens: np.ndarray, min_ngram: int, max_ngram: int, k: int) -> np.ndarray:
    """Up to ``k`` tokens that followed the latest earlier occurrence of the
    longest suffix n-gram of ``tokens`` (sizes ``max_ngram`` down to
    ``min_ngram``); empty if no size matches."""
    length = len(tokens)
    for n in range(min(max_ngram, length - 1), min_ngram - 1, -1):
        # Windows start at j <= length - n - 1, so a match is never the suffix itself.
        windows = sliding_window_view(tokens[: length - 1], n)
        starts = np.flatnonzero((windows == tokens[length - n :]).all(axis=1))
        if len(starts):
            follow = starts[-1] + n
            return tokens[follow : follow + k]
    return tokens[:0]
