"""Profitability guard: draft only where drafting is predicted to beat plain decoding.

Speculation loses when drafts are rejected too often or when drafting and
verifying cost too much (large batches make the target step compute bound,
so verifying k+1 tokens per request is no longer almost free). Each step the
proposer first finds the prompt-lookup drafts (nearly free) and then asks
the guard which of three choices to run:

* ``plain``: no drafts at all;
* ``lookup``: lookup drafts only (those worth sending, see below);
* ``self-skip``: those lookup drafts, and self-skip drafts for the requests
  without one.

The guard predicts each choice's decoding rate (Leviathan et al., DESIGN.md
section 5) and runs the best; a richer choice has to beat the cheaper ones by
``MIN_GAIN``. The rate is the batch's tokens per second, each request's
tokens weighted by how far it is ahead of the requests that started with it.
Requests first seen within ``COHORT_STEPS`` steps of each other started
together (a static batch: an offline ``generate`` call, or a benchmark's
batch), and such a batch ends with its slowest request: a token for a
request already ahead of the slowest in its cohort shortens nothing until
the others catch up, though it costs the whole batch the step's verify time.
So a request's tokens count ``exp(-lead / LEAD_SCALE)``, its lead being the
draft tokens it has accepted beyond the fewest any of its cohort has. A
request alone in its cohort (a server's requests arrive one by one) leads no
one, and every token counts the same: a server's slot freed sooner serves
the next request sooner. Replaying the dev prompts' greedy outputs
(``benchmarks/guard_replay.py``) against the earlier weight (each request's
steps per token squared), with the step costs fitted in two batch-4 runs
(5.6 ms and none per request), the eight MT-bench categories at batch 4 went
from 0.975x to 0.989x and from 0.947x to 0.966x of plain, the five big
categories at batch 4 from 1.032x to 1.044x and from 1.011x to 1.026x, and at
batch 8 from 1.014x to 1.024x; translation at batch 8, where most requests
copy but not evenly, from 1.163x to 1.134x (vLLM's ``ngram`` 1.185x).
Judged one step at a time instead (the running requests' mean time per
token in that step, as this guard once did), a request that copies its
prompt among requests that do not is never drafted for, and a batch-8
translation bench ran 0.94x of plain where ``ngram`` ran 1.09x. At batch
size 1 every one of these rates is the same.

A step that looks up sends the lookup drafts that raise its rate, not all
of them: in order of weighted tokens gained per draft token verified, each
draft while it gains more than the step's rate (the best set is such a
prefix). A request ahead of its cohort thus drafts only as often as keeps
it level with the others, a request whose drafts are rarely accepted not
at all, and the drafts held back are scored against the tokens generated
instead. In the replay at batch 4 with the costs measured in stop 34 this
took the eight MT-bench categories from 0.981x to 0.985x of plain (math
0.960x to 0.973x) and the five big ones from 1.050x to 1.062x
(summarization 0.986x to 1.016x); translation, where outputs end at
different lengths and the request ahead may be the one the batch ends
with, went from 1.212x to 1.189x (and at batch 8 from 1.142x to 1.120x).

The unit is the draft token, not the whole draft: each request's chance
that its lookup draft is accepted up to each token is measured, and a draft
goes out cut to the tokens that pay. Where a draft token costs a large share
of a step (batch 4 and up on a CPU), a draft accepted half the time at its
first token and seldom at its last pays for its first tokens only. In the
replay (costs fitted in batch-4 and batch-8 runs) the eight MT-bench
categories at batch 4 went from 0.977-0.982x to 0.990x of plain, the five
big categories at batch 8 from 1.026x to 1.039-1.045x (translation
1.11-1.13x either way), and at batch 1 from 1.24x to 1.245x.

The rate's two halves are learned apart because they vary apart:

* **Costs** depend on the batch, not on the text. Per batch-size bucket,
  least squares over every step (whatever it ran) explain the whole step
  cycle, from one proposal to the next, in two parts: the self-skip
  drafting, which the proposer times, by its draft forwards; the rest
  (lookup, the target's verification and vLLM's own work) by the requests
  and the draft tokens verified.
* **Gains** depend on the text: the tokens accepted per lookup draft and per
  self-skip draft, each measured on its own source's drafts only, so lookup's
  acceptance cannot flatter a losing skip set, and each measured on the steps
  that would use it (self-skip drafts only run where lookup found nothing).
  They are kept per request too, with the tokens per draft (a self-skip
  draft stops where the skipped model is unsure, so the requests whose
  drafts are accepted draft longer and pay for more draft forwards), drawn
  towards the source's means while a request has few drafts: one request
  copies its prompt and takes whole lookup drafts while the next rewrites it
  and takes none; a batch whose drafts half its requests reject gains less
  than the mean says once the other half is ahead, and a request left alone
  at the end of a batch gains what its own drafts do.

Comparing measured rates of whole modes instead mixes the two: a mode's rate
would hinge on how repetitive the text was while it ran.

The model errs, and not evenly: the guard drafts where its running
acceptance is high, just after a lucky stretch, and a linear cost fit misses
what it cannot express. Where a mode barely beats plain in the model, such an
error turns the gain into a loss. So each mode's steps are also scored against
what the guard expected when it chose them, and the mode's later predictions
are scaled by how its own steps came out (accepted tokens and seconds, each as
realized over expected, over recent steps of that mode in the bucket).

A step now and then takes many times its cost (a garbage collection,
another process on the cores, a one-time setup), and in a least-squares fit
one such step outweighs hundreds: one lookup step of 1 s among 80 ms ones
kept a bucket from ever looking up again. So a bucket does not measure its
first step of each kind (it runs the kind again), and a later step counts
at most ``STALL_FACTOR`` times what the fit predicted for it. Nor is a step
predicted faster than the fastest seen: in one run a line through a few
points predicted plain steps to take no time, and the guard drafted on
every step at 0.85x of plain.

A bucket predicts with its own costs the kinds of step it has run (with the
cheaper kinds), and the others with the nearest bucket that has run every kind
(scaled to its own plain steps; no fit predicts beyond the batch sizes it has
seen); a bucket with nothing to go by runs each kind, richest first. One
step in ``EXPLORE_INTERVAL`` then runs a kind seen fewer than
``MIN_OBSERVATIONS`` times, unless that kind is predicted far below the best:
where a draft forward costs nearly a whole step (large models on CPUs) a
self-skip step can cost five plain ones, and a new bucket is usually a batch
grown or shrunk a little, where speculation that lost badly still loses. Now
and then a step that would not run the richest mode does (a probe), so costs
and acceptance stay current and the guard notices when speculation pays again,
and where the richest mode runs, a plain step does, so the fixed cost of a
step stays measured; probes are spaced so that they cost at most
``PROBE_COST`` of the time, and a drafting mode's probes are rarer by how
far its predicted rate falls short of the best: one predicted at 2/3 of the
best pays again only after a surprise that large, and its probes cost most
(self-skip at batch 4 on two CPU cores, a draft forward nearly a whole step:
the replay of the MT-bench prompts at batch 4 went from 0.975x to 0.982x
of plain, with 3 self-skip probes where there were 12).
"""

