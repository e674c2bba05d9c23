"""One deadline per request, fixed at arrival and shared by every stage (retrieval, prompt, engine connect, first
token, each streamed chunk), so a request never runs longer than ``request_timeout_s`` in total: a slow
retrieval leaves less time for the engine, and a stream that stalls after its first token still ends on time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class DeadlineExceeded(Exception):
    """The request's time budget ran out; ``stage`` names what it was waiting for."""

    def __init__(self, stage: str, budget_s: float, elapsed_s: float) -> None:
        super().__init__(f"request deadline of {budget_s:g} s passed while {stage} (after {elapsed_s:.2f} s)")
        self.stage, self.budget_s, self.elapsed_s = stage, budget_s, elapsed_s


class Deadline:
    """``budget_s`` seconds from construction, on the monotonic clock (wall-clock jumps cannot shorten it)."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.start = time.monotonic()
        self.at = self.start + budget_s

    def remaining(self) -> float:
        return max(0.0, self.at - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.at

    def exceeded(self, stage: str) -> DeadlineExceeded:
        return DeadlineExceeded(stage, self.budget_s, time.monotonic() - self.start)

    def check(self, stage: str) -> None:
        """For synchronous stages, which cannot be interrupted: fail right after them if time ran out."""
        if self.expired():
            raise self.exceeded(stage)

    @asynccontextmanager
    async def limit(self, stage: str) -> AsyncIterator[None]:
        """Cancel the awaited body when the deadline passes and raise :class:`DeadlineExceeded`. Keep ``yield``
        of an async generator outside the body: the timer belongs to the task that entered it."""
        timer = asyncio.timeout(self.remaining())
        try:
            async with timer:
                yield
        except TimeoutError:
            if not timer.expired():  # a time-out of the body's own, not ours
                raise
            raise self.exceeded(stage) from None
