"""One model and task's skip-set search: candidates in, scores in, best set out.

Scores are matchness on whatever window the proposer had, and windows differ
a lot in difficulty. The current best set (the incumbent) is handed out with
every batch of candidates, and an additive model fitted to every score
(``additive.py``: window ease plus one effect per skipped sub-layer)
corrects each score for its window, which makes sets scored on different
windows comparable. Sets are ranked by their mean corrected score less one
standard error, so a set lucky on one window does not displace one measured
on many. Besides random and Bayesian candidates, the model proposes the set
of the sub-layers it finds cheapest to skip (``additive`` candidates).

Fixed ratio: the target size is ``round(skip_ratio * 2(L-2))``; candidates
are random sets of that size, every ``bayes_interval``-th from the GP.
Adaptive ratio: every size of ``adaptive_ratios`` is probed, and the target
is the size whose best set predicts the highest speedup (``speedup.py``)
from its matchness and the measured draft/verify cost. Good sets at one
size are the best evidence for the next, so besides random and Bayesian
candidates at the target, the search tries the incumbent grown or shrunk
to the neighbouring sizes, points the GP at those sizes in turn, and
re-scores a neighbouring size's best until it is measured well enough to
take over. That is how the ratio climbs (or falls) to its best value.

When a stop rule holds, the best few sets of the target size, and the set
the search started from, are scored together on fresh windows before one is
chosen (``playoff.py``).
"""

import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

from botorch.exceptions.errors import BotorchError, ModelFittingError

from swift_vllm.config import SelfSkipConfig
from swift_vllm.search import bayes
from swift_vllm.search.additive import AdditiveModel
from swift_vllm.search.cache import CacheEntry
from swift_vllm.search.phase import MIN_WINDOWS_TO_STOP, Phase, PhaseTracker
from swift_vllm.search.playoff import Playoff
from swift_vllm.search.speedup import CostModel, best_speedup
from swift_vllm.skip_set import SkipSet, default_skip_set, num_skippable

logger = logging.getLogger(__name__)

# Adaptive ratio: where the search starts (DESIGN.md section 5: small models
# draft badly at the reference's 0.45, well at 0.2).
ADAPTIVE_START_RATIO = 0.2
# Adaptive ratio: random candidates per size before sizes are compared, and
# the share of later random candidates that resize the incumbent instead.
PROBES_PER_SIZE = 4
NEIGHBOUR_SHARE = 0.25
# The GP trains on at most this many sets (the best, then the latest): exact
# GP fitting is cubic in points and shares the CPUs with serving.
GP_MAX_POINTS = 200
GP_BEST_POINTS = 50
GP_MIN_POINTS = 4
# Of the candidates that are not Bayesian, this share comes from the
# additive model once it has seen ADDITIVE_MIN_WINDOWS windows.
ADDITIVE_SHARE = 0.5
ADDITIVE_MIN_WINDOWS = 4
# A window number for scores that came with no window (a cached score).
NO_WINDOW = -1
# The max_score stop needs the best set's matchness above max_score by this
# many binomial standard errors over the tokens it was scored on.
STOP_CONFIDENCE_Z = 2.0


def _rounded(value: float) -> float:
    """Values compared without float noise: corrected scores of tied sets
    differ in the last bits, and a tie must not count as an improvement."""
    return round(value, 9)


class Candidate(NamedTuple):
    skip_set: SkipSet
    origin: str
    """``incumbent`` (the best so far, re-scored as the baseline), ``random``,
    ``bayes``, ``additive`` (the additive model's cheapest set, or a
    neighbour of it once scored), ``contender`` (a set scored on too few
    windows whose mean beats the incumbent, scored again), ``playoff`` (a
    finalist, once a stop rule holds); with an adaptive ratio also ``neighbour``
    (the incumbent resized to a neighbouring size) and ``recheck`` (a
    neighbouring size's best, scored again)."""


