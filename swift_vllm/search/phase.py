"""The switch between SWIFT's optimization and acceleration phases."""

import time
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    OPTIMIZING = "optimizing"
    """Candidates are scored; drafting uses the best set so far."""
    ACCELERATING = "accelerating"
    """The set is chosen; only drafting (and watching acceptance) runs."""


# A set's score counts as measured (to end the search, or to compare sizes)
# once it covers this many windows: one lucky 50-token window is not a
# matchness of 0.93.
MIN_WINDOWS_TO_STOP = 3


@dataclass
class PhaseTracker:
    """Counts scored candidates and decides when to stop and restart.

    Stops by the reference rules (best score above ``max_score``: here a
    lower confidence bound of it, see ``Searcher``;
    ``max_tolerance_iter`` candidates in a row without improvement,
    ``max_opt_iter`` candidates). Restarts when acceptance over a block of
    ``restart_window`` verified draft tokens falls ``restart_drop`` below the
    chosen set's reference acceptance: the input stream changed under the set.
    """

    max_opt_iter: int
    max_tolerance_iter: int
    max_score: float
    restart_window: int
    restart_drop: float
    phase: Phase = Phase.OPTIMIZING
    iterations: int = 0
    """Candidates scored in the current optimization phase."""
    total_iterations: int = 0
    since_improvement: int = 0
    restarts: int = 0
    reason: str = "cold start"
    """Why the current phase began."""
    optimizing_s: float = 0.0
    """Wall time spent in finished optimization phases, each from its first
    scored candidate (not from engine start-up) to its stop."""
    last_acceptance: float | None = None
    """Acceptance over the last complete block of verified draft tokens."""
    reference_acceptance: float | None = None
    """What blocks are compared with in this acceleration phase: the set's
    acceptance before it was chosen, else its first block's."""
    _optimizing_since: float | None = None
    _block_accepted: int = 0
    _block_checked: int = 0

    def record_iteration(self, improved: bool) -> None:
        if self._optimizing_since is None:
            self._optimizing_since = time.monotonic()
        self.iterations += 1
        self.total_iterations += 1
        self.since_improvement = 0 if improved else self.since_improvement + 1

    def stop_reason(self, best_score_bound: float | None) -> str | None:
        """The stop rule that holds, if any. ``best_score_bound``: a lower
        confidence bound of the best set's matchness, None while it is
        measured too little to end the search."""
        if self.phase is not Phase.OPTIMIZING:
            return None
        if best_score_bound is not None and best_score_bound > self.max_score:
            return (
                f"best matchness above {best_score_bound:.3f} (confidence bound)"
                f" > max_score {self.max_score}"
            )
        if self.since_improvement >= self.max_tolerance_iter:
            return f"{self.since_improvement} candidates without improvement"
        if self.iterations >= self.max_opt_iter:
            return f"max_opt_iter ({self.max_opt_iter}) candidates scored"
        return None

    def stop(self, reason: str) -> None:
        """End the optimization phase: the set is chosen."""
        self.optimizing_s = self.optimizing_seconds()
        self.enter(Phase.ACCELERATING, reason)

    def record_acceptance(self, accepted: int, rejected: int, before: float | None) -> bool:
        """Count the chosen set's verified draft tokens while accelerating;
        restart optimization (True) if a full block's acceptance is more than
        ``restart_drop`` below the reference: ``before``, the set's
        acceptance measured before it was chosen, or else the first block's.
        Not its matchness: drafts stop at a low-confidence token, which is
        then often rejected, so acceptance runs below matchness on an
        unchanged stream (0.76 against 0.81 for the ratio race's adaptive set)."""
        if self.phase is not Phase.ACCELERATING:
            return False
        self._block_accepted += accepted
        self._block_checked += accepted + rejected
        if self._block_checked < self.restart_window:
            return False
        self.last_acceptance = self._block_accepted / self._block_checked
        self._block_accepted = self._block_checked = 0
        if self.reference_acceptance is None:
            self.reference_acceptance = self.last_acceptance if before is None else before
        if self.last_acceptance >= self.reference_acceptance - self.restart_drop:
            return False
        self.restarts += 1
        self.enter(
            Phase.OPTIMIZING,
            f"acceptance {self.last_acceptance:.3f} fell below the set's"
            f" {self.reference_acceptance:.3f}",
        )
        return True

    def optimizing_seconds(self) -> float:
        """Wall time spent optimizing, the current phase included."""
        if self._optimizing_since is None:
            return self.optimizing_s
        return self.optimizing_s + time.monotonic() - self._optimizing_since

    def enter(self, phase: Phase, reason: str) -> None:
        self.phase, self.reason = phase, reason
        self.iterations = self.since_improvement = 0
        self.reference_acceptance = None
        self._optimizing_since = None
        self._block_accepted = self._block_checked = 0
