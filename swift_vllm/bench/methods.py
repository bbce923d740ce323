"""The methods a benchmark compares: label -> vLLM speculative config (``None``: plain decoding).

A table, not code: another variant (a self-skip option, another vLLM method)
is one more entry here and is then selectable by its label everywhere.
"""

from typing import Any

from swift_vllm.config import METHOD_NAME

BASELINE = "vanilla"

METHODS: dict[str, dict[str, Any] | None] = {
    BASELINE: None,
    # A second plain engine: how far two identical engines land apart in the
    # same run, the resolution of every other speedup in it.
    "vanilla-twin": None,
    # vLLM's prompt-lookup drafting; its defaults otherwise.
    "ngram": {"method": "ngram", "prompt_lookup_min": 2, "prompt_lookup_max": 5},
    "self-skip": {"method": METHOD_NAME},
    "self-skip-noguard": {"method": METHOD_NAME, "guard": False},
    # Pure SWIFT: no prompt-lookup drafts.
    "self-skip-nolookup": {"method": METHOD_NAME, "lookup": False},
    # Needs the arctic-inference package; vLLM says so at start-up if missing.
    "suffix": {"method": "suffix"},
}

NOTES = {
    "vanilla-twin": "vanilla-twin: a second plain engine; its speedup is this run's noise",
    "ngram": "ngram: vLLM's n-gram prompt lookup with its defaults except "
    "prompt_lookup_min 2, prompt_lookup_max 5",
    "self-skip-noguard": "self-skip-noguard: self-skip with the profitability guard off",
    "self-skip-nolookup": "self-skip-nolookup: pure SWIFT, prompt-lookup drafting off",
}


def fixed_set_config(skip_set: dict[str, list[int]], num_speculative_tokens: int) -> dict:
    """Pure self-skip drafting with ``skip_set`` (``attention`` / ``mlp``
    layer lists) on every step: no search, lookup and guard off, so what is
    measured is the set itself."""
    return {
        "method": METHOD_NAME,
        "num_speculative_tokens": num_speculative_tokens,
        "attention_skip": list(skip_set["attention"]),
        "mlp_skip": list(skip_set["mlp"]),
        "lookup": False,
        "guard": False,
    }


def parse_labels(text: str) -> list[str]:
    """Comma-separated method labels, checked against ``METHODS``."""
    labels = [label.strip() for label in text.split(",") if label.strip()]
    unknown = [label for label in labels if label not in METHODS]
    if unknown or not labels:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    return labels


def speculative_configs(
    labels: list[str], num_speculative_tokens: int, self_skip_options: dict[str, Any]
) -> dict[str, dict[str, Any] | None]:
    """Each label's speculative config: ``num_speculative_tokens`` for every
    speculative method, ``self_skip_options`` merged into the self-skip ones
    (the variant's own keys, e.g. ``guard``, win)."""
    configs: dict[str, dict[str, Any] | None] = {}
    for label in labels:
        base = METHODS[label]
        if base is None:
            configs[label] = None
            continue
        extra = self_skip_options if base["method"] == METHOD_NAME else {}
        configs[label] = {"num_speculative_tokens": num_speculative_tokens} | extra | base
    return configs


def notes(labels: list[str]) -> list[str]:
    """What a reader of these methods' results should know about their settings."""
    return [NOTES[label] for label in labels if label in NOTES] + [
        "every speculative method uses the same num_speculative_tokens"
    ]


def is_self_skip(config: dict[str, Any] | None) -> bool:
    return config is not None and config.get("method") == METHOD_NAME
