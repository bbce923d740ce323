import numpy as np

from swift_vllm.lookup import lookup_drafts


def _draft(tokens, k=4, lo=2, hi=5):
    (draft,) = lookup_drafts(np.array([tokens]), np.array([len(tokens)]), lo, hi, np.array([k]))
    return draft.tolist()


def test_copies_what_followed_the_latest_match():
    #             a  b  c  d  e  a  b  x  y  a  b
    assert _draft([1, 2, 3, 4, 5, 1, 2, 8, 9, 1, 2]) == [8, 9, 1, 2]


def test_prefers_the_longest_ngram():
    # "2 3" last matched before 7, but "1 2 3" only before 4.
    assert _draft([1, 2, 3, 4, 0, 2, 3, 7, 1, 2, 3]) == [4, 0, 2, 3]


def test_respects_min_ngram_and_k():
    assert _draft([5, 6, 7, 8, 6], lo=2) == []
    assert _draft([5, 6, 7, 8, 6], lo=1, k=2) == [7, 8]


def test_short_or_empty_contexts():
    assert (
        lookup_drafts(np.zeros((0, 8), dtype=np.int64), np.zeros(0, dtype=np.int64), 2, 5, 4) == []
    )
    assert _draft([]) == []
    assert _draft([3]) == []
    assert _draft([3, 3], lo=1) == [3]


def _reference(tokens, lo, hi, k):
    """The definition, spelled out: longest suffix n-gram first, latest match."""
    for n in range(min(hi, len(tokens) - 1), lo - 1, -1):
        suffix = tokens[len(tokens) - n :]
        starts = [s for s in range(len(tokens) - n) if tokens[s : s + n] == suffix]
        if starts:
            return tokens[starts[-1] + n : starts[-1] + n + k]
    return []


def test_a_batch_matches_the_definition_row_by_row():
    rng = np.random.default_rng(0)
    for _ in range(300):
        rows, width = int(rng.integers(1, 8)), 40
        # A small vocabulary so that matches of every length occur; what lies
        # beyond a row's length is stale and must not be read.
        tokens = rng.integers(0, int(rng.integers(2, 6)), (rows, width))
        lengths = rng.integers(0, width + 1, rows)
        lo = int(rng.integers(1, 4))
        hi = lo + int(rng.integers(0, 4))
        k = rng.integers(1, 6, rows)
        drafts = lookup_drafts(tokens, lengths, lo, hi, k)
        for row, draft in enumerate(drafts):
            context = tokens[row, : lengths[row]].tolist()
            assert draft.tolist() == _reference(context, lo, hi, k[row]), (context, lo, hi)