import logging
import math
from dataclasses import dataclass, field, replace
from enum import Enum

import numpy as np

logger = logging.getLogger(__name__)

# A richer choice runs only when its predicted rate beats the best cheaper
# one by this factor: a margin for the model's error.
MIN_GAIN = 1.03
# Requests first seen within COHORT_STEPS steps of each other started
# together; a request's tokens count exp(-lead / LEAD_SCALE), its lead being
# the draft tokens it has accepted beyond the fewest any of them has.
COHORT_STEPS = 4
LEAD_SCALE = 3.0
# Once measured, a step that would not run the richest mode runs it now and
# then (one that would runs plain): at most one step in PROBE_INTERVAL, and
# rarer when a probe is predicted to cost more than PROBE_COST of the steps
# between two probes, and a drafting mode's rarer by the best mode's predicted
# rate over its own.
PROBE_INTERVAL = 32
PROBE_COST = 0.01
# Steps of each kind (no drafts, lookup drafts only, self-skip drafts) a
# bucket measures while that kind is predicted at least EXPLORE_WORTH of the
# best: one step in EXPLORE_INTERVAL runs a kind that still lacks them.
MIN_OBSERVATIONS = 3
EXPLORE_INTERVAL = 3
EXPLORE_WORTH = 0.8
# Each mode's calibration (realized over expected, per bucket) starts as if
# CALIBRATION_PRIOR steps had come out as expected, and forgets old steps at
# CALIBRATION_DECAY per step of that mode.
CALIBRATION_PRIOR = 4
CALIBRATION_DECAY = 1.0 / 64
# A measured step counts at most this many times its predicted seconds.
STALL_FACTOR = 3.0
# Each bucket logs its steps per mode and latest predictions this often.
LOG_INTERVAL = 1000
# A request's own acceptance starts as if it had REQUEST_PRIOR drafts
# accepted at its source's mean.
REQUEST_PRIOR = 2
# Weight of a new draft in the running acceptance means (once there are more
# than 1 / _ACCEPTANCE_WEIGHT drafts), and decay of old steps in the cost fit.
_ACCEPTANCE_WEIGHT = 0.05
_COST_DECAY = 1.0 / 512
_REQUEST_RIDGE = 1e-6


