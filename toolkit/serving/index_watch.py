"""Follow index updates in a running endpoint: ``toolkit index add/remove`` installs a new index directory
(a new ``index_version``) while ``toolkit serve`` holds the old one in memory; this notices and swaps.

How: requests (and ``/healthz``, ``/metrics`` scrapes) call :meth:`IndexWatch.poll`, which at most every
``reload_check_s`` seconds stats the index manifest (inode, mtime, size: microseconds) and, only when that
changed, reads the version in it. A new version is loaded in a worker thread with the running query embedder
(no second model in memory; a different model or dimension is refused as at start-up), checked with one real
search, then installed with one attribute assignment, so a request that already picked up the old index
finishes on it (the old index is freed with its last user, never closed under one). Request-driven rather
than a timer thread: nothing to start or stop with the app, and an idle endpoint costs nothing; the first
request after an update may still be answered by the old index.

Safety: the served version only ever moves to a fully loaded index; a load that fails (a corrupt or
incompatible new index) keeps the old one, logs one line and counts ``rag_index_reloads_total{result="failed"}``;
that version is retried only when the manifest changes again. The query caches key on the index version, so
results cached for the old index are never served for the new one. An index directory swapped again while
loading (manifest read before the load differs from the one after) is discarded and picked up on the next
check. milvus-lite indexes are not followed (milvus-lite keeps one server per database path, so the old and the
new index cannot be open side by side): restart the endpoint after updating one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.manifest import MANIFEST_NAME, read_manifest
from toolkit.retrieval.index import RetrievalIndex
from toolkit.serving.metrics import Metrics

if TYPE_CHECKING:
    from toolkit.serving.rag import RagService

log = logging.getLogger(__name__)


class IndexWatch:
    """Polls ``path``'s manifest and installs a newly loaded index with ``install`` (see the module docstring)."""

    def __init__(self, path: str | Path, version: str, load: Callable[[], RetrievalIndex],
                 install: Callable[[RetrievalIndex], None], interval_s: float, metrics: Metrics) -> None:
        self.path, self.version, self.interval_s = Path(path), version, interval_s
        self._load, self._install, self.metrics = load, install, metrics
        self._manifest = self.path / MANIFEST_NAME
        # None: the first due check reads the manifest, so an update landing between the endpoint's start-up
        # load and this watch is not missed
        self._seen: tuple[int, int, int] | None = None
        self._next = time.monotonic() + interval_s
        self._lock = threading.Lock()
        self._loader: threading.Thread | None = None
        self.reloads = self.failures = 0
        self.last_error: str | None = None

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self._manifest)
        except OSError:  # between the two renames of a non-atomic install, or removed: look again later
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _manifest_version(self) -> str | None:
        try:
            manifest = read_manifest(self.path) or {}
        except Exception:  # noqa: BLE001 - unreadable now: the next check looks again
            return None
        version = (manifest.get("results") or {}).get("index_version")
        return version if isinstance(version, str) else None

    def poll(self) -> None:
        """Cheap unless due: starts a background load when the manifest names another version than served."""
        now = time.monotonic()
        if now < self._next or not self._lock.acquire(blocking=False):
            return
        try:
            self._next = now + self.interval_s
            if self._loader is not None and self._loader.is_alive():
                return
            sig = self._signature()
            if sig is None or sig == self._seen:
                return
            version = self._manifest_version()
            if version is None:
                return  # _seen unchanged: read again on the next check
            self._seen = sig
            if version == self.version:
                return
            self._loader = threading.Thread(target=self._reload, args=(version, sig), name="index-reload",
                                            daemon=True)
            self._loader.start()
        finally:
            self._lock.release()

    def _reload(self, version: str, sig: tuple[int, int, int]) -> None:
        t0 = time.perf_counter()
        try:
            new = self._load()
            _smoke_test(new)
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old index serving
            self.failures += 1
            self.last_error = f"version {version}: {type(exc).__name__}: {exc}"[:300]
            self.metrics.index_reloads.labels("failed").inc()
            msg = " ".join(str(exc).split())[:300]
            log.warning("index %s: reload of version %s failed, still serving version %s: %s", self.path, version,
                        self.version, msg)
            return
        if self._signature() != sig:  # installed again while we loaded: files may mix two versions
            with self._lock:
                self._seen = None
            new.close()
            return
        self._install(new)
        self.version = new.version
        self.reloads += 1
        self.metrics.index_reloads.labels("ok").inc()
        log.info("index %s reloaded: version %s (%d chunks) in %.0f ms", self.path, new.version,
                 new.results["count"], (time.perf_counter() - t0) * 1000)

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until a running load has finished (tests, shutdown)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout_s)

    def status(self) -> dict[str, Any]:
        return {"check_s": self.interval_s, "reloads": self.reloads, "failures": self.failures,
                "last_error": self.last_error}


def _smoke_test(index: RetrievalIndex) -> None:
    """One real search before installing: a store or vector file that opens but cannot answer (SQLite opens a
    garbage file lazily) fails here, in the background, instead of in requests."""
    from toolkit.errors import ToolkitError

    try:
        rows = len(index.store) if index.store is not None else index.results["count"]
        hits = index.search_vector(index.embed("index reload check"), 1)
    except Exception:
        index.close()
        raise
    if rows and not hits:
        index.close()
        raise ToolkitError(f"{index.path}: a search of the new index found nothing ({rows} chunks)")


def watch_index(rag: RagService, path: str | Path, load: Callable[[RetrievalIndex], RetrievalIndex],
                interval_s: float) -> IndexWatch | None:
    """Make ``rag`` follow updates of the index at ``path``;
    ``load(current)`` loads the new one reusing ``current``'s embedder. None (nothing watched) when
    ``interval_s`` is 0 or the index is a milvus-lite one."""
    r = rag.index.results
    if interval_s <= 0:
        return None
    if r.get("backend") == "milvus" and not r.get("milvus_uri"):
        log.info("index %s: milvus-lite indexes are not reloaded on update; restart the endpoint after one", path)
        return None

    def install(new: RetrievalIndex) -> None:
        rag.index = new  # one assignment: requests read rag.index once and keep what they read

    watch = IndexWatch(path, rag.index.version, lambda: load(rag.index), install, interval_s, rag.metrics)
    rag.watch = watch
    return watch
