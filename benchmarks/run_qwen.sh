#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct on the dev prompts of three categories (coding, math,
# summarization): vanilla, vLLM ngram, hybrid self-skip (lookup + self-skip, guard on)
# and pure self-skip (no lookup), at batch size 1 (6 prompts) and 8 (24 prompts).
# Self-skip drafts with a fixed middle-out set at ratio 0.25 (see the results' notes:
# the in-engine search scorer misjudges this model). Frugal: the model decodes at
# ~5 tokens/s one request at a time on 2 CPU cores.
#   benchmarks/run_qwen.sh      (MAX_TOKENS, REPEATS, OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-.venv/bin/swift-vllm}
MAX_TOKENS=${MAX_TOKENS:-48}
REPEATS=${REPEATS:-1}
OUT=${OUT:-benchmarks/results/qwen2.5-coder-1.5b}
SET='{"attention_skip": [10, 11, 12, 13, 14, 15, 16], "mlp_skip": [11, 12, 13, 14, 15, 16]}'
for run in "1 6" "8 24"; do
  read -r batch prompts <<<"$run"
  "$SWIFT" bench --model qwen2.5-coder-1.5b --methods vanilla,ngram,self-skip,self-skip-nolookup \
    --speculative-config "$SET" --categories coding,math,summarization \
    --batch-sizes "$batch" --num-prompts "$prompts" --max-tokens "$MAX_TOKENS" \
    --repeats "$REPEATS" --out "$OUT/bs$batch"
done
