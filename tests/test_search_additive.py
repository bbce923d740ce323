"""The additive matchness model on synthetic windows with known effects."""

import random

import pytest

from swift_vllm.search.additive import AdditiveModel
from swift_vllm.search.bayes import random_vector

DIMS = 20


def synthetic_windows(count: int, seed: int = 0):
    """Windows of four random 5-sets each: a per-window ease offset (large)
    plus known per-sub-layer effects (sub-layers 0-4 cost nothing) plus noise."""
    rng = random.Random(seed)
    effect = [0.0] * 5 + [-0.03 - 0.01 * i for i in range(DIMS - 5)]
    for window in range(count):
        ease = 0.8 + rng.gauss(0, 0.1)
        for _ in range(4):
            vector = random_vector(DIMS, 5, rng)
            value = ease + sum(e for e, x in zip(effect, vector, strict=True) if x)
            yield window, vector, value + rng.gauss(0, 0.01), ease


def test_cheapest_set_is_found():
    model = AdditiveModel(DIMS)
    for window, vector, value, _ in synthetic_windows(30):
        model.add(window, vector, value)
    assert model.cheapest(5) == [1] * 5 + [0] * (DIMS - 5)


def test_corrected_scores_remove_window_ease():
    model = AdditiveModel(DIMS)
    observations = list(synthetic_windows(30))
    for window, vector, value, _ in observations:
        model.add(window, vector, value)
    # The same set seen on an easy and on a hard window: raw scores differ by
    # the windows' ease, corrected ones agree.
    easiest = max(observations, key=lambda o: o[3])
    hardest = min(observations, key=lambda o: o[3])
    assert easiest[3] - hardest[3] > 0.2
    shift = model.corrected(easiest[0], 0.5) - model.corrected(hardest[0], 0.5)
    assert shift == pytest.approx(hardest[3] - easiest[3], abs=0.03)


def test_unknown_window_is_not_corrected():
    model = AdditiveModel(DIMS)
    model.add(1, [1] * 5 + [0] * (DIMS - 5), 0.7)
    assert model.corrected(-1, 0.42) == 0.42
    model.clear()
    assert model.cheapest(2) == [1, 1] + [0] * (DIMS - 2)  # no data: ties, first ones


def test_corrected_scores_stay_shares():
    model = AdditiveModel(DIMS)
    for window, vector, value, _ in synthetic_windows(30):
        model.add(window, vector, value)
    # Scores on hard windows are corrected upwards, on easy ones downwards.
    hardest = max(range(30), key=lambda w: model.corrected(w, 0.5))
    easiest = min(range(30), key=lambda w: model.corrected(w, 0.5))
    assert model.corrected(hardest, 1.0) == 1.0  # a perfect score on a hard window
    assert model.corrected(easiest, 0.0) == 0.0
