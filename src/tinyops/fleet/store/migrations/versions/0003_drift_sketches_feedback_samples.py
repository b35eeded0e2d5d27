"""Drift monitoring: release profiles, sketch windows, prediction samples, feedback, labeled data.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27

    release_monitoring   the reference profile and policy a release's bundle carries
    sketch_windows       one row per (device, release, window): the window's histograms,
                         every feature's counts concatenated in the profile's order, so
                         that "sum the histograms of release R over devices D in window W"
                         reads one index range (release_id, window_end) and adds
                         equal-length rows
    prediction_samples   raw samples a device's sampling policy let it send
    feedback_labels      ground truth for those samples (one label per sample)
    labeled_samples      newly labeled data for retraining, paged by (dataset, id)
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "release_monitoring",
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("release_id"),
    )
    op.create_table(
        "sketch_windows",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("window_start", UTC_TIME, nullable=False),
        sa.Column("window_end", UTC_TIME, nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("predictions", sa.JSON(), nullable=True),
        sa.Column("confidence", sa.JSON(), nullable=True),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"]),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "device_id", "release_id", "window_start", name="uq_sketch_windows_drs"
        ),
    )
    with op.batch_alter_table("sketch_windows", schema=None) as batch_op:
        batch_op.create_index(
            "ix_sketch_windows_release_end", ["release_id", "window_end"], unique=False
        )

    op.create_table(
        "prediction_samples",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("window_id", BIG_ID, nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("prediction_id", sa.String(length=64), nullable=True),
        sa.Column("prediction", sa.Integer(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"]),
        sa.ForeignKeyConstraint(["window_id"], ["sketch_windows.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "release_id", "device_id", "prediction_id", name="uq_prediction_samples_ref"
        ),
    )
    with op.batch_alter_table("prediction_samples", schema=None) as batch_op:
        batch_op.create_index("ix_prediction_samples_window", ["window_id"], unique=False)

    op.create_table(
        "feedback_labels",
        sa.Column("sample_id", BIG_ID, nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["sample_id"], ["prediction_samples.id"]),
        sa.PrimaryKeyConstraint("sample_id"),
    )
    op.create_table(
        "labeled_samples",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("feature_values", sa.JSON(), nullable=True),
        sa.Column("named_values", sa.JSON(), nullable=True),
        sa.Column("label", sa.JSON(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("t", UTC_TIME, nullable=True),
        sa.Column("received_at", UTC_TIME, nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("labeled_samples", schema=None) as batch_op:
        batch_op.create_index("ix_labeled_samples_dataset", ["dataset", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("labeled_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_labeled_samples_dataset")
    op.drop_table("labeled_samples")
    op.drop_table("feedback_labels")
    with op.batch_alter_table("prediction_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_samples_window")
    op.drop_table("prediction_samples")
    with op.batch_alter_table("sketch_windows", schema=None) as batch_op:
        batch_op.drop_index("ix_sketch_windows_release_end")
    op.drop_table("sketch_windows")
    op.drop_table("release_monitoring")
