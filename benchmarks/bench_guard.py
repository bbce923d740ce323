"""The profitability guard's cost per step, by batch size.

The proposer asks the guard on every step which drafters run and tells it
how the last step came out, all in Python on the step's critical path: on
a GPU, where a decode step of a small model takes a few milliseconds, a
millisecond here is a fifth of the step. The steps are synthetic: a static
batch in which half the requests find a 4-token lookup draft each step,
accepted up to a random token, and the step's seconds follow a line in the
draft tokens verified (so the guard's fit settles as it would in a run).

    python benchmarks/bench_guard.py
"""

import argparse
import random
import statistics
import time

from swift_vllm.guard import Cycle, Mode, ProfitabilityGuard

STEPS = 400  # per batch; the first ones fill the guard's buckets
DRAFT_TOKENS = 4


def run_batch(guard: ProfitabilityGuard, batch_size: int, batch: int, rng: random.Random) -> float:
    """Seconds the guard took per step over one static batch of ``STEPS`` steps."""
    requests = [f"{batch}-{i}" for i in range(batch_size)]
    lengths = {r: 100 + 10 * i for i, r in enumerate(requests)}
    took = 0.0
    for _ in range(STEPS):
        lookup = {r: DRAFT_TOKENS for r in requests if rng.random() < 0.5}
        self_skip = [r for r in requests if r not in lookup]
        started = time.perf_counter()
        decision = guard.choose(batch_size, lookup, self_skip, lengths)
        outcomes = {r: (DRAFT_TOKENS, rng.randint(0, DRAFT_TOKENS)) for r in lookup}
        guard.observe_drafts(Mode.LOOKUP, outcomes)
        sent = sum(decision.lookup.values())
        accepted = sum(min(outcomes[r][1], n) for r, n in decision.lookup.items())
        seconds = 0.03 + 0.0005 * batch_size + 0.003 * sent
        guard.observe(Cycle(batch_size, sent, 0, accepted, seconds))
        took += time.perf_counter() - started
        for r in requests:
            lengths[r] += 1 + (
                min(outcomes[r][1], decision.lookup[r]) if r in decision.lookup else 0
            )
    return took / STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,4,16,64")
    parser.add_argument("--repeats", type=int, default=5, help="timed batches; medians")
    args = parser.parse_args()
    rng = random.Random(0)
    print(f"{'batch':>6}  {'us per step':>12}")
    for batch_size in map(int, args.batch_sizes.split(",")):
        guard = ProfitabilityGuard(lookup=True)
        run_batch(guard, batch_size, -1, rng)  # warm-up: the buckets learn their costs
        times = [run_batch(guard, batch_size, b, rng) for b in range(args.repeats)]
        print(f"{batch_size:>6}  {1e6 * statistics.median(times):>12.1f}", flush=True)


if __name__ == "__main__":
    main()
