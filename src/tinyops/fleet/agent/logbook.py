"""The agent's own log: a ring of recent lines for `fetch_logs`, and lines awaiting telemetry.

Each simulated device keeps its log in memory (thousands of agents share one process), so
this is not the `logging` module; lines are also passed on to the `tinyops.fleet.agent`
logger, when that logger is enabled, prefixed with the device id.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Final

from tinyops.fleet.agent.messages import MAX_LOG_MESSAGE_CHARS, LogLevel, LogLine, clean_text

LEVELS: Final[dict[LogLevel, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
DEFAULT_CAPACITY: Final = 1000
_logger = logging.getLogger("tinyops.fleet.agent")


class AgentLog:
    """Recent log lines (at most `capacity`) and those not yet sent (at most `capacity`)."""

    def __init__(
        self,
        now: Callable[[], datetime],
        device_id: str,
        *,
        level: LogLevel = "info",
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._now = now
        self.device_id = device_id
        self.level: LogLevel = level
        self._recent: deque[LogLine] = deque(maxlen=capacity)
        self._unsent: deque[LogLine] = deque(maxlen=capacity)

    def log(self, level: LogLevel, message: str) -> None:
        if LEVELS[level] < LEVELS[self.level]:
            return
        line = LogLine(
            t=self._now(), level=level, message=clean_text(message, MAX_LOG_MESSAGE_CHARS)
        )
        self._recent.append(line)
        self._unsent.append(line)
        if _logger.isEnabledFor(LEVELS[level]):
            _logger.log(LEVELS[level], "%s: %s", self.device_id, message)

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    def last(self, count: int) -> list[LogLine]:
        """The newest `count` lines, oldest first."""
        if count <= 0:
            return []
        return list(self._recent)[-count:]

    @property
    def unsent_count(self) -> int:
        return len(self._unsent)

    def take_unsent(self, limit: int | None = None) -> list[LogLine]:
        """The oldest `limit` (default: all) lines not yet sent; sent unless handed back."""
        count = len(self._unsent) if limit is None else min(limit, len(self._unsent))
        return [self._unsent.popleft() for _ in range(count)]

    def give_back(self, lines: list[LogLine]) -> None:
        """Lines whose sending failed, to be sent first next time (oldest dropped if full)."""
        newer = list(self._unsent)
        self._unsent.clear()
        self._unsent.extend([*lines, *newer])


__all__ = ["LEVELS", "AgentLog"]
