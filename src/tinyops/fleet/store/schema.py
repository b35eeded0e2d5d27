"""The fleet database: SQLAlchemy 2 typed ORM tables, identical on SQLite and PostgreSQL.

Tables, by domain concept:

    api_tokens           management API tokens (sha256 of the token, role)
    enrollment_tokens    fleet enrollment tokens (sha256, expiry, use count)
    devices              one row per enrolled device: hardware, tags, token hash,
                         installed and previous release, last check-in and health
    device_history       every installed-release change of a device (version history)
    trusted_keys         Ed25519 public keys that may sign releases
    releases             uploaded bundles (the file lives in artifacts/<sha256>.tinybundle)
    deployments          a release rolled out to a selection of devices in phases, with
                         the rollout state (status, open phase, when phases opened/passed)
    deployment_devices   each selected device's phase and status in a deployment
    audit_log            who changed what, when, before and after
    telemetry_points     device metrics
    device_logs          device log lines
    commands             remote-debug commands and their results
    release_monitoring   a release's reference profile and monitoring policy (from the
                         bundle's monitoring/ members; absent for bundles without them)
    sketch_windows       one device's drift histograms for one window of one release
    prediction_samples   raw samples a sampling policy let a device send with a window
    feedback_labels      ground-truth labels for those samples (performance drift)
    labeled_samples      newly labeled data for retraining, by dataset

The schema is created and changed only by the Alembic migrations in `migrations/`; a test
checks that the migrations produce exactly these tables. Times are stored in UTC
(`UTCDateTime`): PostgreSQL keeps `timestamp with time zone`, SQLite a naive UTC text.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

# Lengths, in characters.
ID_LEN = 64  # device ids, names, board ids: the manifest's 64-character name rule
HASH_LEN = 64  # sha256 hex
KEY_ID_LEN = 16  # tinyops.bundle.keys.key_id
VERSION_LEN = 128  # SemVer with pre-release and build metadata
STATUS_LEN = 24
DATASET_LEN = 128  # "<project>/<dataset>"


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both databases.

    SQLite has no time zone type: values are stored as naive UTC and read back with UTC
    attached. Naive datetimes are refused on the way in, so local times never sneak in.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the fleet store takes UTC-aware times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Integer on SQLite, where only INTEGER PRIMARY KEY aliases the rowid (and autoincrements).
BigId: TypeEngine[int] = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads this class attribute)
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(none_as_null=True),
        list[Any]: JSON(none_as_null=True),
    }


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN), unique=True)
    role: Mapped[str] = mapped_column(String(STATUS_LEN))
    token_hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(2 * ID_LEN))
    revoked_at: Mapped[datetime | None]


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN))
    token_hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(2 * ID_LEN))
    expires_at: Mapped[datetime | None]
    max_uses: Mapped[int | None] = mapped_column(Integer)
    uses: Mapped[int] = mapped_column(Integer, default=0)


class Release(Base):
    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("name", "version", "target", name="uq_releases_nvt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN))
    version: Mapped[str] = mapped_column(String(VERSION_LEN))
    target: Mapped[str] = mapped_column(String(ID_LEN))
    sha256: Mapped[str] = mapped_column(String(HASH_LEN), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(KEY_ID_LEN))
    manifest: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    uploaded_at: Mapped[datetime]
    uploaded_by: Mapped[str] = mapped_column(String(2 * ID_LEN))


class Device(Base):
    __tablename__ = "devices"
    __table_args__ = (Index("ix_devices_hardware_status", "hardware", "status"),)

    id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    hardware: Mapped[str] = mapped_column(String(ID_LEN))
    tags: Mapped[dict[str, Any]]
    token_hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    status: Mapped[str] = mapped_column(String(STATUS_LEN))
    public_key: Mapped[str | None] = mapped_column(Text)
    installed_name: Mapped[str | None] = mapped_column(String(ID_LEN))
    installed_version: Mapped[str | None] = mapped_column(String(VERSION_LEN))
    installed_sha256: Mapped[str | None] = mapped_column(String(HASH_LEN))
    installed_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    previous_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    enrolled_at: Mapped[datetime]
    last_seen: Mapped[datetime | None]
    health: Mapped[dict[str, Any] | None]
    slot: Mapped[dict[str, Any] | None]


class DeviceHistory(Base):
    __tablename__ = "device_history"
    __table_args__ = (Index("ix_device_history_device", "device_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(STATUS_LEN))
    name: Mapped[str | None] = mapped_column(String(ID_LEN))
    version: Mapped[str | None] = mapped_column(String(VERSION_LEN))
    sha256: Mapped[str | None] = mapped_column(String(HASH_LEN))
    release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"))


class TrustedKey(Base):
    __tablename__ = "trusted_keys"

    key_id: Mapped[str] = mapped_column(String(KEY_ID_LEN), primary_key=True)
    name: Mapped[str] = mapped_column(String(ID_LEN))
    public_key_pem: Mapped[str] = mapped_column(Text)
    added_at: Mapped[datetime]
    added_by: Mapped[str] = mapped_column(String(2 * ID_LEN))


class Deployment(Base):
    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    selector: Mapped[dict[str, Any]]
    phases: Mapped[list[Any]]
    max_failure_rate: Mapped[float | None] = mapped_column(Float)
    seed: Mapped[str] = mapped_column(String(ID_LEN))
    device_count: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(STATUS_LEN), index=True)
    open_phase: Mapped[int] = mapped_column(Integer)
    phase_opened_at: Mapped[list[Any]]
    phase_passed_at: Mapped[list[Any]]
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(2 * ID_LEN))
    updated_at: Mapped[datetime]


class DeploymentDevice(Base):
    __tablename__ = "deployment_devices"
    __table_args__ = (
        Index("ix_deployment_devices_device", "device_id"),
        Index("ix_deployment_devices_status", "deployment_id", "status"),
    )

    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    phase: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(STATUS_LEN))
    previous_release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id"))
    reason: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(2 * ID_LEN))
    action: Mapped[str] = mapped_column(String(ID_LEN), index=True)
    target: Mapped[str] = mapped_column(String(2 * ID_LEN))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]


class TelemetryPoint(Base):
    __tablename__ = "telemetry_points"
    # One index, on the device (migration 0004): every reader asks for one device's points
    # (newest first) or reads by id (the hardware metrics follow the id). A hash index on
    # PostgreSQL, the cheapest to keep up per inserted row: the (device, metric, t) b-tree it
    # replaces cost more than the rest of a COPY together. SQLite knows only b-trees.
    __table_args__ = (Index("ix_telemetry_device", "device_id", postgresql_using="hash"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # No foreign key (migration 0002): the check was most of the cost of a COPY, and a
    # point only ever comes from a device that just authenticated; devices are never deleted.
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    t: Mapped[datetime]
    metric: Mapped[str] = mapped_column(String(ID_LEN))
    value: Mapped[float] = mapped_column(Float)


class DeviceLog(Base):
    __tablename__ = "device_logs"
    __table_args__ = (Index("ix_device_logs_device", "device_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    t: Mapped[datetime]
    level: Mapped[str] = mapped_column(String(STATUS_LEN))
    message: Mapped[str] = mapped_column(Text)


class Command(Base):
    __tablename__ = "commands"
    __table_args__ = (Index("ix_commands_device_status", "device_id", "status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    kind: Mapped[str] = mapped_column(String(STATUS_LEN))
    args: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(STATUS_LEN))
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(2 * ID_LEN))
    sent_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    ok: Mapped[bool | None] = mapped_column(Boolean)
    output: Mapped[dict[str, Any] | None]


class ReleaseMonitoring(Base):
    __tablename__ = "release_monitoring"

    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"), primary_key=True)
    profile: Mapped[dict[str, Any]]
    """ReferenceProfile.to_dict() of monitoring/profile.json."""
    policy: Mapped[dict[str, Any]]
    """monitoring/policy.json as the bundle carries it."""


class SketchWindow(Base):
    __tablename__ = "sketch_windows"
    __table_args__ = (
        # One window per device, release and start: a retried upload is recognised.
        UniqueConstraint("device_id", "release_id", "window_start", name="uq_sketch_windows_drs"),
        Index("ix_sketch_windows_release_end", "release_id", "window_end"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    device_id: Mapped[str] = mapped_column(ForeignKey("devices.id"))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    window_start: Mapped[datetime]
    window_end: Mapped[datetime]
    count: Mapped[int] = mapped_column(BigInteger)
    # Every feature's bin counts concatenated in the profile's feature order: summing the
    # windows of a selection is one NumPy sum over equal-length rows.
    counts: Mapped[list[Any]]
    predictions: Mapped[list[Any] | None]
    confidence: Mapped[list[Any] | None]
    received_at: Mapped[datetime]


class PredictionSample(Base):
    __tablename__ = "prediction_samples"
    __table_args__ = (
        UniqueConstraint(
            "release_id", "device_id", "prediction_id", name="uq_prediction_samples_ref"
        ),
        Index("ix_prediction_samples_window", "window_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    window_id: Mapped[int] = mapped_column(BigId, ForeignKey("sketch_windows.id"))
    release_id: Mapped[int] = mapped_column(ForeignKey("releases.id"))
    device_id: Mapped[str] = mapped_column(String(ID_LEN))
    prediction_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    prediction: Mapped[int] = mapped_column(Integer)
    features: Mapped[list[Any]]


class FeedbackLabel(Base):
    __tablename__ = "feedback_labels"

    sample_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("prediction_samples.id"), primary_key=True
    )
    label: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime]
    submitted_by: Mapped[str] = mapped_column(String(2 * ID_LEN))


class LabeledSample(Base):
    __tablename__ = "labeled_samples"
    __table_args__ = (Index("ix_labeled_samples_dataset", "dataset", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dataset: Mapped[str] = mapped_column(String(DATASET_LEN))
    feature_values: Mapped[list[Any] | None]
    named_values: Mapped[dict[str, Any] | None]
    label: Mapped[Any] = mapped_column(JSON(none_as_null=True))
    """An integer class index or a class name."""
    device_id: Mapped[str | None] = mapped_column(String(ID_LEN))
    t: Mapped[datetime | None]
    received_at: Mapped[datetime]
    submitted_by: Mapped[str] = mapped_column(String(2 * ID_LEN))
