"""Poll jitter, exponential backoff with full jitter, the virtual clocks, the device probe."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from pathlib import Path

import pytest
from test_agent_support import NOW

from tinyops.fleet.agent.backoff import Backoff, jittered_interval
from tinyops.fleet.agent.clock import ManualClock, SkewedClock
from tinyops.fleet.agent.probe import LinuxProbe, parse_meminfo, parse_thermal


class Highest(random.Random):
    """uniform(a, b) always returns b: shows the ceilings themselves."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_backoff_ceilings_double_from_one_second_up_to_the_cap() -> None:
    backoff = Backoff(rng=Highest())
    delays = [backoff.next_delay() for _ in range(12)]
    assert delays == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_is_full_jitter_with_a_seeded_rng() -> None:
    backoff = Backoff(rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(10)]
    # The same seed drawn by hand: uniform(0, ceiling) for ceilings 1, 2, 4, ..., 256, 300.
    reference = random.Random(7)
    ceilings = [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]
    assert delays == [reference.uniform(0, c) for c in ceilings]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    # Huge attempt counts do not overflow.
    assert backoff.ceiling(10_000) == 300


def test_poll_interval_jitter_stays_within_ten_percent() -> None:
    rng = random.Random(1)
    values = [jittered_interval(300, rng) for _ in range(1000)]
    assert min(values) >= 270 and max(values) <= 330
    # Spread out, not constant: devices do not poll in lockstep.
    assert max(values) - min(values) > 50
    with pytest.raises(ValueError, match="jitter must lie in"):
        jittered_interval(300, rng, jitter=1.5)


def test_manual_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = ManualClock(NOW)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    async def main() -> None:
        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in [("b", 5), ("a", 2), ("c", 9)]]
        await asyncio.sleep(0)
        assert clock.next_deadline() == 2
        clock.advance(4)
        await asyncio.sleep(0)
        assert woke == [("a", 4)]
        while clock.advance_to_next():
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert woke == [("a", 4), ("b", 5), ("c", 9)]
    assert clock.now() == NOW + timedelta(seconds=9)


def test_auto_advancing_and_skewed_clocks() -> None:
    clock = ManualClock(NOW, auto_advance=True)
    asyncio.run(clock.sleep(30))
    assert clock.monotonic() == 30
    skewed = SkewedClock(clock, -3600)
    assert skewed.now() == NOW + timedelta(seconds=30 - 3600)
    assert skewed.monotonic() == 30


def test_meminfo_and_thermal_parsing() -> None:
    text = "MemTotal:        3884136 kB\nMemFree:          180000 kB\nMemAvailable:    2048000 kB\n"
    assert parse_meminfo(text) == 2048000 * 1024
    assert parse_meminfo("MemTotal: 1 kB\n") is None
    assert parse_thermal("48312\n") == 48.312
    assert parse_thermal("n/a") is None


def test_linux_probe_reads_files_and_tolerates_their_absence(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemAvailable:      100 kB\n")
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("51000\n")
    probe = LinuxProbe(tmp_path / "meminfo", tmp_path / "thermal")
    assert (probe.free_memory_bytes(), probe.temperature_c()) == (102400, 51.0)
    absent = LinuxProbe(tmp_path / "none", tmp_path / "none")
    assert (absent.free_memory_bytes(), absent.temperature_c()) == (None, None)
