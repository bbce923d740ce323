import weakref
from dataclasses import dataclass, field

import pytest

from swift_vllm.guard import (
    COHORT_STEPS,
    EXPLORE_INTERVAL,
    EXPLORE_WORTH,
    MIN_OBSERVATIONS,
    PROBE_COST,
    PROBE_INTERVAL,
    Cycle,
    Mode,
    ProfitabilityGuard,
    _CostFit,
    batch_bucket,
)

LOOKUP_LEN, SELF_SKIP_LEN = 4, 2
PROMPT_LEN = 100
# Each guard's requests' tokens so far, over the steps of every _run on it.
_LENGTHS: "weakref.WeakKeyDictionary[ProfitabilityGuard, dict[str, int]]" = (
    weakref.WeakKeyDictionary()
)


@dataclass
class Machine:
    """Synthetic step costs (seconds) and per-draft acceptance (tokens)."""

    base: float = 0.030
    per_request: float = 0.0
    idle_requests: int = 0  # requests that add no cost yet (the cores are not busy)
    per_draft_token: float = 0.001
    per_draft_token_request: float = 0.0  # verifying grows compute bound with the batch
    per_forward: float = 0.010
    per_forward_request: float = 0.0
    lookup_accepted: int = 2
    self_skip_accepted: int = 2
    # Requests whose lookup drafts accept otherwise.
    lookup_accepted_by: dict[str, int] = field(default_factory=dict)
    # Requests whose self-skip drafts are (tokens, accepted) instead.
    self_skip_by: dict[str, tuple[int, int]] = field(default_factory=dict)
    # The next steps take this many times their cost (stalls), one each.
    stalls: list[float] = field(default_factory=list)

    def plain_step(self, batch_size: int) -> float:
        return self.base + self.per_request * max(batch_size - self.idle_requests, 0)

    def draft(self, source: Mode, request: str) -> tuple[int, int]:
        """Tokens of each draft of ``request``'s from ``source``, and how many are accepted."""
        if source is Mode.SELF_SKIP:
            return self.self_skip_by.get(request, (SELF_SKIP_LEN, self.self_skip_accepted))
        return LOOKUP_LEN, self.lookup_accepted_by.get(request, self.lookup_accepted)


def _run(
    guard: ProfitabilityGuard,
    machine: Machine,
    batch_size: int,
    lookup_rows: list[int],
    first: int = 0,
    score_held_back: bool = True,
) -> tuple[list[Mode], float]:
    """One step per entry of ``lookup_rows`` (how many requests, of r<first>,
    r<first + 1>, ..., have a lookup draft that step: the first ones); returns
    the modes chosen and the batch's speedup over plain in tokens per second.
    ``score_held_back``: lookup drafts a step did not send are scored as the
    proposer does (``UnsentDrafts``), as if verified."""
    requests = [f"r{i}" for i in range(first, first + batch_size)]
    lengths = _LENGTHS.setdefault(guard, {})
    chosen, tokens, seconds = [], 0.0, 0.0
    for found in lookup_rows:
        decision = guard.choose(
            batch_size,
            dict.fromkeys(requests[:found], LOOKUP_LEN),
            requests[found:],
            {r: lengths.setdefault(r, PROMPT_LEN) for r in requests},
        )
        mode = decision.mode
        chosen.append(mode)
        sent = {r: n for r, n in decision.lookup.items() if r in requests[:found]}
        whole = {r: machine.draft(Mode.LOOKUP, r) for r in requests[:found]}
        outcomes = {
            Mode.LOOKUP: {r: (n, min(whole[r][1], n)) for r, n in sent.items()},
            Mode.SELF_SKIP: {
                r: machine.draft(Mode.SELF_SKIP, r)
                for r in (requests[found:] if mode.self_skips else [])
            },
        }
        # A batch drafts with the skipped model until its longest draft stops.
        forwards = max((n for n, _ in outcomes[Mode.SELF_SKIP].values()), default=0)
        draft_tokens = sum(n for by_request in outcomes.values() for n, _ in by_request.values())
        drafting = (machine.per_forward + machine.per_forward_request * batch_size) * forwards
        step = (
            machine.plain_step(batch_size)
            + (machine.per_draft_token + machine.per_draft_token_request * batch_size)
            * draft_tokens
            + drafting
        )
        if machine.stalls:
            stall = machine.stalls.pop(0)
            step, drafting = step * stall, drafting * stall
        accepted = sum(a for by_request in outcomes.values() for _, a in by_request.values())
        guard.observe(Cycle(batch_size, draft_tokens, forwards, accepted, step, drafting))
        guard.observe_drafts(Mode.SELF_SKIP, outcomes[Mode.SELF_SKIP])
        # A draft sent whole is learned from its verification; one cut short
        # or held back, from what the model generated (as the proposer does).
        guard.observe_drafts(
            Mode.LOOKUP, {r: o for r, o in outcomes[Mode.LOOKUP].items() if sent[r] == whole[r][0]}
        )
        for r in requests:
            lengths[r] += 1 + sum(by_request.get(r, (0, 0))[1] for by_request in outcomes.values())
        if score_held_back:
            held_back = [r for r in requests[:found] if sent.get(r, 0) < whole[r][0]]
            guard.observe_drafts(Mode.LOOKUP, {r: whole[r] for r in held_back})
        tokens += batch_size + accepted
        seconds += step
    plain = batch_size / machine.plain_step(batch_size)
    return chosen, tokens / seconds / plain


