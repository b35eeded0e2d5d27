"""Device vital signs the agent reports: free memory and temperature.

    LinuxProbe   reads /proc/meminfo (MemAvailable, in kB, i.e. KiB: × 1024 for bytes) and
                 the first readable /sys/class/thermal/thermal_zone*/temp (millidegrees
                 Celsius: ÷ 1000); None where the file is absent, as in most containers
    FixedProbe   values set by the caller: the fleet simulator's devices

Uptime and resets are the agent's own (time since its boot, boots after the first).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final, Protocol

MEMINFO: Final = Path("/proc/meminfo")
THERMAL: Final = Path("/sys/class/thermal")
# /proc/meminfo says "kB" but means KiB (1024 bytes): see proc(5).
MEMINFO_UNIT_BYTES: Final = 1024
# thermal_zone*/temp holds millidegrees Celsius.
MILLIDEGREES_PER_DEGREE: Final = 1000.0
_MEM_AVAILABLE = re.compile(r"^MemAvailable:\s+(\d+)\s+kB\s*$", re.MULTILINE)


class DeviceProbe(Protocol):
    def free_memory_bytes(self) -> int | None:
        """Memory available to new work, in bytes; None if unknown."""
        ...

    def temperature_c(self) -> float | None:
        """SoC temperature in degrees Celsius; None if the device has no sensor."""
        ...


def parse_meminfo(text: str) -> int | None:
    """MemAvailable from the text of /proc/meminfo, in bytes; None if the line is absent."""
    match = _MEM_AVAILABLE.search(text)
    return int(match[1]) * MEMINFO_UNIT_BYTES if match else None


def parse_thermal(text: str) -> float | None:
    """A thermal zone's temp file (millidegrees Celsius) in degrees Celsius."""
    try:
        return int(text.strip()) / MILLIDEGREES_PER_DEGREE
    except ValueError:
        return None


class LinuxProbe:
    """Reads the Linux kernel's figures; every method returns None where they are missing."""

    def __init__(self, meminfo: Path = MEMINFO, thermal: Path = THERMAL) -> None:
        self.meminfo = meminfo
        self.thermal = thermal

    def free_memory_bytes(self) -> int | None:
        try:
            return parse_meminfo(self.meminfo.read_text())
        except OSError:
            return None

    def temperature_c(self) -> float | None:
        try:
            zones = sorted(self.thermal.glob("thermal_zone*/temp"))
        except OSError:
            return None
        for zone in zones:
            try:
                value = parse_thermal(zone.read_text())
            except OSError:
                continue
            if value is not None:
                return value
        return None


class FixedProbe:
    """Values chosen by the caller (attributes may be changed between polls)."""

    def __init__(self, free_memory: int | None = None, temperature: float | None = None) -> None:
        self.free_memory = free_memory
        self.temperature = temperature

    def free_memory_bytes(self) -> int | None:
        return self.free_memory

    def temperature_c(self) -> float | None:
        return self.temperature


__all__ = ["DeviceProbe", "FixedProbe", "LinuxProbe", "parse_meminfo", "parse_thermal"]
