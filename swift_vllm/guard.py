"""Profitability guard: speculate only while it measurably beats plain decoding.

Speculation loses when drafts are rejected too often or when drafting and
verifying cost too much (large batches make the target step compute bound,
so verifying k+1 tokens per request is no longer almost free). Rather than
predict that from a cost model, the guard measures it. Per batch-size bucket
it keeps the decoding rate (tokens per request per second of the whole
step: lookup, drafting, verification and vLLM's own overheads) of each mode
the method can run:

* ``plain``: no drafts at all;
* ``lookup``: prompt-lookup drafts only (when lookup is on);
* ``self-skip``: self-skip drafts too, for the requests without a lookup draft.

The first batch size it sees, it measures every mode in turn. A batch size
it has not measured yet runs what the nearest measured one runs (batches
shrink through small sizes as requests finish, too briefly to measure
everything there), measuring the other modes on every
``EXPLORE_INTERVAL``-th step. Once measured, it runs the fastest mode,
starting from plain decoding and switching only when another one is faster by
``SWITCH_MARGIN`` (hysteresis, so it does not flap), and runs each other
mode once every ``PROBE_INTERVAL`` steps so that their rates stay current:
it notices when speculation pays again. Self-skip drafting is kept only
when it beats lookup alone, so lookup's acceptance cannot flatter it.
"""

import logging
from dataclasses import dataclass, field
from enum import Enum

logger = logging.getLogger(__name__)

# A mode takes over only when its rate beats the current one's by this factor.
SWITCH_MARGIN = 1.03
# While decided, one step in this many runs another mode (in turn).
PROBE_INTERVAL = 32
# Measurements of every mode at a batch size before the first decision.
MIN_OBSERVATIONS = 3
# Until then, one step in this many measures a mode that still lacks them;
# the others run what the nearest decided batch size runs.
EXPLORE_INTERVAL = 3
# Weight of a new measurement in the running mean rates (once there are
# more than 1 / _EMA_WEIGHT of them).
_EMA_WEIGHT = 0.1


class Mode(Enum):
    """What a step drafts with, from cheapest to richest."""

    PLAIN = "plain"
    LOOKUP = "lookup"
    SELF_SKIP = "self-skip"

    @property
    def looks_up(self) -> bool:
        return self is not Mode.PLAIN

    @property
    def self_skips(self) -> bool:
        return self is Mode.SELF_SKIP


def batch_bucket(batch_size: int) -> int:
    """Batch sizes grouped by powers of two: costs within a bucket are alike."""
    return 1 << max(batch_size - 1, 0).bit_length()


@dataclass
class _Bucket:
    """Measured rates and the decision for one batch-size bucket."""

    current: Mode
    rates: dict[Mode, float] = field(default_factory=dict)
    observations: dict[Mode, int] = field(default_factory=dict)
    steps: int = 0
    probes: int = 0
    chosen: dict[Mode, int] = field(default_factory=dict)  # steps run in each mode


class ProfitabilityGuard:
    """Chooses per step which drafters run at the current batch size."""

    def __init__(self, lookup: bool) -> None:
        richest = Mode.SELF_SKIP
        self.modes: tuple[Mode, ...] = (
            (Mode.PLAIN, Mode.LOOKUP, richest) if lookup else (Mode.PLAIN, richest)
        )
        self._buckets: dict[int, _Bucket] = {}

    def choose(self, batch_size: int) -> Mode:
        """The mode for a step with ``batch_size`` running requests."""
        bucket = self._bucket(batch_size)
        mode = self._choose(batch_size, bucket)
        bucket.chosen[mode] = bucket.chosen.get(mode, 0) + 1
        return mode

    def _choose(self, batch_size: int, bucket: _Bucket) -> Mode:
        bucket.steps += 1
        unmeasured = self._unmeasured(bucket)
        if unmeasured:
            borrowed = self._nearest_decision(batch_size)
            if borrowed is not None and bucket.steps % EXPLORE_INTERVAL:
                return borrowed
            # Least measured first (richest on ties).
            return min(reversed(unmeasured), key=lambda m: bucket.observations.get(m, 0))
        self._decide(batch_size, bucket)
        if bucket.steps % PROBE_INTERVAL == 0:
            others = [m for m in self.modes if m is not bucket.current]
            bucket.probes += 1
            return others[bucket.probes % len(others)]
        return bucket.current

    def observe(self, batch_size: int, mode: Mode, tokens_per_request: float, step_s: float):
        """A step in ``mode`` gained ``tokens_per_request`` tokens per request
        in ``step_s`` seconds, everything included."""
        bucket = self._bucket(batch_size)
        count = bucket.observations.get(mode, 0) + 1
        bucket.observations[mode] = count
        # The plain mean of the first few, a running mean after that.
        weight = max(1.0 / count, _EMA_WEIGHT)
        old = bucket.rates.get(mode, 0.0)
        bucket.rates[mode] = old + weight * (tokens_per_request / step_s - old)

    def speedup(self, batch_size: int, mode: Mode | None = None) -> float | None:
        """Measured rate of ``mode`` (default: the current one) over plain
        decoding at this batch size; None until both were measured."""
        bucket = self._buckets.get(batch_bucket(batch_size))
        if bucket is None:
            return None
        rate = bucket.rates.get(mode or bucket.current)
        plain = bucket.rates.get(Mode.PLAIN)
        return None if rate is None or not plain else rate / plain

    def current(self, batch_size: int) -> Mode:
        """The guard's decision for this batch size, probes aside."""
        return self._bucket(batch_size).current

    def status(self) -> dict[int, dict]:
        """Per bucket: the mode in force (None while still measuring), each
        mode's measured speedup over plain, and the steps run in each mode."""
        return {
            size: {
                "mode": None if self._unmeasured(bucket) else bucket.current.value,
                "speedup": {m.value: self.speedup(size, m) for m in bucket.rates},
                "steps": {m.value: n for m, n in bucket.chosen.items()},
            }
            for size, bucket in sorted(self._buckets.items())
        }

    def _bucket(self, batch_size: int) -> _Bucket:
        # Drafting has to beat plain decoding by the margin to be chosen.
        return self._buckets.setdefault(batch_bucket(batch_size), _Bucket(Mode.PLAIN))

    def _unmeasured(self, bucket: _Bucket) -> list[Mode]:
        """Modes still short of ``MIN_OBSERVATIONS`` in ``bucket``."""
        return [m for m in self.modes if bucket.observations.get(m, 0) < MIN_OBSERVATIONS]

    def _nearest_decision(self, batch_size: int) -> Mode | None:
        """The mode of the decided bucket closest to ``batch_size`` (larger on
        ties); None while none is decided."""
        decided = [size for size, bucket in self._buckets.items() if not self._unmeasured(bucket)]
        if not decided:
            return None
        target = batch_bucket(batch_size).bit_length()
        nearest = min(decided, key=lambda size: (abs(size.bit_length() - target), -size))
        return self._buckets[nearest].current

    def _decide(self, batch_size: int, bucket: _Bucket) -> None:
        best = max(self.modes, key=lambda m: bucket.rates[m])
        if (
            best is bucket.current
            or bucket.rates[best] <= SWITCH_MARGIN * bucket.rates[bucket.current]
        ):
            return
        logger.info(
            "self-skip guard: batch size ~%d now decodes with %s "
            "(measured %.2fx plain; %s was %.2fx)",
            batch_bucket(batch_size),
            "no drafts" if best is Mode.PLAIN else f"{best.value} drafts",
            self.speedup(batch_size, best),
            bucket.current.value,
            self.speedup(batch_size, bucket.current),
        )
        bucket.current = best