def _record_lookup_sent(guard: ProfitabilityGuard) -> list[dict[str, int]]:
    """The lookup draft tokens each later step of ``guard`` sends, by request."""
    sent = []
    choose = guard.choose

    def recording_choose(*args):
        decision = choose(*args)
        sent.append(decision.lookup)
        return decision

    guard.choose = recording_choose
    return sent


def _mostly(chosen: list[Mode], mode: Mode) -> bool:
    """``mode`` on every step but probes (at most one in PROBE_INTERVAL)."""
    return chosen.count(mode) >= len(chosen) * (1 - 1.5 / PROBE_INTERVAL)


def test_buckets():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 4, 4, 8, 16, 32]


def test_runs_each_kind_twice_then_measures_what_could_win():
    guard = ProfitabilityGuard(lookup=True)
    first, _ = _run(guard, Machine(), 1, [0, 1] * 2)
    assert guard.status()["batch_sizes"][1]["costs"] is None  # plain not run yet
    later, _ = _run(guard, Machine(), 1, [0, 1] * 11)
    first += later
    # Richest first, each kind twice (its first step is not measured); then
    # the drafting kinds (both far ahead of plain) at least
    # MIN_OBSERVATIONS times, plain only twice.
    assert first[:6] == [Mode.SELF_SKIP, Mode.LOOKUP] * 2 + [Mode.PLAIN] * 2
    assert first.count(Mode.SELF_SKIP) >= MIN_OBSERVATIONS
    assert first.count(Mode.LOOKUP) >= MIN_OBSERVATIONS
    assert first.count(Mode.PLAIN) == 2
    costs = guard.status()["batch_sizes"][1]["costs"]
    assert costs["base"] == pytest.approx(0.030, rel=1e-6)
    assert costs["per_draft_token"] == pytest.approx(0.001, rel=1e-6)


def test_a_stalled_first_step_does_not_rule_a_kind_out():
    """A bucket's first lookup step took 1 s among 80 ms ones (a stall) and
    the fit priced a draft token at 0.24 s: that bucket never looked up
    again. Now the first step of a kind is not measured."""
    machine = Machine(stalls=[12.0])
    guard = ProfitabilityGuard(lookup=True)
    chosen, speedup = _run(guard, machine, 4, [4] * 300)
    assert _mostly(chosen[10:], Mode.LOOKUP)
    assert speedup > 1.5


def test_a_later_stall_counts_as_a_bounded_slow_step():
    """Past its first step a kind's stall counts STALL_FACTOR times its
    prediction: a stalled plain step among few does not make plain look
    many times slower and every drafting step look worth it."""
    machine = Machine(per_forward=0.060, self_skip_accepted=1)
    guard = ProfitabilityGuard(lookup=False)
    _run(guard, machine, 8, [0] * 20)
    machine.stalls = [50.0]
    chosen, speedup = _run(guard, machine, 8, [0] * 200)
    assert Mode.SELF_SKIP not in chosen[:100]
    costs = guard.status()["batch_sizes"][8]["costs"]
    assert costs["base"] < 0.030 * 1.2


