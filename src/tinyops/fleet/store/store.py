"""`Store`: every fleet operation the server needs, each one database transaction.

One SQL implementation serves SQLite and PostgreSQL through SQLAlchemy. Each public
method opens a transaction, does its reads and writes, writes its audit records, and
commits, or raises a `FleetError` (or `InvalidTransition`) and rolls everything back:
a refused request changes nothing, and a process killed at any instant leaves the
database at a transaction boundary.

Concurrency: a write transaction that reads a row it will change locks it first
(`SELECT ... FOR UPDATE` on PostgreSQL; on SQLite every write transaction already holds
the database write lock from its BEGIN IMMEDIATE). So a device's status report and a
deployment abort never both win: the later one sees the earlier one's result.

Release files are content-addressed: `<data_dir>/artifacts/<sha256>.tinybundle`. The file
is put in place (an atomic rename) before the row that names it is committed, so a
committed release always has its file; a crash in between leaves at most an unreferenced
file, which the next upload of the same bytes reuses.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, cast

from sqlalchemy import Connection, and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tinyops.bundle.manifest import Manifest, semver_key
from tinyops.fleet.rollout import (
    DEVICE_STATUSES,
    FINAL,
    REACHED,
    Decision,
    DeviceStatus,
    PhaseSpec,
    Progress,
    RolloutState,
    apply,
    assign_phases,
    cancel,
    check_transition,
    evaluate_counts,
    initial_state,
    manual_rollback,
    pause,
    phases_from_dicts,
    resume,
    rollback_set,
    validate_phases,
)
from tinyops.fleet.store import logs as log_store
from tinyops.fleet.store import schema as t
from tinyops.fleet.store.drift_store import DriftStore
from tinyops.fleet.store.engine import Engines, make_engines, upgrade
from tinyops.fleet.store.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from tinyops.fleet.store.records import (
    ApiTokenRecord,
    CheckinWrite,
    CommandRecord,
    DeploymentRecord,
    DeviceCredential,
    DeviceRecord,
    DeviceState,
    EnrollmentTokenRecord,
    EvaluationOutcome,
    HistoryEntry,
    HistoryEvent,
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
from tinyops.security.audit import SERVER_ACTOR, AuditAction, AuditRecord
from tinyops.security.roles import Role

ARTIFACTS_DIR: Final = "artifacts"
ARTIFACT_SUFFIX: Final = ".tinybundle"
# Device statuses in which the release is on its way to the device but not final.
IN_FLIGHT: Final[frozenset[DeviceStatus]] = REACHED - FINAL
# Statuses in which a device still waits for (or works on) the release of a deployment.
OFFERED: Final[frozenset[DeviceStatus]] = IN_FLIGHT | {"pending"}
# Deployments that still offer their release.
LIVE_DEPLOYMENTS: Final = ("running", "paused")
# Page sizes, in rows.
MAX_PAGE: Final = 1000
# Rows fetched at a time when loading every device's credential.
CREDENTIALS_CHUNK: Final = 5000
# Rows per statement when writing many at once (below SQLite's 32,766 bound parameters).
BATCH_ROWS: Final = 2000


# Bulk writes below the ORM (check-ins, telemetry): few statements, each doing many rows
# in one database call, so that the writing thread holds the interpreter lock only to
# hand over parameters (one call per row, as an executemany makes, hands the lock back
# and forth with the server's event loop for every row). SQLite gets multi-row VALUES
# statements, PostgreSQL COPY. The columns are those of `schema`.
# Rows per statement on SQLite (4 parameters each; SQLite takes 32,766 per statement).
SQLITE_CHUNK_ROWS: Final = 2000
# Points in COPY's binary format: PostgreSQL then parses no timestamp or float text (about
# a third of its per-row cost), and psycopg encodes the rows in C.
COPY_POINTS: Final = (
    "COPY telemetry_points (device_id, t, metric, value) FROM STDIN (FORMAT BINARY)"
)
COPY_POINT_TYPES: Final = ("varchar", "timestamptz", "varchar", "float8")
COPY_LOGS: Final = "COPY device_logs (device_id, t, level, message) FROM STDIN"
# Check-ins on PostgreSQL: COPY into a per-connection temporary table, then one UPDATE.
CHECKIN_TEMP_TABLE: Final = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS checkin_batch "
    "(id text, at timestamptz, health text, slot text) ON COMMIT DELETE ROWS"
)
COPY_CHECKINS: Final = "COPY checkin_batch (id, at, health, slot) FROM STDIN"
UPDATE_CHECKINS_POSTGRESQL: Final = (
    "UPDATE devices SET last_seen = b.at, health = b.health::json, slot = b.slot::json "
    "FROM checkin_batch AS b WHERE devices.id = b.id"
)
# COPY's text format: a backslash, tab, newline or carriage return in a value is escaped.
_COPY_SPECIAL = re.compile(r"[\\\t\n\r]")
_COPY_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _copy_text(value: str | None) -> str:
    """A value in COPY's text format (\\N for NULL)."""
    if value is None:
        return "\\N"
    if _COPY_SPECIAL.search(value) is None:
        return value
    return _COPY_SPECIAL.sub(lambda m: _COPY_ESCAPES[m.group()], value)


def _postgresql_time(at: datetime) -> str:
    """`at` as COPY's text for a timestamptz column (an ISO 8601 time with its offset)."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: the fleet store takes UTC-aware times")
    return at.isoformat()


def _sqlite_time(at: datetime) -> str:
    """`at` as SQLite's column holds it: naive UTC text with microseconds, exactly what
    `UTCDateTime` and SQLAlchemy's SQLite DATETIME write ('2026-11-27 10:00:00.000000')."""
    if at.tzinfo is None:
        raise ValueError(f"naive datetime {at!r}: the fleet store takes UTC-aware times")
    if at.tzinfo is not UTC:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None).isoformat(" ", "microseconds")


@functools.lru_cache(maxsize=16)
def _insert_sql(table: str, columns: tuple[str, ...], rows: int) -> str:
    """A multi-row INSERT of `rows` rows into `table` (SQLite)."""
    row = "(" + ", ".join("?" * len(columns)) + ")"
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)}"


@functools.lru_cache(maxsize=16)
def _update_checkins_sql(rows: int) -> str:
    """UPDATE ... FROM (VALUES ...) of `rows` devices (SQLite names the columns column1..).
    The JSON columns take the text json.dumps makes, as the ORM's JSON type writes it."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    return (
        "UPDATE devices SET last_seen = v.column1, health = v.column2, slot = v.column3 "
        f"FROM (VALUES {values}) AS v WHERE devices.id = v.column4"
    )


def _deployment_target(deployment_id: int, device_id: str | None = None) -> str:
    base = f"deployment:{deployment_id}"
    return base if device_id is None else f"{base}/device:{device_id}"


def _installed_dict(installed: Installed | None) -> dict[str, Any] | None:
    if installed is None:
        return None
    return {"name": installed.name, "version": installed.version, "sha256": installed.sha256}


def _device_state(status: DeviceStatus) -> DeviceState:
    """A device's own status while its deployment progress is `status`."""
    if status == "rollback-pending":
        return "rollback-pending"
    if status in IN_FLIGHT:
        return "updating"
    return "active"


def _release(row: t.Release) -> ReleaseRecord:
    return ReleaseRecord(
        id=row.id,
        name=row.name,
        version=row.version,
        target=row.target,
        sha256=row.sha256,
        size=row.size,
        key_id=row.key_id,
        manifest=dict(row.manifest),
        created_at=row.created_at,
        expires_at=row.expires_at,
        uploaded_at=row.uploaded_at,
        uploaded_by=row.uploaded_by,
    )


def _installed(row: t.Device) -> Installed | None:
    if row.installed_name is None or row.installed_version is None:
        return None
    return Installed(row.installed_name, row.installed_version, row.installed_sha256)


def _device(row: t.Device) -> DeviceRecord:
    return DeviceRecord(
        id=row.id,
        hardware=row.hardware,
        tags={str(k): str(v) for k, v in row.tags.items()},
        status=cast(DeviceState, row.status),
        installed=_installed(row),
        installed_release_id=row.installed_release_id,
        previous_release_id=row.previous_release_id,
        enrolled_at=row.enrolled_at,
        last_seen=row.last_seen,
        health=row.health,
        slot=row.slot,
        public_key=row.public_key,
    )


def _api_token(row: t.ApiToken) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
    )


def _enrollment_token(row: t.EnrollmentToken) -> EnrollmentTokenRecord:
    return EnrollmentTokenRecord(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        max_uses=row.max_uses,
        uses=row.uses,
    )


