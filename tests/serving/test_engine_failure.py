"""An engine that exits during start-up: the endpoint keeps serving and answers 503 with the engine's reason.

The fast test runs the real endpoint process (``python -m toolkit.serving.server``) in front of an engine URL
nobody listens on, with the ``--engine-status-file`` the stack writes. The slow ones need the real llama.cpp
build (``make setup-llamacpp``) and skip without it: llama-server given a GGUF that is garbage exits during
start-up; ``running_stack(keep_serving=True)`` and ``toolkit serve`` then answer 503 with its load error, while
``running_stack()`` (evaluation, benchmarks) still fails fast with one line.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from toolkit.engine import launch
from toolkit.engine.launch import kill_group, spawn
from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT, SERVE_DIR
from toolkit.engine.llamacpp import llamacpp_load_error
from toolkit.serving.engine import free_port

BUILT = os.access(launch.LLAMACPP_DIR / "bin" / "llama-server", os.X_OK)
needs_build = pytest.mark.skipif(not BUILT, reason=f"llama.cpp not built ({launch.LLAMACPP_DIR}); "
                                 "run `make setup-llamacpp`")
RAG = {"query": "Who walked on the Moon in 1969?", "max_tokens": 4}
CHAT = {"model": "any", "max_tokens": 4, "messages": [{"role": "user", "content": "What is FAISS?"}]}


def _wait_healthz(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120) -> httpx.Response:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            return httpx.get(f"{url}/healthz", timeout=5)
        except httpx.HTTPError:
            time.sleep(0.3)
    raise AssertionError(f"endpoint not up after {timeout_s} s: {log.read_text()[-2000:]}")


def _assert_503_with(url: str, reason: str) -> None:
    """/v1/rag (plain and streamed), /v1/chat/completions and /healthz all say why the engine is down."""
    for path, body in (("/v1/rag", RAG), ("/v1/rag", {**RAG, "stream": True}), ("/v1/chat/completions", CHAT),
                       ("/v1/chat/completions", {**CHAT, "stream": True})):
        r = httpx.post(f"{url}{path}", json=body, timeout=60)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"] == {"message": reason, "type": "engine_unavailable", "code": 503}, path
    health = httpx.get(f"{url}/healthz", timeout=30)
    assert health.status_code == 503
    assert health.json()["engine"] == "failed" and health.json()["engine_failure"] == reason


def test_endpoint_answers_503_with_the_reason_the_status_file_gives(small_index, tmp_path):
    status, log = tmp_path / "engine-failure.txt", tmp_path / "endpoint.log"
    port, engine_url = free_port(), f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = spawn([sys.executable, "-m", "toolkit.serving.server", "--index", str(small_index), "--engine-url",
                  engine_url, "--served-model-name", "bad", "--port", str(port), "--engine-status-file", str(status)],
                 log)
    url = f"http://127.0.0.1:{port}"
    try:
        # no status yet: an engine still starting (or restarting) is the usual retry-later 503
        health = _wait_healthz(url, proc, log)
        assert health.status_code == 503 and health.json()["engine"] == "unreachable"
        assert "engine_failure" not in health.json()
        r = httpx.post(f"{url}/v1/rag", json=RAG, timeout=60)
        assert r.status_code == 503 and "unreachable" in r.json()["error"]["message"]

        reason = "llama.cpp could not load bad: llama_model_load: error loading model: missing tensor 'output.weight'"
        status.write_text(reason + "\n")
        _assert_503_with(url, reason)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert 'rag_requests_total{route="/v1/rag",status="503"} 3.0' in metrics
    finally:
        kill_group(proc, grace_s=10)


def test_llamacpp_load_error_picks_the_loaders_reason():
    # llama-server 0.3.36's own lines for a model.gguf that is text (time and level prefixes included)
    log = """0.00.028.427 I srv    load_model: loading model '/m/model.gguf'