def test_draft_tokens_never_make_a_step_cheaper():
    """Draft tokens that happened to come with faster steps gave the line a
    negative slope, which predicted long drafts to take no time (and, held
    up by the fastest step seen, lookup at 3.5x plain): the slope is held at
    zero and the steps' mean stands."""
    fit = _CostFit()
    for tokens, seconds in ((0, 0.08), (4, 0.10), (8, 0.02)):
        fit.add(Cycle(4, tokens, 0, 0, seconds))
    assert fit.coefficients()["per_draft_token"] == 0.0
    assert fit.seconds(Cycle(4, 16, 0, 0, 0.0)) == pytest.approx(0.2 / 3, rel=1e-3)


def test_self_skip_steps_price_their_draft_tokens_apart_from_their_forwards():
    """A self-skip step's draft tokens grow with its draft forwards; priced
    by one line, their costs could not be told apart, and a lookup step
    (tokens, no forwards) was predicted at several plain steps."""
    fit = _CostFit()
    for _ in range(3):
        fit.add(Cycle(4, 0, 0, 0, 0.070))
    for forwards in (1, 2, 3, 4, 1, 2, 3, 4):
        drafting = 0.010 + 0.050 * forwards
        verify = 0.070 + 0.002 * 4 * forwards
        fit.add(Cycle(4, 4 * forwards, forwards, 0, verify + drafting, drafting))
    assert fit.seconds(Cycle(4, 16, 0, 0, 0.0)) == pytest.approx(0.070 + 0.032)
    assert fit.seconds(Cycle(4, 8, 3, 0, 0.0)) == pytest.approx(0.070 + 0.016 + 0.160)


def test_a_kind_that_loses_badly_is_run_twice():
    """Where a draft forward costs nearly a whole step (a large model on
    CPUs), a self-skip step costs several plain ones: measured once (after
    the unmeasured first), it is not measured further, and a batch size
    met later does not run it at all."""
    machine = Machine(per_forward=0.060, self_skip_accepted=1)
    guard = ProfitabilityGuard(lookup=False)
    chosen, speedup = _run(guard, machine, 8, [0] * 200)
    assert chosen.count(Mode.SELF_SKIP) == 2
    assert speedup > 0.96  # two steps at five plain ones' cost, in 200
    chosen, _ = _run(guard, machine, 3, [0] * 50)
    assert Mode.SELF_SKIP not in chosen


def test_self_skip_where_it_pays_probing_rarely():
    guard = ProfitabilityGuard(lookup=True)
    chosen, speedup = _run(guard, Machine(), 1, [0] * 400)
    later = chosen[50:]
    assert _mostly(later, Mode.SELF_SKIP)
    assert Mode.PLAIN in later  # plain probed now and then: its cost stays measured
    # 3 tokens in 0.052 s against 1 in 0.030 s.
    assert speedup == pytest.approx(3 / 0.052 * 0.030, rel=0.03)
    status = guard.status()
    assert status["batch_sizes"][1]["predicted_speedup"]["self-skip"] == pytest.approx(
        3 / 0.052 * 0.030
    )
    assert status["drafts"]["self-skip"]["accepted_per_draft"] == pytest.approx(2.0)


def test_probes_of_a_mode_that_loses_badly_are_rarer():
    """Self-skip drafts all rejected, each draft forward costing a whole plain
    step: self-skip is predicted at a third of plain, and pays again only
    after a surprise that large. Its probes are rarer by that fraction: they
    cost about a third of PROBE_COST (0.3% of the time here, 1% before)."""
    machine = Machine(per_forward=0.030, self_skip_accepted=0)
    guard = ProfitabilityGuard(lookup=False)
    _run(guard, machine, 1, [0] * 100)
    chosen, speedup = _run(guard, machine, 1, [0] * 3000)
    assert guard.status()["batch_sizes"][1]["predicted_speedup"]["self-skip"] < 0.4
    assert Mode.SELF_SKIP in chosen  # still probed
    assert speedup > 1 - PROBE_COST / 2


def test_plain_at_large_batch_self_skip_at_batch_one():
    """Verification and drafting grow with the batch: at 32 they no longer pay."""
    machine = Machine(per_request=0.004, per_draft_token=0.004, per_forward_request=0.003)
    guard = ProfitabilityGuard(lookup=False)
    chosen, speedup = _run(guard, machine, 32, [0] * 320)
    later = chosen[40:]
    assert _mostly(later, Mode.PLAIN)
    assert Mode.SELF_SKIP in later  # still probed, rarely: a probe costs 3 steps here
    assert speedup > 0.97
    chosen, _ = _run(guard, machine, 1, [0] * 100)
    assert _mostly(chosen[-50:], Mode.SELF_SKIP)


