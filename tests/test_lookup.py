import numpy as np

from swift_vllm.lookup import UnsentDrafts, lookup_drafts


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


def _resolve(unsent, contexts):
    """``contexts``: request -> its tokens so far (one row each)."""
    width = max(len(c) for c in contexts.values())
    tokens = np.zeros((len(contexts), width), dtype=np.int64)
    for row, context in enumerate(contexts.values()):
        tokens[row, : len(context)] = context
    lengths = np.array([len(c) for c in contexts.values()])
    return unsent.resolve(list(contexts), lengths, tokens)


def test_an_unsent_draft_is_scored_by_the_tokens_generated_after_it():
    unsent = UnsentDrafts()
    unsent.add("a", [7, 8, 9], position=3)  # guessed tokens 3, 4, 5 of [1, 2, 3]
    assert _resolve(unsent, {"a": [1, 2, 3, 7]}) == {}  # one token alike so far
    assert _resolve(unsent, {"a": [1, 2, 3, 7, 5]}) == {"a": (3, 1)}
    assert _resolve(unsent, {"a": [1, 2, 3, 7, 5, 9]}) == {}  # scored once


def test_an_unsent_draft_the_model_generated_in_full_or_at_once():
    unsent = UnsentDrafts()
    unsent.add("a", [7, 8], position=1)
    unsent.add("b", [4, 4, 4], position=2)
    outcomes = _resolve(unsent, {"a": [0, 7, 8], "b": [1, 1, 4, 5, 6]})
    assert outcomes == {"a": (2, 2), "b": (3, 1)}


def test_one_pending_draft_per_request_and_none_for_requests_gone():
    unsent = UnsentDrafts()
    assert unsent.add("a", [5, 6], position=1)
    assert not unsent.add("a", [9, 9], position=1)  # overlaps the pending one: ignored
    assert unsent.add("b", [5], position=1)
    assert _resolve(unsent, {"a": [0, 5, 6]}) == {"a": (2, 2)}
    assert _resolve(unsent, {"b": [0, 5]}) == {}  # b left the batch: dropped
