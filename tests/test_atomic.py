"""The atomic writers (toolkit.atomic, re-exported by toolkit.manifest): unit behaviour, and SIGKILL at random
points while an artifact directory and a file are being replaced, which must leave the old or the new content,
never neither, and nothing that blocks the next run."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import toolkit.atomic
from toolkit.errors import ToolkitError
from toolkit.manifest import atomic_dir, atomic_write_bytes, atomic_write_text, clean_stale


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture
def fallback(monkeypatch):
    """Run with the two-rename scheme, as on a system or filesystem without renameat2(RENAME_EXCHANGE)."""
    monkeypatch.setattr(toolkit.atomic, "_exchange_ok", False)


# --- directories ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_atomic_dir_new_replace_and_failure(tmp_path, mode, request):
    if mode == "fallback":
        request.getfixturevalue("fallback")
    final = tmp_path / "art"
    with atomic_dir(final) as d:
        assert d.parent == tmp_path and d.name.startswith(".art.tmp-")
        (d / "a.txt").write_text("v1")
    assert _names(final) == ["a.txt"] and _names(tmp_path) == ["art"]
    with atomic_dir(final) as d:
        (d / "b.txt").write_text("v2")
    assert _names(final) == ["b.txt"] and _names(tmp_path) == ["art"]  # old tree removed, no temp left
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc):
            with atomic_dir(final) as d:
                (d / "b.txt").write_text("half-written")
                raise exc("interrupted")
        assert (final / "b.txt").read_text() == "v2" and _names(tmp_path) == ["art"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="renameat2 is Linux-only")
def test_replacing_uses_the_single_step_exchange_here(tmp_path):
    final = tmp_path / "art"
    for v in ("v1", "v2"):
        with atomic_dir(final) as d:
            (d / "v").write_text(v)
    # ext4/xfs/btrfs/tmpfs support RENAME_EXCHANGE; the two-rename fallback would have set this to False.
    assert toolkit.atomic._exchange_ok is True
    assert (final / "v").read_text() == "v2"


def test_target_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "art").write_text("x")
    with pytest.raises(ToolkitError, match=r"art: exists and is not a directory"):
        with atomic_dir(tmp_path / "art"):
            pass
    assert _names(tmp_path) == ["art"]


def test_stale_siblings_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    final, dead = tmp_path / "art", _dead_pid()
    final.mkdir()
    stale = [f".art.tmp-{dead}-0123abcd", f".art.old-{dead}-89abcdef", ".art.tmp-a1b2c3d4", ".art.old-1234abcd"]
    live = [f".art.tmp-{os.getppid()}-0123abcd", f".art.tmp-{os.getpid()}-0123abcd"]
    others = [f".artx.tmp-{dead}-0123abcd", f".art.tmp-{dead}-0123abcd.keep", "art2"]
    for n in stale + live + others:
        (tmp_path / n).mkdir()
        (tmp_path / n / "f").write_text(n)
    with atomic_dir(final) as d:
        (d / "new").write_text("x")
    assert _names(tmp_path) == sorted(["art", *live, *others])
    assert _names(final) == ["new"]


def test_fallback_killed_between_renames_is_restored(tmp_path):
    """Two-rename scheme killed after parking the old tree: the next run puts it back before anything else."""
    final, dead = tmp_path / "art", _dead_pid()
    old, new = tmp_path / f".art.old-{dead}-0123abcd", tmp_path / f".art.tmp-{dead}-89abcdef"
    for p, v in ((old, "old"), (new, "new")):
        p.mkdir()
        (p / "v").write_text(v)
    clean_stale(final)
    assert (final / "v").read_text() == "old" and _names(tmp_path) == ["art"]


# --- files ------------------------------------------------------------------------------------------------

def test_atomic_write_creates_replaces_and_keeps_the_usual_mode(tmp_path):
    p = tmp_path / "sub" / "report.json"
    assert atomic_write_text(p, "one\n") == p
    atomic_write_text(p, "two ✓\n")
    assert p.read_text(encoding="utf-8") == "two ✓\n"
    atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01" and _names(p.parent) == ["report.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask  # like write_text, not mkstemp's 0600


def test_atomic_write_failure_names_the_file_and_leaves_no_temp(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(ToolkitError, match=r"out: cannot write"):
        atomic_write_text(tmp_path / "out", "x")
    assert _names(tmp_path) == ["out"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(ToolkitError, match=r"f: cannot create output directory"):
        atomic_write_text(tmp_path / "f" / "g.json", "x")


def test_concurrent_writers_of_one_file_never_collide(tmp_path):
    """Two runs writing the same profile at once (the old fixed ``.tmp`` name made them clobber each other)."""
    p, errors = tmp_path / "profile.yaml", []

    def writer(k: int) -> None:
        try:
            for i in range(20):
                atomic_write_text(p, f"writer {k} round {i}\n" * 1000)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = p.read_text().splitlines()
    assert len(lines) == 1000 and len(set(lines)) == 1 and _names(tmp_path) == ["profile.yaml"]


# --- SIGKILL at random points -----------------------------------------------------------------------------

PARTS, PART_BYTES, FILE_BYTES = 4, 1 << 20, 2 << 20

CHILD = f"""
import json, sys
import toolkit.atomic
from toolkit.manifest import atomic_dir, atomic_write_bytes
if sys.argv[4] == "fallback":
    toolkit.atomic._exchange_ok = False
