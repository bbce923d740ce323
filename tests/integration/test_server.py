"""A real `vllm serve` with self-skip answers OpenAI chat and completion
requests, streaming too, with the same greedy text as a plain server."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager

import pytest

pytestmark = pytest.mark.integration

SERVER_ARGS = [
    "--dtype",
    "float32",
    "--enforce-eager",
    "--max-model-len",
    "2048",
    "--max-num-seqs",
    "8",
    "--seed",
    "0",
]
STARTUP_TIMEOUT_S = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _server(command: list[str], log_path):
    port = _free_port()
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), *SERVER_ARGS],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, f"server exited; log: {log_path.read_text()[-3000:]}"
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline, "server did not start in time"
                time.sleep(2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.load(response)


def _stream(url: str, body: dict) -> str:
    """Concatenated text of a streamed (server-sent events) response."""
    request = urllib.request.Request(
        url, json.dumps(body | {"stream": True}).encode(), {"Content-Type": "application/json"}
    )
    text = []
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            text.append(choice.get("text") or choice.get("delta", {}).get("content") or "")
    return "".join(text)


def _answers(base: str, model: str) -> dict[str, str]:
    chat = {
        "model": model,
        "messages": [
            {"role": "user", "content": "Explain what a hash table is in three sentences."}
        ],
        "max_tokens": 64,
        "temperature": 0,
    }
    completion = {
        "model": model,
        "prompt": "The three primary colours are",
        "max_tokens": 48,
        "temperature": 0,
    }
    return {
        "chat": _post(f"{base}/v1/chat/completions", chat)["choices"][0]["message"]["content"],
        "completion": _post(f"{base}/v1/completions", completion)["choices"][0]["text"],
        "chat_stream": _stream(f"{base}/v1/chat/completions", chat),
        "completion_stream": _stream(f"{base}/v1/completions", completion),
    }


def _spec_decode_drafts(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("vllm:spec_decode_num_draft_tokens_total"):
                return float(line.split()[-1])
    return 0.0


def test_served_self_skip_matches_plain_server(smollm2, tmp_path):
    swift = [
        sys.executable,
        "-m",
        "swift_vllm.cli",
        "serve",
        smollm2,
        "--speculative-model",
        "[self-skip]",
        "--num-speculative-tokens",
        "4",
        "--speculative-config",
        '{"skip_ratio": 0.1}',
    ]
    plain = [sys.executable, "-m", "swift_vllm.cli", "serve", smollm2]
    with _server(plain, tmp_path / "plain.log") as plain_base:
        plain_answers = _answers(plain_base, smollm2)
    with _server(swift, tmp_path / "swift.log") as swift_base:
        swift_answers = _answers(swift_base, smollm2)
        drafted = _spec_decode_drafts(swift_base)
    assert all(plain_answers.values())
    assert swift_answers == plain_answers
    assert plain_answers["chat"] == plain_answers["chat_stream"]
    assert drafted > 0, "the self-skip server did not draft"
