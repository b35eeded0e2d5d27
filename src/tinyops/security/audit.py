"""Audit records: who changed what, when, and the state before and after.

Every change the fleet server makes writes one record in the same database transaction
as the change itself, so there is never a change without its record (or a record of a
change that was rolled back). The actor is a string naming the credential:

    token:<name>     a management API token (operator, CI)
    device:<id>      a device, with its own token (or its enrollment)
    server           the server itself (the rollout evaluator's decisions)

`before` and `after` are small JSON objects holding only the fields that changed or
identify the change; secrets (tokens, private keys) never appear in them.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SERVER_ACTOR: Final = "server"


def token_actor(name: str) -> str:
    """The actor string of a management API token called `name`."""
    return f"token:{name}"


def device_actor(device_id: str) -> str:
    """The actor string of the device `device_id`."""
    return f"device:{device_id}"


class AuditAction(enum.StrEnum):
    """What was changed; a closed set so that audit queries and dashboards stay bounded."""

    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    ENROLLMENT_TOKEN_CREATE = "enrollment-token.create"
    TRUSTED_KEY_ADD = "trusted-key.add"
    DEVICE_ENROLL = "device.enroll"
    DEVICE_DECOMMISSION = "device.decommission"
    DEVICE_INSTALLED = "device.installed"
    """A device's installed release changed (reported at check-in or by a deployment)."""
    RELEASE_UPLOAD = "release.upload"
    DEPLOYMENT_CREATE = "deployment.create"
    DEPLOYMENT_PAUSE = "deployment.pause"
    DEPLOYMENT_RESUME = "deployment.resume"
    DEPLOYMENT_CANCEL = "deployment.cancel"
    DEPLOYMENT_OPEN_PHASE = "deployment.open-phase"
    DEPLOYMENT_ABORT = "deployment.abort"
    DEPLOYMENT_SUCCEED = "deployment.succeed"
    DEPLOYMENT_DEVICE_STATUS = "deployment.device-status"
    """A device's status in a deployment changed (reported, or set to rollback-pending)."""
    COMMAND_CREATE = "command.create"
    COMMAND_RESULT = "command.result"
    FEEDBACK_SUBMIT = "feedback.submit"
    """Ground-truth labels for a device's sampled predictions (performance drift)."""
    SAMPLES_SUBMIT = "samples.submit"
    """Newly labeled samples added to a dataset (for retraining)."""


class AuditRecord(BaseModel):
    """One audited change."""

    model_config = ConfigDict(extra="forbid")

    id: int | None = Field(default=None, description="Sequence number; None before storing.")
    at: AwareDatetime = Field(description="When the change was made (UTC).")
    actor: str = Field(description="Who made it: 'token:<name>', 'device:<id>' or 'server'.")
    action: AuditAction = Field(description="What kind of change it was.")
    target: str = Field(description="What was changed, e.g. 'deployment:17', 'device:nano-1'.")
    before: dict[str, Any] | None = Field(
        default=None, description="The changed fields before the change; None for a creation."
    )
    after: dict[str, Any] | None = Field(
        default=None, description="The changed fields after the change; None for a deletion."
    )


def audit_record(
    at: datetime,
    actor: str,
    action: AuditAction,
    target: str,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> AuditRecord:
    """An unsaved record (the store assigns its id)."""
    return AuditRecord(at=at, actor=actor, action=action, target=target, before=before, after=after)