@dataclass(frozen=True)
class AcceptanceReport:
    """How drafts made with ``skip_set`` fared in verification."""

    skip_set: SkipSet
    accepted: int
    """Draft tokens accepted."""
    rejected: int
    """Draft tokens compared and rejected: at most one per request and
    step, as tokens after the first rejection are never compared, so
    ``accepted / (accepted + rejected)`` is per-token acceptance, the
    quantity matchness estimates."""
    draft_step_s: float
    """Seconds of one draft forward step."""
    verify_step_s: float
    """Seconds of one verify forward."""
    batch_size: int

    @classmethod
    def combined(cls, reports: list["AcceptanceReport"]) -> "AcceptanceReport":
        """Several reports for the same set as one: counts summed, step
        times averaged, the latest batch size."""
        return cls(
            reports[0].skip_set,
            sum(r.accepted for r in reports),
            sum(r.rejected for r in reports),
            sum(r.draft_step_s for r in reports) / len(reports),
            sum(r.verify_step_s for r in reports) / len(reports),
            reports[-1].batch_size,
        )


def starting_set(num_layers: int, config: SelfSkipConfig) -> SkipSet:
    """The set drafting uses before any search result exists (see the
    ``search_start`` option): the middle-out default, or a random set drawn
    with a fixed seed, as the SWIFT reference starts."""
    ratio = ADAPTIVE_START_RATIO if config.skip_ratio is None else config.skip_ratio
    if config.search_start == "middle":
        return default_skip_set(num_layers, ratio)
    dims = num_skippable(num_layers)
    chosen = set(random.Random(0).sample(range(dims), round(ratio * dims)))
    return SkipSet.from_vector([int(i in chosen) for i in range(dims)], num_layers)