def _command(row: t.Command) -> CommandRecord:
    return CommandRecord(
        id=row.id,
        device_id=row.device_id,
        kind=row.kind,
        args=dict(row.args),
        status=cast(Any, row.status),
        created_at=row.created_at,
        created_by=row.created_by,
        sent_at=row.sent_at,
        completed_at=row.completed_at,
        ok=row.ok,
        output=row.output,
    )


def _state(row: t.Deployment) -> RolloutState:
    return RolloutState.from_dict(
        {
            "status": row.status,
            "open_phase": row.open_phase,
            "phase_opened_at": row.phase_opened_at,
            "phase_passed_at": row.phase_passed_at,
        }
    )


def _store_state(row: t.Deployment, state: RolloutState, now: datetime) -> None:
    data = state.to_dict()
    row.status = data["status"]
    row.open_phase = data["open_phase"]
    row.phase_opened_at = data["phase_opened_at"]
    row.phase_passed_at = data["phase_passed_at"]
    row.updated_at = now


def _audit(
    session: Session,
    at: datetime,
    actor: str,
    action: AuditAction,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    session.add(
        t.AuditEntry(
            at=at, actor=actor, action=action.value, target=target, before=before, after=after
        )
    )


def _driver_cursor(connection: Connection) -> Any:
    """A cursor of the DBAPI (psycopg) connection under `connection`, in its transaction."""
    driver = connection.connection.driver_connection
    assert driver is not None, "a connection in a transaction has its driver's"
    return driver.cursor()


class Store:
    """The fleet database and artifact folder. Thread-safe: one transaction per call."""

    def __init__(self, url: str, data_dir: Path) -> None:
        self.url = url
        self.data_dir = Path(data_dir)
        self.artifacts_dir = self.data_dir / ARTIFACTS_DIR
        self._engines: Engines = make_engines(url)
        self._write = sessionmaker(self._engines.write, expire_on_commit=False)
        self._read = sessionmaker(self._engines.read, expire_on_commit=False)
        # Committed releases by id, read once: check-in views are rebuilt after every
        # status report, and a release row carries its whole manifest.
        self._releases: dict[int, ReleaseRecord] = {}
        # Drift monitoring (profiles, sketch windows, feedback, labeled samples).
        self.drift = DriftStore(self._tx, self._ro)

    @property
    def dialect(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self._engines.dialect

    def migrate(self) -> None:
        """Bring the schema up to the newest migration (a no-op when it is there)."""
        upgrade(self._engines.write)

    def close(self) -> None:
        self._engines.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """A write transaction: commit at the end of the block, roll back on any error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def _ro(self) -> Iterator[Session]:
        """A read-only transaction (one consistent snapshot on SQLite's WAL)."""
        with self._read() as session, session.begin():
            yield session

    # --- API tokens -----------------------------------------------------------------------

    def create_api_token(
        self, name: str, role: Role, token_hash: str, actor: str, now: datetime
    ) -> ApiTokenRecord:
        """Store a new API token (its hash); Conflict if the name is taken."""
        with self._tx() as s:
            if s.scalar(select(t.ApiToken.id).where(t.ApiToken.name == name)) is not None:
                raise Conflict(f"an API token named {name!r} exists already", field="name")
            row = t.ApiToken(
                name=name, role=role.value, token_hash=token_hash, created_at=now, created_by=actor
            )
            s.add(row)
            s.flush()
            _audit(
                s, now, actor, AuditAction.TOKEN_CREATE, f"token:{name}", None, {"role": role.value}
            )
            return _api_token(row)

    def api_token(self, token_hash: str) -> ApiTokenRecord | None:
        """The live (not revoked) token with this hash, else None."""
        with self._ro() as s:
            row = s.scalar(
                select(t.ApiToken).where(
                    t.ApiToken.token_hash == token_hash, t.ApiToken.revoked_at.is_(None)
                )
            )
            return None if row is None else _api_token(row)

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        with self._ro() as s:
            return [_api_token(r) for r in s.scalars(select(t.ApiToken).order_by(t.ApiToken.id))]

    def revoke_api_token(self, name: str, actor: str, now: datetime) -> ApiTokenRecord:
        """Revoke the token `name`; NotFound if there is none, Conflict if already revoked."""
        with self._tx() as s:
            row = s.scalar(select(t.ApiToken).where(t.ApiToken.name == name).with_for_update())
            if row is None:
                raise NotFound(f"no API token named {name!r}")
            if row.revoked_at is not None:
                raise Conflict(f"API token {name!r} was revoked at {row.revoked_at.isoformat()}")
            row.revoked_at = now
            _audit(
                s,
                now,
                actor,
                AuditAction.TOKEN_REVOKE,
                f"token:{name}",
                {"revoked": False},
                {"revoked": True},
            )
            return _api_token(row)

    def count_api_tokens(self, role: Role | None = None) -> int:
        """Live API tokens, of `role` if given."""
        with self._ro() as s:
            query = (
                select(func.count()).select_from(t.ApiToken).where(t.ApiToken.revoked_at.is_(None))
            )
            if role is not None:
                query = query.where(t.ApiToken.role == role.value)
            return int(s.scalar(query) or 0)

    # --- enrollment -----------------------------------------------------------------------

    def create_enrollment_token(
        self,
        name: str,
        token_hash: str,
        expires_at: datetime | None,
        max_uses: int | None,
        actor: str,
        now: datetime,
    ) -> EnrollmentTokenRecord:
        with self._tx() as s:
            row = t.EnrollmentToken(
                name=name,
                token_hash=token_hash,
                created_at=now,
                created_by=actor,
                expires_at=expires_at,
                max_uses=max_uses,
                uses=0,
            )
            s.add(row)
            s.flush()
            _audit(
                s,
                now,
                actor,
                AuditAction.ENROLLMENT_TOKEN_CREATE,
                f"enrollment-token:{row.id}",
                None,
                {
                    "name": name,
                    "expires_at": None if expires_at is None else expires_at.isoformat(),
                    "max_uses": max_uses,
                },
            )
            return _enrollment_token(row)

    def enroll_device(
        self,
        *,
        enrollment_token_hash: str,
        device_id: str,
        hardware: str,
        tags: Mapping[str, str],
        public_key: str | None,
        installed: Installed | None,
        device_token_hash: str,
        now: datetime,
    ) -> tuple[DeviceRecord, str | None]:
        """Enroll a device, or re-enroll it with a new token; returns (device, old token hash).

        Unauthorized for an unknown, expired or used-up enrollment token; Conflict when the
        id is enrolled with other hardware.
        """
        with self._tx() as s:
            token = _live_enrollment_token(s, enrollment_token_hash, now)
            if token.max_uses is not None and token.uses >= token.max_uses:
                raise Unauthorized(
                    f"enrollment token {token.name!r} has been used {token.uses} times, its "
                    "maximum: create a new one",
                    field="enrollment_token",
                )
            token.uses += 1
            release_id = None
            if installed is not None:
                release_id = self._find_release_id(s, installed, hardware)
            row = s.get(t.Device, device_id, with_for_update=True)
            old_hash: str | None = None
            before: dict[str, Any] | None = None
            if row is None:
                row = t.Device(
                    id=device_id,
                    hardware=hardware,
                    tags=dict(tags),
                    token_hash=device_token_hash,
                    status="active",
                    public_key=public_key,
                    installed_release_id=release_id,
                    enrolled_at=now,
                )
                if installed is not None:
                    row.installed_name = installed.name
                    row.installed_version = installed.version
                    row.installed_sha256 = installed.sha256
                s.add(row)
                s.flush()
                if installed is not None:
                    self._history(s, device_id, now, "enrolled", installed, release_id, None)
            else:
                if row.hardware != hardware:
                    raise Conflict(
                        f"device {device_id!r} is enrolled as hardware {row.hardware!r}, not "
                        f"{hardware!r}: a device id cannot change hardware; enroll it under "
                        "another id",
                        field="hardware",
                    )
                old_hash = row.token_hash
                before = {"tags": dict(row.tags), "status": row.status}
                row.token_hash = device_token_hash
                row.tags = dict(tags)
                row.public_key = public_key
                if row.status == "decommissioned":
                    row.status = "active"
                if installed is not None and installed != _installed(row):
                    self._set_installed(s, row, installed, release_id, now, "enrolled", None)
            _audit(
                s,
                now,
                f"device:{device_id}",
                AuditAction.DEVICE_ENROLL,
                f"device:{device_id}",
                before,
                {
                    "hardware": hardware,
                    "tags": dict(tags),
                    "installed": _installed_dict(installed),
                    "enrollment_token": token.name,
                    "token_rotated": old_hash is not None,
                },
            )
            return _device(row), old_hash

    def enroll_devices(
        self, *, enrollment_token_hash: str, devices: Sequence[NewDevice], now: datetime
    ) -> int:
        """Enroll many new devices in one transaction (factory provisioning, benchmarks).

        The same checks and records as `enroll_device` (the enrollment token's validity
        and use count, version history, one audit record per device), written with
        multi-row statements. Only new ids: Conflict when one is enrolled already (or
        repeated); a refusal enrolls none of them. Returns how many were enrolled.
        """
        ids = [d.device_id for d in devices]
        if len(set(ids)) != len(ids):
            raise Conflict("device ids repeat in one bulk enrollment", field="device_id")
        with self._tx() as s:
            token = _live_enrollment_token(s, enrollment_token_hash, now)
            if token.max_uses is not None and token.uses + len(devices) > token.max_uses:
                raise Unauthorized(
                    f"enrollment token {token.name!r} has {token.max_uses - token.uses} uses "
                    f"left, fewer than the {len(devices)} devices",
                    field="enrollment_token",
                )
            token.uses += len(devices)
            for start in range(0, len(ids), BATCH_ROWS):
                taken = s.scalars(
                    select(t.Device.id).where(t.Device.id.in_(ids[start : start + BATCH_ROWS]))
                ).first()
                if taken is not None:
                    raise Conflict(
                        f"device {taken!r} is enrolled already: a bulk enrollment takes new "
                        "ids only",
                        field="device_id",
                    )
            releases: dict[tuple[str, str, str | None, str], int | None] = {}
            device_rows: list[dict[str, Any]] = []
            history_rows: list[dict[str, Any]] = []
            audit_rows: list[dict[str, Any]] = []
            for d in devices:
                release_id = None
                if d.installed is not None:
                    key = (d.installed.name, d.installed.version, d.installed.sha256, d.hardware)
                    if key not in releases:
                        releases[key] = self._find_release_id(s, d.installed, d.hardware)
                    release_id = releases[key]
                    history_rows.append(
                        {
                            "device_id": d.device_id,
                            "at": now,
                            "event": "enrolled",
                            "name": d.installed.name,
                            "version": d.installed.version,
                            "sha256": d.installed.sha256,
                            "release_id": release_id,
                            "deployment_id": None,
                        }
                    )
                device_rows.append(
                    {
                        "id": d.device_id,
                        "hardware": d.hardware,
                        "tags": dict(d.tags),
                        "token_hash": d.token_hash,
                        "status": "active",
                        "public_key": None,
                        "installed_name": d.installed.name if d.installed else None,
                        "installed_version": d.installed.version if d.installed else None,
                        "installed_sha256": d.installed.sha256 if d.installed else None,
                        "installed_release_id": release_id,
                        "enrolled_at": now,
                    }
                )
                audit_rows.append(
                    {
                        "at": now,
                        "actor": f"device:{d.device_id}",
                        "action": AuditAction.DEVICE_ENROLL.value,
                        "target": f"device:{d.device_id}",
                        "before": None,
                        "after": {
                            "hardware": d.hardware,
                            "tags": dict(d.tags),
                            "installed": _installed_dict(d.installed),
                            "enrollment_token": token.name,
                            "token_rotated": False,
                        },
                    }
                )
            for table, rows in (
                (t.Device, device_rows),
                (t.DeviceHistory, history_rows),
                (t.AuditEntry, audit_rows),
            ):
                for start in range(0, len(rows), BATCH_ROWS):
                    s.execute(insert(table), rows[start : start + BATCH_ROWS])
        return len(devices)

    # --- devices --------------------------------------------------------------------------

    def device_credentials(self) -> list[DeviceCredential]:
        """Every device that may authenticate (not decommissioned), for the in-memory map.

        Equal hardware ids and installed releases are one shared object each: a fleet
        has few of them, and the server keeps every credential for as long as it runs.
        """
        hardware: dict[str, str] = {}
        releases: dict[tuple[str, str, str | None], Installed] = {}
        credentials = []
        with self._ro() as s:
            rows = s.execute(
                select(
                    t.Device.id,
                    t.Device.token_hash,
                    t.Device.hardware,
                    t.Device.installed_name,
                    t.Device.installed_version,
                    t.Device.installed_sha256,
                )
                .where(t.Device.status != "decommissioned")
                # Streamed: 100,000 buffered rows would leave their memory to the process.
                .execution_options(yield_per=CREDENTIALS_CHUNK)
            )
            for device_id, token_hash, board, name, version, sha256 in rows:
                installed = None
                if name is not None and version is not None:
                    key = (name, version, sha256)
                    installed = releases.get(key)
                    if installed is None:
                        installed = releases[key] = Installed(name, version, sha256)
                credential = DeviceCredential(
                    device_id, token_hash, hardware.setdefault(board, board), installed
                )
                credentials.append(credential)
        return credentials

    def get_device(self, device_id: str) -> DeviceRecord:
        with self._ro() as s:
            row = s.get(t.Device, device_id)
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            return _device(row)

    def list_devices(
        self,
        *,
        status: str | None = None,
        hardware: str | None = None,
        tags: Mapping[str, str] | None = None,
        after: str | None = None,
        limit: int = MAX_PAGE,
    ) -> list[DeviceRecord]:
        """Devices by id, filtered; `after` is the last id of the previous page."""
        limit = max(1, min(limit, MAX_PAGE))
        want = dict(tags or {})
        out: list[DeviceRecord] = []
        with self._ro() as s:
            query = select(t.Device).order_by(t.Device.id)
            if status is not None:
                query = query.where(t.Device.status == status)
            if hardware is not None:
                query = query.where(t.Device.hardware == hardware)
            if after is not None:
                query = query.where(t.Device.id > after)
            # Tags live in a JSON column whose operators differ between the two databases:
            # filter them here, reading in pages until the page is full.
            for row in s.scalars(query.execution_options(yield_per=MAX_PAGE)):
                if all(row.tags.get(k) == v for k, v in want.items()):
                    out.append(_device(row))
                    if len(out) >= limit:
                        break
        return out

    def device_history(self, device_id: str) -> list[HistoryEntry]:
        """The device's installed-release changes, newest first."""
        with self._ro() as s:
            if s.get(t.Device, device_id) is None:
                raise NotFound(f"no device {device_id!r}")
            rows = s.scalars(
                select(t.DeviceHistory)
                .where(t.DeviceHistory.device_id == device_id)
                .order_by(t.DeviceHistory.id.desc())
            )
            return [
                HistoryEntry(
                    at=r.at,
                    event=cast(HistoryEvent, r.event),
                    name=r.name,
                    version=r.version,
                    sha256=r.sha256,
                    release_id=r.release_id,
                    deployment_id=r.deployment_id,
                )
                for r in rows
            ]

    def decommission_device(self, device_id: str, actor: str, now: datetime) -> DeviceRecord:
        """Retire a device: its token stops working; it leaves no deployment half-done."""
        with self._tx() as s:
            row = s.get(t.Device, device_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            if row.status == "decommissioned":
                raise Conflict(f"device {device_id!r} is decommissioned already")
            busy = s.scalar(
                select(t.DeploymentDevice.deployment_id)
                .join(t.Deployment)
                .where(
                    t.DeploymentDevice.device_id == device_id,
                    t.DeploymentDevice.status.in_(IN_FLIGHT | {"rollback-pending"}),
                )
                .limit(1)
            )
            if busy is not None:
                raise Conflict(
                    f"device {device_id!r} is in the middle of deployment {busy}: wait until it "
                    "reports a final status (or roll the deployment back) before decommissioning"
                )
            before = {"status": row.status}
            row.status = "decommissioned"
            _audit(
                s,
                now,
                actor,
                AuditAction.DEVICE_DECOMMISSION,
                f"device:{device_id}",
                before,
                {"status": "decommissioned"},
            )
            return _device(row)

    def record_checkins(self, writes: Sequence[CheckinWrite]) -> None:
        """Write the latest check-in of many devices (last_seen, health, slot) at once."""
        self.write_checkins(self.prepare_checkins(writes))

    def prepare_checkins(self, writes: Sequence[CheckinWrite]) -> PreparedRows:
        """`writes` in the form `write_checkins` takes (pure Python, no I/O)."""
        dumps = json.dumps
        if self.dialect == "postgresql":
            lines = [
                f"{_copy_text(w.device_id)}\t{_postgresql_time(w.at)}\t"
                f"{_copy_text(None if w.health is None else dumps(w.health))}\t"
                f"{_copy_text(None if w.slot is None else dumps(w.slot))}\n"
                for w in writes
            ]
            return PreparedRows(len(writes), lines)
        params: list[Any] = []
        for w in writes:
            params += (
                _sqlite_time(w.at),
                None if w.health is None else dumps(w.health),
                None if w.slot is None else dumps(w.slot),
                w.device_id,
            )
        return PreparedRows(len(writes), params)

    def write_checkins(self, rows: PreparedRows) -> None:
        """Update last_seen, health and slot of many devices in one transaction."""
        if not rows.count:
            return
        with self._engines.write.begin() as connection:
            if self.dialect == "postgresql":
                cursor = _driver_cursor(connection)
                cursor.execute(CHECKIN_TEMP_TABLE)
                with cursor.copy(COPY_CHECKINS) as copy:
                    copy.write("".join(rows.data))
                cursor.execute(UPDATE_CHECKINS_POSTGRESQL)
                return
            step = 4 * SQLITE_CHUNK_ROWS
            for start in range(0, len(rows.data), step):
                chunk = rows.data[start : start + step]
                connection.exec_driver_sql(_update_checkins_sql(len(chunk) // 4), tuple(chunk))

    def report_installed(
        self, device_id: str, installed: Installed | None, now: datetime
    ) -> DeviceRecord:
        """A check-in reported another installed release than the stored one: record it."""
        with self._tx() as s:
            row = s.get(t.Device, device_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no device {device_id!r}")
            if installed == _installed(row):
                return _device(row)
            release_id = (
                None if installed is None else self._find_release_id(s, installed, row.hardware)
            )
            self._set_installed(s, row, installed, release_id, now, "reported", None)
            return _device(row)

    def _find_release_id(self, s: Session, installed: Installed, hardware: str) -> int | None:
        """The stored release a device runs: by sha256 if known, else name+version+target."""
        query = select(t.Release.id).where(t.Release.target == hardware)
        if installed.sha256 is not None:
            query = query.where(t.Release.sha256 == installed.sha256)
        else:
            query = query.where(
                t.Release.name == installed.name, t.Release.version == installed.version
            )
        return s.scalar(query.limit(1))

    def _history(
        self,
        s: Session,
        device_id: str,
        now: datetime,
        event: HistoryEvent,
        installed: Installed | None,
        release_id: int | None,
        deployment_id: int | None,
    ) -> None:
        s.add(
            t.DeviceHistory(
                device_id=device_id,
                at=now,
                event=event,
                name=None if installed is None else installed.name,
                version=None if installed is None else installed.version,
                sha256=None if installed is None else installed.sha256,
                release_id=release_id,
                deployment_id=deployment_id,
            )
        )

    def _set_installed(
        self,
        s: Session,
        row: t.Device,
        installed: Installed | None,
        release_id: int | None,
        now: datetime,
        event: HistoryEvent,
        deployment_id: int | None,
        previous_release_id: int | None = None,
    ) -> None:
        """Change a device's installed release, with its history entry and audit record."""
        before = _installed_dict(_installed(row))
        if release_id != row.installed_release_id:
            row.previous_release_id = (
                row.installed_release_id if previous_release_id is None else previous_release_id
            )
        row.installed_release_id = release_id
        row.installed_name = None if installed is None else installed.name
        row.installed_version = None if installed is None else installed.version
        row.installed_sha256 = None if installed is None else installed.sha256
        self._history(s, row.id, now, event, installed, release_id, deployment_id)
        actor = SERVER_ACTOR if event in ("updated", "rolled-back") else f"device:{row.id}"
        _audit(
            s,
            now,
            actor,
            AuditAction.DEVICE_INSTALLED,
            f"device:{row.id}",
            {"installed": before},
            {"installed": _installed_dict(installed), "event": event, "deployment": deployment_id},
        )

    # --- trusted keys ---------------------------------------------------------------------

    def add_trusted_key(
        self, key_id: str, name: str, public_key_pem: str, actor: str, now: datetime
    ) -> tuple[TrustedKeyRecord, bool]:
        """Trust a release-signing key; (record, created). Adding it again is a no-op."""
        with self._tx() as s:
            row = s.get(t.TrustedKey, key_id)
            created = row is None
            if row is None:
                row = t.TrustedKey(
                    key_id=key_id,
                    name=name,
                    public_key_pem=public_key_pem,
                    added_at=now,
                    added_by=actor,
                )
                s.add(row)
                _audit(
                    s,
                    now,
                    actor,
                    AuditAction.TRUSTED_KEY_ADD,
                    f"trusted-key:{key_id}",
                    None,
                    {"name": name},
                )
            return (
                TrustedKeyRecord(
                    row.key_id, row.name, row.public_key_pem, row.added_at, row.added_by
                ),
                created,
            )

    def trusted_keys(self) -> list[TrustedKeyRecord]:
        with self._ro() as s:
            return [
                TrustedKeyRecord(r.key_id, r.name, r.public_key_pem, r.added_at, r.added_by)
                for r in s.scalars(select(t.TrustedKey).order_by(t.TrustedKey.added_at))
            ]

    # --- releases -------------------------------------------------------------------------

    def artifact_path(self, sha256: str) -> Path:
        """Where the release file with this sha256 lives."""
        return self.artifacts_dir / f"{sha256}{ARTIFACT_SUFFIX}"

    def add_release(
        self,
        staged: Path,
        manifest: Manifest,
        sha256: str,
        size: int,
        actor: str,
        now: datetime,
        monitoring: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
    ) -> tuple[ReleaseRecord, bool]:
        """Store a verified bundle (moved from `staged`); (record, created).

        The same name/version/target again: no-op if the bytes are identical, Conflict if
        they differ (versions are immutable). `staged` is consumed either way.
        `monitoring` is the bundle's (reference profile, policy), kept with the release.
        """
        try:
            with self._tx() as s:
                existing = s.scalar(
                    select(t.Release).where(
                        t.Release.name == manifest.name,
                        t.Release.version == manifest.version,
                        t.Release.target == manifest.target,
                    )
                )
                if existing is not None:
                    return self._same_release(existing, sha256), False
                self._place_artifact(staged, sha256)
                row = t.Release(
                    name=manifest.name,
                    version=manifest.version,
                    target=manifest.target,
                    sha256=sha256,
                    size=size,
                    key_id=manifest.key_id,
                    manifest=manifest.model_dump(mode="json"),
                    created_at=manifest.created_at,
                    expires_at=manifest.expires_at,
                    uploaded_at=now,
                    uploaded_by=actor,
                )
                s.add(row)
                s.flush()
                if monitoring is not None:
                    DriftStore.add_release_monitoring(s, row.id, *monitoring)
                _audit(
                    s,
                    now,
                    actor,
                    AuditAction.RELEASE_UPLOAD,
                    f"release:{row.id}",
                    None,
                    {
                        "name": row.name,
                        "version": row.version,
                        "target": row.target,
                        "sha256": sha256,
                        "size": size,
                        "key_id": row.key_id,
                    },
                )
                return _release(row), True
        except IntegrityError:
            # Another upload of the same name/version/target committed first.
            with self._ro() as s:
                existing = s.scalar(
                    select(t.Release).where(
                        t.Release.name == manifest.name,
                        t.Release.version == manifest.version,
                        t.Release.target == manifest.target,
                    )
                )
                if existing is None:
                    raise
                return self._same_release(existing, sha256), False
        finally:
            staged.unlink(missing_ok=True)

    @staticmethod
    def _same_release(existing: t.Release, sha256: str) -> ReleaseRecord:
        if existing.sha256 != sha256:
            raise Conflict(
                f"release {existing.name} {existing.version} for {existing.target} exists with "
                f"other content (sha256 {existing.sha256}, uploaded "
                f"{existing.uploaded_at.isoformat()} by {existing.uploaded_by}); versions are "
                "immutable: publish a new version",
                code="immutable-version",
            )
        return _release(existing)

    def _place_artifact(self, staged: Path, sha256: str) -> None:
        """Move the staged file to its content address (atomic rename, then fsync the folder)."""
        destination = self.artifact_path(sha256)
        if destination.exists():
            return
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        os.replace(staged, destination)
        fd = os.open(self.artifacts_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get_release(self, release_id: int) -> ReleaseRecord:
        with self._ro() as s:
            row = s.get(t.Release, release_id)
            if row is None:
                raise NotFound(f"no release {release_id}")
            return _release(row)

    def find_release(self, name: str, version: str, target: str) -> ReleaseRecord | None:
        with self._ro() as s:
            row = s.scalar(
                select(t.Release).where(
                    t.Release.name == name, t.Release.version == version, t.Release.target == target
                )
            )
            return None if row is None else _release(row)

    def list_releases(
        self, name: str | None = None, target: str | None = None
    ) -> list[ReleaseRecord]:
        """Version history: newest version first (SemVer order), then by target."""
        with self._ro() as s:
            query = select(t.Release)
            if name is not None:
                query = query.where(t.Release.name == name)
            if target is not None:
                query = query.where(t.Release.target == target)
            rows = [_release(r) for r in s.scalars(query)]
        rows.sort(key=lambda r: (r.name, r.target))
        rows.sort(key=lambda r: semver_key(r.version), reverse=True)
        return rows

    # --- deployments ----------------------------------------------------------------------

    def create_deployment(
        self,
        *,
        release_id: int,
        selector: Selector,
        phases: Sequence[PhaseSpec],
        max_failure_rate: float | None,
        seed: str,
        actor: str,
        now: datetime,
    ) -> DeploymentRecord:
        """Select devices, assign them to phases and start the rollout at phase 0.

        A device is selected when its hardware is the release's target, it is not
        decommissioned, it has every selector tag, it runs `selector.installed_version`
        (when given), and it does not already run this release's name and version.
        Invalid (naming the selector field) when nothing matches; Conflict when a selected
        device is still busy with another deployment.
        """
        with self._tx() as s:
            release = s.get(t.Release, release_id)
            if release is None:
                raise NotFound(f"no release {release_id}", field="release")
            target = release.target
            if selector.hardware is not None and selector.hardware != target:
                raise Invalid(
                    f"selector.hardware {selector.hardware!r} differs from the release's target "
                    f"{target!r}: a device never receives a release built for other hardware",
                    field="selector.hardware",
                )
            devices = list(
                s.scalars(
                    select(t.Device)
                    .where(t.Device.hardware == target, t.Device.status != "decommissioned")
                    .order_by(t.Device.id)
                )
            )
            selected = self._select(devices, selector, release)
            busy = self._busy(s, {d.id for d in selected})
            if busy:
                deployments = sorted({b for b in busy.values()})
                raise Conflict(
                    f"{len(busy)} selected devices (e.g. {min(busy)!r}) are still being updated "
                    f"by deployment {', '.join(map(str, deployments))}: wait for it to finish, "
                    "or cancel or roll it back first",
                    code="devices-busy",
                )
            try:
                phases = validate_phases(phases, len(selected))
                assignment = assign_phases([d.id for d in selected], phases, seed)
            except ValueError as exc:
                raise Invalid(str(exc), field="phases") from exc
            known = self._releases_by_version(s, target)
            state = initial_state(phases, now)
            data = state.to_dict()
            row = t.Deployment(
                release_id=release.id,
                selector=selector.to_dict(),
                phases=[p.to_dict() for p in phases],
                max_failure_rate=max_failure_rate,
                seed=seed,
                device_count=len(selected),
                status=data["status"],
                open_phase=data["open_phase"],
                phase_opened_at=data["phase_opened_at"],
                phase_passed_at=data["phase_passed_at"],
                reason=None,
                created_at=now,
                created_by=actor,
                updated_at=now,
            )
            s.add(row)
            s.flush()
            progress = []
            for device in selected:
                previous = device.installed_release_id
                if previous is None and device.installed_version is not None:
                    previous = known.get((device.installed_name, device.installed_version))
                progress.append(
                    {
                        "deployment_id": row.id,
                        "device_id": device.id,
                        "phase": assignment[device.id],
                        "status": "pending",
                        "previous_release_id": previous,
                        "reason": None,
                        "updated_at": now,
                    }
                )
            for start in range(0, len(progress), BATCH_ROWS):
                s.execute(insert(t.DeploymentDevice), progress[start : start + BATCH_ROWS])
            sizes = [0] * len(phases)
            for phase in assignment.values():
                sizes[phase] += 1
            _audit(
                s,
                now,
                actor,
                AuditAction.DEPLOYMENT_CREATE,
                _deployment_target(row.id),
                None,
                {
                    "release": {"id": release.id, "name": release.name, "version": release.version},
                    "selector": selector.to_dict(),
                    "phases": [p.to_dict() for p in phases],
                    "phase_sizes": sizes,
                    "max_failure_rate": max_failure_rate,
                    "devices": len(selected),
                },
            )
            return self._deployment(s, row)

    @staticmethod
    def _select(
        devices: Sequence[t.Device], selector: Selector, release: t.Release
    ) -> list[t.Device]:
        """Apply the selector step by step, naming the step that left no device."""
        if not devices:
            raise Invalid(
                f"no enrolled device has hardware {release.target!r}, the target of release "
                f"{release.name} {release.version}",
                field="selector.hardware",
            )
        matched = list(devices)
        if selector.tags:
            wanted = ", ".join(f"{k}={v}" for k, v in sorted(selector.tags.items()))
            matched = [
                d for d in matched if all(d.tags.get(k) == v for k, v in selector.tags.items())
            ]
            if not matched:
                raise Invalid(
                    f"selector.tags {wanted} matched nothing: {len(devices)} devices have "
                    f"hardware {release.target!r}, none of them has all these tags",
                    field="selector.tags",
                )
        if selector.installed_version is not None:
            tagged = len(matched)
            matched = [d for d in matched if d.installed_version == selector.installed_version]
            if not matched:
                raise Invalid(
                    f"selector.installed_version {selector.installed_version!r} matched nothing "
                    f"among the {tagged} devices with hardware {release.target!r}"
                    + (" and the selector's tags" if selector.tags else ""),
                    field="selector.installed_version",
                )
        remaining = [
            d
            for d in matched
            if not (d.installed_name == release.name and d.installed_version == release.version)
        ]
        if not remaining:
            raise Invalid(
                f"all {len(matched)} devices the selector matched already run "
                f"{release.name} {release.version}",
                field="selector",
            )
        return remaining

    @staticmethod
    def _busy(s: Session, device_ids: set[str]) -> dict[str, int]:
        """Selected devices still taking part in another deployment: id → deployment."""
        rows = s.execute(
            select(t.DeploymentDevice.device_id, t.DeploymentDevice.deployment_id)
            .join(t.Deployment)
            .where(
                or_(
                    and_(
                        t.Deployment.status.in_(LIVE_DEPLOYMENTS),
                        t.DeploymentDevice.status.not_in(FINAL),
                    ),
                    t.DeploymentDevice.status == "rollback-pending",
                )
            )
        )
        return {device: deployment for device, deployment in rows if device in device_ids}

    @staticmethod
    def _releases_by_version(s: Session, target: str) -> dict[tuple[str | None, str | None], int]:
        rows = s.execute(
            select(t.Release.name, t.Release.version, t.Release.id).where(
                t.Release.target == target
            )
        )
        return {(name, version): rid for name, version, rid in rows}

    def _deployment(self, s: Session, row: t.Deployment) -> DeploymentRecord:
        release = s.get(t.Release, row.release_id)
        assert release is not None  # a foreign key
        phases = phases_from_dicts(row.phases)
        counts: list[dict[DeviceStatus, int]] = [dict.fromkeys(DEVICE_STATUSES, 0) for _ in phases]
        for phase, status, count in s.execute(
            select(t.DeploymentDevice.phase, t.DeploymentDevice.status, func.count())
            .where(t.DeploymentDevice.deployment_id == row.id)
            .group_by(t.DeploymentDevice.phase, t.DeploymentDevice.status)
        ):
            counts[phase][cast(DeviceStatus, status)] = int(count)
        return DeploymentRecord(
            id=row.id,
            release=_release(release),
            selector=Selector.from_dict(row.selector),
            phases=phases,
            max_failure_rate=row.max_failure_rate,
            device_count=row.device_count,
            state=_state(row),
            reason=row.reason,
            created_at=row.created_at,
            created_by=row.created_by,
            updated_at=row.updated_at,
            phase_counts=tuple(counts),
        )

    def get_deployment(self, deployment_id: int) -> DeploymentRecord:
        with self._ro() as s:
            row = s.get(t.Deployment, deployment_id)
            if row is None:
                raise NotFound(f"no deployment {deployment_id}")
            return self._deployment(s, row)

    def list_deployments(self, status: str | None = None) -> list[DeploymentRecord]:
        """Deployments, newest first."""
        with self._ro() as s:
            query = select(t.Deployment).order_by(t.Deployment.id.desc())
            if status is not None:
                query = query.where(t.Deployment.status == status)
            return [self._deployment(s, r) for r in s.scalars(query.limit(MAX_PAGE))]

    def deployment_ids(self, status: str) -> list[int]:
        with self._ro() as s:
            return list(s.scalars(select(t.Deployment.id).where(t.Deployment.status == status)))

    def deployment_progress(self, deployment_id: int) -> list[ProgressRecord]:
        with self._ro() as s:
            rows = s.scalars(
                select(t.DeploymentDevice)
                .where(t.DeploymentDevice.deployment_id == deployment_id)
                .order_by(t.DeploymentDevice.phase, t.DeploymentDevice.device_id)
            )
            return [
                ProgressRecord(
                    deployment_id=r.deployment_id,
                    device_id=r.device_id,
                    phase=r.phase,
                    status=cast(DeviceStatus, r.status),
                    previous_release_id=r.previous_release_id,
                    reason=r.reason,
                    updated_at=r.updated_at,
                )
                for r in rows
            ]

    def report_status(
        self,
        *,
        deployment_id: int,
        device_id: str,
        status: DeviceStatus,
        reason: str | None,
        version: str | None,
        now: datetime,
    ) -> ReportOutcome:
        """A device reports its status in a deployment (validated with `check_transition`).

        `success` installs the release on the device's record, `rolled-back` the release it
        had before; both with a history entry. NotFound for an unknown deployment,
        Forbidden when the device is not part of it, InvalidTransition (409) for a status
        that may not follow the current one, Invalid for a version that is not the one the
        status is about.
        """
        with self._tx() as s:
            # A shared lock: reports run side by side, but never while an evaluation or an
            # operator action (which lock the row for update) is changing the deployment.
            deployment = s.scalar(
                select(t.Deployment)
                .where(t.Deployment.id == deployment_id)
                .with_for_update(read=True)
            )
            if deployment is None:
                raise NotFound(f"no deployment {deployment_id}")
            progress = s.scalar(
                select(t.DeploymentDevice)
                .where(
                    t.DeploymentDevice.deployment_id == deployment_id,
                    t.DeploymentDevice.device_id == device_id,
                )
                .with_for_update()
            )
            if progress is None:
                raise Forbidden(
                    f"device {device_id!r} is not part of deployment {deployment_id}: a device "
                    "reports only on deployments that selected it"
                )
            before = cast(DeviceStatus, progress.status)
            check_transition(before, status)
            release = s.get(t.Release, deployment.release_id)
            assert release is not None  # a foreign key
            previous = (
                None
                if progress.previous_release_id is None
                else s.get(t.Release, progress.previous_release_id)
            )
            about = previous if before == "rollback-pending" else release
            if version is not None and about is not None and version != about.version:
                raise Invalid(
                    f"version {version!r} is not the version this status is about: "
                    f"{about.version} ({'the rollback' if about is previous else 'the update'} "
                    f"of deployment {deployment_id})",
                    field="version",
                )
            stored: DeviceStatus = status
            if (
                deployment.status == "aborted"
                and before not in REACHED
                and status in REACHED
                and progress.previous_release_id is not None
            ):
                # The offer reached the device after the abort (it checked in just before):
                # turn it around at once, as the abort did with the devices it found.
                stored = "rollback-pending"
            progress.status = stored
            progress.reason = reason
            progress.updated_at = now
            device = s.get(t.Device, device_id, with_for_update=True)
            assert device is not None  # a foreign key
            if device.status != "decommissioned":
                device.status = _device_state(stored)
            if status == "success":
                installed = Installed(release.name, release.version, release.sha256)
                if _installed(device) != installed or device.installed_release_id != release.id:
                    self._set_installed(
                        s,
                        device,
                        installed,
                        release.id,
                        now,
                        "updated",
                        deployment_id,
                        progress.previous_release_id,
                    )
            elif status == "rolled-back" and previous is not None:
                installed = Installed(previous.name, previous.version, previous.sha256)
                # A device rolled back before it committed the update still has on record
                # the release it returns to: nothing changed.
                if _installed(device) != installed or device.installed_release_id != previous.id:
                    self._set_installed(
                        s,
                        device,
                        installed,
                        previous.id,
                        now,
                        "rolled-back",
                        deployment_id,
                        release.id,
                    )
            after: dict[str, Any] = {"status": stored, "reason": reason}
            if stored != status:
                after["reported"] = status
            _audit(
                s,
                now,
                f"device:{device_id}",
                AuditAction.DEPLOYMENT_DEVICE_STATUS,
                _deployment_target(deployment_id, device_id),
                {"status": before},
                after,
            )
            return ReportOutcome(deployment_id, device_id, before, stored, _installed(device))

    def evaluate_deployment(self, deployment_id: int, now: datetime) -> EvaluationOutcome:
        """Run the rollout rules on a deployment and persist the decision, atomically.

        Counts come from one GROUP BY; only an abort loads device ids (to roll back).
        """
        with self._tx() as s:
            row = s.scalar(
                select(t.Deployment).where(t.Deployment.id == deployment_id).with_for_update()
            )
            if row is None:
                raise NotFound(f"no deployment {deployment_id}")
            state = _state(row)
            if state.status != "running":
                return EvaluationOutcome(
                    deployment_id, "none", f"deployment is {state.status}", False
                )
            phases = phases_from_dicts(row.phases)
            counts: list[dict[str, int]] = [{} for _ in phases]
            for phase, status, count in s.execute(
                select(t.DeploymentDevice.phase, t.DeploymentDevice.status, func.count())
                .where(t.DeploymentDevice.deployment_id == deployment_id)
                .group_by(t.DeploymentDevice.phase, t.DeploymentDevice.status)
            ):
                counts[phase][status] = int(count)
            decision = evaluate_counts(state, phases, counts, now, row.max_failure_rate)
            if decision.action == "abort":
                decision = replace(decision, rollback=self._reached(s, deployment_id))
            return self._decide(s, row, state, decision, now, SERVER_ACTOR)

    @staticmethod
    def _reached_progress(s: Session, deployment_id: int) -> list[Progress]:
        """Progress of the devices the release reached (the only ones a rollback concerns)."""
        rows = s.execute(
            select(
                t.DeploymentDevice.device_id, t.DeploymentDevice.phase, t.DeploymentDevice.status
            ).where(
                t.DeploymentDevice.deployment_id == deployment_id,
                t.DeploymentDevice.status.in_(REACHED),
            )
        )
        return [Progress(d, p, cast(DeviceStatus, st)) for d, p, st in rows]

    def _reached(self, s: Session, deployment_id: int) -> tuple[str, ...]:
        return rollback_set(self._reached_progress(s, deployment_id))

    def _decide(
        self,
        s: Session,
        row: t.Deployment,
        state: RolloutState,
        decision: Decision,
        now: datetime,
        actor: str,
    ) -> EvaluationOutcome:
        """Persist `apply(state, decision)`, the audit records and, for an abort, the rollbacks."""
        new = apply(state, decision, now)
        if new == state:
            return EvaluationOutcome(row.id, decision.action, decision.reason, False)
        _store_state(row, new, now)
        rolled: tuple[str, ...] = ()
        stranded: tuple[str, ...] = ()
        if decision.action != "none":
            row.reason = decision.reason
        if decision.action == "abort":
            rolled, stranded = self._roll_back(s, row.id, now, actor)
            if stranded:
                row.reason = (
                    f"{decision.reason}; {len(stranded)} devices the release reached have no "
                    "previous release on this server and keep what they have"
                )
        action = {
            "none": None,
            "open-phase": AuditAction.DEPLOYMENT_OPEN_PHASE,
            "abort": AuditAction.DEPLOYMENT_ABORT,
            "succeed": AuditAction.DEPLOYMENT_SUCCEED,
        }[decision.action]
        if action is not None:
            _audit(
                s,
                now,
                actor,
                action,
                _deployment_target(row.id),
                {"status": state.status, "open_phase": state.open_phase},
                {
                    "status": new.status,
                    "open_phase": new.open_phase,
                    "reason": row.reason,
                    "rolled_back": len(rolled),
                },
            )
        return EvaluationOutcome(row.id, decision.action, decision.reason, True, rolled, stranded)

    def _roll_back(
        self, s: Session, deployment_id: int, now: datetime, actor: str
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Set reached devices to rollback-pending; (rolled back, lacking a previous release).

        The set is read again here, under the row locks, rather than taken from the
        decision: a device that started downloading since the decision was computed is
        rolled back too.
        """
        rows = list(
            s.scalars(
                select(t.DeploymentDevice)
                .where(
                    t.DeploymentDevice.deployment_id == deployment_id,
                    t.DeploymentDevice.status.in_(REACHED),
                )
                .order_by(t.DeploymentDevice.device_id)
                .with_for_update()
            )
        )
        rolled: list[str] = []
        stranded: list[str] = []
        audits = []
        for r in rows:
            if r.previous_release_id is None:
                stranded.append(r.device_id)
                continue
            before = cast(DeviceStatus, r.status)
            check_transition(before, "rollback-pending", by="server")
            r.status = "rollback-pending"
            r.updated_at = now
            rolled.append(r.device_id)
            audits.append(
                {
                    "at": now,
                    "actor": actor,
                    "action": AuditAction.DEPLOYMENT_DEVICE_STATUS.value,
                    "target": _deployment_target(deployment_id, r.device_id),
                    "before": {"status": before},
                    "after": {"status": "rollback-pending"},
                }
            )
        for start in range(0, len(rolled), BATCH_ROWS):
            chunk = rolled[start : start + BATCH_ROWS]
            s.execute(
                update(t.Device)
                .where(t.Device.id.in_(chunk), t.Device.status != "decommissioned")
                .values(status="rollback-pending")
                .execution_options(synchronize_session=False)
            )
        for start in range(0, len(audits), BATCH_ROWS):
            s.execute(insert(t.AuditEntry), audits[start : start + BATCH_ROWS])
        return tuple(sorted(rolled)), tuple(sorted(stranded))

    def deployment_action(
        self,
        deployment_id: int,
        action: Literal["pause", "resume", "cancel", "rollback"],
        actor: str,
        now: datetime,
    ) -> tuple[DeploymentRecord, EvaluationOutcome]:
        """An operator's pause, resume, cancel or rollback (an abort with reason 'operator').

        InvalidTransition (409) when the deployment's status does not allow it.
        """
        with self._tx() as s:
            row = s.scalar(
                select(t.Deployment).where(t.Deployment.id == deployment_id).with_for_update()
            )
            if row is None:
                raise NotFound(f"no deployment {deployment_id}")
            state = _state(row)
            if action == "rollback":
                decision = manual_rollback(
                    state,
                    self._reached_progress(s, deployment_id),
                    reason=f"operator: rolled back by {actor}",
                )
                outcome = self._decide(s, row, state, decision, now, actor)
                return self._deployment(s, row), outcome
            change = {"pause": pause, "resume": resume, "cancel": cancel}[action]
            new = change(state)
            _store_state(row, new, now)
            row.reason = f"{action} by {actor}"
            audit_action = {
                "pause": AuditAction.DEPLOYMENT_PAUSE,
                "resume": AuditAction.DEPLOYMENT_RESUME,
                "cancel": AuditAction.DEPLOYMENT_CANCEL,
            }[action]
            _audit(
                s,
                now,
                actor,
                audit_action,
                _deployment_target(deployment_id),
                {"status": state.status},
                {"status": new.status},
            )
            outcome = EvaluationOutcome(deployment_id, action, row.reason, True)
            return self._deployment(s, row), outcome

    # --- the check-in view ----------------------------------------------------------------

    def pending_actions(self, device_id: str | None = None) -> dict[str, PendingAction]:
        """What check-ins must answer besides 'none', per device (or for one device).

        update: a running deployment whose open phases include the device, which has not
        finished; rollback: the device is rollback-pending (its previous release).
        """
        with self._ro() as s:

            def release(rid: int) -> ReleaseRecord:
                found = self._releases.get(rid)
                if found is None:
                    row = s.get(t.Release, rid)
                    assert row is not None  # a foreign key
                    # Releases never change once stored (versions are immutable).
                    found = self._releases[rid] = _release(row)
                return found

            updates = (
                select(t.DeploymentDevice.device_id, t.Deployment.id, t.Deployment.release_id)
                .join(t.Deployment)
                .where(
                    or_(
                        and_(
                            t.Deployment.status == "running",
                            t.DeploymentDevice.phase <= t.Deployment.open_phase,
                            t.DeploymentDevice.status.in_(OFFERED),
                        ),
                        # A device already on its way finishes even when the deployment
                        # is paused (no new device starts); dropping it half-way would
                        # strand it between releases. (A deployment succeeds only once
                        # every device finished; `succeeded` covers databases written
                        # before that rule.)
                        and_(
                            t.Deployment.status.in_(("paused", "succeeded")),
                            t.DeploymentDevice.status.in_(IN_FLIGHT),
                        ),
                    )
                )
            )
            rollbacks = select(
                t.DeploymentDevice.device_id,
                t.DeploymentDevice.deployment_id,
                t.DeploymentDevice.previous_release_id,
            ).where(t.DeploymentDevice.status == "rollback-pending")
            if device_id is not None:
                updates = updates.where(t.DeploymentDevice.device_id == device_id)
                rollbacks = rollbacks.where(t.DeploymentDevice.device_id == device_id)
            out: dict[str, PendingAction] = {}
            for dev, dep, rid in s.execute(updates):
                out[dev] = PendingAction(dev, dep, "update", release(rid))
            # A rollback outranks an update: the device must first get back to safety.
            for dev, dep, prev in s.execute(rollbacks):
                if prev is not None:
                    out[dev] = PendingAction(dev, dep, "rollback", release(prev))
            return out

    def may_download(self, device_id: str, release_id: int) -> bool:
        """Whether a deployment assigned this release to this device (update or rollback)."""
        with self._ro() as s:
            offered = s.scalar(
                select(func.count())
                .select_from(t.DeploymentDevice)
                .join(t.Deployment)
                .where(
                    t.DeploymentDevice.device_id == device_id,
                    t.Deployment.release_id == release_id,
                    or_(
                        and_(
                            t.Deployment.status == "running",
                            t.DeploymentDevice.phase <= t.Deployment.open_phase,
                            t.DeploymentDevice.status == "pending",
                        ),
                        # Devices the update already reached may finish (resume a download)
                        # unless the deployment aborted; `pending_actions` offers them the
                        # release on the same terms.
                        and_(
                            t.Deployment.status.in_(
                                ("running", "paused", "succeeded", "cancelled")
                            ),
                            t.DeploymentDevice.status.in_(IN_FLIGHT),
                        ),
                    ),
                )
            )
            if offered:
                return True
            rollback = s.scalar(
                select(func.count())
                .select_from(t.DeploymentDevice)
                .where(
                    t.DeploymentDevice.device_id == device_id,
                    t.DeploymentDevice.status == "rollback-pending",
                    t.DeploymentDevice.previous_release_id == release_id,
                )
            )
            return bool(rollback)

    # --- commands -------------------------------------------------------------------------

    def create_command(
        self, device_id: str, kind: str, args: Mapping[str, Any], actor: str, now: datetime
    ) -> CommandRecord:
        with self._tx() as s:
            device = s.get(t.Device, device_id)
            if device is None:
                raise NotFound(f"no device {device_id!r}")
            if device.status == "decommissioned":
                raise Conflict(f"device {device_id!r} is decommissioned: it runs no commands")
            row = t.Command(
                device_id=device_id,
                kind=kind,
                args=dict(args),
                status="pending",
                created_at=now,
                created_by=actor,
            )
            s.add(row)
            s.flush()
            _audit(
                s,
                now,
                actor,
                AuditAction.COMMAND_CREATE,
                f"device:{device_id}/command:{row.id}",
                None,
                {"kind": kind, "args": dict(args)},
            )
            return _command(row)

    def take_commands(self, device_id: str, now: datetime) -> list[CommandRecord]:
        """The device's pending commands, marked sent: each is delivered at most once
        (a `reboot` handed out again after the device rebooted would loop)."""
        with self._tx() as s:
            rows = list(
                s.scalars(
                    select(t.Command)
                    .where(t.Command.device_id == device_id, t.Command.status == "pending")
                    .order_by(t.Command.id)
                    .with_for_update()
                )
            )
            for row in rows:
                row.status = "sent"
                row.sent_at = now
            return [_command(r) for r in rows]

    def complete_command(
        self,
        device_id: str,
        command_id: int,
        ok: bool,
        output: Mapping[str, Any],
        now: datetime,
    ) -> CommandRecord:
        with self._tx() as s:
            row = s.get(t.Command, command_id, with_for_update=True)
            if row is None:
                raise NotFound(f"no command {command_id}")
            if row.device_id != device_id:
                raise Forbidden(f"command {command_id} was not sent to device {device_id!r}")
            if row.status == "done":
                raise Conflict(f"command {command_id} already has a result")
            before = {"status": row.status}
            row.status = "done"
            row.completed_at = now
            row.ok = ok
            row.output = dict(output)
            _audit(
                s,
                now,
                f"device:{device_id}",
                AuditAction.COMMAND_RESULT,
                f"device:{device_id}/command:{command_id}",
                before,
                {"status": "done", "ok": ok},
            )
            return _command(row)

    def list_commands(self, device_id: str) -> list[CommandRecord]:
        """The device's commands, newest first."""
        with self._ro() as s:
            if s.get(t.Device, device_id) is None:
                raise NotFound(f"no device {device_id!r}")
            rows = s.scalars(
                select(t.Command)
                .where(t.Command.device_id == device_id)
                .order_by(t.Command.id.desc())
                .limit(MAX_PAGE)
            )
            return [_command(r) for r in rows]

    # --- telemetry ------------------------------------------------------------------------

    def add_telemetry(
        self,
        device_id: str,
        points: Sequence[tuple[datetime, str, float]],
        logs: Sequence[tuple[datetime, str, str]],
    ) -> tuple[int, int]:
        """Store a device's points (t, metric, value) and log lines (t, level, message)."""
        return self.ingest_telemetry(
            [(device_id, at, metric, value) for at, metric, value in points],
            [(device_id, at, level, message) for at, level, message in logs],
        )

    def ingest_telemetry(
        self, points: Sequence[PointRow], logs: Sequence[LogRow]
    ) -> tuple[int, int]:
        """Store points and log lines of any number of devices in one transaction."""
        return self.write_telemetry(self.prepare_points(points), self.prepare_logs(logs))

    def prepare_points(self, points: Sequence[PointRow]) -> PreparedRows:
        """Telemetry points in the form `write_telemetry` takes (pure Python, no I/O)."""
        if self.dialect == "postgresql":
            for _, at, _, _ in points:
                if at.tzinfo is None:
                    raise ValueError(
                        f"naive datetime {at!r}: the fleet store takes UTC-aware times"
                    )
            return PreparedRows(len(points), list(points))
        params: list[Any] = []
        for d, at, metric, value in points:
            params += (d, _sqlite_time(at), metric, value)
        return PreparedRows(len(points), params)

    def prepare_logs(self, logs: Sequence[LogRow]) -> PreparedRows:
        """Device log lines in the form `write_telemetry` takes (pure Python, no I/O)."""
        if self.dialect == "postgresql":
            lines = [
                f"{_copy_text(d)}\t{_postgresql_time(at)}\t{_copy_text(level)}\t"
                f"{_copy_text(text)}\n"
                for d, at, level, text in logs
            ]
            return PreparedRows(len(logs), lines)
        params: list[Any] = []
        for d, at, level, text in logs:
            params += (d, _sqlite_time(at), level, text)
        return PreparedRows(len(logs), params)

    def write_telemetry(self, points: PreparedRows, logs: PreparedRows) -> tuple[int, int]:
        """Store prepared points and log lines in one transaction; their counts."""
        if not points.count and not logs.count:
            return 0, 0
        with self._engines.write.begin() as connection:
            if self.dialect == "postgresql":
                cursor = _driver_cursor(connection)
                if points.count:
                    with cursor.copy(COPY_POINTS) as copy:
                        copy.set_types(list(COPY_POINT_TYPES))
                        for row in points.data:
                            copy.write_row(row)
                if logs.count:
                    with cursor.copy(COPY_LOGS) as copy:
                        copy.write("".join(logs.data))
            else:
                step = 4 * SQLITE_CHUNK_ROWS
                for table, columns, rows in (
                    ("telemetry_points", ("device_id", "t", "metric", "value"), points),
                    ("device_logs", ("device_id", "t", "level", "message"), logs),
                ):
                    for start in range(0, len(rows.data), step):
                        chunk = rows.data[start : start + step]
                        sql = _insert_sql(table, columns, len(chunk) // 4)
                        connection.exec_driver_sql(sql, tuple(chunk))
        return points.count, logs.count

    def telemetry(
        self, device_id: str, metric: str | None = None, limit: int = MAX_PAGE
    ) -> list[TelemetryRecord]:
        """The device's newest points first."""
        with self._ro() as s:
            query = select(t.TelemetryPoint).where(t.TelemetryPoint.device_id == device_id)
            if metric is not None:
                query = query.where(t.TelemetryPoint.metric == metric)
            rows = s.scalars(
                query.order_by(t.TelemetryPoint.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
            )
            return [TelemetryRecord(r.device_id, r.t, r.metric, r.value) for r in rows]

    def device_logs(self, device_id: str, limit: int = MAX_PAGE) -> list[LogRecord]:
        """The device's newest log lines first."""
        with self._ro() as s:
            rows = s.scalars(
                select(t.DeviceLog)
                .where(t.DeviceLog.device_id == device_id)
                .order_by(t.DeviceLog.id.desc())
                .limit(max(1, min(limit, MAX_PAGE)))
            )
            return [LogRecord(r.device_id, r.t, r.level, r.message) for r in rows]

    def search_logs(self, query: log_store.LogQuery) -> list[log_store.LogEntry]:
        """Log lines matching `query`, in its order (tinyops.fleet.store.logs)."""
        with self._ro() as s:
            return log_store.search(s, query)

    def prune_logs(self, retention: log_store.Retention, now: datetime) -> int:
        """Delete the lines beyond `retention`, a batch per transaction; how many went."""
        statements = []
        cutoff = log_store.cutoff(retention, now)
        if cutoff is not None:
            statements.append(log_store.expired_statement(cutoff))
        if retention.max_lines_per_device is not None:
            statements.append(log_store.excess_statement(retention.max_lines_per_device))
        deleted = 0
        for statement in statements:
            while True:
                with self._tx() as s:
                    count = cast(Any, s.execute(statement)).rowcount
                deleted += count
                if count < log_store.PRUNE_BATCH:
                    break
        return deleted

    # --- audit ----------------------------------------------------------------------------

    def audit_log(
        self,
        *,
        target: str | None = None,
        action: str | None = None,
        actor: str | None = None,
        before_id: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Audit records, newest first. `target` matches itself and what is under it
        (`deployment:3` also finds `deployment:3/device:nano-1`)."""
        with self._ro() as s:
            query = select(t.AuditEntry)
            if target is not None:
                query = query.where(
                    or_(t.AuditEntry.target == target, t.AuditEntry.target.startswith(target + "/"))
                )
            if action is not None:
                query = query.where(t.AuditEntry.action == action)
            if actor is not None:
                query = query.where(t.AuditEntry.actor == actor)
            if before_id is not None:
                query = query.where(t.AuditEntry.id < before_id)
            rows = s.scalars(
                query.order_by(t.AuditEntry.id.desc()).limit(max(1, min(limit, MAX_PAGE)))
            )
            return [
                AuditRecord(
                    id=r.id,
                    at=r.at,
                    actor=r.actor,
                    action=AuditAction(r.action),
                    target=r.target,
                    before=r.before,
                    after=r.after,
                )
                for r in rows
            ]

    # --- metrics --------------------------------------------------------------------------

    def device_counts(self) -> list[tuple[str, str, str, int]]:
        """(status, hardware, release 'name@version' or 'none', devices) for the gauges."""
        with self._ro() as s:
            rows = s.execute(
                select(
                    t.Device.status,
                    t.Device.hardware,
                    t.Device.installed_name,
                    t.Device.installed_version,
                    func.count(),
                ).group_by(
                    t.Device.status,
                    t.Device.hardware,
                    t.Device.installed_name,
                    t.Device.installed_version,
                )
            )
            return [
                (
                    status,
                    hardware,
                    "none" if name is None else f"{name}@{version}",
                    int(count),
                )
                for status, hardware, name, version, count in rows
            ]

    def live_deployment_counts(self) -> list[tuple[int, int, str, int]]:
        """(deployment, phase, device status, devices) of running and paused deployments."""
        with self._ro() as s:
            rows = s.execute(
                select(
                    t.DeploymentDevice.deployment_id,
                    t.DeploymentDevice.phase,
                    t.DeploymentDevice.status,
                    func.count(),
                )
                .join(t.Deployment)
                .where(t.Deployment.status.in_(LIVE_DEPLOYMENTS))
                .group_by(
                    t.DeploymentDevice.deployment_id,
                    t.DeploymentDevice.phase,
                    t.DeploymentDevice.status,
                )
            )
            return [(int(d), int(p), st, int(c)) for d, p, st, c in rows]

    def deployment_status_counts(self) -> dict[str, int]:
        """Deployments per status."""
        with self._ro() as s:
            rows = s.execute(
                select(t.Deployment.status, func.count()).group_by(t.Deployment.status)
            )
            return {status: int(count) for status, count in rows}


def _live_enrollment_token(s: Session, token_hash: str, now: datetime) -> t.EnrollmentToken:
    """The enrollment token with this hash, locked for its use count; Unauthorized when it
    is unknown or expired (the caller checks the uses it needs)."""
    token = s.scalar(
        select(t.EnrollmentToken)
        .where(t.EnrollmentToken.token_hash == token_hash)
        .with_for_update()
    )
    if token is None:
        raise Unauthorized(
            "enrollment_token is not a valid enrollment token of this fleet",
            field="enrollment_token",
        )
    if token.expires_at is not None and now >= token.expires_at:
        raise Unauthorized(
            f"enrollment token {token.name!r} expired at {token.expires_at.isoformat()}",
            field="enrollment_token",
        )
    return token
