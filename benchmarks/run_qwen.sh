#!/usr/bin/env bash
# Qwen2.5-Coder-1.5B-Instruct on the dev prompts of three categories (coding, math,
# summarization): vanilla, vLLM ngram, hybrid self-skip (lookup + self-skip, guard on)
# and pure self-skip (no lookup), at batch sizes 1 and 8, in ROUNDS rounds of fresh
# engines (rotating order). Self-skip drafts with the cached set: run
#   swift-vllm tune --model qwen2.5-coder-1.5b --batch-size 4 --max-tokens 96 --options '{"max_opt_iter": 200}'
# first, or the search scores candidates during the timed runs. Frugal: the model decodes
# at ~4 tokens/s one request at a time on 2 CPU cores, and an engine takes ~1.5 min to start.
#   benchmarks/run_qwen.sh      (NUM_PROMPTS, MAX_TOKENS, ROUNDS, OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
SWIFT=${SWIFT:-.venv/bin/swift-vllm}
NUM_PROMPTS=${NUM_PROMPTS:-8}
MAX_TOKENS=${MAX_TOKENS:-48}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-benchmarks/results/qwen2.5-coder-1.5b/rounds}
"$SWIFT" bench --model qwen2.5-coder-1.5b --methods vanilla,ngram,self-skip,self-skip-nolookup \
  --categories coding,math,summarization --batch-sizes 1,8 --num-prompts "$NUM_PROMPTS" \
  --max-tokens "$MAX_TOKENS" --repeats 1 --rounds "$ROUNDS" --out "$OUT"
