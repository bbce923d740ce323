"""Counting the new tokens of scored windows (the search's evidence)."""

import numpy as np

from swift_vllm.scoring import ScoredWindows, Window


def window(row: int, start: int, size: int = 50) -> Window:
    tokens = np.arange(start, start + size)
    return Window(row, start, tokens, tokens + 1)


def test_new_tokens_of_overlapping_windows():
    scored = ScoredWindows()
    assert scored.new_tokens([window(0, 100)], ["a"]) == 50
    # Three steps later the same request's window shares 47 tokens.
    assert scored.new_tokens([window(0, 103)], ["a"]) == 3
    # A second request joins and takes row 0: its 50 tokens, and 7 of "a"'s.
    assert scored.new_tokens([window(0, 105), window(1, 110)], ["b", "a"]) == 57
    # "a" finished; a request reusing its row starts fresh.
    assert scored.new_tokens([window(0, 300)], ["c"]) == 50