class Mode(Enum):
    """What a step drafts with, from cheapest to richest."""

    PLAIN = "plain"
    LOOKUP = "lookup"
    SELF_SKIP = "self-skip"

    # Members are singletons: hash them by identity. Enum's own hash runs in
    # Python, and the guard looks modes up ~50 times a step.
    __hash__ = object.__hash__

    @property
    def looks_up(self) -> bool:
        return self is not Mode.PLAIN

    @property
    def self_skips(self) -> bool:
        return self is Mode.SELF_SKIP


@dataclass(frozen=True)
class Decision:
    """What a step runs: its mode, and the requests whose lookup drafts it
    sends, with how many of each draft's tokens (its first ones)."""

    mode: Mode
    lookup: dict[str, int]


def _token_worth(batch_size: int, weights: dict[str, float]) -> float:
    """What a draft token of a request of weight 1 adds to the batch's tokens:
    every request's token counts its entry in ``weights`` (requests without
    one, which cannot draft, the mean), scaled so that a plain step makes
    ``batch_size``."""
    mean = sum(weights.values()) / len(weights) if weights else 1.0
    return batch_size / (sum(weights.values()) + (batch_size - len(weights)) * mean)


def _batch_tokens(batch_size: int, weights: dict[str, float], accepted: dict[str, float]) -> float:
    """The batch's tokens in a step where each request in ``accepted`` gains
    that many draft tokens and every request makes one (``_token_worth``)."""
    worth = _token_worth(batch_size, weights)
    return batch_size + worth * sum(weights[r] * a for r, a in accepted.items())


def _worth_sending(
    step: "_Step", reached: dict[str, list[float]], per_draft_token: float, plain_seconds: float
) -> dict[str, int]:
    """The lookup draft tokens a step sends, given the chance that each
    request's draft is accepted up to each of its tokens: in order of weighted
    tokens gained, each draft token that raises the step's rate (every token
    costs the same, so the set with the best rate is such a prefix, and a
    request's later tokens, never likelier than its earlier ones, come after
    them). A request far ahead of its cohort gains the batch nothing, and
    its draft would slow every request's step; a draft's last tokens, less
    often reached, may not pay where its first ones do. At least the most
    promising token, so that a step that looks up (a probe, too) still
    measures what verifying a draft token costs."""
    worth = _token_worth(step.batch_size, step.weights)
    tokens = [
        (worth * step.weights[r] * (chances[j] if j < len(chances) else 0.0), r)
        for r, chances in reached.items()
        for j in range(step.lookup[r])
    ]
    tokens.sort(key=lambda token: token[0], reverse=True)  # stable: in draft order
    first_gain, first = tokens[0]
    rate_tokens = step.batch_size + first_gain
    seconds = plain_seconds + per_draft_token
    sent = {first: 1}
    for gain, request in tokens[1:]:
        if gain * seconds <= rate_tokens * per_draft_token:
            break
        sent[request] = sent.get(request, 0) + 1
        rate_tokens, seconds = rate_tokens + gain, seconds + per_draft_token
    return sent


def batch_bucket(batch_size: int) -> int:
    """Batch sizes grouped by powers of two: costs within a bucket are alike."""
    return 1 << max(batch_size - 1, 0).bit_length()


@dataclass(frozen=True)
class Cycle:
    """One step, from a proposal to the next, as the guard learns from it."""

    requests: int
    # Whole numbers in a step that ran; expected means in one predicted.
    draft_tokens: float  # verified, both sources
    draft_forwards: float  # self-skip draft forwards
    accepted: int  # draft tokens accepted, both sources
    seconds: float
    draft_seconds: float = 0.0  # of ``seconds``, in self-skip draft forwards

    @property
    def kind(self) -> Mode:
        """What the step actually ran (a lookup step that found nothing is plain)."""
        if self.draft_forwards:
            return Mode.SELF_SKIP
        return Mode.LOOKUP if self.draft_tokens else Mode.PLAIN


class _Line:
    """Exponentially weighted least squares of seconds on features (the
    first a constant), with no slope below zero and predicting no less than
    the fastest seen: a line through a few noisy points can say that a step
    gets cheaper for verifying more draft tokens (one bench's drain steps at
    batch 1 fitted -1.4 ms a draft token and predicted lookup at 3.5x plain),
    or dip below the fastest step, even below zero."""

    def __init__(self, ridge: list[float]) -> None:
        self._ridge = np.diag(ridge)
        self._gram = np.zeros((len(ridge), len(ridge)))
        self._moment = np.zeros(len(ridge))
        self._coef: tuple[float, ...] | None = None
        self._fastest = np.inf

    def add(self, x: tuple[float, ...], seconds: float) -> None:
        features = np.array(x)
        self._gram = (1 - _COST_DECAY) * self._gram + np.outer(features, features)
        self._moment = (1 - _COST_DECAY) * self._moment + features * seconds
        self._coef = None
        self._fastest = min(self._fastest, seconds)

    @property
    def coef(self) -> tuple[float, ...]:
        """Python floats: the guard predicts a dozen steps a step, and numpy's
        overhead on three-element arrays is most of what a prediction costs."""
        if self._coef is None:
            self._coef = tuple(map(float, self._solve()))
        return self._coef

    def _solve(self) -> np.ndarray:
        """Least squares with each negative slope held at zero in turn (an
        active set: at most one pass per feature)."""
        gram = self._gram + self._ridge
        coef = _least_squares(gram, self._moment)
        free = np.ones(len(coef), dtype=bool)
        while (coef[1:] < 0).any():  # the constant may be anything
            free[1:] &= coef[1:] >= 0
            index = np.flatnonzero(free)
            coef = np.zeros(len(coef))
            coef[index] = _least_squares(gram[np.ix_(index, index)], self._moment[index])
        return coef

    def seconds(self, x: tuple[float, ...]) -> float:
        return max(sum(c * v for c, v in zip(self.coef, x, strict=True)), self._fastest)