art, file, v = sys.argv[1], sys.argv[2], int(sys.argv[3])

def payload(v, name, size):
    return (f"v{{v}}:{{name}};".encode() * (size // 8 + 1))[:size]

print("ready", flush=True)
while True:
    with atomic_dir(art) as d:
        for i in range({PARTS}):
            (d / f"part{{i}}.bin").write_bytes(payload(v, f"part{{i}}", {PART_BYTES}))
        (d / "version.json").write_text(json.dumps({{"version": v, "parts": {PARTS}}}))
    atomic_write_bytes(file, payload(v, "file", {FILE_BYTES}))
    v += 1
"""


def _payload(v: int, name: str, size: int) -> bytes:
    return (f"v{v}:{name};".encode() * (size // 8 + 1))[:size]


def _write_version(art: Path, file: Path, v: int) -> None:
    with atomic_dir(art) as d:
        for i in range(PARTS):
            (d / f"part{i}.bin").write_bytes(_payload(v, f"part{i}", PART_BYTES))
        (d / "version.json").write_text(json.dumps({"version": v, "parts": PARTS}))
    atomic_write_bytes(file, _payload(v, "file", FILE_BYTES))


def _check_complete(art: Path, file: Path) -> tuple[int, int]:
    """The artifact is exactly one complete version (and the file one complete version); return both."""
    assert art.is_dir(), "artifact directory missing: neither old nor new"
    assert _names(art) == sorted([*(f"part{i}.bin" for i in range(PARTS)), "version.json"])
    v = json.loads((art / "version.json").read_text())["version"]
    for i in range(PARTS):
        assert (art / f"part{i}.bin").read_bytes() == _payload(v, f"part{i}", PART_BYTES), f"part{i} not v{v}"
    data = file.read_bytes()
    assert data[:1] == b"v" and b":" in data[:20], f"file is not a complete version: {data[:20]!r}"
    w = int(data[1:data.index(b":")])
    assert data == _payload(w, "file", FILE_BYTES), f"file is not a complete v{w}"
    return v, w


@pytest.mark.parametrize("mode,rounds", [("exchange", 30), ("fallback", 12)])
def test_sigkill_while_replacing_leaves_old_or_new(tmp_path, mode, rounds, request):
    if mode == "fallback":
        request.getfixturevalue("fallback")
    rng = random.Random(1234)
    art, file = tmp_path / "art", tmp_path / "file.bin"
    _write_version(art, file, 0)
    v = w = 0
    strays_seen = 0
    for _ in range(rounds):
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(art), str(file), str(v + 1), mode],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.15))
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        strays_seen += len(_names(tmp_path)) > 2
        if mode == "fallback":
            clean_stale(art)  # the documented recovery: the next run restores a parked old tree first
        nv, nw = _check_complete(art, file)
        assert nv >= v and nw >= w  # old or newer, never an earlier one
        v, w = max(nv, nw), nw
        # The next run on the same targets succeeds and leaves no temporary sibling behind.
        v += 1
        _write_version(art, file, v)
        assert _check_complete(art, file) == (v, v)
        assert _names(tmp_path) == ["art", "file.bin"]
    assert strays_seen > 0, "no kill landed while a replacement was in progress: the test exercised nothing"
