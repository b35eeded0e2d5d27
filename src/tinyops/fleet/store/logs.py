"""Device log lines: search (by device, level, time and text, paged by id) and retention.

Lines arrive with telemetry and are stored as they come (`Store.write_telemetry`); this
module is what reads and trims them. The statements are built by pure functions over a
`LogQuery` / `Retention` value and run by the `Store` methods `search_logs` and
`prune_logs`, one transaction each, so they work the same on SQLite and PostgreSQL.

Levels are ordered debug < info < warning < error; a level filter means "this level and
above" (`level=warning` gives warnings and errors), as in every log viewer.

Paging is by id, the order lines were stored in: newest first (`before_id` continues
downwards) or oldest first (`after_id` continues upwards, which is what following a log
does). Time filters apply to the line's own time `t`, the device's clock.

Retention has two limits, both enforced by the periodic prune of the server runtime:
an age (`max_age_days`, on the line's time) and a number of lines per device
(`max_lines_per_device`, newest kept). The line limit is the hard bound on the table's
size: a device whose clock runs ahead never ages out, but it cannot keep more than that
many lines. Deletes go in batches of `PRUNE_BATCH` rows, each its own short transaction,
so telemetry writes (which need SQLite's single write lock) are not held up by a big
prune.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy import Delete, Select, delete, func, select
from sqlalchemy.orm import Session

from tinyops.fleet.store import schema as t

LogLevel = Literal["debug", "info", "warning", "error"]
LEVELS: Final[tuple[LogLevel, ...]] = ("debug", "info", "warning", "error")
LogOrder = Literal["newest", "oldest"]
# Rows deleted per transaction when pruning.
PRUNE_BATCH: Final = 5000
# Default retention: a month of lines, and at most this many lines per device.
DEFAULT_MAX_AGE_DAYS: Final = 30.0
DEFAULT_MAX_LINES_PER_DEVICE: Final = 10_000


def levels_at_or_above(level: LogLevel) -> tuple[LogLevel, ...]:
    """The levels a filter on `level` lets through: it and every more severe one."""
    return LEVELS[LEVELS.index(level) :]


@dataclass(frozen=True)
class LogQuery:
    """Which log lines to return; every field None means "no filter on this"."""

    device_id: str | None = None
    level: LogLevel | None = None
    since: datetime | None = None
    """Lines with `t >= since`."""
    until: datetime | None = None
    """Lines with `t < until`."""
    text: str | None = None
    """Case-insensitive substring of the message (no wildcards: `%` and `_` are literal)."""
    after_id: int | None = None
    before_id: int | None = None
    order: LogOrder = "newest"
    limit: int = 100


@dataclass(frozen=True)
class LogEntry:
    """One stored log line with its id (the paging cursor)."""

    id: int
    device_id: str
    t: datetime
    level: str
    message: str


@dataclass(frozen=True)
class Retention:
    """Retention limits of device logs; None disables a limit."""

    max_age_days: float | None = DEFAULT_MAX_AGE_DAYS
    max_lines_per_device: int | None = DEFAULT_MAX_LINES_PER_DEVICE


def search_statement(query: LogQuery) -> Select[t.DeviceLog]:
    """The SELECT for `query` (pure: builds the statement, runs nothing)."""
    log = t.DeviceLog
    statement = select(log)
    if query.device_id is not None:
        statement = statement.where(log.device_id == query.device_id)
    if query.level is not None and query.level != LEVELS[0]:
        statement = statement.where(log.level.in_(levels_at_or_above(query.level)))
    if query.since is not None:
        statement = statement.where(log.t >= query.since)
    if query.until is not None:
        statement = statement.where(log.t < query.until)
    if query.text:
        statement = statement.where(log.message.icontains(query.text, autoescape=True))
    if query.after_id is not None:
        statement = statement.where(log.id > query.after_id)
    if query.before_id is not None:
        statement = statement.where(log.id < query.before_id)
    order = log.id.asc() if query.order == "oldest" else log.id.desc()
    return statement.order_by(order).limit(query.limit)


def search(session: Session, query: LogQuery) -> list[LogEntry]:
    return [
        LogEntry(r.id, r.device_id, r.t, r.level, r.message)
        for r in session.scalars(search_statement(query))
    ]


def expired_statement(cutoff: datetime) -> Delete:
    """Delete one batch of lines older than `cutoff`."""
    log = t.DeviceLog
    batch = select(log.id).where(log.t < cutoff).limit(PRUNE_BATCH).scalar_subquery()
    return delete(log).where(log.id.in_(batch)).execution_options(synchronize_session=False)


def excess_statement(max_lines: int) -> Delete:
    """Delete one batch of lines beyond the newest `max_lines` of their device."""
    log = t.DeviceLog
    # Rank each device's lines newest first; a window function, on SQLite ≥ 3.25 and
    # PostgreSQL alike, so one statement covers every device.
    ranked = select(
        log.id.label("id"),
        func.row_number().over(partition_by=log.device_id, order_by=log.id.desc()).label("rank"),
    ).subquery()
    batch = select(ranked.c.id).where(ranked.c.rank > max_lines).limit(PRUNE_BATCH)
    statement = delete(log).where(log.id.in_(batch.scalar_subquery()))
    # No ORM objects to keep in step: the rows are gone for good.
    return statement.execution_options(synchronize_session=False)


def cutoff(retention: Retention, now: datetime) -> datetime | None:
    """Lines older than this are expired (None: no age limit)."""
    if retention.max_age_days is None:
        return None
    return now - timedelta(days=retention.max_age_days)


__all__ = [
    "DEFAULT_MAX_AGE_DAYS",
    "DEFAULT_MAX_LINES_PER_DEVICE",
    "LEVELS",
    "LogEntry",
    "LogLevel",
    "LogOrder",
    "LogQuery",
    "Retention",
    "cutoff",
    "excess_statement",
    "expired_statement",
    "levels_at_or_above",
    "search",
    "search_statement",
]