def _least_squares(gram: np.ndarray, moment: np.ndarray) -> np.ndarray:
    """The least-norm solution of the normal equations ``gram @ coef =
    moment``: where a feature never varied (every self-skip step so far ran
    the same number of draft forwards) they have a line of solutions, and
    ``np.linalg.solve`` would pick one by rounding noise."""
    return np.linalg.lstsq(gram, moment, rcond=None)[0]


class _CostFit:
    """A cycle's seconds in two parts, fitted apart: the self-skip draft
    forwards, which the proposer times, by their number; and the rest (the
    target's verification, lookup, vLLM's own work) by the requests and the
    draft tokens verified. One line through all of it could not tell a
    self-skip step's draft tokens from its draft forwards, which grow
    together: one run priced a draft token at 73 ms and a draft forward at
    less than nothing, predicted lookup at 0.2x of plain, and hardly looked
    up where vLLM's ``ngram`` ran 1.12x."""

    def __init__(self) -> None:
        # A touch of ridge on the per-request cost: where a bucket saw one
        # batch size only, the intercept takes the whole fixed cost.
        self._verify = _Line([0.0, _REQUEST_RIDGE, 0.0])
        self._draft = _Line([0.0, 0.0])
        self._requests: tuple[int, int] | None = None  # fewest and most seen

    def add(self, cycle: Cycle) -> None:
        self._verify.add(
            self._verify_features(cycle.requests, cycle.draft_tokens),
            cycle.seconds - cycle.draft_seconds,
        )
        if cycle.draft_forwards:
            self._draft.add(self._draft_features(cycle), cycle.draft_seconds)
        low, high = self._requests or (cycle.requests, cycle.requests)
        self._requests = (min(low, cycle.requests), max(high, cycle.requests))

    def seconds(self, cycle: Cycle) -> float:
        """The cycle's predicted seconds, for the nearest batch size the fit
        has seen: a line through batches of 17-32 says little about one
        request, and where another bucket's costs stand in, extrapolating
        them can even predict a step to take no time."""
        verify, draft = self._parts(cycle)
        return verify + draft

    def capped(self, cycle: Cycle) -> Cycle:
        """``cycle`` with each part at most STALL_FACTOR times its prediction."""
        verify, draft = self._parts(cycle)
        drafting = min(cycle.draft_seconds, STALL_FACTOR * draft)
        rest = min(cycle.seconds - cycle.draft_seconds, STALL_FACTOR * verify)
        return replace(cycle, seconds=rest + drafting, draft_seconds=drafting)

    @property
    def per_draft_token(self) -> float:
        """Seconds a verified draft token adds to a step."""
        return self._verify.coef[2]

    def coefficients(self) -> dict[str, float]:
        names = ("base", "per_request", "per_draft_token", "per_self_skip", "per_draft_forward")
        return dict(zip(names, self._verify.coef + self._draft.coef, strict=True))

    def _parts(self, cycle: Cycle) -> tuple[float, float]:
        requests = cycle.requests
        if self._requests is not None:
            low, high = self._requests
            requests = min(max(requests, low), high)
        verify = self._verify.seconds(self._verify_features(requests, cycle.draft_tokens))
        draft = self._draft.seconds(self._draft_features(cycle)) if cycle.draft_forwards else 0.0
        return verify, draft

    @staticmethod
    def _verify_features(requests: float, draft_tokens: float) -> tuple[float, ...]:
        return (1.0, requests, draft_tokens)

    @staticmethod
    def _draft_features(cycle: Cycle) -> tuple[float, ...]:
        return (1.0, cycle.draft_forwards)