def test_each_source_judged_on_the_steps_that_use_it():
    """Text that alternates between stretches that repeat the context (lookup
    drafts, well accepted) and stretches that do not, where self-skip drafts
    lose. Whole-mode rates would credit self-skip with lookup's stretches;
    the guard runs lookup where it finds drafts and nothing elsewhere."""
    machine = Machine(per_forward=0.025, self_skip_accepted=1)
    guard = ProfitabilityGuard(lookup=True)
    stretches = ([1] * 20 + [0] * 20) * 20
    chosen, speedup = _run(guard, machine, 1, stretches)
    later = list(zip(stretches, chosen, strict=True))[80:]
    novel = [mode for found, mode in later if not found]
    repeated = [mode for found, mode in later if found]
    assert _mostly(novel, Mode.PLAIN)
    assert _mostly(repeated, Mode.LOOKUP)
    # The best possible: lookup on half the steps (3 tokens in 0.034 s), plain elsewhere.
    best = (3 + 1) / (0.034 + 0.030) * 0.030
    assert speedup > 0.97 * best


def test_lookup_drafts_dropped_when_verifying_them_costs_too_much():
    machine = Machine(per_request=0.002, per_draft_token=0.008, lookup_accepted=1)
    guard = ProfitabilityGuard(lookup=True)
    chosen, _ = _run(guard, machine, 8, [8] * 200)
    assert chosen[-100:].count(Mode.PLAIN) >= 100 * (1 - 1.5 / PROBE_INTERVAL)


def _time_per_token(guard: ProfitabilityGuard, speedup: float) -> list[float]:
    """Each request's time per token over a fresh guard's one ``_run`` at
    batch size 4, in plain steps."""
    tokens = [_LENGTHS[guard][f"r{i}"] - PROMPT_LEN for i in range(4)]
    steps = sum(tokens) / (speedup * 4)  # the run's seconds, in plain steps
    return [steps / n for n in tokens]


def test_lookup_for_one_request_of_a_static_batch_stops_once_it_leads():
    """Batch 4, started together (an offline ``generate`` call), where one
    request has a lookup draft every step, which gains it 2 tokens in a step
    25% slower. Drafting for it every step (1.2x the batch's tokens per
    second) would slow the other three by 25%, and the batch ends with them.
    It is drafted for until it leads them by a few tokens, then hardly: they
    slow by less than 3%. Where every request has a draft, lookup."""
    machine = Machine(base=0.064, per_draft_token=0.004, lookup_accepted=2, self_skip_accepted=0)
    guard = ProfitabilityGuard(lookup=True)
    chosen, speedup = _run(guard, machine, 4, [1] * 200)
    assert Mode.LOOKUP in chosen
    assert chosen[-100:].count(Mode.LOOKUP) <= 100 / PROBE_INTERVAL
    time_per_token = _time_per_token(guard, speedup)
    assert time_per_token[0] < 0.97
    assert max(time_per_token[1:]) < 1.03
    chosen, _ = _run(guard, machine, 4, [4] * 200)
    assert _mostly(chosen[-100:], Mode.LOOKUP)


def test_lookup_drafts_go_out_cut_to_the_tokens_that_pay():
    """Batch 4, every request's lookup draft accepted up to its first token
    and no further, and a draft token costs a fifth of a plain step: whole
    drafts would take 0.48x of plain's rate, their first tokens alone 1.11x.
    The guard sends the first token of each draft."""
    machine = Machine(base=0.030, per_draft_token=0.006, lookup_accepted=1)
    guard = ProfitabilityGuard(lookup=True)
    sent = _record_lookup_sent(guard)
    chosen, speedup = _run(guard, machine, 4, [4] * 100)
    assert _mostly(chosen[-50:], Mode.LOOKUP)
    assert all(n == 1 for lookup in sent[-50:] for n in lookup.values())
    assert speedup > 1.05


