"""The proposer's handle on the search actor. It never blocks a decoding step.

Every call to the actor is asynchronous: the client submits it and picks up
results later with ``ray.wait(timeout=0)``. Connecting (which may start a
local Ray cluster, seconds) runs on a background thread. Until results
arrive, and whenever the actor is gone, the proposer keeps drafting with
the last set it had; a lost actor is logged once, and the client reconnects
or recreates it with backoff, handing it that set to continue from. No
exception from Ray reaches the caller.

Use from the proposer, once per decoding step::

    skip_set = client.current()              # draft with this
    batch = client.candidates()              # when a window is ready; [] most steps
    if batch:                                # score all on it
        client.report_scores(list(zip(batch, matchness)), window_tokens, seconds)
    client.report_acceptance(skip_set, accepted, rejected, draft_s, verify_s, bs)
"""

import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import ray

from swift_vllm.config import SelfSkipConfig
from swift_vllm.search.actor import ACTOR_NAME, NAMESPACE, RemoteSearchActor, Snapshot
from swift_vllm.search.cache import cache_key
from swift_vllm.search.phase import Phase
from swift_vllm.search.searcher import AcceptanceReport, starting_set
from swift_vllm.skip_set import SkipSet

logger = logging.getLogger(__name__)

# Waits between reconnection attempts: doubling from the first to the last.
BACKOFF_S = (1.0, 30.0)
# A connection attempt that takes longer than this has failed.
OPEN_TIMEOUT_S = 60.0
# Calls in flight beyond this are dropped (the actor is slow, not the step).
MAX_PENDING = 32
# How long status() waits for the actor: it answers between its GP fits.
STATUS_TIMEOUT_S = 10.0
# Acceptance reports are summed locally and sent at most this often: one
# actor serves every engine, and per-step calls from all of them add up.
REPORT_INTERVAL_S = 0.5
# Object store for a Ray cluster we start ourselves: the search ships only
# small objects, and Ray's default is 30% of RAM.
LOCAL_OBJECT_STORE_BYTES = 128 * 2**20
# Ray ends a process whose cluster stays unreachable this long (default 60 s):
# a vLLM worker must outlive a lost cluster and keep its last set instead.
_GCS_RECONNECT_TIMEOUT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
_GCS_RECONNECT_TIMEOUT_S = str(365 * 24 * 3600)
# libgomp pins a process that starts with this set (see _every_cpu).
_OMP_AFFINITY_ENV = "GOMP_CPU_AFFINITY"

T = TypeVar("T")


def _join_ray() -> None:
    """Join ``$RAY_ADDRESS``, else a cluster running on this machine;
    ``ConnectionError`` if there is none. Output is not forwarded and
    logging is left alone (we may be inside a vLLM worker)."""
    ray.init(
        address=os.environ.get("RAY_ADDRESS", "auto"),
        namespace=NAMESPACE,
        ignore_reinit_error=True,
        log_to_driver=False,
        configure_logging=False,
    )


def connect_ray(start_local: bool = True) -> None:
    """Join a Ray cluster (see ``_join_ray``), or, with ``start_local``,
    start a small local one unless ``$RAY_ADDRESS`` names a cluster.

    Start one only from a thread that lives as long as the process: Ray ties
    the processes it starts to the starting *thread* (``PR_SET_PDEATHSIG``),
    so a cluster started from a short-lived thread is killed when it ends."""
    if ray.is_initialized():
        return
    os.environ.setdefault(_GCS_RECONNECT_TIMEOUT_ENV, _GCS_RECONNECT_TIMEOUT_S)
    try:
        _join_ray()
    except ConnectionError:
        if os.environ.get("RAY_ADDRESS") or not start_local:
            raise
        with _every_cpu():
            ray.init(
                address="local",
                namespace=NAMESPACE,
                num_cpus=1,
                include_dashboard=False,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                log_to_driver=False,
                configure_logging=False,
            )


@contextmanager
def _every_cpu() -> Iterator[None]:
    """Let the processes started meanwhile run on every CPU.

    vLLM's CPU worker pins its threads to the cores it computes on, and
    exports ``GOMP_CPU_AFFINITY`` with libgomp preloaded, which pins every
    child process at start-up. A Ray cluster started from there would then
    fight the worker for its cores (measured: the search actor got 1/30 of
    a core, and Ray's daemons took time from the worker)."""
    pinning = os.environ.pop(_OMP_AFFINITY_ENV, None)
    pinned = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if pinned is not None:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        yield
    finally:
        if pinned is not None:
            os.sched_setaffinity(0, pinned)
        if pinning is not None:
            os.environ[_OMP_AFFINITY_ENV] = pinning


def get_or_create_actor() -> ray.actor.ActorHandle:
    """The shared search actor; joins a cluster if needed, never starts one."""
    connect_ray(start_local=False)
    return RemoteSearchActor.options(
        name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True
    ).remote()


