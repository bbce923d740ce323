from swift_vllm.guard import OFF_BELOW, PROBE_INTERVAL, ProfitabilityGuard, batch_bucket


def _run(
    guard: ProfitabilityGuard,
    batch_size: int,
    steps: int,
    *,
    tokens: float,
    draft_s: float,
    verify_s: float,
    plain_s: float,
) -> list[bool]:
    """Feed a synthetic workload; return the guard's decisions."""
    decisions = []
    for _ in range(steps):
        drafting = guard.should_draft(batch_size)
        decisions.append(drafting)
        if drafting:
            guard.observe_verification(tokens)
            guard.observe_step(batch_size, verify_s, draft_s)
        else:
            guard.observe_step(batch_size, plain_s, None)
    return decisions


def test_buckets():
    assert [batch_bucket(b) for b in (1, 2, 3, 4, 5, 16, 17)] == [1, 2, 4, 4, 8, 16, 32]


def test_stays_on_when_speculation_pays():
    guard = ProfitabilityGuard()
    decisions = _run(guard, 1, 200, tokens=2.5, draft_s=0.005, verify_s=0.011, plain_s=0.010)
    assert guard.predicted_speedup(1) > 1.5
    assert guard.is_drafting(1)
    # Only the probes skip drafting.
    assert decisions.count(False) == 200 // PROBE_INTERVAL


def test_turns_off_when_it_loses_and_probes_rarely():
    guard = ProfitabilityGuard()
    decisions = _run(guard, 16, 400, tokens=1.3, draft_s=0.08, verify_s=0.05, plain_s=0.03)
    assert guard.predicted_speedup(16) < OFF_BELOW
    assert not guard.is_drafting(16)
    assert sum(decisions[100:]) == len(decisions[100:]) // PROBE_INTERVAL
    # Batch size 1 has its own costs and is not switched off by batch 16.
    assert guard.should_draft(1)


def test_turns_back_on_when_acceptance_recovers():
    guard = ProfitabilityGuard()
    _run(guard, 4, 300, tokens=1.1, draft_s=0.03, verify_s=0.02, plain_s=0.02)
    assert not guard.is_drafting(4)
    _run(guard, 4, 3000, tokens=3.5, draft_s=0.01, verify_s=0.02, plain_s=0.02)
    assert guard.is_drafting(4)