def test_lookup_drafts_of_a_request_ahead_of_its_batch_are_held_back():
    """Batch 4, started together, every request with a lookup draft each
    step: r0 copies its prompt (4 tokens of each draft accepted), the others
    take 2. Lookup pays, but sent every step r0's drafts would add a third to
    every step's draft tokens while it runs ahead of the others, with which
    the batch ends (0.69 of a plain step's time per token for them). Held
    back while it leads, r0's draft goes out about every other step, which
    keeps it level with them (3 tokens a step), and the batch takes 0.65."""
    machine = Machine(
        base=0.030, per_draft_token=0.002, lookup_accepted=2, lookup_accepted_by={"r0": 4}
    )
    guard = ProfitabilityGuard(lookup=True)
    sent = _record_lookup_sent(guard)
    chosen, speedup = _run(guard, machine, 4, [4] * 200)
    assert _mostly(chosen[-100:], Mode.LOOKUP)
    assert 30 <= sum("r0" in requests for requests in sent[-100:]) <= 60
    assert max(_time_per_token(guard, speedup)) < 0.67


@pytest.mark.parametrize("alone", [2, COHORT_STEPS + 5])
def test_lookup_for_a_request_that_arrived_alone(alone):
    """As above, but the request ran ``alone`` steps before the others came.
    Within COHORT_STEPS it started with them (a batch's prompts finish
    their prefill a few steps apart) and is drafted for as above. Later, it
    came on its own (a server's requests arrive one by one): no batch waits
    for its slowest request, every token counts the same, and lookup pays on
    every step (1.2x)."""
    machine = Machine(base=0.064, per_draft_token=0.004, lookup_accepted=2, self_skip_accepted=0)
    guard = ProfitabilityGuard(lookup=True)
    _run(guard, machine, 1, [1] * alone)
    chosen, speedup = _run(guard, machine, 4, [1] * 200)
    if alone <= COHORT_STEPS:
        assert chosen[-100:].count(Mode.LOOKUP) <= 100 / PROBE_INTERVAL
    else:
        assert _mostly(chosen[-100:], Mode.LOOKUP)
        assert speedup > 1.15


def test_without_lookup_only_plain_and_self_skip():
    guard = ProfitabilityGuard(lookup=False)
    chosen, _ = _run(guard, Machine(self_skip_accepted=0), 8, [0] * 200)
    assert Mode.LOOKUP not in chosen
    assert chosen[-100:].count(Mode.PLAIN) >= 100 * (1 - 1.5 / PROBE_INTERVAL)


def test_new_batch_size_predicts_with_the_nearest_measured_costs():
    """Batches shrink through small sizes as requests finish: there, the
    guard predicts with the nearest measured size's costs while it measures."""
    machine = Machine(per_draft_token=0.01, per_forward=0.05)
    guard = ProfitabilityGuard(lookup=False)
    _run(guard, machine, 16, [0] * 100)
    tail, _ = _run(guard, machine, 6, [0] * 3 * EXPLORE_INTERVAL)
    assert tail.count(Mode.PLAIN) >= 2 * EXPLORE_INTERVAL


def test_plain_steps_measured_while_speculating():
    """The first plain steps ran slow (a cold start) and self-skip won then;
    later every step gets cheaper and self-skip loses a little (1 token in
    0.010 s plain against 3 in 0.032 s). Self-skip steps alone cannot tell
    the fixed cost of a step from the cost of drafting, so without plain
    steps the guard would go on drafting at 0.94x."""
    guard = ProfitabilityGuard(lookup=False)
    chosen, _ = _run(guard, Machine(base=0.060, per_forward=0.010), 1, [0] * 30)
    assert _mostly(chosen[10:], Mode.SELF_SKIP)
    chosen, speedup = _run(guard, Machine(base=0.010, per_forward=0.010), 1, [0] * 3000)
    assert _mostly(chosen[-500:], Mode.PLAIN)
    assert speedup > 0.97


def test_notices_when_self_skip_pays_again():
    guard = ProfitabilityGuard(lookup=False)
    chosen, _ = _run(guard, Machine(self_skip_accepted=0), 2, [0] * 300)
    assert chosen[-50:].count(Mode.SELF_SKIP) <= 2
    # The skip set improves (a search found a better one): the probes notice.
    chosen, _ = _run(guard, Machine(self_skip_accepted=2), 2, [0] * 30 * PROBE_INTERVAL)
    assert _mostly(chosen[-50:], Mode.SELF_SKIP)


