"""Alerts (`/api/v1/alerts`): the alerts of the server's rules, pending, firing or resolved.

Read-only (any API role). The server evaluates its rules (`--alert-rules`) every
`--alert-interval` seconds (tinyops.fleet.server.alerting); this lists the state of the
last evaluation. Resolved alerts stay listed for 15 minutes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from tinyops.fleet.server.auth import Reader, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=ERROR_RESPONSES)

AlertState = Literal["pending", "firing", "resolved"]


class AlertOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str = Field(description="The rule's name (label alertname).")
    severity: str = Field(description="info, warning or critical.")
    labels: dict[str, str] = Field(description="Series labels, rule labels, alertname, severity.")
    state: AlertState = Field(description="pending, firing or resolved.")
    value: float = Field(description="The value that last made the condition hold.")
    since: datetime = Field(description="When the alert entered its state (UTC).")
    summary: str = Field(description="The rule's summary annotation, rendered.")
    fingerprint: str = Field(description="sha256 of rule and labels, 16 hex digits.")


class AlertsOut(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alerts: list[AlertOut]


@router.get("", response_model=AlertsOut)
def list_alerts(
    who: Reader,
    rt: Runtime,
    state: Annotated[AlertState | None, Query(description="Only alerts in this state.")] = None,
) -> AlertsOut:
    """Current alerts by rule, then labels."""
    return AlertsOut(
        alerts=[
            AlertOut(
                rule=a.rule,
                severity=a.severity,
                labels=dict(a.labels),
                state=a.state,
                value=a.value,
                since=a.since,
                summary=a.summary,
                fingerprint=a.fingerprint,
            )
            for a in rt.alerting.alerts(state)
        ]
    )