0.00.028.894 E gguf_init_from_reader: invalid magic characters: 'this', expected 'GGUF'
0.00.029.855 E llama_model_load: error loading model: llama_model_loader: failed to load model from /m/model.gguf
0.00.029.879 E llama_model_load_from_file_impl: failed to load model
0.00.030.048 E cmn  common_init_: failed to load model '/m/model.gguf'
0.00.030.066 E srv    load_model: failed to load model, '/m/model.gguf'
0.00.030.069 I srv    operator(): operator(): cleaning up before exit...
0.00.030.813 E srv  llama_server: exiting due to model loading error
"""
    # the loader's line is generic here: the GGUF parser's line before it says why
    assert llamacpp_load_error(log) == (
        "llama_model_load: error loading model: llama_model_loader: failed to load model from /m/model.gguf "
        "(gguf_init_from_reader: invalid magic characters: 'this', expected 'GGUF')")
    specific = "llama_model_load: error loading model: missing tensor 'output.weight'"
    assert llamacpp_load_error(f"0.01.000.000 I load_tensors: loading\n0.01.000.100 E {specific}\n"
                               "0.01.000.200 E srv  llama_server: exiting due to model loading error") == specific
    assert llamacpp_load_error("main: server is listening\nerror: something else") is None


# --- the real build -----------------------------------------------------------------------------------------

@pytest.fixture
def garbage_gguf(tiny_llama, tmp_path) -> Path:
    """A GGUF model directory (config and tokenizer of the tiny Llama) whose model.gguf is not a GGUF."""
    d = tmp_path / "bad-q8_0"
    d.mkdir()
    for f in tiny_llama.iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, d / f.name)
    (d / "model.gguf").write_bytes(b"this is not a GGUF file\n" * 64)
    return d


@pytest.mark.slow
@needs_build
def test_unloadable_gguf_keeps_the_endpoint_answering_503_with_llama_servers_reason(garbage_gguf, small_index):
    from toolkit.serving.stack import running_stack

    profile = SERVE_DIR / "llamacpp.yaml"
    with running_stack(garbage_gguf, small_index, profile=profile, keep_serving=True) as stack:
        reason = stack.engine_failure
        assert reason and reason.startswith(f"llama.cpp could not load {garbage_gguf.name}: ")
        assert "error loading model" in reason and "\n" not in reason
        assert stack.engine_pid is None and stack.failure() is None  # the endpoint still serves
        _assert_503_with(stack.url, reason)

    # evaluation and the benchmarks: still the one-line error, before anything is yielded
    with pytest.raises(ToolkitError, match=r"llama.cpp exited during start-up \(code \d+\): .*error loading model"):
        with running_stack(garbage_gguf, small_index, profile=profile):
            pytest.fail("yielded a stack whose engine failed")


@pytest.mark.slow
@needs_build
def test_toolkit_serve_reports_the_load_error_and_serves_503_until_stopped(garbage_gguf, small_index, tmp_path):
    port = free_port()
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--model", str(garbage_gguf), "--index",
                                 str(small_index), "--profile", str(SERVE_DIR / "llamacpp.yaml"), "--port", str(port),
                                 "--engine-port", str(free_port())], stdout=o, stderr=e, cwd=REPO_ROOT)
    try:
        t0 = time.monotonic()
        while "error: " not in err.read_text() and time.monotonic() - t0 < 180:
            assert proc.poll() is None, err.read_text()[-2000:]
            time.sleep(0.5)
        [line] = [ln for ln in err.read_text().splitlines() if ln.startswith("error: ")]
        assert line.endswith("; the endpoint answers 503 with it until stopped (Ctrl-C)")
        reason = line.removeprefix("error: ").removesuffix("; the endpoint answers 503 with it until stopped (Ctrl-C)")
        assert reason.startswith(f"llama.cpp could not load {garbage_gguf.name}: ") and "error loading model" in reason
        _assert_503_with(f"http://127.0.0.1:{port}", reason)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
