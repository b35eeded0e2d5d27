"""Telemetry points without a foreign key to devices.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

Telemetry is the table that takes the load (hundreds of thousands of points a second).
On PostgreSQL the per-row foreign-key check on `device_id` was about 60 % of the cost of
COPY into it. The key protected nothing: a point is written only for a device that just
authenticated, and device rows are never deleted (a device is decommissioned, its row
stays), so no point can lose its device. The index on (device_id, metric, t) stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# 0001 created the key without a name: PostgreSQL named it by its own rule, SQLite not at
# all. Batch mode on SQLite rebuilds the table and needs a name to drop it by, which this
# naming convention gives the reflected constraint.
PG_NAME = "telemetry_points_device_id_fkey"
SQLITE_CONVENTION = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
SQLITE_NAME = "fk_telemetry_points_device_id_devices"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(PG_NAME, "telemetry_points", type_="foreignkey")
        return
    with op.batch_alter_table(
        "telemetry_points", recreate="always", naming_convention=SQLITE_CONVENTION
    ) as batch_op:
        batch_op.drop_constraint(SQLITE_NAME, type_="foreignkey")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(PG_NAME, "telemetry_points", "devices", ["device_id"], ["id"])
        return
    with op.batch_alter_table("telemetry_points", recreate="always") as batch_op:
        batch_op.create_foreign_key(SQLITE_NAME, "devices", ["device_id"], ["id"])
