#!/usr/bin/env bash
# Issue 2's table: fixed skip sets at ratios 0.1 / 0.2 / 0.3 (the middle-out
# default sets of swift_vllm.skip_set.default_skip_set), pure self-skip (no
# lookup, no guard, no search) against plain decoding at batch sizes 1 and 8.
#   benchmarks/run_ratio_table.sh      (NUM_PROMPTS, MAX_TOKENS, REPEATS, OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-.venv/bin/swift-vllm}
NUM_PROMPTS=${NUM_PROMPTS:-13}
MAX_TOKENS=${MAX_TOKENS:-96}
REPEATS=${REPEATS:-1}
OUT=${OUT:-benchmarks/results/smollm2/ratios}
declare -A SETS=(
  [0.1]='{"attention_skip": [13, 14, 15], "mlp_skip": [13, 14, 15]}'
  [0.2]='{"attention_skip": [12, 13, 14, 15, 16, 17], "mlp_skip": [12, 13, 14, 15, 16]}'
  [0.3]='{"attention_skip": [10, 11, 12, 13, 14, 15, 16, 17, 18], "mlp_skip": [11, 12, 13, 14, 15, 16, 17, 18]}'
)
for ratio in 0.1 0.2 0.3; do
  options=$(python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1]) | {"lookup": False}))' "${SETS[$ratio]}")
  "$SWIFT" bench --methods vanilla,self-skip-noguard --speculative-config "$options" \
    --batch-sizes 1,8 --num-prompts "$NUM_PROMPTS" --max-tokens "$MAX_TOKENS" \
    --repeats "$REPEATS" --out "$OUT/ratio-$ratio"
done
