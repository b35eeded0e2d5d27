"""Settings of the fleet server: where its state lives and the protocol's limits."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tinyops.fleet.mqtt.topics import DEFAULT_PREFIX, check_prefix, parse_broker_url

MIB: Final = 1 << 20
SERVER_KEY_FILE: Final = "server.key"


class FleetSettings(BaseModel):
    """Configuration of one fleet server process."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Field(
        default=Path(".tinyops/fleet"),
        description="Folder of the server's state: fleet.db (SQLite), artifacts/, server.key.",
    )
    db_url: str | None = Field(
        default=None,
        description="Database URL; None for SQLite at <data_dir>/fleet.db. PostgreSQL: "
        "postgresql://user@host:5432/dbname.",
    )
    server_key_path: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) the server signs rollback orders with; created "
        "on first start. None for <data_dir>/server.key.",
    )
    max_body_bytes: int = Field(
        default=MIB, gt=0, description="Largest JSON request body accepted, in bytes."
    )
    max_release_bytes: int = Field(
        default=64 * MIB, gt=0, description="Largest release upload accepted, in bytes."
    )
    poll_interval_s: float = Field(
        default=300.0, gt=0, description="Seconds between check-ins told to an idle device."
    )
    update_poll_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds between check-ins told to an updating device (never more than "
        "poll_interval_s: see updating_poll_interval_s).",
    )
    evaluate_interval_s: float = Field(
        default=0.5,
        gt=0,
        description="Seconds between runs of the background rollout evaluator (soak timers).",
    )
    flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between batched writes of check-ins (last_seen, health).",
    )
    rollback_order_ttl_s: float = Field(
        default=86_400.0, gt=0, description="Validity of a signed rollback order, in seconds."
    )
    log_max_age_days: float | None = Field(
        default=30.0,
        gt=0,
        description="Device log lines older than this (by their own time) are pruned; "
        "None keeps them however old.",
    )
    log_max_lines_per_device: int | None = Field(
        default=10_000,
        gt=0,
        description="Each device keeps at most this many log lines (the newest); None for "
        "no limit.",
    )
    log_prune_interval_s: float = Field(
        default=3600.0, gt=0, description="Seconds between prunes of device logs."
    )

    drift_config: Path | None = Field(
        default=None,
        description="YAML or JSON file of a DriftConfig (methods and thresholds) for releases "
        "whose monitoring policy carries none; None for the defaults (docs/drift.md).",
    )
    drift_group_tags: tuple[str, ...] = Field(
        default=("group",),
        description="Device tag keys whose values form the group-level drift series "
        '(metric label group="key:value").',
    )

    alert_rules: Path | None = Field(
        default=None,
        description="Alert rules file (alerts.yaml, docs/alerts.md) evaluated every "
        "alert_interval_s; None: no alerts (metrics are still on /metrics).",
    )
    alert_webhook: str | None = Field(
        default=None,
        description="URL that receives alert notifications as Alertmanager webhook JSON "
        "(http:// or https://); they always go to the server log as well.",
    )
    alert_interval_s: float = Field(
        default=60.0, gt=0, description="Seconds between evaluations of the alert rules."
    )

    mqtt_url: str | None = Field(
        default=None,
        description="MQTT broker to serve the device protocol on as well as HTTP: "
        "mqtt://[user[:password]@]host[:port] or mqtts://... (TLS); None for HTTP only.",
    )
    mqtt_prefix: str = Field(
        default=DEFAULT_PREFIX,
        description="Topic prefix of the device protocol on the broker: "
        "<prefix>/dev/<device_id>/req/<op> and so on.",
    )

    @field_validator("mqtt_url")
    @classmethod
    def _broker_url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_broker_url(value)
        return value

    @field_validator("mqtt_prefix")
    @classmethod
    def _topic_prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("alert_webhook")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"alert_webhook {value!r}: expected an http:// or https:// URL")
        return value

    @property
    def updating_poll_interval_s(self) -> float:
        """The check-in interval told with an update offer. An updating device reports its
        progress on the next check-ins, so it must never be told to wait longer than an idle
        one: with `--poll-interval 1`, a default 60 s here would hold every installed device
        silent for a minute (no report, no drift sketch) after it committed."""
        return min(self.update_poll_interval_s, self.poll_interval_s)

    def database_url(self) -> str:
        """`db_url`, or the SQLite file in `data_dir`."""
        if self.db_url is not None:
            return self.db_url
        # Imported here: the settings stay importable without SQLAlchemy.
        from tinyops.fleet.store.engine import sqlite_url

        return sqlite_url(self.data_dir)

    def key_path(self) -> Path:
        """Where the server's rollback-signing key lives."""
        return (
            self.server_key_path
            if self.server_key_path is not None
            else (self.data_dir / SERVER_KEY_FILE)
        )