def test_new_batch_size_does_not_measure_what_loses_badly_nearby():
    """Self-skip lost badly at 16: a batch of 32 predicts it with those costs
    and does not spend steps measuring it."""
    machine = Machine(per_request=0.004, per_draft_token=0.004, per_forward_request=0.006)
    guard = ProfitabilityGuard(lookup=False)
    _run(guard, machine, 16, [0] * 100)
    assert guard.status()["batch_sizes"][16]["predicted_speedup"]["self-skip"] < EXPLORE_WORTH
    chosen, _ = _run(guard, machine, 32, [0] * 10 * EXPLORE_INTERVAL)
    assert Mode.SELF_SKIP not in chosen


def test_new_batch_size_uses_its_own_costs_for_what_it_measured():
    """A draft token costs twice as much to verify at 32 as at 16: lookup
    (a draft for every request) pays at 16 and not at 32. The bucket of 32
    starts from 16's costs, measures its own plain and lookup steps and stops
    taking lookup drafts."""
    machine = Machine(
        per_request=0.001,
        per_draft_token=0.0,
        per_draft_token_request=0.0001,
        per_forward=0.05,
        lookup_accepted=1,
        self_skip_accepted=0,
    )
    guard = ProfitabilityGuard(lookup=True)
    chosen, _ = _run(guard, machine, 16, [16] * 100)
    assert chosen[-50:].count(Mode.LOOKUP) >= 45
    chosen, _ = _run(guard, machine, 32, [32] * 100)
    assert Mode.LOOKUP in chosen[:10]
    assert _mostly(chosen[-50:], Mode.PLAIN)
    assert guard.status()["batch_sizes"][32]["predicted_speedup"]["lookup"] < 1.0


def test_each_batch_size_corrects_the_model_by_how_its_steps_came_out():
    """Acceptance is measured over every draft, but where a batch has shrunk
    to its last request, that is often the one whose drafts fare worst.
    Here lookup drafts of batches of 4 accept 3 tokens and those of the lone
    request none: the running mean says lookup pays at 1 too (predicted
    ~2x); its steps there come out far below that, and that bucket soon
    predicts with what they realize and stops drafting, while 4 goes on."""
    costs = {"per_request": 0.010, "per_draft_token": 0.008}
    full, alone = Machine(**costs, lookup_accepted=3), Machine(**costs, lookup_accepted=0)
    guard = ProfitabilityGuard(lookup=True)
    for batch in range(10):  # held-back drafts unscored: the model alone errs
        chosen4, _ = _run(guard, full, 4, [4] * 40, first=5 * batch, score_held_back=False)
        chosen1, speedup = _run(
            guard, alone, 1, [1] * 40, first=5 * batch + 4, score_held_back=False
        )
    assert _mostly(chosen4, Mode.LOOKUP)
    assert _mostly(chosen1, Mode.PLAIN)
    assert speedup > 0.97
    calibration = guard.status()["batch_sizes"][1]["calibration"]["lookup"]
    assert calibration["accepted"] < 0.3
    assert calibration["seconds"] == pytest.approx(1.0)


@pytest.mark.parametrize("score_held_back", [False, True])
def test_new_requests_that_copy_their_prompt_get_lookup(score_held_back):
    """Batch 8 where lookup drafts accept none: plain. The next eight
    requests copy their prompts (all 4 accepted). Known from the drafts
    verified alone, it takes a probe to find out, and lookup is predicted
    below plain (0.94x: a probe sends the most promising draft token only),
    so probes are rare (at most one in these 48 steps); scoring the drafts
    held back against the tokens generated finds out in two steps here, and
    in the proposer, which scores a held-back draft once the tokens it
    guessed are generated, in at most LOOKUP_LEN more (1.45x plain over these
    48 steps)."""
    machine = Machine(
        per_draft_token=0.002,
        lookup_accepted=0,
        self_skip_accepted=0,
        lookup_accepted_by={f"r{i}": LOOKUP_LEN for i in range(8, 16)},
    )
    guard = ProfitabilityGuard(lookup=True)
    chosen, _ = _run(guard, machine, 8, [8] * 200, score_held_back=score_held_back)
    assert _mostly(chosen[-100:], Mode.PLAIN)
    chosen, _ = _run(guard, machine, 8, [8] * 48, first=8, score_held_back=score_held_back)
    if score_held_back:
        plain_before_lookup = chosen.index(Mode.LOOKUP)
        assert plain_before_lookup <= 2
        assert _mostly(chosen[plain_before_lookup:], Mode.LOOKUP)
    else:  # at most a probe, which sends the most promising draft only
        assert chosen[: 3 + LOOKUP_LEN].count(Mode.LOOKUP) <= 1


