"""The fleet server's persistent state: SQLAlchemy 2 models, Alembic migrations, `Store`.

schema     the tables (typed ORM), the same on SQLite and PostgreSQL
engine     engines (SQLite WAL tuning, BEGIN IMMEDIATE writers) and migrations
migrations Alembic scripts, applied at server start (`Store.migrate`)
records    immutable values the store returns
errors     refusals, each with the HTTP status the server answers
store      `Store`: every operation the server needs, one transaction each
"""

from tinyops.fleet.store.errors import (
    Conflict,
    FleetError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
)
from tinyops.fleet.store.records import (
    ApiTokenRecord,
    CheckinWrite,
    CommandRecord,
    DeploymentRecord,
    DeviceCredential,
    DeviceRecord,
    EnrollmentTokenRecord,
    EvaluationOutcome,
    HistoryEntry,
    Installed,
    LogRecord,
    LogRow,
    NewDevice,
    PendingAction,
    PointRow,
    PreparedRows,
    ProgressRecord,
    ReleaseRecord,
    ReportOutcome,
    Selector,
    TelemetryRecord,
    TrustedKeyRecord,
)
from tinyops.fleet.store.store import Store

__all__ = [
    "ApiTokenRecord",
    "CheckinWrite",
    "CommandRecord",
    "Conflict",
    "DeploymentRecord",
    "DeviceCredential",
    "DeviceRecord",
    "EnrollmentTokenRecord",
    "EvaluationOutcome",
    "FleetError",
    "Forbidden",
    "HistoryEntry",
    "Installed",
    "Invalid",
    "LogRecord",
    "LogRow",
    "NewDevice",
    "NotFound",
    "PendingAction",
    "PointRow",
    "PreparedRows",
    "ProgressRecord",
    "ReleaseRecord",
    "ReportOutcome",
    "Selector",
    "Store",
    "TelemetryRecord",
    "TrustedKeyRecord",
    "Unauthorized",
]
