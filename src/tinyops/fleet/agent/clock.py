"""Time for the agent: a wall clock, a monotonic clock and sleeping, all injectable.

    SystemClock   the real thing: datetime.now(UTC), time.monotonic(), asyncio.sleep()
    ManualClock   virtual time for tests and the fleet simulator: nothing happens until the
                  driver advances it (or, with auto_advance=True, a sleep jumps time
                  forward by itself, for one agent alone)
    SkewedClock   another clock whose wall time is off by a fixed number of seconds, as on a
                  device without NTP; monotonic time and sleeping are unaffected

Wall time is what expiry checks and telemetry timestamps use; monotonic time is what
uptime is measured with.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (arbitrary origin)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of this clock's time."""
        ...


class SystemClock:
    """The machine's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class ManualClock:
    """Virtual time, starting at `start` (UTC) with monotonic time 0 s.

    Without auto_advance, `sleep(s)` blocks until `advance()` moves time to or past its
    deadline; sleepers wake in deadline order. `next_deadline()` lets a discrete-event
    driver jump straight to the next moment anything happens.
    """

    def __init__(self, start: datetime, *, auto_advance: bool = False) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        self.start = start.astimezone(UTC)
        self.auto_advance = auto_advance
        self._elapsed_s = 0.0
        self._sequence = itertools.count()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self._elapsed_s)

    def monotonic(self) -> float:
        return self._elapsed_s

    async def sleep(self, seconds: float) -> None:
        seconds = max(seconds, 0.0)
        if self.auto_advance:
            self._elapsed_s += seconds
            # Still yield, as a real sleep would, so that other tasks get to run.
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._elapsed_s + seconds, next(self._sequence), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError(f"time only moves forward; got {seconds} s")
        self._elapsed_s += seconds
        while self._sleepers and self._sleepers[0][0] <= self._elapsed_s:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)

    def next_deadline(self) -> float | None:
        """Monotonic time (s) of the earliest pending sleep, or None if nobody sleeps."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def advance_to_next(self) -> bool:
        """Jump to the earliest pending deadline and wake its sleepers; False if none."""
        deadline = self.next_deadline()
        if deadline is None:
            return False
        self.advance(max(deadline - self._elapsed_s, 0.0))
        return True


class SkewedClock:
    """`base` with its wall time shifted by `skew_s` seconds (positive: ahead)."""

    def __init__(self, base: Clock, skew_s: float) -> None:
        self.base = base
        self.skew_s = skew_s

    def now(self) -> datetime:
        return self.base.now() + timedelta(seconds=self.skew_s)

    def monotonic(self) -> float:
        return self.base.monotonic()

    async def sleep(self, seconds: float) -> None:
        await self.base.sleep(seconds)


__all__ = ["Clock", "ManualClock", "SkewedClock", "SystemClock"]
