"""Resource sampling while the engine runs: peak RSS of the engine process tree (psutil) and, on CUDA, the
GPU memory its processes hold (``nvidia-smi``). Sampled in a background thread every ``interval_s``."""

from __future__ import annotations

import shutil
import subprocess
import threading


class PeakSampler:
    """``with PeakSampler(pid) as s: ...`` then ``s.peak_rss_mb`` / ``s.peak_gpu_mb`` (None if unknown)."""

    def __init__(self, pid: int | None, interval_s: float = 0.5, cuda: bool = False) -> None:
        self.pid, self.interval_s, self.cuda = pid, interval_s, cuda
        self.peak_rss_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _tree(self):
        import psutil

        proc = psutil.Process(self.pid)
        return [proc, *proc.children(recursive=True)]

    def sample(self) -> None:
        import psutil

        if self.pid is None:
            return
        try:
            procs = self._tree()
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        self.peak_rss_mb = max(self.peak_rss_mb or 0.0, rss / 2**20)
        if self.cuda:
            gpu = gpu_memory_mb({p.pid for p in procs})
            if gpu is not None:
                self.peak_gpu_mb = max(self.peak_gpu_mb or 0.0, gpu)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def __enter__(self) -> "PeakSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sample()


def gpu_memory_mb(pids: set[int]) -> float | None:
    """GPU memory (MiB) used by ``pids`` according to ``nvidia-smi``; None when it cannot be queried."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    total = 0.0
    for line in out.splitlines():
        pid, _, mem = line.partition(",")
        if pid.strip().isdigit() and int(pid) in pids:
            total += float(mem.strip() or 0)
    return total