def status(timeout_s: float = STATUS_TIMEOUT_S) -> dict[str, dict]:
    """Per key, the running search's state (phase, iterations, best
    matchness, skip ratio, current set, time spent optimizing, ...).
    Empty when no Ray cluster or no search actor runs; starts neither."""
    if not ray.is_initialized():
        try:
            _join_ray()
        except ConnectionError:
            return {}
    try:
        actor = ray.get_actor(ACTOR_NAME, namespace=NAMESPACE)
    except ValueError:
        return {}
    try:
        return ray.get(actor.status.remote(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(
            f"the search actor did not answer within {timeout_s:.0f} s "
            "(busy fitting its Gaussian process, or the machine is overloaded)"
        ) from None


def search_state(key: str, last: dict, timeout_s: float = STATUS_TIMEOUT_S) -> dict:
    """``key``'s state from :func:`status`, or ``last`` when the actor answers
    late: a caller polling between batches of a long run must not fail on
    one slow answer from a busy actor (a 26-minute tune once did)."""
    try:
        return status(timeout_s).get(key, {})
    except TimeoutError as error:
        logger.warning("%s; keeping the state it gave before", error)
        return last


def disconnect() -> None:
    """Leave the Ray cluster joined by ``status``. A process must leave a
    cluster that an engine started before the engine shuts down: Ray ends
    a process that cannot reach its cluster's GCS for a minute."""
    if ray.is_initialized():
        ray.shutdown()


def _never_raises(fallback: Callable[["SearchClient"], T]):
    """Decorate a public method: any exception (a dead actor, a lost
    cluster) is reported to the reconnection logic and ``fallback`` is
    returned; the search must never fail a decoding step."""

    def decorate(method: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(method)
        def guarded(self: "SearchClient", *args: Any, **kwargs: Any) -> T:
            try:
                return method(self, *args, **kwargs)
            except Exception as exc:  # see the docstring
                self._lost(exc)
                return fallback(self)

        return guarded

    return decorate


class SearchClient:
    """One proposer's view of the shared search for ``model`` and
    ``config.task``. All methods are non-blocking, never raise, and are
    safe to call from any thread."""

    def __init__(self, model: str, num_layers: int, config: SelfSkipConfig, draft_len: int) -> None:
        """``draft_len``: the most tokens one draft may hold (the adaptive
        ratio predicts speedup up to it)."""
        self.key = cache_key(model, config.task)
        self._num_layers = num_layers
        self._config = config
        self._draft_len = draft_len
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._snapshot = Snapshot(starting_set(num_layers, config), "connecting", None)
        self._actor: ray.actor.ActorHandle | None = None
        self._connecting = False
        self._warned = False
        self._losses = 0  # times the actor was lost (each logged while warned is reset)
        self._pending: dict[ray.ObjectRef, int] = {}  # ref -> submission number
        self._submitted = self._applied = 0
        self._proposal: ray.ObjectRef | None = None  # the propose call in flight
        self._ready: tuple[SkipSet, ...] = ()
        self._steps = 0
        self._unsent: list[AcceptanceReport] = []  # acceptance not yet sent
        self._unsent_since = time.monotonic()
        try:  # here, on the engine's long-lived thread; see connect_ray
            connect_ray()
        except Exception as exc:  # drafting goes on; the background thread retries
            logger.warning("no Ray cluster for the skip-set search yet (%r)", exc)
        self._start_connecting()

    # --- the proposer's calls ---

    @_never_raises(lambda self: self._snapshot.skip_set)
    def current(self) -> SkipSet:
        """The set to draft with: the search's best as last heard."""
        self._poll()
        return self._snapshot.skip_set

    @property
    def optimizing(self) -> bool:
        """Whether the search was optimizing when last heard (no call)."""
        return self._snapshot.phase == Phase.OPTIMIZING

    @_never_raises(lambda self: [])
    def candidates(self) -> list[SkipSet]:
        """Call when a window is ready to score. On every ``opt_interval``-th
        call in the optimization phase, the sets to score together on it, the
        current best first (the baseline the others are compared with);
        otherwise, or while none has arrived, ``[]``."""
        self._poll()
        with self._lock:
            self._steps += 1
            if self._snapshot.phase != Phase.OPTIMIZING:
                self._ready = ()
                return []
            if self._steps % self._config.opt_interval or not self._ready:
                self._request_candidates()
                return []
            batch, self._ready = list(self._ready), ()
            return batch

    @_never_raises(lambda self: None)
    def report_scores(
        self,
        scores: Sequence[tuple[SkipSet, float]],
        window_tokens: int,
        scoring_s: float = 0.0,
    ) -> None:
        """Matchness (share of the window's next tokens the skipped model's
        argmax got right) of sets scored on the same ``window_tokens``-token
        window, and the seconds scoring took. Asks for the next batch."""
        with self._lock:
            self._submit(
                lambda actor: actor.report_scores.remote(
                    self.key,
                    [(s, float(v)) for s, v in scores],
                    window_tokens,
                    scoring_s,
                )
            )
            self._request_candidates()
        self._poll()

    @_never_raises(lambda self: None)
    def report_acceptance(
        self,
        skip_set: SkipSet,
        accepted: int,
        rejected: int,
        draft_step_s: float,
        verify_step_s: float,
        batch_size: int,
    ) -> None:
        """One verification's outcome for drafts made with ``skip_set``; see
        ``AcceptanceReport`` for the fields. Sent every ``REPORT_INTERVAL_S``."""
        report = AcceptanceReport(
            skip_set, accepted, rejected, draft_step_s, verify_step_s, batch_size
        )
        with self._lock:
            if self._unsent and self._unsent[0].skip_set != skip_set:
                self._flush_acceptance()
            self._unsent.append(report)
            if time.monotonic() - self._unsent_since >= REPORT_INTERVAL_S:
                self._flush_acceptance()
        self._poll()

    def status(self) -> dict[str, Any]:
        """This client's view: key, connection, phase, set, best matchness."""
        with self._lock:
            snapshot = self._snapshot
            return {
                "key": self.key,
                "connected": self._actor is not None,
                "phase": snapshot.phase,
                "current": snapshot.skip_set.to_dict(),
                "best_matchness": snapshot.score,
                "actor_losses": self._losses,
            }

    def close(self) -> None:
        """Stop reconnecting. The actor (shared, detached) keeps running."""
        self._closed.set()

    # --- internals; callers of the _submit family hold the lock ---

    def _submit(
        self, call: Callable[[ray.actor.ActorHandle], ray.ObjectRef]
    ) -> ray.ObjectRef | None:
        if self._actor is None or len(self._pending) >= MAX_PENDING:
            return None
        ref = call(self._actor)
        self._submitted += 1
        self._pending[ref] = self._submitted
        return ref

    def _request_candidates(self) -> None:
        if self._proposal is None and self._snapshot.phase == Phase.OPTIMIZING:
            count = self._config.candidates_per_step
            self._proposal = self._submit(lambda actor: actor.propose.remote(self.key, count))

    def _flush_acceptance(self) -> None:
        reports, self._unsent = self._unsent, []
        self._unsent_since = time.monotonic()
        if reports:
            combined = AcceptanceReport.combined(reports)
            self._submit(lambda actor: actor.report_acceptance.remote(self.key, combined))

    def _poll(self) -> None:
        """Apply the results that have arrived; never waits."""
        with self._lock:
            refs = list(self._pending)
        if not refs:
            return
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        for ref in ready:
            snapshot: Snapshot = ray.get(ref)
            with self._lock:
                number = self._pending.pop(ref, None)
                if number is None:  # dropped by a reconnection meanwhile
                    continue
                if ref == self._proposal:
                    self._proposal = None
                    self._ready = snapshot.candidates
                if number > self._applied:
                    self._applied = number
                    self._snapshot = snapshot

    def _lost(self, exc: Exception) -> None:
        with self._lock:
            self._actor = None
            self._pending.clear()
            self._proposal = None
            self._ready = ()
            self._losses += 1
            if not self._warned:
                self._warned = True
                logger.warning(
                    "skip-set search actor unavailable (%r): drafting continues "
                    "with %s; reconnecting in the background",
                    exc,
                    self._snapshot.skip_set,
                )
        self._start_connecting()

    def _start_connecting(self) -> None:
        with self._lock:
            if self._connecting or self._closed.is_set():
                return
            self._connecting = True
        threading.Thread(
            target=self._connect, name="swift-vllm-search-connect", daemon=True
        ).start()

    def _connect(self) -> None:
        """Background thread: (re)connect with backoff until it works."""
        delay = BACKOFF_S[0]
        while not self._closed.is_set():
            try:
                actor = get_or_create_actor()
                with self._lock:
                    start = self._snapshot.skip_set
                snapshot = ray.get(
                    actor.open.remote(
                        self.key, self._num_layers, self._config, self._draft_len, start
                    ),
                    timeout=OPEN_TIMEOUT_S,
                )
            except Exception as exc:  # Ray not up yet, actor dying...: retry
                with self._lock:
                    if not self._warned:
                        self._warned = True
                        logger.warning(
                            "cannot reach the skip-set search actor (%r): drafting "
                            "with %s; retrying",
                            exc,
                            self._snapshot.skip_set,
                        )
                self._closed.wait(delay)
                delay = min(2 * delay, BACKOFF_S[1])
                continue
            with self._lock:
                self._actor = actor
                self._applied = self._submitted
                self._snapshot = snapshot
                # Under the same lock: a loss noticed from now on reconnects.
                self._connecting = False
                if self._warned:
                    self._warned = False
                    logger.info("skip-set search actor reached again (%s)", self.key)
            return
        with self._lock:
            self._connecting = False
