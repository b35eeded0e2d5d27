"""Telemetry points indexed by device alone (a hash index on PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

Every read of telemetry asks for one device's points, newest first, or follows the id
(the hardware metrics read what arrived since their last look). The b-tree on
(device_id, metric, t) served those and cost more per inserted row than all the rest of a
COPY (measured on PostgreSQL 15: 147,000 rows/s into the table with it, 365,000 without
any index, 223,000 with a hash index on device_id; docs/benchmarks.md). PostgreSQL gets a
hash index, SQLite, which has only b-trees, a b-tree on device_id.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("telemetry_points", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_device_metric_t")
        batch_op.create_index("ix_telemetry_device", ["device_id"], postgresql_using="hash")


def downgrade() -> None:
    with op.batch_alter_table("telemetry_points", schema=None) as batch_op:
        batch_op.drop_index("ix_telemetry_device")
        batch_op.create_index(
            "ix_telemetry_device_metric_t", ["device_id", "metric", "t"], unique=False
        )