def test_lookup_drafts_that_half_the_batch_rejects():
    """Every request of 4 has a lookup draft each step; r0 and r1 accept 3
    tokens of each and r2 and r3 none, in a step that costs 2.07x plain. The
    mean over drafts (1.5) predicts lookup at 1.2x plain on every step, and
    r2 and r3, with which the batch ends, would take twice as long a token.
    Each request's own acceptance tells: lookup only while r0 and r1 are not
    ahead, which slows r2 and r3 by less than 5%."""
    machine = Machine(
        per_draft_token=0.002, lookup_accepted_by={"r0": 3, "r1": 3, "r2": 0, "r3": 0}
    )
    guard = ProfitabilityGuard(lookup=True)
    chosen, speedup = _run(guard, machine, 4, [4] * 200)
    assert chosen[-100:].count(Mode.LOOKUP) <= 20
    time_per_token = _time_per_token(guard, speedup)
    assert max(time_per_token[:2]) < 0.97
    assert max(time_per_token[2:]) < 1.05
    assert sum(time_per_token) / 4 < 1.0


def test_a_batch_size_far_from_the_measured_ones_is_not_extrapolated():
    """A batch of 32 drained to 20 measured every kind of step while its
    cores were busy (each request beyond 16 costs 4 ms): a line through
    those steps says a lone request's plain step takes less than nothing.
    Borrowed at the nearest batch size measured instead, the costs predict
    self-skip worth a try for the lone request, where it pays (3 tokens in
    0.072 s against 1 in 0.030 s)."""
    machine = Machine(per_request=0.004, idle_requests=16, per_forward=0.020)
    guard = ProfitabilityGuard(lookup=False)
    for size in (32, 28, 24, 20):
        _run(guard, machine, size, [0] * 20)
    chosen, speedup = _run(guard, machine, 1, [0] * 200)
    assert 1.0 < guard.status()["batch_sizes"][1]["predicted_speedup"]["self-skip"] < 2.0
    assert _mostly(chosen, Mode.SELF_SKIP)
    assert speedup > 1.15


def _alternating_lone_requests(per_forward: float) -> tuple[list[Mode], list[Mode], float]:
    """Lone requests in turn, 40 steps each: the even ones stop their
    self-skip drafts after 1 token, rejected; the odd ones draft 4 tokens,
    all accepted. Returns the modes of the even and the odd requests' steps
    and the speedup over the run."""
    machine = Machine(
        per_draft_token=0.0,
        per_forward=per_forward,
        self_skip_by={f"r{i}": (4, 4) if i % 2 else (1, 0) for i in range(40)},
    )
    guard = ProfitabilityGuard(lookup=False)
    even, odd, speedups = [], [], []
    for request in range(40):
        chosen, speedup = _run(guard, machine, 1, [0] * 40, first=request)
        (odd if request % 2 else even).extend(chosen)
        speedups.append(speedup)
    return even, odd, sum(speedups) / len(speedups)


def test_a_request_whose_drafts_are_accepted_drafts_longer_and_pays_for_it():
    """Self-skip drafts stop where the skipped model is unsure, so the
    requests whose drafts are accepted draft longer. A draft forward of 25
    ms against a 30 ms plain step: the odd requests' drafts take 5 tokens
    in 130 ms, 1.15x plain; the even requests' lose. A guard that costed
    every draft at the mean draft's forwards (2.5) underpriced the odd
    requests' 4 forwards and overpriced the even requests' single one, and
    ran the odd ones' drafts on 62 of their 800 steps."""
    even, odd, speedup = _alternating_lone_requests(per_forward=0.025)
    assert odd.count(Mode.SELF_SKIP) > len(odd) / 3
    assert even.count(Mode.SELF_SKIP) <= len(even) / PROBE_INTERVAL + MIN_OBSERVATIONS
    assert speedup > 1.015


def test_long_accepted_drafts_that_cost_more_than_they_gain_are_not_run():
    """As above with 33 ms draft forwards: the odd requests' drafts take
    5 tokens in 162 ms, 0.93x plain."""
    even, odd, speedup = _alternating_lone_requests(per_forward=0.033)
    assert (even + odd).count(Mode.SELF_SKIP) <= len(even + odd) / PROBE_INTERVAL
    assert speedup > 0.98
