"""Profitability guard: draft only while speculation is measurably faster.

Speculation loses when drafts are rejected too often or when drafting costs
too much next to verification (large batches make the target step compute
bound, so verifying k+1 tokens per request is no longer almost free). The
guard predicts the speedup of the current batch size from live figures:

    speedup = tokens_per_verify * plain_step_s / (draft_round_s + verify_step_s)

``tokens_per_verify`` is the mean tokens a request gains per verification
(accepted drafts + the bonus token); the step times are running means per
batch-size bucket. ``plain_step_s`` is measured on steps without drafts; until one is seen it
is taken to equal the verification step (Leviathan et al.'s model).

Hysteresis keeps it from flapping: it turns drafting off below
``OFF_BELOW`` and back on above ``ON_ABOVE``. One step in every
``PROBE_INTERVAL`` runs the other mode, so both step costs stay measured:
while off it notices when speculation pays again, while on it keeps the
plain-step baseline current.
"""

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

OFF_BELOW = 0.97
ON_ABOVE = 1.03
PROBE_INTERVAL = 32
# Weight of a new measurement in the running means.
_EMA_WEIGHT = 0.1


def _ema(old: float | None, new: float) -> float:
    return new if old is None else (1.0 - _EMA_WEIGHT) * old + _EMA_WEIGHT * new


def batch_bucket(batch_size: int) -> int:
    """Batch sizes grouped by powers of two: costs within a bucket are alike."""
    return 1 << max(batch_size - 1, 0).bit_length()


@dataclass
class _StepCosts:
    draft_round_s: float | None = None  # all draft steps of one round
    verify_s: float | None = None  # a verification step after drafting
    plain_s: float | None = None  # a step that verified no drafts


class ProfitabilityGuard:
    """Decides per step whether drafting pays at the current batch size."""

    def __init__(self) -> None:
        self._tokens_per_verify: float | None = None
        self._costs: dict[int, _StepCosts] = {}
        self._drafting: dict[int, bool] = {}
        self._steps = 0

    def observe_verification(self, tokens_per_verify: float) -> None:
        """Mean tokens per request from one verification of drafts."""
        self._tokens_per_verify = _ema(self._tokens_per_verify, tokens_per_verify)

    def observe_step(self, batch_size: int, step_s: float, draft_round_s: float | None) -> None:
        """One target step of ``step_s``: a verification of drafts that took
        ``draft_round_s`` to make, or a plain step (``None``)."""
        costs = self._costs.setdefault(batch_bucket(batch_size), _StepCosts())
        if draft_round_s is None:
            costs.plain_s = _ema(costs.plain_s, step_s)
        else:
            costs.verify_s = _ema(costs.verify_s, step_s)
            costs.draft_round_s = _ema(costs.draft_round_s, draft_round_s)

    def predicted_speedup(self, batch_size: int) -> float | None:
        """Predicted tokens/s of drafting over plain decoding; None before
        drafting at this batch size was measured."""
        costs = self._costs.get(batch_bucket(batch_size))
        if costs is None or costs.verify_s is None or self._tokens_per_verify is None:
            return None
        plain_s = costs.plain_s if costs.plain_s is not None else costs.verify_s
        return self._tokens_per_verify * plain_s / (costs.draft_round_s + costs.verify_s)

    def should_draft(self, batch_size: int) -> bool:
        bucket = batch_bucket(batch_size)
        speedup = self.predicted_speedup(batch_size)
        drafting = self._drafting.get(bucket, True)
        if speedup is not None:
            if drafting and speedup < OFF_BELOW:
                drafting = False
                logger.info(
                    "self-skip guard: drafting off at batch size ~%d (predicted speedup %.2fx)",
                    bucket,
                    speedup,
                )
            elif not drafting and speedup > ON_ABOVE:
                drafting = True
                logger.info(
                    "self-skip guard: drafting on at batch size ~%d (predicted speedup %.2fx)",
                    bucket,
                    speedup,
                )
            self._drafting[bucket] = drafting
        self._steps += 1
        probe = self._steps % PROBE_INTERVAL == 0
        return drafting != probe

    def is_drafting(self, batch_size: int) -> bool:
        """The guard's verdict for this batch size, probes aside."""
        return self._drafting.get(batch_bucket(batch_size), True)
