"""Where swift-vllm keeps converted models, caches and run artefacts."""

import os
from pathlib import Path


def swift_home() -> Path:
    """The project's home directory: ``$SWIFT_VLLM_HOME`` or ``~/.cache/swift-vllm``."""
    configured = os.environ.get("SWIFT_VLLM_HOME")
    home = Path(configured) if configured else Path.home() / ".cache" / "swift-vllm"
    home.mkdir(parents=True, exist_ok=True)
    return home
