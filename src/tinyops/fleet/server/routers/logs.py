"""Device log search: `GET /api/v1/devices/{id}/logs` and fleet-wide `GET /api/v1/logs`.

Both read the lines devices send with their telemetry (tinyops.fleet.store.logs), with
the same filters: `level` (that level and above), `since`/`until` (the line's time,
ISO 8601 with a zone), `q` (case-insensitive substring of the message), and paging by
id: `order=newest` (default) continues with `before_id=<next>`, `order=oldest` with
`after_id=<next>` (what `tinyops device logs --follow` polls with). Any API role may read.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from tinyops.fleet.server.auth import Reader, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import (
    NAME_PATTERN,
    LogLevel,
    LogLineOut,
    LogPage,
    Name,
    WireTime,
)
from tinyops.fleet.server.runtime import FleetRuntime
from tinyops.fleet.store import Invalid
from tinyops.fleet.store.logs import LogEntry, LogOrder, LogQuery
from tinyops.fleet.store.store import MAX_PAGE

router = APIRouter(tags=["logs"], responses=ERROR_RESPONSES)

# Ids are 64-bit on PostgreSQL.
MAX_LOG_ID = 2**63 - 1
MAX_QUERY_CHARS = 200

DeviceId = Annotated[str, Path(pattern=NAME_PATTERN)]
Level = Annotated[LogLevel | None, Query(description="This level and above.")]
Since = Annotated[WireTime | None, Query(description="Lines logged at or after (ISO 8601).")]
Until = Annotated[WireTime | None, Query(description="Lines logged before (ISO 8601).")]
Text = Annotated[
    str | None,
    Query(
        max_length=MAX_QUERY_CHARS,
        # No control characters: PostgreSQL text cannot hold NUL (a 422, not a 500).
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Substring of the message, any case.",
    ),
]
AfterId = Annotated[int | None, Query(ge=0, le=MAX_LOG_ID, description="Lines after this id.")]
BeforeId = Annotated[int | None, Query(ge=0, le=MAX_LOG_ID, description="Lines before this id.")]
Order = Annotated[LogOrder, Query(description="newest (default) or oldest first.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]


def _page(rt: FleetRuntime, query: LogQuery) -> LogPage:
    if query.since is not None and query.until is not None and query.until <= query.since:
        raise Invalid("until must be later than since", field="until")
    entries: list[LogEntry] = rt.store.search_logs(query)
    return LogPage(
        logs=[LogLineOut.model_validate(asdict(e)) for e in entries],
        next=entries[-1].id if len(entries) == query.limit else None,
    )


@router.get("/api/v1/devices/{device_id}/logs", response_model=LogPage)
async def device_logs(
    device_id: DeviceId,
    who: Reader,
    rt: Runtime,
    level: Level = None,
    since: Since = None,
    until: Until = None,
    q: Text = None,
    after_id: AfterId = None,
    before_id: BeforeId = None,
    order: Order = "newest",
    limit: Limit = 100,
) -> LogPage:
    """One device's log lines, filtered, a page at a time (404 for an unknown device)."""
    await run_in_threadpool(rt.store.get_device, device_id)
    query = LogQuery(device_id, level, since, until, q, after_id, before_id, order, limit)
    return await run_in_threadpool(_page, rt, query)


@router.get("/api/v1/logs", response_model=LogPage)
async def fleet_logs(
    who: Reader,
    rt: Runtime,
    device: Annotated[Name | None, Query(description="Only this device.")] = None,
    level: Level = None,
    since: Since = None,
    until: Until = None,
    q: Text = None,
    after_id: AfterId = None,
    before_id: BeforeId = None,
    order: Order = "newest",
    limit: Limit = 100,
) -> LogPage:
    """Log lines of every device, filtered, a page at a time."""
    query = LogQuery(device, level, since, until, q, after_id, before_id, order, limit)
    return await run_in_threadpool(_page, rt, query)
