"""Prompt lookup's cost per step, by batch size and context length.

The proposer runs ``lookup_drafts`` over every drafting request on every
step, so its time adds straight to the step's. The contexts are
Zipf-distributed tokens (text-like: a few tokens are very common) ending in
the commonest token, where the most positions can end a match; the batch is
taken from the runner's token buffer by row as the proposer takes it.

    python benchmarks/bench_lookup.py
"""

import argparse
import statistics
import timeit

import numpy as np

from swift_vllm.lookup import lookup_drafts

VOCAB = 49_152  # SmolLM2's
MAX_MODEL_LEN = 32_768


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048,8192,16384", help="context tokens")
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops; medians")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    print("ms per step".rjust(20) + "".join(f"{'batch ' + str(b):>10}" for b in batch_sizes))
    for length in map(int, args.lengths.split(",")):
        cells = []
        for batch_size in batch_sizes:
            buffer = np.minimum(rng.zipf(1.3, (batch_size, MAX_MODEL_LEN)), VOCAB).astype(np.int32)
            lengths = np.full(batch_size, length)
            buffer[:, length - 1] = 1
            rows = list(range(batch_size))

            def step(buffer=buffer, lengths=lengths, rows=rows) -> None:
                lookup_drafts(buffer[rows, : lengths.max()], lengths, 2, 5, np.full(len(rows), 4))

            loops = timeit.repeat(step, number=20, repeat=args.repeats)
            cells.append(1e3 * statistics.median(loops) / 20)
        print(f"{length:>12} tokens" + "".join(f"{ms:>10.2f}" for ms in cells), flush=True)


if __name__ == "__main__":
    main()
