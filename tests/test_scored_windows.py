"""Choosing scoring windows: generated tokens, each scored once."""

import numpy as np

from swift_vllm.scoring import WindowPicker

PROMPT = 10


def batch(*generated: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths, prompt lengths and token ids of requests that generated
    ``generated`` tokens after a ``PROMPT``-token prompt (token = position)."""
    lengths = np.array([PROMPT + g for g in generated])
    token_ids = np.tile(np.arange(lengths.max() + 1), (len(generated), 1))
    return lengths, np.full(len(generated), PROMPT), token_ids


def spans(windows) -> list[tuple[int, int, int]]:
    """(row, first input position, inputs) of each window."""
    return [(w.row, w.start, len(w.inputs)) for w in windows]


def test_a_request_is_scored_again_only_on_tokens_no_window_held():
    picker = WindowPicker(budget=50)
    lengths, prompts, tokens = batch(60)
    windows = picker.select([0], ["a"], lengths, prompts, tokens)
    # The last 50 inputs; the last token is a target only.
    assert spans(windows) == [(0, 19, 50)]
    assert np.array_equal(windows[0].targets, windows[0].inputs + 1)
    picker.mark_scored(windows, ["a"])
    # Three decoding steps later: 9 unscored tokens, not a window.
    lengths, prompts, tokens = batch(69)
    assert picker.select([0], ["a"], lengths, prompts, tokens) == []
    # Once 50 tokens came after it, the next window starts where it ended.
    lengths, prompts, tokens = batch(110)
    assert spans(picker.select([0], ["a"], lengths, prompts, tokens)) == [(0, 69, 50)]


def test_a_batch_fills_one_window_from_several_requests():
    picker = WindowPicker(budget=50)
    lengths, prompts, tokens = batch(20, 30, 25)
    # Most unscored first; the first input is the last prompt token.
    assert spans(picker.select([0, 1, 2], ["a", "b", "c"], lengths, prompts, tokens)) == [
        (1, PROMPT - 1, 30),
        (2, PROMPT + 4, 20),
    ]
    # A lone request with less than a window's worth waits.
    assert picker.select([1], ["a", "b", "c"], lengths, prompts, tokens) == []


def test_finished_requests_are_forgotten():
    picker = WindowPicker(budget=50)
    lengths, prompts, tokens = batch(60)
    picker.mark_scored(picker.select([0], ["a"], lengths, prompts, tokens), ["a"])
    # "a" finished; a request in its row is new, all its tokens unscored.
    picker.mark_scored([], ["b"])
    assert spans(picker.select([0], ["b"], lengths, prompts, tokens)) == [(0, 19, 50)]
    assert picker.select([0], ["a"], lengths, prompts, tokens) != []
