"""Loads the C++ op library that setup.py builds with CMake, if it is there.

Loading registers the ``swift_vllm::*`` CPU kernels with the dispatcher.
A missing or broken library is not an error: the ops then run their
PyTorch reference on CPU, and one warning says so.
"""

import logging
import os
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# setup.py names the CMake output like an extension module of this package.
LIBRARY = Path(__file__).with_name("_C" + EXTENSION_SUFFIXES[0])


def _load() -> bool:
    if os.environ.get("SWIFT_VLLM_NATIVE") == "0":
        logger.info("SWIFT_VLLM_NATIVE=0: native ops not loaded, using PyTorch")
        return False
    if not LIBRARY.exists():
        logger.warning(
            "swift_vllm native ops not built (%s missing); CPU ops fall back "
            "to PyTorch. Reinstall with SWIFT_VLLM_NATIVE=1 to see why.",
            LIBRARY.name,
        )
        return False
    try:
        torch.ops.load_library(str(LIBRARY))
    except (OSError, RuntimeError) as err:
        logger.warning(
            "swift_vllm native ops failed to load (%s); CPU ops fall back "
            "to PyTorch. Rebuild with SWIFT_VLLM_NATIVE=1 pip install -e .",
            err,
        )
        return False
    return True


LOADED: bool = _load()
