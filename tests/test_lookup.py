import numpy as np

from swift_vllm.lookup import lookup_draft


def _draft(tokens, k=4, lo=2, hi=5):
    return lookup_draft(np.array(tokens), lo, hi, k).tolist()


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
    assert _draft([]) == []
    assert _draft([3]) == []
    assert _draft([3, 3], lo=1) == [3]