@dataclass
class _Drafts:
    """Running means over verified drafts: tokens drafted per draft, and for
    each token the share of drafts accepted up to it (the mean tokens accepted
    per draft is their sum)."""

    drafts: int = 0
    length: float = 0.0
    reached: list[float] = field(default_factory=list)

    @property
    def accepted(self) -> float:
        return sum(self.reached)

    def accepted_within(self, tokens: int) -> float:
        """Tokens accepted per draft cut to its first ``tokens``."""
        return sum(self.reached[:tokens])

    def add(self, tokens: int, accepted: int) -> None:
        self.drafts += 1
        weight = max(1.0 / self.drafts, _ACCEPTANCE_WEIGHT)
        self.length += weight * (tokens - self.length)
        # A longer draft than any before: earlier drafts reached none of its new tokens.
        self.reached += [0.0] * (tokens - len(self.reached))
        for j, chance in enumerate(self.reached):
            self.reached[j] = chance + weight * ((accepted > j) - chance)

    def drawn_to(self, prior: "_Drafts") -> "_Drafts":
        """These means drawn towards ``prior``'s by REQUEST_PRIOR drafts."""
        weight = min(self.drafts, 1.0 / _ACCEPTANCE_WEIGHT)

        def draw(own: float, theirs: float) -> float:
            return (weight * own + REQUEST_PRIOR * theirs) / (weight + REQUEST_PRIOR)

        size = max(len(self.reached), len(prior.reached))
        own, theirs = (r + [0.0] * (size - len(r)) for r in (self.reached, prior.reached))
        return _Drafts(
            self.drafts,
            draw(self.length, prior.length),
            [draw(a, b) for a, b in zip(own, theirs, strict=True)],
        )


@dataclass
class _Gain:
    """One source's verified drafts, overall and per request."""

    overall: _Drafts = field(default_factory=_Drafts)
    requests: dict[str, _Drafts] = field(default_factory=dict)

    def add(self, request: str, tokens: int, accepted: int) -> None:
        self.overall.add(tokens, accepted)
        self.requests.setdefault(request, _Drafts()).add(tokens, accepted)

    def of(self, request: str) -> _Drafts:
        """What ``request``'s next draft is expected to be: its tokens, and
        how many of them are accepted. Self-skip drafts stop where the
        skipped model is unsure, so a request whose drafts are accepted
        also drafts longer, and pays for more draft forwards."""
        own = self.requests.get(request)
        return self.overall if own is None else own.drawn_to(self.overall)

    def keep_only(self, running: set[str]) -> None:
        """Forget the requests that are no longer running."""
        if len(self.requests) > len(running):
            self.requests = {r: g for r, g in self.requests.items() if r in running}


@dataclass(frozen=True)
class _Expected:
    """A step's expected outcome in one mode: what the guard compares
    (calibrated), and what its model alone predicted (to calibrate it)."""

    tokens: float  # the batch's tokens, weighted by how far ahead their requests are
    seconds: float
    model_accepted: float  # draft tokens accepted, over the batch
    model_seconds: float | None  # None where another bucket's costs predicted it
    lookup: dict[str, int] = field(default_factory=dict)  # lookup draft tokens sent, by request

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    def borrowed(self, scale: float) -> "_Expected":
        """This outcome of another bucket's, its seconds scaled to this one."""
        return replace(self, seconds=self.seconds * scale, model_seconds=None)


@dataclass
class _Ratio:
    """Realized over expected, over recent steps (old ones decay by
    CALIBRATION_DECAY a step), drawn towards 1 by CALIBRATION_PRIOR steps."""

    steps: float = 0.0
    realized: float = 0.0
    expected: float = 0.0

    def add(self, realized: float, expected: float) -> None:
        keep = 1 - CALIBRATION_DECAY
        self.steps = keep * self.steps + 1
        self.realized = keep * self.realized + realized
        self.expected = keep * self.expected + expected

    @property
    def factor(self) -> float:
        if not self.expected:
            return 1.0
        ratio = self.realized / self.expected
        return (self.steps * ratio + CALIBRATION_PRIOR) / (self.steps + CALIBRATION_PRIOR)


@dataclass
class _Calibration:
    """How one mode's steps in one bucket came out against the model: the
    draft tokens they accepted and, where the bucket's own costs predicted
    them, the seconds they took."""

    accepted: _Ratio = field(default_factory=_Ratio)
    seconds: _Ratio = field(default_factory=_Ratio)

    def add(self, expected: _Expected, accepted: int, seconds: float) -> None:
        self.accepted.add(accepted, expected.model_accepted)
        if expected.model_seconds is not None:
            self.seconds.add(seconds, expected.model_seconds)


@dataclass
class _Progress:
    """How far a request got while the guard saw it."""

    first_step: int  # the guard's step when it was first seen
    first_length: int  # its tokens then
    steps: int = 0  # steps since

    def gained(self, length: int) -> int:
        """Draft tokens it has accepted since (tokens beyond one a step)."""
        return length - self.first_length - self.steps


