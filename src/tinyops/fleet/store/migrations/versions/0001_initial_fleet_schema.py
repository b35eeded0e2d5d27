"""The initial fleet schema: tokens, devices, releases, deployments, audit, telemetry.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-27

Times are `timestamp with time zone` on PostgreSQL (the ORM's UTCDateTime stores naive UTC
on SQLite). Row ids of the fast-growing tables are BIGINT on PostgreSQL and INTEGER on
SQLite, where only an INTEGER PRIMARY KEY is the auto-incrementing rowid.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=24), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=128), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_log_action"), ["action"], unique=False)
        batch_op.create_index("ix_audit_log_target", ["target", "id"], unique=False)

    op.create_table(
        "enrollment_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=True),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=128), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("expires_at", UTC_TIME, nullable=False),
        sa.Column("uploaded_at", UTC_TIME, nullable=False),
        sa.Column("uploaded_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version", "target", name="uq_releases_nvt"),
    )
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_releases_sha256"), ["sha256"], unique=False)

    op.create_table(
        "trusted_keys",
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("public_key_pem", sa.Text(), nullable=False),
        sa.Column("added_at", UTC_TIME, nullable=False),
        sa.Column("added_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("selector", sa.JSON(), nullable=False),
        sa.Column("phases", sa.JSON(), nullable=False),
        sa.Column("max_failure_rate", sa.Float(), nullable=True),
        sa.Column("seed", sa.String(length=64), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("open_phase", sa.Integer(), nullable=False),
        sa.Column("phase_opened_at", sa.JSON(), nullable=False),
        sa.Column("phase_passed_at", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deployments_status"), ["status"], unique=False)

    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("hardware", sa.String(length=64), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=True),
        sa.Column("installed_name", sa.String(length=64), nullable=True),
        sa.Column("installed_version", sa.String(length=128), nullable=True),
        sa.Column("installed_sha256", sa.String(length=64), nullable=True),
        sa.Column("installed_release_id", sa.Integer(), nullable=True),
        sa.Column("previous_release_id", sa.Integer(), nullable=True),
        sa.Column("enrolled_at", UTC_TIME, nullable=False),
        sa.Column("last_seen", UTC_TIME, nullable=True),
        sa.Column("health", sa.JSON(), nullable=True),
        sa.Column("slot", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["installed_release_id"],
            ["releases.id"],
        ),
        sa.ForeignKeyConstraint(
            ["previous_release_id"],
            ["releases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.create_index("ix_devices_hardware_status", ["hardware", "status"], unique=False)

    op.create_table(
        "commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("completed_at", UTC_TIME, nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("output", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index("ix_commands_device_status", ["device_id", "status"], unique=False)

    op.create_table(
        "deployment_devices",
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("previous_release_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["previous_release_id"],
            ["releases.id"],
        ),
        sa.PrimaryKeyConstraint("deployment_id", "device_id"),
    )
    with op.batch_alter_table("deployment_devices", schema=None) as batch_op:
        batch_op.create_index("ix_deployment_devices_device", ["device_id"], unique=False)
        batch_op.create_index(
            "ix_deployment_devices_status", ["deployment_id", "status"], unique=False
        )

    op.create_table(
        "device_history",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("event", sa.String(length=24), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("version", sa.String(length=128), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("release_id", sa.Integer(), nullable=True),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["deployment_id"],
            ["deployments.id"],
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device_history", schema=None) as batch_op:
        batch_op.create_index("ix_device_history_device", ["device_id", "id"], unique=False)

    op.create_table(
        "device_logs",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("t", UTC_TIME, nullable=False),
        sa.Column("level", sa.String(length=24), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("device_logs", schema=None) as batch_op:
        batch_op.create_index("ix_device_logs_device", ["device_id", "id"], unique=False)

    op.create_table(
        "telemetry_points",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("t", UTC_TIME, nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("telemetry_points", schema=None) as batch_op:
        batch_op.create_index(
            "ix_telemetry_device_metric_t", ["device_id", "metric", "t"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("telemetry_points", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_device_metric_t")

    op.drop_table("telemetry_points")
    with op.batch_alter_table("device_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_device_logs_device")

    op.drop_table("device_logs")
    with op.batch_alter_table("device_history", schema=None) as batch_op:
        batch_op.drop_index("ix_device_history_device")

    op.drop_table("device_history")
    with op.batch_alter_table("deployment_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_deployment_devices_status")
        batch_op.drop_index("ix_deployment_devices_device")

    op.drop_table("deployment_devices")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index("ix_commands_device_status")

    op.drop_table("commands")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_index("ix_devices_hardware_status")

    op.drop_table("devices")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deployments_status"))

    op.drop_table("deployments")
    op.drop_table("trusted_keys")
    with op.batch_alter_table("releases", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_releases_sha256"))

    op.drop_table("releases")
    op.drop_table("enrollment_tokens")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_target")
        batch_op.drop_index(batch_op.f("ix_audit_log_action"))

    op.drop_table("audit_log")
    op.drop_table("api_tokens")
