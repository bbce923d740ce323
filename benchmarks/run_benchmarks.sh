#!/usr/bin/env bash
# The benchmark runs behind benchmarks/results/: SmolLM2 on the Spec-Bench dev prompts.
#   offline: `swift-vllm bench`, vanilla / ngram / self-skip with the profitability guard
#            on and off, batch sizes 1, 4, 16, 32 (results.json, answers/, PNG plots)
#   online:  `swift-vllm bench-serve`, a plain and a self-skip `vllm serve` (127.0.0.1)
#            driven by `vllm bench serve` at concurrency 1, 4, 16, 32 (serve_results.json)
# Every results file records the exact command that made it.
#
#   benchmarks/run_benchmarks.sh [offline|online|all]      (default: all)
#
# Sizes (environment): MODEL (smollm2), NUM_PROMPTS (52: 4 per category), MAX_TOKENS (128),
# REPEATS (1 per engine), ROUNDS (3 engines per method, rotating order),
# SERVE_PROMPTS (32 requests per concurrency level), OUT
# (benchmarks/results/smollm2). On 2 CPU cores the offline run takes hours, most of
# it at batch size 1; shrink NUM_PROMPTS / REPEATS for a quicker look.
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-.venv/bin/swift-vllm}
MODEL=${MODEL:-smollm2}
NUM_PROMPTS=${NUM_PROMPTS:-52}
MAX_TOKENS=${MAX_TOKENS:-128}
REPEATS=${REPEATS:-1}
ROUNDS=${ROUNDS:-3}
SERVE_PROMPTS=${SERVE_PROMPTS:-32}
OUT=${OUT:-benchmarks/results/smollm2}
what=${1:-all}

if [[ $what == offline || $what == all ]]; then
  "$SWIFT" bench --model "$MODEL" --methods vanilla,ngram,self-skip,self-skip-noguard,self-skip-nolookup \
    --batch-sizes 1,4,8,16,32 --num-prompts "$NUM_PROMPTS" --max-tokens "$MAX_TOKENS" \
    --repeats "$REPEATS" --rounds "$ROUNDS" --out "$OUT/offline"
fi
if [[ $what == online || $what == all ]]; then
  "$SWIFT" bench-serve --model "$MODEL" --methods vanilla,self-skip,self-skip-noguard \
    --concurrency 1,4,16,32 --num-prompts "$SERVE_PROMPTS" --max-tokens "$MAX_TOKENS" \
    --out "$OUT/online"
fi
