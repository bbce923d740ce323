"""The ``self-skip`` method's own options, validated once at engine start-up.

Users pass them inside vLLM's speculative config, next to vLLM's own keys::

    --speculative-config '{"method": "self-skip", "num_speculative_tokens": 8,
                           "skip_ratio": 0.2, "stop_threshold": 0.8}'

The front end moves them into ``additional_config["self_skip"]`` (which
reaches every vLLM process and is part of the config hash); the proposer
rebuilds this dataclass from there.
"""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

METHOD_NAME = "self-skip"
METHOD_ALIAS = "[self-skip]"
ADDITIONAL_CONFIG_KEY = "self_skip"

# vLLM model classes whose decoder layers are Llama-shaped: ``layer(positions,
# hidden, residual)`` with ``input_layernorm`` / ``self_attn`` /
# ``post_attention_layernorm`` / ``mlp`` and fused add+RMSNorm.
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")


@dataclass
class SelfSkipConfig:
    """Options of the self-skip speculative method (all optional)."""

    attention_skip: list[int] | None = None
    """Decoder layers (0-based) whose attention sub-layer the draft skips.
    Given together with or instead of ``mlp_skip``, it fixes the skip set and
    no search runs. The first and last decoder layers are never skipped."""

    mlp_skip: list[int] | None = None
    """Decoder layers (0-based) whose MLP sub-layer the draft skips."""

    skip_ratio: float | None = None
    """Fraction of the ``2 * (num_layers - 2)`` skippable sub-layers to skip,
    in [0, 1). Used when no explicit layers are given. ``None`` lets the
    search choose the ratio (adaptive)."""

    stop_threshold: float = 0.8
    """Confidence-aware drafting: a request's draft stops once the draft's
    top-1 probability falls below this value, in [0, 1]."""

    max_draft_len: int | None = None
    """Most tokens one self-skip draft may hold; at most, and by default,
    vLLM's ``num_speculative_tokens``."""

    lookup: bool = True
    """Hybrid drafting: a request whose context holds an n-gram match of its
    latest tokens takes the prompt-lookup draft (nearly free, and long when
    the output copies the input); only the others run the skipped model.
    ``False`` is pure SWIFT."""

    prompt_lookup_min: int = 2
    """Shortest suffix n-gram that counts as a lookup match."""

    prompt_lookup_max: int = 5
    """Longest suffix n-gram tried first. Lookup drafts may hold up to
    ``num_speculative_tokens`` tokens; the confidence stop does not apply."""

    guard: bool = True
    """Profitability guard: per step, run the drafters (none, lookup only, or
    lookup and self-skip) with the highest predicted tokens per second, each
    request's tokens weighted by how far it leads the requests that started
    with it (drafts for some requests slow the step for all, and a batch
    that started together ends with its slowest request), from step costs fitted per
    batch size and each source's measured acceptance (lookup's also from
    the drafts it held back, scored against the tokens generated instead),
    probing the others now and then (see ``swift_vllm/guard.py``). ``False``
    always drafts with every enabled drafter."""

    task: str = "default"
    """Key under which this engine's skip-set search and cache entry live;
    engines serving the same model and task share what they learn."""

    # --- On-the-fly search (used when no explicit layers are given) ---

    search_start: str = "middle"
    """Where a search without a cached set starts: ``"middle"`` skips the
    sub-layers nearest the middle of the stack (a strong prior on Llama-family
    models), ``"random"`` a seeded random set, as the SWIFT reference does."""

    opt_interval: int = 1
    """During the optimization phase, score candidates on every this-many-th
    window of new tokens (reference default 1; the reference scores every
    decoding step, its windows overlapping)."""

    bayes_interval: int = 25
    """Every this-many-th proposed candidate comes from Bayesian optimization
    (a Gaussian process over scored sets); the others are random."""

    candidates_per_step: int = 4
    """New candidates scored together in one optimization step's forward,
    besides the current best (re-scored on the same window as the baseline
    the newcomers are compared with)."""

    opt_time_share: float = 0.25
    """Most of the wall time, since this engine started optimizing, that
    scoring may take, in (0, 1]. Scoring runs inside a decoding step: on
    CPUs, where a forward over a window costs about as much compute as that
    many decode steps, this keeps serving going while the search runs."""

    max_opt_iter: int = 1000
    """The optimization phase ends after this many scored candidates."""

    max_tolerance_iter: int = 300
    """... or after this many scored candidates in a row that improve nothing."""

    max_score: float = 0.93
    """... or once the best set's matchness exceeds this, in (0, 1]: by two
    binomial standard errors over the tokens it was scored on, and on at
    least three windows' worth of them."""

    playoff_windows: int = 8
    """When a stop rule holds, the search's best ``candidates_per_step + 1``
    sets of the chosen size (the set it started from among them, if that
    size) are scored together on this many more windows, and the best mean
    takes the set: each of them then had the same windows, where during the
    search each was scored on its own few, and the best-ranked is often the
    one whose windows were easy. 0: take the search's best-ranked set."""

    context_window: int = 50
    """Matchness is measured over this many tokens the full model generated
    (one parallel forward of the skipped model). Windows do not overlap: a
    request's tokens are scored once, so at batch 1 the next window comes
    this many tokens later, and a batch fills one from several requests. A
    lone request shorter than this is never scored."""

    adaptive_ratios: list[float] = field(
        default_factory=lambda: [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    )
    """With ``skip_ratio`` None, the skip ratios the search chooses among: the
    one whose best set predicts the highest speedup from its matchness and
    the measured draft/verify step cost wins. Each in (0, 1)."""

    restart_window: int = 512
    """In the acceleration phase, acceptance is checked over blocks of this
    many verified draft tokens of the chosen set ..."""

    restart_drop: float = 0.2
    """... and optimization restarts when a block's acceptance falls more than
    this below the chosen set's acceptance before it was chosen, or else its
    first block's (the input stream changed). Not below its matchness:
    confidence-stopped drafts end on a doubtful token, so acceptance runs
    below matchness on an unchanged stream."""

    cache_path: str | None = None
    """JSON file of found skip sets keyed by model and task;
    ``None`` means ``$SWIFT_VLLM_HOME/skip_sets.json``."""

    @classmethod
    def option_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, options: dict[str, Any]) -> "SelfSkipConfig":
        """Build from user options; raises ``ValueError`` naming a bad key."""
        known = set(cls.option_names())
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(
                f"unknown self-skip option(s) {unknown}; valid options are "
                f"{cls.option_names()} and vLLM's own speculative-config keys"
            )
        return cls(**options)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, num_layers: int, num_speculative_tokens: int) -> None:
        """Check every option against the served model; raise ``ValueError``."""
        if num_speculative_tokens < 1:
            raise ValueError(
                f"num_speculative_tokens must be >= 1 for {METHOD_NAME}, "
                f"got {num_speculative_tokens}"
            )
        if num_layers < 3:
            raise ValueError(
                f"{METHOD_NAME} needs a model with at least 3 decoder layers "
                f"(first and last are never skipped), got {num_layers}"
            )
        for name in ("attention_skip", "mlp_skip"):
            layers = getattr(self, name)
            if layers is None:
                continue
            if not isinstance(layers, list) or not all(isinstance(i, int) for i in layers):
                raise ValueError(f"{name} must be a list of layer indices, got {layers!r}")
            bad = [i for i in layers if not 1 <= i <= num_layers - 2]
            if bad:
                raise ValueError(
                    f"{name} has layer index(es) {bad} out of range: with "
                    f"{num_layers} decoder layers, skippable layers are "
                    f"1..{num_layers - 2} (first and last are never skipped)"
                )
        if self.skip_ratio is not None and not 0.0 <= self.skip_ratio < 1.0:
            raise ValueError(f"skip_ratio must be in [0, 1), got {self.skip_ratio}")
        if not 0.0 <= self.stop_threshold <= 1.0:
            raise ValueError(f"stop_threshold must be in [0, 1], got {self.stop_threshold}")
        if self.max_draft_len is not None and not (
            1 <= self.max_draft_len <= num_speculative_tokens
        ):
            raise ValueError(
                f"max_draft_len must be in [1, num_speculative_tokens="
                f"{num_speculative_tokens}], got {self.max_draft_len}"
            )
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError(
                "prompt_lookup_min and prompt_lookup_max must satisfy 1 <= min <= max, got "
                f"{self.prompt_lookup_min} and {self.prompt_lookup_max}"
            )
        if not self.task or not isinstance(self.task, str):
            raise ValueError(f"task must be a non-empty string, got {self.task!r}")
        for name in (
            "opt_interval",
            "bayes_interval",
            "candidates_per_step",
            "max_opt_iter",
            "max_tolerance_iter",
            "restart_window",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(self.playoff_windows, int) or self.playoff_windows < 0:
            raise ValueError(
                f"playoff_windows must be an integer >= 0, got {self.playoff_windows!r}"
            )
        if not isinstance(self.context_window, int) or self.context_window < 2:
            raise ValueError(f"context_window must be an integer >= 2, got {self.context_window!r}")
        if not 0.0 < self.max_score <= 1.0:
            raise ValueError(f"max_score must be in (0, 1], got {self.max_score}")
        if self.search_start not in ("middle", "random"):
            raise ValueError(
                f'search_start must be "middle" or "random", got {self.search_start!r}'
            )
        if not 0.0 < self.opt_time_share <= 1.0:
            raise ValueError(f"opt_time_share must be in (0, 1], got {self.opt_time_share}")
        if not 0.0 < self.restart_drop <= 1.0:
            raise ValueError(f"restart_drop must be in (0, 1], got {self.restart_drop}")
        if not self.adaptive_ratios or not all(0.0 < r < 1.0 for r in self.adaptive_ratios):
            raise ValueError(
                f"adaptive_ratios must be a non-empty list of ratios in (0, 1), "
                f"got {self.adaptive_ratios!r}"
            )
        if self.cache_path is not None and not isinstance(self.cache_path, str):
            raise ValueError(f"cache_path must be a path string, got {self.cache_path!r}")

    @property
    def has_fixed_set(self) -> bool:
        return self.attention_skip is not None or self.mlp_skip is not None