class Searcher:
    """Search state for one model and task. Not thread-safe: the actor owns
    it and runs one call at a time."""

    def __init__(
        self,
        num_layers: int,
        config: SelfSkipConfig,
        draft_len: int,
        start: SkipSet | None = None,
        cached: CacheEntry | None = None,
    ) -> None:
        """``start``: where a fresh search begins (default ``starting_set``);
        ``cached``: a cache hit, adopted without an optimization phase.
        Either is dropped, with a warning, if its size is not one the
        configured ratio allows."""
        self.num_layers = num_layers
        self.config = config
        self.draft_len = draft_len
        self.dims = num_skippable(num_layers)
        ratios = config.adaptive_ratios if config.skip_ratio is None else [config.skip_ratio]
        self.sizes = sorted({round(r * self.dims) for r in ratios})
        self.phase = PhaseTracker(
            max_opt_iter=config.max_opt_iter,
            max_tolerance_iter=config.max_tolerance_iter,
            max_score=config.max_score,
            restart_window=config.restart_window,
            restart_drop=config.restart_drop,
        )
        self.costs = CostModel(num_sublayers=2 * num_layers)
        self.proposed = self.bayes_proposed = self.windows_scored = 0
        self.scoring_s = self.search_s = 0.0
        self.batch_size: int | None = None
        self._rng = random.Random(0)  # reproducible searches
        self._scores: dict[SkipSet, list[tuple[int, float]]] = {}
        """Per set, its raw scores and the windows they were measured on."""
        self._scored_tokens: Counter[SkipSet] = Counter()
        """Per set, the tokens of the windows it was scored on (windows do not
        overlap: ``scoring.WindowPicker``)."""
        self._accepted: Counter[SkipSet] = Counter()
        self._checked: Counter[SkipSet] = Counter()
        """Per set, draft tokens accepted and verified while optimizing."""
        self._model = AdditiveModel(self.dims)
        self._window_noise = 0.5 / math.sqrt(config.context_window)
        """Standard deviation of one window's matchness, at most (binomial)."""
        self._probes: Counter[int] = Counter()
        self.history: list[tuple[int, float | None, int]] = []
        """After each scored window: (iterations, best matchness, its size)."""
        self._playoff: Playoff | None = None
        self._chosen: SkipSet | None = None
        """The playoff's winner, the set to draft with until a restart."""
        self._last_playoff: dict | None = None

        if cached is not None and self._fits(cached.skip_set, "cached"):
            start = cached.skip_set
            if cached.score is not None:
                self._scores[start] = [(NO_WINDOW, cached.score)]
            self.phase.enter(Phase.ACCELERATING, "cache hit")
        elif start is None or not self._fits(start, "starting"):
            start = starting_set(num_layers, config)
        self._start = start
        self.target_size = start.size
        if start.size not in self.sizes:  # adaptive: a cached size off the grid
            self.sizes = sorted([*self.sizes, start.size])

    # --- what the proposer asks for ---

    def incumbent(self) -> SkipSet:
        """The set to draft with: the playoff's winner once there is one,
        else the best-valued set of the target size."""
        if self._chosen is not None:
            return self._chosen
        same_size = [s for s in self._scores if s.size == self.target_size]
        return max(same_size, key=self._rank, default=self._start)

    def score(self, skip_set: SkipSet) -> float | None:
        """A set's estimated matchness (mean window-corrected score), if scored."""
        scores = self._scores.get(skip_set)
        if not scores:
            return None
        return sum(self._model.corrected(w, value) for w, value in scores) / len(scores)

    def propose(self, count: int) -> list[Candidate]:
        """The incumbent, then ``count`` sets to score with it on one window;
        empty outside the optimization phase."""
        if self.phase.phase is not Phase.OPTIMIZING:
            return []
        if self._playoff is not None:
            return [Candidate(s, "playoff") for s in self._playoff.finalists]
        started = time.perf_counter()
        incumbent = self.incumbent()
        candidates = [Candidate(incumbent, "incumbent")]
        contender = self._contender(incumbent)
        if contender is not None:
            candidates.append(Candidate(contender, "contender"))
        # Adaptive ratio: a neighbouring size's best, scored on too few
        # windows to compare sizes fairly, is scored again.
        for size in self._neighbours():
            best = max((s for s in self._scores if s.size == size), key=self._rank, default=None)
            if best is not None and len(self._scores[best]) < MIN_WINDOWS_TO_STOP:
                candidates.append(Candidate(best, "recheck"))
        for _ in range(count + 1 - len(candidates)):
            self.proposed += 1
            candidate = None
            if (
                self.proposed % self.config.bayes_interval == 0
                and len(self._scores) >= GP_MIN_POINTS
            ):
                candidate = self._bayes_candidate()
            if (
                candidate is None
                and self.windows_scored >= ADDITIVE_MIN_WINDOWS
                and self._rng.random() < ADDITIVE_SHARE
            ):
                candidate = self._additive_candidate()
            if candidate is None:
                candidate = self._random_candidate()
            self._probes[candidate.skip_set.size] += 1
            candidates.append(candidate)
        self.search_s += time.perf_counter() - started
        return candidates

    # --- what the proposer reports ---

    def report_scores(
        self,
        scores: list[tuple[SkipSet, float]],
        window_tokens: int,
        scoring_s: float,
    ) -> None:
        """Matchness of sets scored together on one ``window_tokens`` window.
        Late reports (after the optimization phase ended) only count time."""
        self.scoring_s += scoring_s
        if self.phase.phase is not Phase.OPTIMIZING or not scores or window_tokens < 1:
            return
        self.windows_scored += 1
        window = self.windows_scored
        self._window_noise = 0.5 / math.sqrt(window_tokens)
        for skip_set, value in scores:
            self._model.add(window, skip_set.to_vector(self.num_layers), value)
        if self._playoff is not None:
            self._record(scores, window, window_tokens)
            self._playoff.add(scores, window_tokens)
            if self._playoff.decided:
                self._end_playoff()
            return
        best = self._best_speedup()
        # The incumbent comes first; once scored, it is only a re-scored baseline.
        baseline = scores[0][0] if scores[0][0] in self._scores else None
        self._record(scores, window, window_tokens)
        for skip_set, _ in scores:
            if skip_set == baseline:
                continue
            # Improving means a better predicted speedup: with a fixed ratio
            # that is a better matchness; with an adaptive one, a better
            # set at a worse size is no progress.
            speedup = self._speedup(self._estimate(skip_set), skip_set.size)
            self.phase.record_iteration(improved=best is None or _rounded(speedup) > _rounded(best))
            best = speedup if best is None else max(best, speedup)
        self._retarget()
        incumbent = self.incumbent()
        self.history.append((self.phase.total_iterations, self.score(incumbent), incumbent.size))
        # With an adaptive ratio, matchness above max_score says "skip more",
        # not "stop": it ends the search only at the largest ratio.
        at_largest = incumbent.size == self.sizes[-1]
        reason = self.phase.stop_reason(self._stop_bound(incumbent) if at_largest else None)
        if reason is not None:
            self._start_playoff(reason)

    def report_acceptance(self, report: AcceptanceReport) -> None:
        """Drafting results: costs feed the adaptive ratio; the incumbent's
        acceptance may restart the search (the input stream changed)."""
        self.costs.observe(report.skip_set.size, report.draft_step_s, report.verify_step_s)
        self.batch_size = report.batch_size
        self._retarget()
        if self.phase.phase is Phase.OPTIMIZING:
            self._accepted[report.skip_set] += report.accepted
            self._checked[report.skip_set] += report.accepted + report.rejected
        incumbent = self.incumbent()
        if report.skip_set == incumbent and self.phase.record_acceptance(
            report.accepted, report.rejected, self._acceptance_before(incumbent)
        ):
            # Scores measured on the old stream no longer say anything.
            self._scores.clear()
            self._scored_tokens.clear()
            self._accepted.clear()
            self._checked.clear()
            self._model.clear()
            self._probes.clear()
            self._start = incumbent
            self._chosen = None

    def predicted_speedup(self, size: int) -> float | None:
        """Of the best set of ``size`` scored so far."""
        best = self._best_estimate(size)
        return None if best is None else self._speedup(best, size)

    def status(self) -> dict:
        incumbent = self.incumbent()
        by_ratio = {
            round(size / self.dims, 3): {
                "skipped": size,
                "matchness_estimate": self._best_estimate(size),
                "cost_ratio": round(self.costs.cost_ratio(size), 4),
                "predicted_speedup": self.predicted_speedup(size),
            }
            for size in self.sizes
        }
        return {
            "phase": self.phase.phase.value,
            "phase_reason": self.phase.reason,
            "iterations": self.phase.total_iterations,
            "phase_iterations": self.phase.iterations,
            "proposals": self.proposed,
            "bayes_proposals": self.bayes_proposed,
            "best_matchness": self.score(incumbent),
            "best_windows": len(self._scores.get(incumbent, ())),
            "skip_ratio": round(incumbent.ratio(self.num_layers), 4),
            "skipped": incumbent.size,
            "current": incumbent.to_dict(),
            "adaptive": self.config.skip_ratio is None,
            "predicted_speedup": self.predicted_speedup(incumbent.size),
            "by_ratio": by_ratio,
            "playoff": self._last_playoff if self._playoff is None else self._playoff.summary(),
            "recent_acceptance": self.phase.last_acceptance,
            "restarts": self.phase.restarts,
            "batch_size": self.batch_size,
            "windows_scored": self.windows_scored,
            "optimizing_s": round(self.phase.optimizing_seconds(), 3),
            "scoring_s": round(self.scoring_s, 3),
            "search_s": round(self.search_s, 3),
            "num_layers": self.num_layers,
            "history": [list(entry) for entry in self.history],
        }

    # --- internals ---

    def _fits(self, skip_set: SkipSet, what: str) -> bool:
        if self.config.skip_ratio is None or skip_set.size in self.sizes:
            return True
        logger.warning(
            "ignoring the %s skip set: it skips %d sub-layers, skip_ratio %s means %d",
            what,
            skip_set.size,
            self.config.skip_ratio,
            self.sizes[0],
        )
        return False

    def _record(self, scores: list[tuple[SkipSet, float]], window: int, tokens: int) -> None:
        for skip_set, value in scores:
            self._scores.setdefault(skip_set, []).append((window, value))
            self._scored_tokens[skip_set] += tokens

    def _start_playoff(self, reason: str) -> None:
        """A stop rule holds: score the best-ranked sets of the target size
        and the starting set together before choosing (``playoff.py``); with
        ``playoff_windows`` 0, or nothing to compare, stop now."""
        ranked = sorted(
            (s for s in self._scores if s.size == self.target_size), key=self._rank, reverse=True
        )
        finalists = ranked[: self.config.candidates_per_step + 1]
        if self._start.size == self.target_size and self._start not in finalists:
            del finalists[self.config.candidates_per_step :]
            finalists.append(self._start)
        if self.config.playoff_windows == 0 or len(finalists) < 2:
            self.phase.stop(reason)
            return
        needed = self.config.playoff_windows * self.config.context_window
        self._playoff = Playoff(finalists, reason, needed)

    def _end_playoff(self) -> None:
        playoff, self._playoff = self._playoff, None
        self._chosen = playoff.winner()
        self._last_playoff = playoff.summary()
        place = playoff.finalists.index(self._chosen) + 1
        self.phase.stop(
            f"{playoff.reason}; a playoff of {len(playoff.finalists)} sets over "
            f"{playoff.tokens} tokens chose the search's number {place}"
        )

    def _estimate(self, skip_set: SkipSet) -> float:
        """A set's matchness, discounted by one standard error: the best of
        many sets scored once is mostly the luckiest, and without the
        discount lucky newcomers would keep displacing a well-measured set
        (and make the most-sampled ratio look best)."""
        return self.score(skip_set) - self._window_noise / math.sqrt(len(self._scores[skip_set]))

    def _acceptance_before(self, skip_set: SkipSet) -> float | None:
        """The set's acceptance while the search ran, over at least one
        ``restart_window`` block of verified draft tokens; else None."""
        checked = self._checked[skip_set]
        if checked < self.config.restart_window:
            return None
        return self._accepted[skip_set] / checked

    def _stop_bound(self, skip_set: SkipSet) -> float | None:
        """The set's matchness less ``STOP_CONFIDENCE_Z`` binomial standard
        errors over the tokens it was scored on; None below
        ``MIN_WINDOWS_TO_STOP`` full windows' worth of them (windows of a
        short request, or of few, are short)."""
        tokens = self._scored_tokens[skip_set]
        if tokens < MIN_WINDOWS_TO_STOP * self.config.context_window:
            return None
        mean = self.score(skip_set)
        return mean - STOP_CONFIDENCE_Z * math.sqrt(mean * (1.0 - mean) / tokens)

    def _contender(self, incumbent: SkipSet) -> SkipSet | None:
        """The best-scoring set of the incumbent's size that is scored on
        too few windows to be ranked fairly yet, if its mean beats the
        incumbent's: a set scored on one window must beat the incumbent by
        a standard error to take over, so without a second look a good
        newcomer that was not also lucky would never be taken."""
        if incumbent not in self._scores:
            return None
        unsettled = [
            s
            for s in self._scores
            if s.size == incumbent.size
            and s != incumbent
            and len(self._scores[s]) < MIN_WINDOWS_TO_STOP
        ]
        best = max(unsettled, key=self.score, default=None)
        if best is None or _rounded(self.score(best)) <= _rounded(self.score(incumbent)):
            return None
        return best

    def _rank(self, skip_set: SkipSet) -> tuple[float, int]:
        """Best estimate first; on a tie (matchness comes in steps of
        1/window, so ties are common) the set scored on more windows."""
        return _rounded(self._estimate(skip_set)), len(self._scores[skip_set])

    def _best_estimate(self, size: int) -> float | None:
        return max((self._estimate(s) for s in self._scores if s.size == size), default=None)

    def _speedup(self, matchness: float, size: int) -> float:
        return best_speedup(matchness, self.costs.cost_ratio(size), self.draft_len)

    def _predicted_by_size(self) -> dict[int, float]:
        predicted = {size: self.predicted_speedup(size) for size in self.sizes}
        return {size: p for size, p in predicted.items() if p is not None}

    def _best_speedup(self) -> float | None:
        return max(self._predicted_by_size().values(), default=None)

    def _retarget(self) -> None:
        """Adaptive ratio, while optimizing (not in the playoff, which is
        between sets of one size): aim at the best predicted size."""
        if self.phase.phase is not Phase.OPTIMIZING or self._playoff is not None:
            return
        predicted = self._predicted_by_size()
        if predicted:
            self.target_size = max(predicted, key=predicted.__getitem__)

    def _random_candidate(self) -> Candidate:
        """A uniformly random set of the target size (or of a size not yet
        probed enough); with an adaptive ratio, sometimes the incumbent grown
        or shrunk to a neighbouring size, so that good sets found at one
        size seed the next and the ratio can climb."""
        under_probed = [s for s in self.sizes if self._probes[s] < PROBES_PER_SIZE]
        if under_probed:
            size = min(under_probed, key=self._probes.__getitem__)
        elif self._neighbours() and self._rng.random() < NEIGHBOUR_SHARE:
            size = self._rng.choice(self._neighbours())
            return Candidate(self._resized(self.incumbent(), size), "neighbour")
        else:
            size = self.target_size
        vector = bayes.random_vector(self.dims, size, self._rng)
        return Candidate(SkipSet.from_vector(vector, self.num_layers), "random")

    def _additive_candidate(self) -> Candidate | None:
        """The additive model's cheapest set of the target size; once that
        is scored, the same with one or two sub-layers swapped for others
        (its neighbourhood is where the model's errors hide). None when
        that too has been scored."""
        vector = self._model.cheapest(self.target_size)
        if SkipSet.from_vector(vector, self.num_layers) in self._scores:
            vector = bayes.swapped(vector, self._rng)
        skip_set = SkipSet.from_vector(vector, self.num_layers)
        return None if skip_set in self._scores else Candidate(skip_set, "additive")

    def _neighbours(self) -> list[int]:
        """The sizes next to the target's in the adaptive grid."""
        index = self.sizes.index(self.target_size)
        return self.sizes[max(index - 1, 0) : index] + self.sizes[index + 1 : index + 2]

    def _resized(self, skip_set: SkipSet, size: int) -> SkipSet:
        """``skip_set`` with random sub-layers added or removed to ``size``."""
        vector = skip_set.to_vector(self.num_layers)
        on = [i for i, bit in enumerate(vector) if bit]
        off = [i for i, bit in enumerate(vector) if not bit]
        flip = (
            self._rng.sample(off, size - len(on))
            if size > len(on)
            else self._rng.sample(on, len(on) - size)
        )
        for i in flip:
            vector[i] = 1 - vector[i]
        return SkipSet.from_vector(vector, self.num_layers)

    def _bayes_candidate(self) -> Candidate | None:
        ranked = sorted(self._scores, key=self.score, reverse=True)
        best = ranked[:GP_BEST_POINTS]
        chosen = set(best)
        latest = [s for s in reversed(self._scores) if s not in chosen]
        train = best + latest[: GP_MAX_POINTS - len(best)]
        # Adaptive ratio: take turns between the target size and its
        # neighbours; the GP, trained on every size, knows which sub-layers
        # are cheap to skip, which random resizing does not.
        sizes = [self.target_size, *self._neighbours()]
        try:
            vector = bayes.suggest(
                [s.to_vector(self.num_layers) for s in train],
                [self.score(s) for s in train],
                sizes[self.bayes_proposed % len(sizes)],
                self._rng,
            )
        except (RuntimeError, ValueError, BotorchError, ModelFittingError) as exc:
            logger.warning("Bayesian proposal failed (%r): proposing at random", exc)
            return None
        self.bayes_proposed += 1
        return Candidate(SkipSet.from_vector(vector, self.num_layers), "bayes")
