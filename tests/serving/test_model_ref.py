"""Which model the engine serves under which name, and `toolkit serve` as the stack eval runs, waiting on a signal.

The serve test runs the real command against a stand-in OpenAI engine (``--engine-url``), so it exercises the
stack, the endpoint process and the signal handling in seconds, without a vLLM start.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psutil
import pytest

from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT
from toolkit.serving.engine import free_port
from toolkit.serving.model_ref import engine_model_id, served_model


def test_a_local_directory_is_served_under_its_name(tiny_llama):
    ref = served_model(tiny_llama)
    assert ref.source == str(tiny_llama) and ref.name == tiny_llama.name and ref.local_dir == tiny_llama


@pytest.mark.parametrize("hub_id", ["gpt2", "org/name"])
def test_a_hub_id_is_served_under_itself(hub_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local directory of that name
    ref = served_model(hub_id)
    assert (ref.source, ref.name, ref.local_dir) == (hub_id, hub_id, None)


@pytest.mark.parametrize("given", ["./nope", "/no/such/model", "a/b/c", "~/nope-model"])
def test_a_missing_path_is_a_one_line_error(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ToolkitError, match="no such directory") as exc:
        served_model(given)
    assert "\n" not in str(exc.value)


def test_a_directory_that_is_no_model_is_refused(tmp_path):
    with pytest.raises(ToolkitError, match="no config.json"):
        served_model(tmp_path)


class _FakeEngine(BaseHTTPRequestHandler):
    """/v1/models as vLLM answers it; /health; anything else 404. ``models`` is set per server."""

    models: object = {"object": "list", "data": [{"id": "served-name", "object": "model"}]}

    def do_GET(self) -> None:  # http.server calls it by this name
        if self.path == "/v1/models":
            body = json.dumps(self.server.models).encode()  # type: ignore[attr-defined]
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("content-length", "0")
            self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_engine() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeEngine)
    server.models = _FakeEngine.models  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def test_engine_model_id_is_the_name_the_engine_reports(fake_engine):
    assert engine_model_id(_url(fake_engine)) == "served-name"
    assert engine_model_id(_url(fake_engine) + "/") == "served-name"


def test_engine_model_id_reports_failures_instead_of_none(fake_engine):
    with pytest.raises(ToolkitError, match="unreachable"):
        engine_model_id(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    fake_engine.models = {"data": []}  # type: ignore[attr-defined]
    with pytest.raises(ToolkitError, match="not an OpenAI model list"):
        engine_model_id(_url(fake_engine))


def test_serve_accepts_a_hub_id_like_every_other_command(tmp_path, capsys):
    from toolkit.cli import main

    # `gpt2` passes the model check (it used to fail here alone); the missing index is what stops it
    assert main(["serve", "--model", "gpt2", "--index", str(tmp_path / "noindex"), "--port", str(free_port()),
                 "--engine-port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "index directory not found" in err and "gpt2" not in err and err.count("\n") == 1


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_the_stack_until_a_signal_then_stops_it(sig, fake_engine, tiny_llama, small_index):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--model", str(tiny_llama), "--index",
                             str(small_index), "--engine-url", _url(fake_engine), "--port", str(port)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.time() + 240
        while time.time() < deadline and not any(ln.startswith("RAG endpoint:") for ln in lines):
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
        out = "".join(lines)
        assert f"RAG endpoint: http://127.0.0.1:{port}/v1/rag" in out, out + (proc.stderr.read() if proc.poll() else "")
        assert f"engine: {_url(fake_engine)}" in out and "chunks (flat" in out
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).json()
        assert health["engine"] == "ok" and health["index"]["count"] > 0
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert children  # the endpoint runs in its own process, as under eval
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        assert "stopping" in proc.stdout.read()
        deadline = time.time() + 30
        while any(_alive(p) for p in children) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p for p in children if _alive(p)], "the endpoint survived `toolkit serve`"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_stops_when_the_endpoint_dies(fake_engine, tiny_llama, small_index):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--model", str(tiny_llama), "--index",
                             str(small_index), "--engine-url", _url(fake_engine), "--port", str(port)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if proc.stdout.readline().startswith("RAG endpoint:"):
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, proc.stderr.read()
        for child in children:
            child.kill()
        assert proc.wait(timeout=60) == 2
        err = proc.stderr.read()
        assert err.startswith("error: RAG endpoint exited (code") and err.count("\n") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

