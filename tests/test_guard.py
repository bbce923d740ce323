import pytest

from swift_vllm.guard import (
    EXPLORE_INTERVAL,
    MIN_OBSERVATIONS,
    PROBE_INTERVAL,
    SWITCH_MARGIN,
    Mode,
    ProfitabilityGuard,
    batch_bucket,
)


def _run(guard: ProfitabilityGuard, batch_size: int, steps: int, rates: dict[Mode, float]):
    """Feed a synthetic workload in which each mode decodes at a fixed rate
    (tokens per request per second); return the modes the guard chose."""
    chosen = []
    for _ in range(steps):
        mode = guard.choose(batch_size)
        chosen.append(mode)
        tokens = {Mode.PLAIN: 1.0, Mode.LOOKUP: 1.5, Mode.SELF_SKIP: 2.0}[mode]
        guard.observe(batch_size, mode, tokens, tokens / rates[mode])
    return chosen


def test_buckets():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 4, 4, 8, 16, 32]


def test_measures_every_mode_before_deciding():
    guard = ProfitabilityGuard(lookup=True)
    first = _run(guard, 1, 3 * EXPLORE_INTERVAL * MIN_OBSERVATIONS, {m: 10.0 for m in Mode})
    assert all(first.count(m) >= MIN_OBSERVATIONS for m in Mode)
    # Richest first; drafting that does not beat plain decoding is not chosen.
    assert first[0] is Mode.SELF_SKIP
    assert guard.current(1) is Mode.PLAIN
    assert guard.status()[1]["speedup"]["self-skip"] == pytest.approx(1.0)


def test_new_batch_size_borrows_the_nearest_decision():
    """Batches shrink through small sizes as requests finish: there, the
    guard runs what it decided for the nearest size while it measures."""
    guard = ProfitabilityGuard(lookup=True)
    rates = {Mode.PLAIN: 10.0, Mode.LOOKUP: 7.0, Mode.SELF_SKIP: 4.0}
    _run(guard, 16, 100, rates)
    assert guard.current(16) is Mode.PLAIN
    tail = _run(guard, 6, 3 * EXPLORE_INTERVAL, rates)
    assert tail.count(Mode.PLAIN) >= 2 * EXPLORE_INTERVAL


def test_keeps_self_skip_when_it_pays_and_probes_rarely():
    guard = ProfitabilityGuard(lookup=True)
    rates = {Mode.PLAIN: 10.0, Mode.LOOKUP: 12.0, Mode.SELF_SKIP: 16.0}
    chosen = _run(guard, 1, 320, rates)
    assert guard.current(1) is Mode.SELF_SKIP
    assert guard.speedup(1) == pytest.approx(1.6)
    later = chosen[3 * MIN_OBSERVATIONS :]
    assert later.count(Mode.SELF_SKIP) >= len(later) * (1 - 1.5 / PROBE_INTERVAL)
    assert {Mode.PLAIN, Mode.LOOKUP} <= set(later)  # both still probed


def test_falls_back_to_plain_at_large_batch_only():
    guard = ProfitabilityGuard(lookup=True)
    _run(guard, 32, 200, {Mode.PLAIN: 10.0, Mode.LOOKUP: 7.0, Mode.SELF_SKIP: 4.0})
    assert guard.current(32) is Mode.PLAIN
    assert guard.status()[32]["mode"] == "plain"
    # Batch size 1 has its own measurements: where drafting pays, it drafts.
    _run(guard, 1, 200, {Mode.PLAIN: 10.0, Mode.LOOKUP: 12.0, Mode.SELF_SKIP: 14.0})
    assert guard.current(1) is Mode.SELF_SKIP
    assert guard.current(32) is Mode.PLAIN


def test_lookup_alone_when_self_skip_drafts_do_not_pay():
    """Self-skip is judged against lookup alone, so lookup's gains cannot
    keep a losing skip set drafting."""
    guard = ProfitabilityGuard(lookup=True)
    _run(guard, 4, 200, {Mode.PLAIN: 10.0, Mode.LOOKUP: 13.0, Mode.SELF_SKIP: 11.0})
    assert guard.current(4) is Mode.LOOKUP


def test_without_lookup_only_plain_and_self_skip():
    guard = ProfitabilityGuard(lookup=False)
    chosen = _run(guard, 8, 200, {Mode.PLAIN: 10.0, Mode.SELF_SKIP: 8.0})
    assert Mode.LOOKUP not in chosen
    assert guard.current(8) is Mode.PLAIN


def test_hysteresis_and_recovery():
    guard = ProfitabilityGuard(lookup=False)
    _run(guard, 2, 100, {Mode.PLAIN: 9.5, Mode.SELF_SKIP: 10.0})
    assert guard.current(2) is Mode.SELF_SKIP
    # Within the margin: no switch back.
    _run(guard, 2, 200, {Mode.PLAIN: 10.0 * SWITCH_MARGIN * 0.99, Mode.SELF_SKIP: 10.0})
    assert guard.current(2) is Mode.SELF_SKIP
    _run(guard, 2, 300, {Mode.PLAIN: 10.0, Mode.SELF_SKIP: 6.0})
    assert guard.current(2) is Mode.PLAIN
    # Acceptance recovers: the probes notice and drafting resumes.
    _run(guard, 2, 600, {Mode.PLAIN: 10.0, Mode.SELF_SKIP: 15.0})
    assert guard.current(2) is Mode.SELF_SKIP
