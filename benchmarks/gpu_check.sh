#!/usr/bin/env bash
# GPU check of swift_vllm.kernels, for an NVIDIA machine with torch + Triton
# and a C++ compiler, CMake (and ninja): no vLLM, no network, no weights.
# Builds the native library (failing loudly if it cannot), runs
# tests/test_kernels.py with Triton compiled for the GPU (not interpreted),
# and times Triton against the PyTorch composite with triton.testing.do_bench
# (the op, then SmolLM2- and Qwen2.5-1.5B-shaped decode steps, eager and from
# a CUDA graph). About 2 minutes on one H200.
#
#   benchmarks/gpu_check.sh            # PYTHON=... to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

"$PY" - <<'PYEOF'
import torch, triton
assert torch.cuda.is_available(), "no CUDA device visible to torch"
print(f"torch {torch.__version__}, triton {triton.__version__}, {torch.cuda.get_device_name()}")
PYEOF

echo "== build: editable install into this interpreter, native ops required"
SWIFT_VLLM_NATIVE=1 MAX_JOBS=${MAX_JOBS:-8} \
  "$PY" -m pip install --no-deps --no-build-isolation -q -e .

echo "== tests: Triton on the GPU, C++ ops on the CPU"
"$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py

echo "== benchmarks: do_bench medians"
"$PY" benchmarks/bench_kernels.py --device cuda --rows 1,8,32 --context 512
"$PY" benchmarks/bench_kernels.py --device cuda --no-op --shape qwen2.5-1.5b --rows 1,8,32 \
  --context 512
