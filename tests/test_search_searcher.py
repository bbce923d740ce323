"""The skip-set search on synthetic objectives: no Ray, no vLLM, real BoTorch."""

import itertools
import math
import random
import re

import pytest
import torch

from swift_vllm.config import SelfSkipConfig
from swift_vllm.search.bayes import random_vector
from swift_vllm.search.phase import Phase
from swift_vllm.search.searcher import AcceptanceReport, Searcher, starting_set
from swift_vllm.search.speedup import CostModel, best_speedup, expected_speedup
from swift_vllm.skip_set import SkipSet

# The CPUs are shared: GP fits on one thread are many times faster here.
torch.set_num_threads(1)

LAYERS = 30  # SmolLM2's layer count: 56 skippable sub-layers
DIMS = 56


class HiddenCheapSet:
    """Matchness of a set: each skipped sub-layer costs some accuracy; a
    hidden 14 of the 56 cost almost none. Windows differ in difficulty (a
    shared offset) and each score has its own noise, like real windows."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        cheap = set(rng.sample(range(DIMS), 14))
        self.damage = [
            rng.uniform(0, 0.02) if i in cheap else rng.uniform(0.05, 0.3) for i in range(DIMS)
        ]
        self.noise = random.Random(seed + 1)

    def true(self, skip_set: SkipSet) -> float:
        vector = skip_set.to_vector(LAYERS)
        return math.exp(-sum(d for d, x in zip(self.damage, vector, strict=True) if x))

    def window(self, sets: list[SkipSet]) -> list[tuple[SkipSet, float]]:
        offset = self.noise.gauss(0, 0.05)
        return [(s, self.true(s) + offset + self.noise.gauss(0, 0.02)) for s in sets]


def run(searcher: Searcher, objective: HiddenCheapSet, steps: int, per_step: int = 4) -> None:
    for _ in range(steps):
        batch = [c.skip_set for c in searcher.propose(per_step)]
        if not batch:
            return
        searcher.report_scores(objective.window(batch), window_tokens=50, scoring_s=0.01)


def test_search_beats_best_of_60_random_sets():
    objective = HiddenCheapSet(seed=1)
    size = round(0.2 * DIMS)
    rng = random.Random(5)
    random_sets = [SkipSet.from_vector(random_vector(DIMS, size, rng), LAYERS) for _ in range(60)]
    best_random = max(objective.true(s) for s in random_sets)

    searcher = Searcher(LAYERS, SelfSkipConfig(skip_ratio=0.2), draft_len=8)
    run(searcher, objective, steps=40)  # 160 candidates, 6 of them Bayesian

    found = searcher.incumbent()
    assert found.size == size
    # Every bayes_interval-th new candidate (re-scored contenders are not new).
    assert searcher.bayes_proposed == searcher.proposed // 25 >= 5
    assert objective.true(found) > best_random + 0.15
    # The control-variate estimate tracks the truth despite window offsets.
    assert searcher.score(found) == pytest.approx(objective.true(found), abs=0.06)


def test_bayesian_proposals_every_bayes_interval_th():
    objective = HiddenCheapSet(seed=2)
    searcher = Searcher(LAYERS, SelfSkipConfig(skip_ratio=0.2, bayes_interval=5), draft_len=8)
    origins = []  # of new candidates: a re-scored contender may take the step's slot
    while len(origins) < 16:
        incumbent, candidate = searcher.propose(1)
        assert incumbent.origin == "incumbent"
        if candidate.origin != "contender":
            origins.append(candidate.origin)
        searcher.report_scores(objective.window([incumbent.skip_set, candidate.skip_set]), 50, 0.0)
    assert [n for n, origin in enumerate(origins, 1) if origin == "bayes"] == [5, 10, 15]
    assert {o for n, o in enumerate(origins, 1) if n % 5} == {"random", "additive"}


def constant_scores(searcher: Searcher, score: float, steps: int) -> None:
    for _ in range(steps):
        batch = searcher.propose(2)
        searcher.report_scores([(c.skip_set, score) for c in batch], 50, 0.0)


def test_stops_when_best_passes_max_score_on_enough_windows():
    searcher = Searcher(LAYERS, SelfSkipConfig(skip_ratio=0.2, playoff_windows=0), draft_len=8)
    constant_scores(searcher, 0.97, steps=2)
    assert searcher.phase.phase is Phase.OPTIMIZING  # one lucky window is not enough
    constant_scores(searcher, 0.97, steps=2)
    assert searcher.phase.phase is Phase.ACCELERATING
    assert "max_score" in searcher.phase.reason
    assert searcher.propose(2) == []


def test_short_windows_are_not_enough_to_stop():
    """Eight windows of 10 tokens (a short request's) are 80 tokens, not
    evidence of a 0.97 set."""
    searcher = Searcher(LAYERS, SelfSkipConfig(skip_ratio=0.2, playoff_windows=0), draft_len=8)
    for _ in range(8):
        batch = searcher.propose(2)
        searcher.report_scores([(c.skip_set, 0.97) for c in batch], 10, 0.0)
    assert searcher.phase.phase is Phase.OPTIMIZING
    constant_scores(searcher, 0.97, steps=3)  # 150 more tokens: enough
    assert "max_score" in searcher.phase.reason


def test_max_score_stop_needs_confidence_not_just_the_mean():
    """A mean just above max_score over three windows is within two
    standard errors of it: the search goes on until the evidence says so."""
    searcher = Searcher(
        LAYERS, SelfSkipConfig(skip_ratio=0.2, max_score=0.9, playoff_windows=0), draft_len=8
    )
    constant_scores(searcher, 0.91, steps=4)
    assert searcher.phase.phase is Phase.OPTIMIZING
    constant_scores(searcher, 0.95, steps=8)
    assert searcher.phase.phase is Phase.ACCELERATING
    assert "max_score" in searcher.phase.reason


def test_stops_after_max_tolerance_iter_without_improvement():
    config = SelfSkipConfig(skip_ratio=0.2, max_tolerance_iter=10, playoff_windows=0)
    searcher = Searcher(LAYERS, config, draft_len=8)
    constant_scores(searcher, 0.5, steps=6)
    assert searcher.phase.phase is Phase.ACCELERATING
    assert "without improvement" in searcher.phase.reason
    # The first step scores 3 sets (the start improves on nothing), then 10 fail.
    assert searcher.phase.total_iterations == 1 + 10


def test_stops_after_max_opt_iter():
    searcher = Searcher(
        LAYERS, SelfSkipConfig(skip_ratio=0.2, max_opt_iter=12, playoff_windows=0), draft_len=8
    )
    rising = itertools.count()
    for _ in range(10):
        batch = searcher.propose(2)
        searcher.report_scores([(c.skip_set, 0.1 + 0.01 * next(rising)) for c in batch], 50, 0.0)
    assert searcher.phase.phase is Phase.ACCELERATING
    assert "max_opt_iter" in searcher.phase.reason
    # Checked per scored batch: 3 sets in the first, 2 new ones in each next.
    assert searcher.phase.total_iterations == 13


def _drafted(searcher: Searcher, skip_set: SkipSet, accepted: int, rejected: int) -> None:
    searcher.report_acceptance(AcceptanceReport(skip_set, accepted, rejected, 0.01, 0.05, 1))


def test_restarts_when_acceptance_drops_below_the_sets_own():
    config = SelfSkipConfig(skip_ratio=0.2, restart_window=100, restart_drop=0.2, playoff_windows=0)
    searcher = Searcher(LAYERS, config, draft_len=8)
    constant_scores(searcher, 0.97, steps=3)
    chosen = searcher.incumbent()
    assert searcher.phase.phase is Phase.ACCELERATING

    _drafted(searcher, SkipSet(attention=(1,)), 0, 200)  # not the chosen set: ignored
    _drafted(searcher, chosen, 85, 15)  # the first block: 0.85 is the reference
    _drafted(searcher, chosen, 70, 30)  # 0.70: within the drop
    assert searcher.phase.phase is Phase.ACCELERATING
    _drafted(searcher, chosen, 30, 30)
    _drafted(searcher, chosen, 20, 20)  # 0.5 over a block
    assert searcher.phase.phase is Phase.OPTIMIZING
    assert searcher.phase.restarts == 1
    assert "acceptance 0.500" in searcher.phase.reason
    batch = searcher.propose(2)
    assert batch[0].skip_set == chosen  # the search resumes from the chosen set
    assert searcher.score(chosen) is None  # scored afresh on the new stream


def test_acceptance_below_matchness_on_a_steady_stream_is_no_restart():
    """Confidence-stopped drafts end on a doubtful token: a set with
    matchness 0.97 may draft at 0.72 on the stream it was chosen on. That
    is its acceptance, not a changed stream."""
    config = SelfSkipConfig(skip_ratio=0.2, restart_window=100, restart_drop=0.2)
    searcher = Searcher(LAYERS, config, draft_len=8)
    while searcher.phase.phase is Phase.OPTIMIZING:
        batch = searcher.propose(2)
        _drafted(searcher, batch[0].skip_set, 72, 28)  # drafting with the incumbent
        searcher.report_scores([(c.skip_set, 0.97) for c in batch], 50, 0.0)
    chosen = searcher.incumbent()
    for _ in range(5):
        _drafted(searcher, chosen, 72, 28)
    assert searcher.phase.phase is Phase.ACCELERATING
    assert searcher.phase.reference_acceptance == pytest.approx(0.72)
    _drafted(searcher, chosen, 45, 55)  # now the stream did change
    assert searcher.phase.phase is Phase.OPTIMIZING


def test_adaptive_ratio_maximises_predicted_speedup():
    """Matchness falls and draft cost falls with the number of skipped
    sub-layers; the search must pick neither the most accurate size nor the
    cheapest, but the one with the best predicted speedup."""

    def matchness(size: int) -> float:
        return 0.97 - 0.001 * size * size

    def draft_step_s(size: int) -> float:
        return 0.002 + 0.045 * (1 - size / 32)

    verify_step_s = 0.05
    config = SelfSkipConfig(skip_ratio=None, adaptive_ratios=[0.1, 0.2, 0.3, 0.45])
    searcher = Searcher(LAYERS, config, draft_len=8)
    assert searcher.sizes == [6, 11, 17, 25]
    for size in searcher.sizes:  # the proposer drafted with each size at some point
        drafted = SkipSet(mlp=tuple(range(1, size + 1)))
        searcher.report_acceptance(
            AcceptanceReport(drafted, 1, 1, draft_step_s(size), verify_step_s, 1)
        )
    for _ in range(6):
        batch = searcher.propose(4)
        searcher.report_scores([(c.skip_set, matchness(c.skip_set.size)) for c in batch], 50, 0.0)

    predicted = {
        k: best_speedup(matchness(k), draft_step_s(k) / verify_step_s, 8) for k in searcher.sizes
    }
    best = max(predicted, key=predicted.get)
    assert best not in (6, 25)  # an interior optimum: the test means something
    assert searcher.target_size == best
    assert searcher.incumbent().size == best
    assert searcher.predicted_speedup(best) == max(
        searcher.predicted_speedup(k) for k in searcher.sizes
    )
    status = searcher.status()
    assert status["adaptive"] and status["skipped"] == best
    assert status["by_ratio"][0.304]["skipped"] == best


def test_speedup_formula():
    assert expected_speedup(0.0, 4, 0.2) == pytest.approx(1 / 1.8)
    assert expected_speedup(1.0, 4, 0.2) == pytest.approx(5 / 1.8)
    assert expected_speedup(0.8, 4, 0.2) == pytest.approx((1 - 0.8**5) / (0.2 * 1.8))
    assert best_speedup(0.8, 0.2, 8) == max(expected_speedup(0.8, g, 0.2) for g in range(1, 9))


def test_cost_model_interpolates_measured_sizes():
    costs = CostModel(num_sublayers=60)
    assert costs.cost_ratio(15) == pytest.approx(45 / 60)  # prior: cost follows work
    costs.observe(10, draft_step_s=0.04, verify_step_s=0.1)
    assert costs.cost_ratio(20) == pytest.approx(0.4 * 40 / 50)  # anchored at 10
    costs.observe(30, draft_step_s=0.02, verify_step_s=0.1)
    assert costs.cost_ratio(20) == pytest.approx(0.3)  # on the measured line


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bayes_interval": 0}, "bayes_interval must be an integer >= 1"),
        ({"max_opt_iter": 2.5}, "max_opt_iter must be an integer >= 1"),
        ({"context_window": 1}, "context_window must be an integer >= 2"),
        ({"max_score": 1.5}, "max_score must be in (0, 1]"),
        ({"restart_drop": 0}, "restart_drop must be in (0, 1]"),
        ({"adaptive_ratios": [0.2, 1.0]}, "adaptive_ratios must be"),
        ({"cache_path": 3}, "cache_path must be a path string"),
    ],
)
def test_search_options_are_validated(options, message):
    SelfSkipConfig().validate(num_layers=LAYERS, num_speculative_tokens=8)
    with pytest.raises(ValueError, match=re.escape(message)):
        SelfSkipConfig(**options).validate(num_layers=LAYERS, num_speculative_tokens=8)


def test_a_newcomer_that_beats_the_incumbent_once_is_scored_again():
    """One window is too little to take over from a well-measured incumbent,
    so a set whose one score beats it comes back as a contender."""
    searcher = Searcher(LAYERS, SelfSkipConfig(skip_ratio=0.2), draft_len=8)
    for _ in range(3):
        batch = searcher.propose(2)
        searcher.report_scores([(c.skip_set, 0.5) for c in batch], 50, 0.0)
    incumbent, newcomer, other = searcher.propose(2)
    searcher.report_scores(
        [(incumbent.skip_set, 0.5), (newcomer.skip_set, 0.52), (other.skip_set, 0.4)], 50, 0.0
    )
    assert searcher.incumbent() == incumbent.skip_set
    again = searcher.propose(2)
    assert [c.origin for c in again[:2]] == ["incumbent", "contender"]
    assert again[1].skip_set == newcomer.skip_set


def _until_playoff(searcher: Searcher, score) -> list[SkipSet]:
    """Score the search's batches with ``score(batch)`` until it proposes
    its playoff; the finalists."""
    for _ in range(500):
        batch = searcher.propose(4)
        if batch[0].origin == "playoff":
            assert {c.origin for c in batch} == {"playoff"}
            return [c.skip_set for c in batch]
        searcher.report_scores(score(batch), 50, 0.0)
    raise AssertionError("no playoff")


def test_playoff_scores_the_finalists_together_and_takes_the_best_mean():
    """When a stop rule holds, the best-ranked sets and the starting set are
    scored on the same windows (8 windows' worth of tokens) before one is
    chosen; a window without every finalist does not count."""
    config = SelfSkipConfig(skip_ratio=0.2, max_opt_iter=40)
    searcher = Searcher(LAYERS, config, draft_len=8)
    objective = HiddenCheapSet(seed=3)
    finalists = _until_playoff(searcher, lambda b: objective.window([c.skip_set for c in b]))
    assert len(finalists) == 5 and starting_set(LAYERS, config) in finalists
    assert searcher.phase.phase is Phase.OPTIMIZING

    searcher.report_scores(objective.window(finalists[:2]), 50, 0.0)  # a stale batch
    windows = 0
    while searcher.phase.phase is Phase.OPTIMIZING:
        assert [c.skip_set for c in searcher.propose(4)] == finalists
        searcher.report_scores(objective.window(finalists), 25, 0.0)
        windows += 1
    assert windows == 16  # 8 x 50 tokens in windows of 25
    assert searcher.incumbent() == max(finalists, key=objective.true)
    assert "max_opt_iter" in searcher.phase.reason and "playoff of 5 sets" in searcher.phase.reason
    playoff = searcher.status()["playoff"]
    assert playoff["windows"] == 16 and len(playoff["finalists"]) == 5


def test_a_set_lucky_on_its_one_window_loses_the_playoff():
    """The search's best-ranked set at the stop was scored once, on a window
    where it happened to match 99%; on shared windows it is ordinary."""
    config = SelfSkipConfig(skip_ratio=0.2, max_opt_iter=30)
    searcher = Searcher(LAYERS, config, draft_len=8)
    rng = random.Random(7)
    truth: dict[SkipSet, float] = {}
    lucky: list[SkipSet] = []

    def score(batch) -> list[tuple[SkipSet, float]]:
        offset = rng.gauss(0, 0.05)
        scores = [
            (c.skip_set, truth.setdefault(c.skip_set, rng.uniform(0.4, 0.7)) + offset)
            for c in batch
        ]
        if searcher.phase.iterations + len(batch) - 1 >= config.max_opt_iter:  # the last window
            lucky.append(batch[-1].skip_set)
            scores[-1] = (lucky[0], 0.99)
        return scores

    finalists = _until_playoff(searcher, score)
    assert finalists[0] == lucky[0]
    while searcher.phase.phase is Phase.OPTIMIZING:
        offset = rng.gauss(0, 0.05)
        searcher.report_scores([(s, truth[s] + offset) for s in finalists], 50, 0.0)
    assert searcher.incumbent() == max(finalists, key=truth.__getitem__)
    assert searcher.incumbent() != lucky[0]
    assert "chose the search's number 1" not in searcher.phase.reason


def test_no_playoff_with_playoff_windows_0():
    searcher = Searcher(LAYERS, SelfSkipConfig(skip_ratio=0.2, playoff_windows=0), draft_len=8)
    constant_scores(searcher, 0.97, steps=4)
    assert searcher.phase.phase is Phase.ACCELERATING
    assert "playoff" not in searcher.phase.reason and searcher.status()["playoff"] is None
