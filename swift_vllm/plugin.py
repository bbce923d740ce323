"""vLLM general-plugin entry point (``vllm.general_plugins``).

vLLM runs it in the front end, the engine core and every worker before
configs are built; ``install`` is idempotent.
"""

from swift_vllm import vllm_compat


def register() -> None:
    vllm_compat.install()
