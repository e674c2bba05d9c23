"""vLLM is launched from one place with its environment passed explicitly: the caller's ``os.environ`` is copied,
never changed, and a job's whole process group goes when it ends or times out."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from toolkit.engine import client
from toolkit.engine.launch import ENGINE_DEFAULTS, engine_env
from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT

MARKER = "time.sleep(61.25)"  # names the fake engine core among all processes
# stands in for `python -m toolkit.engine.offline JOB RESULT`: starts a child (as vLLM starts its engine core),
# then writes what its environment says
FAKE_JOB = ("import json, os, subprocess, sys, time\n"
            f"subprocess.Popen([sys.executable, '-c', 'import time; {MARKER}'])\n"
            "time.sleep(float(os.environ.get('FAKE_SLEEP', '0')))\n"
            "json.dump({'x': os.environ.get('TOOLKIT_TEST_X'), 'kv': os.environ.get('VLLM_CPU_KVCACHE_SPACE')},"
            " open(sys.argv[2], 'w'))\n")


def test_engine_env_copies_and_layers_without_touching_os_environ(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # the caller's own setting beats a default
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    before = dict(os.environ)
    env = engine_env({"TOOLKIT_TEST_X": "1", "VLLM_CPU_KVCACHE_SPACE": "3"})
    assert env["TOOLKIT_TEST_X"] == "1" and env["VLLM_CPU_KVCACHE_SPACE"] == "3"  # explicit wins
    assert env["TOKENIZERS_PARALLELISM"] == "true"
    assert env["PYTHONPATH"] == f"{REPO_ROOT}{os.pathsep}/elsewhere"
    assert engine_env()["VLLM_CPU_KVCACHE_SPACE"] == ENGINE_DEFAULTS["VLLM_CPU_KVCACHE_SPACE"]
    assert dict(os.environ) == before


@pytest.fixture
def fake_offline(monkeypatch):
    monkeypatch.setattr(client, "vllm_command", lambda module, *args: [sys.executable, "-c", FAKE_JOB, *args])
    monkeypatch.delenv("TOOLKIT_TEST_X", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)  # so the job sees the launcher's default


def _survivors() -> list[psutil.Process]:
    """Grandchildren the fake job started that are still running (up to 10 s after the job ended)."""
    deadline = time.time() + 10
    while True:
        alive = []
        for proc in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if MARKER in " ".join(proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(proc)
        if not alive or time.time() > deadline:
            return alive
        time.sleep(0.2)


def test_run_offline_hands_env_to_the_job_only(fake_offline):
    assert client.run_offline("throughput", {"model": "m"}, env={"TOOLKIT_TEST_X": "1"}) == {"x": "1", "kv": "1"}
    assert "TOOLKIT_TEST_X" not in os.environ
    assert client.run_offline("throughput", {"model": "m"})["x"] is None
    assert not _survivors(), "the job's child outlived the job"


def test_run_offline_time_out_takes_the_whole_group(fake_offline, monkeypatch):
    monkeypatch.setenv("FAKE_SLEEP", "60")
    t0 = time.time()
    with pytest.raises(ToolkitError, match="exceeded 2 s"):
        client.run_offline("throughput", {"model": "m"}, timeout_s=2)
    assert time.time() - t0 < 30
    assert not _survivors(), "the job's child survived the time-out"


def test_precision_passes_tf32_to_the_engine_not_to_itself(monkeypatch):
    from toolkit.precision import measure
    from toolkit.precision.candidates import CANDIDATES, Planned
    from toolkit.precision.settings import ThroughputSettings

    calls = []

    def fake_run_offline(task, engine, timeout_s=1800, env=None, **job):
        calls.append((env, os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")))
        return {}

    monkeypatch.setattr(client, "run_offline", fake_run_offline)
    monkeypatch.delenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", raising=False)
    tf32 = next(c for c in CANDIDATES.values() if c.tf32)
    measure.engine_throughput(Path("m"), Planned(tf32, "native", ""), ThroughputSettings())
    measure.engine_throughput(Path("m"), Planned(CANDIDATES["fp32"], "native", ""), ThroughputSettings())
    assert calls == [({"TORCH_ALLOW_TF32_CUBLAS_OVERRIDE": "1"}, None), ({}, None)]