@dataclass(frozen=True)
class _Step:
    """The step a mode is chosen for."""

    batch_size: int
    lookup: dict[str, int]  # request -> tokens of its lookup draft
    self_skip: list[str]  # requests that could draft with the skipped model
    weights: dict[str, float]  # drafting request -> what its tokens are worth


@dataclass(frozen=True)
class _Choice:
    """The mode a step ran in and what was expected of it."""

    bucket: int
    mode: Mode
    expected: _Expected


@dataclass
class _Bucket:
    """What the guard knows about one batch-size bucket."""

    costs: _CostFit = field(default_factory=_CostFit)
    seen: dict[Mode, int] = field(default_factory=dict)  # cycles of each kind measured
    unmeasured: set[Mode] = field(default_factory=lambda: set(Mode))  # kinds not run yet
    forwards: float = 0.0  # running mean of draft forwards per self-skip cycle
    steps: int = 0
    since_probe: int = 0  # steps that could have probed since the last probe
    chosen: dict[Mode, int] = field(default_factory=dict)  # steps run in each mode
    predicted: dict[Mode, float] = field(default_factory=dict)  # last step's speedups
    calibration: dict[Mode, _Calibration] = field(default_factory=dict)


class ProfitabilityGuard:
    """Chooses per step which drafters run."""

    def __init__(self, lookup: bool) -> None:
        self.modes: tuple[Mode, ...] = (
            (Mode.PLAIN, Mode.LOOKUP, Mode.SELF_SKIP) if lookup else (Mode.PLAIN, Mode.SELF_SKIP)
        )
        self._buckets: dict[int, _Bucket] = {}
        self._gains = {Mode.LOOKUP: _Gain(), Mode.SELF_SKIP: _Gain()}
        self._progress: dict[str, _Progress] = {}
        self._steps = 0  # steps chosen for, over every bucket
        self._last: _Choice | None = None  # the latest step's, until observed

    def choose(
        self,
        batch_size: int,
        lookup: dict[str, int],
        self_skip: list[str],
        lengths: dict[str, int],
    ) -> Decision:
        """What a step with ``batch_size`` running requests runs, where
        ``lookup`` maps the requests with a lookup draft to its length,
        ``self_skip`` lists those that could draft with the skipped model
        (requests in neither cannot draft this step), and ``lengths`` maps
        each of them to its tokens so far."""
        bucket = self._bucket(batch_size)
        bucket.steps += 1
        drafting = set(lookup).union(self_skip)
        for gain in self._gains.values():
            gain.keep_only(drafting)
        weights = self._weights({r: lengths[r] for r in drafting})
        possible = [Mode.PLAIN]
        if Mode.LOOKUP in self.modes and lookup:
            possible.append(Mode.LOOKUP)
        if self_skip:
            possible.append(Mode.SELF_SKIP)
        expected = self._expected(bucket, _Step(batch_size, lookup, self_skip, weights), possible)
        if expected is None:
            mode = self._least_seen(bucket, self._untried(bucket, possible))
            sent = dict(lookup) if mode.looks_up else {}
            self._last = None
        else:
            mode = self._choose(bucket, possible, expected)
            sent = expected[mode].lookup
            self._last = _Choice(batch_bucket(batch_size), mode, expected[mode])
        bucket.chosen[mode] = bucket.chosen.get(mode, 0) + 1
        if bucket.steps % LOG_INTERVAL == 0:
            self._log(batch_size, bucket)
        return Decision(mode, sent)

    def _log(self, batch_size: int, bucket: _Bucket) -> None:
        steps = ", ".join(f"{m.value} {bucket.chosen.get(m, 0)}" for m in self.modes)
        predicted = ", ".join(f"{m.value} {s:.2f}x" for m, s in bucket.predicted.items())
        logger.info(
            "self-skip guard, batch size ~%d: steps so far %s; last step predicted %s",
            batch_bucket(batch_size),
            steps,
            predicted or "nothing yet",
        )

    def _weights(self, lengths: dict[str, int]) -> dict[str, float]:
        """What a token is worth to each of these requests, given its tokens
        so far: less the further it is ahead of its cohort; counts the step."""
        self._steps += 1
        self._progress = {
            r: self._progress.get(r) or _Progress(self._steps, n) for r, n in lengths.items()
        }
        gained = {r: p.gained(lengths[r]) for r, p in self._progress.items()}
        fewest_by_step: dict[int, int] = {}  # first step -> fewest gained among those
        for request, progress in self._progress.items():
            first = progress.first_step
            fewest_by_step[first] = min(fewest_by_step.get(first, gained[request]), gained[request])
        # The fewest gained within COHORT_STEPS of each first step (a batch's
        # requests share a handful of first steps).
        cohort_fewest = {
            first: min(
                fewest_by_step.get(step, math.inf)
                for step in range(first - COHORT_STEPS, first + COHORT_STEPS + 1)
            )
            for first in fewest_by_step
        }
        weights = {}
        for request, progress in self._progress.items():
            fewest = cohort_fewest[progress.first_step]
            weights[request] = math.exp(-(gained[request] - fewest) / LEAD_SCALE)
            progress.steps += 1
        return weights

    def _choose(
        self, bucket: _Bucket, possible: list[Mode], expected: dict[Mode, _Expected]
    ) -> Mode:
        lacking = self._lacking(bucket, possible)
        rates = {mode: outcome.rate for mode, outcome in expected.items()}
        bucket.predicted = {mode: rate / rates[Mode.PLAIN] for mode, rate in rates.items()}
        worth = [m for m in lacking if rates[m] >= EXPLORE_WORTH * max(rates.values())]
        if worth and bucket.steps % EXPLORE_INTERVAL == 0:
            return self._least_seen(bucket, worth)
        best = Mode.PLAIN
        for mode in possible:  # cheapest first
            if rates[mode] > MIN_GAIN * rates[best]:
                best = mode
        # A probe runs the richest mode, or plain when the richest is the
        # best: a bucket that always drafts would otherwise keep the plain
        # step cost it measured first, and the fit cannot tell the cost of
        # drafting at all from the fixed cost without fresh plain steps.
        probe = possible[-1] if best is not possible[-1] else Mode.PLAIN
        if probe in worth or probe is best:
            return best
        bucket.since_probe += 1
        # The time a probe loses against the best mode, in steps of the best mode.
        loss = (expected[probe].seconds - expected[probe].tokens / rates[best]) / expected[
            best
        ].seconds
        spacing = loss / PROBE_COST
        if probe is not Mode.PLAIN:
            spacing *= rates[best] / rates[probe]
        if bucket.since_probe < max(PROBE_INTERVAL, spacing):
            return best
        bucket.since_probe = 0
        return probe

    @staticmethod
    def _least_seen(bucket: _Bucket, kinds: list[Mode]) -> Mode:
        """The kind of step ``bucket`` has seen least (richest on ties)."""
        return min(reversed(kinds), key=lambda m: bucket.seen.get(m, 0))

    def _expected(
        self, bucket: _Bucket, step: _Step, possible: list[Mode]
    ) -> dict[Mode, _Expected] | None:
        """The expected outcome of a step in each possible mode: with
        the bucket's own costs for each mode it has run (with the cheaper
        ones), else with the nearest bucket's that has run them all, scaled
        by the ratio of the two buckets' plain steps. None while there is
        no such bucket."""
        own = [m for m in possible if not self._untried(bucket, possible[: possible.index(m) + 1])]
        expected = self._predict(bucket, bucket, own, step) if own else {}
        missing = [m for m in possible if m not in own]
        if not missing:
            return expected
        nearest = self._nearest_measured(step.batch_size, possible)
        if nearest is None:
            return None
        theirs = self._predict(bucket, nearest, possible, step)
        scale = expected[Mode.PLAIN].seconds / theirs[Mode.PLAIN].seconds if own else 1.0
        return expected | {m: theirs[m].borrowed(scale) for m in missing}

    def _predict(
        self, bucket: _Bucket, costs: _Bucket, modes: list[Mode], step: _Step
    ) -> dict[Mode, _Expected]:
        """The expected outcome of ``step`` of ``bucket`` in each of
        ``modes``, with ``costs``' fit and the calibration of each."""
        sent, lookup = {}, {}
        if step.lookup:
            gains = {r: self._gains[Mode.LOOKUP].of(r) for r in step.lookup}
            factor = bucket.calibration.get(Mode.LOOKUP, _Calibration()).accepted.factor
            sent = _worth_sending(
                step,
                {r: [c * factor for c in g.reached] for r, g in gains.items()},
                costs.costs.per_draft_token,
                costs.costs.seconds(Cycle(step.batch_size, 0, 0, 0, 0.0)),
            )
            lookup = {r: gains[r].accepted_within(n) for r, n in sent.items()}
        looked_up = sum(sent.values())
        self_skip = {r: self._gains[Mode.SELF_SKIP].of(r) for r in step.self_skip}
        # A batch drafts until its longest draft stops; the bucket's mean
        # forwards per cycle says how far beyond the mean that goes.
        forwards = max([1.0, costs.forwards] + [d.length for d in self_skip.values()])
        steps = {  # the drafting requests' accepted tokens, and the step's cycle
            Mode.PLAIN: ({}, Cycle(step.batch_size, 0, 0, 0, 0.0)),
            Mode.LOOKUP: (lookup, Cycle(step.batch_size, looked_up, 0, 0, 0.0)),
            Mode.SELF_SKIP: (
                lookup | {r: d.accepted for r, d in self_skip.items()},
                Cycle(
                    step.batch_size,
                    looked_up + sum(d.length for d in self_skip.values()),
                    forwards,
                    0,
                    0.0,
                ),
            ),
        }
        expected = {}
        for mode in modes:
            accepted, cycle = steps[mode]
            factor = bucket.calibration.get(mode, _Calibration()).accepted.factor
            seconds = costs.costs.seconds(cycle)
            calibrated = {r: a * factor for r, a in accepted.items()}
            expected[mode] = _Expected(
                tokens=_batch_tokens(step.batch_size, step.weights, calibrated),
                seconds=seconds * costs.calibration.get(mode, _Calibration()).seconds.factor,
                model_accepted=sum(accepted.values()),
                model_seconds=seconds,
                lookup=sent if mode.looks_up else {},
            )
        return expected

    def observe(self, cycle: Cycle) -> None:
        """Learn the costs from a step that decoded the same requests as the
        step before (no prefill mixed in, nobody joined or left), and, where
        it is the step last chosen, how it came out against its prediction."""
        last, self._last = self._last, None
        bucket = self._bucket(cycle.requests)
        kind = cycle.kind
        if kind in bucket.unmeasured:  # the first step of a kind may pay a one-time cost
            bucket.unmeasured.remove(kind)
            return
        if bucket.seen.get(kind):
            cycle = bucket.costs.capped(cycle)
        bucket.costs.add(cycle)
        bucket.seen[kind] = bucket.seen.get(kind, 0) + 1
        if last is not None and last.mode is kind and last.bucket == batch_bucket(cycle.requests):
            calibration = bucket.calibration.setdefault(kind, _Calibration())
            calibration.add(last.expected, cycle.accepted, cycle.seconds)
        if kind is Mode.SELF_SKIP:
            weight = max(1.0 / bucket.seen[kind], _ACCEPTANCE_WEIGHT)
            bucket.forwards += weight * (cycle.draft_forwards - bucket.forwards)

    def observe_drafts(self, source: Mode, outcomes: dict[str, tuple[int, int]]) -> None:
        """Drafts of ``source`` were verified (or, held back, compared with
        what the model generated): ``outcomes`` maps each request that
        drafted to its draft's tokens and how many were accepted."""
        gain = self._gains[source]
        for request, (tokens, accepted) in outcomes.items():
            gain.add(request, tokens, accepted)

    def status(self) -> dict[str, dict]:
        """Per batch-size bucket: the steps run in each mode, the last step's
        predicted speedup of each mode, each mode's calibration (accepted
        tokens and seconds, realized over the model's), and the fitted costs
        (seconds; None until every mode has been measured, as the guard uses them
        from then on); per draft source: the measured gains (of the drafts
        verified and, for lookup, also of those held back and scored against
        the tokens generated instead)."""
        return {
            "batch_sizes": {
                size: {
                    "steps": {m.value: n for m, n in bucket.chosen.items()},
                    "predicted_speedup": {m.value: s for m, s in bucket.predicted.items()},
                    "calibration": {
                        m.value: {"accepted": c.accepted.factor, "seconds": c.seconds.factor}
                        for m, c in bucket.calibration.items()
                    },
                    "costs": (
                        None if self._untried(bucket, self.modes) else bucket.costs.coefficients()
                    ),
                }
                for size, bucket in sorted(self._buckets.items())
            },
            "drafts": {
                source.value: {
                    "measured": gain.overall.drafts,
                    "accepted_per_draft": gain.overall.accepted,
                    "tokens_per_draft": gain.overall.length,
                }
                for source, gain in self._gains.items()
            },
        }

    def _bucket(self, batch_size: int) -> _Bucket:
        size = batch_bucket(batch_size)
        bucket = self._buckets.get(size)
        if bucket is None:  # not setdefault: a new _Bucket costs ~20 us
            bucket = self._buckets[size] = _Bucket()
        return bucket

    @staticmethod
    def _lacking(
        bucket: _Bucket, kinds: list[Mode] | tuple[Mode, ...], times: int = MIN_OBSERVATIONS
    ) -> list[Mode]:
        """``kinds`` of step ``bucket`` has seen fewer than ``times`` times."""
        return [m for m in kinds if bucket.seen.get(m, 0) < times]

    @classmethod
    def _untried(cls, bucket: _Bucket, kinds: list[Mode] | tuple[Mode, ...]) -> list[Mode]:
        """``kinds`` of step ``bucket`` has never seen."""
        return cls._lacking(bucket, kinds, times=1)

    def _nearest_measured(self, batch_size: int, kinds: list[Mode]) -> _Bucket | None:
        """The bucket closest to ``batch_size`` (larger on ties) that has
        run every one of ``kinds``."""
        measured = [s for s, b in self._buckets.items() if not self._untried(b, kinds)]
        if not measured:
            return None
        target = batch_bucket(batch_size).bit_length()
        nearest = min(measured, key=lambda size: (abs(size.bit_length() - target), -size))
        return self._buckets[nearest]
