"""Online benchmark: real ``vllm serve`` servers driven by vLLM's own ``vllm bench serve``.

One server per method (``swift-vllm serve``: 127.0.0.1 only, a free port,
terminated at the end); then, for each concurrency level, ``vllm bench
serve`` sends the same prompts (the offline benchmark's selection, as a vLLM
"custom" JSONL dataset, chat template applied by vLLM) to ``/v1/completions``
and saves its result JSON: TTFT, TPOT, ITL, end-to-end latency, request and
token throughput, and vLLM's spec-decode acceptance read from ``/metrics``.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from swift_vllm.bench.methods import BASELINE
from swift_vllm.engine import CPU_KV_CACHE_GIB, ENGINE_DEFAULTS, cli_flags

STARTUP_TIMEOUT_S = 900
# Fields of vLLM's result JSON kept per run (times in milliseconds).
METRICS = [
    "completed",
    "duration",
    "request_throughput",
    "output_throughput",
    "total_token_throughput",
    *(
        f"{stat}_{metric}_ms"
        for metric in ("ttft", "tpot", "itl", "e2el")
        for stat in ("mean", "median", "p99")
    ),
]


@dataclass(frozen=True)
class ServeWorkload:
    model: str
    prompts_file: Path
    concurrency: list[int]
    num_prompts: int
    max_tokens: int
    temperature: float
    engine_args: dict[str, Any] = field(default_factory=dict)
    """vLLM engine arguments that replace ``ENGINE_DEFAULTS`` on every server."""


def write_prompts(questions: list[dict], path: Path) -> Path:
    """First turns as vLLM's custom dataset (``{"prompt": ...}`` lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": q["turns"][0]}) + "\n" for q in questions))
    return path


def server_args(max_num_seqs: int, engine_args: dict[str, Any] | None = None) -> list[str]:
    """``vllm serve`` flags matching the offline engines: ``ENGINE_DEFAULTS``,
    then ``engine_args`` (``--engine-args``)."""
    settings = {k: v for k, v in ENGINE_DEFAULTS.items() if k != "disable_log_stats"}
    settings |= engine_args or {}
    return cli_flags(settings | {"max_num_seqs": max_num_seqs, "enable_prefix_caching": False})


def swift_vllm(*argv: str) -> list[str]:
    """The ``swift-vllm *argv`` command line in this interpreter."""
    return [sys.executable, "-m", "swift_vllm.cli", *argv]


def server_command(
    model: str,
    speculative_config: dict | None,
    max_num_seqs: int,
    port: int,
    engine_args: dict[str, Any] | None = None,
) -> list[str]:
    spec = ["--speculative-config", json.dumps(speculative_config)] if speculative_config else []
    address = ["--host", "127.0.0.1", "--port", str(port)]
    return swift_vllm("serve", model, *spec, *address, *server_args(max_num_seqs, engine_args))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def server(command_for_port: Callable[[int], list[str]], log_path: Path) -> Iterator[str]:
    """A server process group on a free local port; yields its base URL and
    terminates the whole group (API server and engine core) on exit."""
    port = _free_port()
    env = {"VLLM_CPU_KVCACHE_SPACE": CPU_KV_CACHE_GIB} | dict(os.environ)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            command_for_port(port), stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log_path}")
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"server not up after {STARTUP_TIMEOUT_S}s; see {log_path}"
                    ) from None
                time.sleep(2)
        yield base
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its engine core too, even if the API
    server already died), SIGKILL after a minute."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def bench_command(
    base: str, label: str, concurrency: int, work: ServeWorkload, out: Path
) -> list[str]:
    """``vllm bench serve`` for one concurrency level; saves ``out/<label>_c<C>.json``."""
    return swift_vllm(
        "vllm", "bench", "serve",
        "--backend", "openai",
        "--base-url", base,
        "--model", work.model,
        "--dataset-name", "custom",
        "--dataset-path", str(work.prompts_file),
        "--custom-output-len", str(work.max_tokens),
        "--disable-shuffle",
        "--num-prompts", str(work.num_prompts),
        "--num-warmups", str(concurrency),
        "--max-concurrency", str(concurrency),
        "--request-rate", "inf",
        "--temperature", str(work.temperature),
        "--seed", "0",
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,99",
        "--label", label,
        "--save-result",
        "--result-dir", str(out),
        "--result-filename", f"{label}_c{concurrency}.json",
    )  # fmt: skip


def run_method(
    label: str, speculative_config: dict | None, work: ServeWorkload, out: Path, progress: tqdm
) -> list[dict[str, Any]]:
    """Serve one method and run every concurrency level against it."""
    rows = []
    command = partial(
        server_command,
        work.model,
        speculative_config,
        max(work.concurrency),
        engine_args=work.engine_args,
    )
    with server(command, out / f"{label}.server.log") as base:
        for concurrency in work.concurrency:
            progress.set_postfix_str(f"{label} c{concurrency}")
            with (out / f"{label}_c{concurrency}.log").open("w") as log:
                subprocess.run(
                    bench_command(base, label, concurrency, work, out),
                    stdout=log, stderr=subprocess.STDOUT, check=True,
                )  # fmt: skip
            result = json.loads((out / f"{label}_c{concurrency}.json").read_text())
            rows.append(row_of(label, concurrency, result))
            progress.update(1)
    return rows


def row_of(label: str, concurrency: int, result: dict[str, Any]) -> dict[str, Any]:
    """The kept metrics of one ``vllm bench serve`` result JSON; acceptance as
    a fraction, like the offline results (vLLM reports a percentage)."""
    rate = result.get("spec_decode_acceptance_rate")
    return (
        {"method": label, "concurrency": concurrency}
        | {key: result.get(key) for key in METRICS}
        | {
            "acceptance_rate": None if rate is None else rate / 100,
            "acceptance_length": result.get("spec_decode_acceptance_length"),
        }
    )


def add_speedups(rows: list[dict[str, Any]]) -> None:
    """Output-throughput ratio against vanilla at the same concurrency."""
    base = {r["concurrency"]: r["output_throughput"] for r in rows if r["method"] == BASELINE}
    for row in rows:
        vanilla = base.get(row["concurrency"])
        row["speedup"] = row["output_throughput"] / vanilla if vanilla else None
