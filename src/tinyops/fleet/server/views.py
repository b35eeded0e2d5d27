"""Store records → API response models."""

from __future__ import annotations

from tinyops.fleet.server.models import (
    AuditOut,
    CommandOut,
    DeploymentOut,
    DeviceOut,
    HistoryOut,
    InstalledOut,
    PhaseOut,
    ReleaseOffer,
    ReleaseOut,
    TokenOut,
    TrustedKeyOut,
)
from tinyops.fleet.store import (
    ApiTokenRecord,
    CommandRecord,
    DeploymentRecord,
    DeviceRecord,
    HistoryEntry,
    ReleaseRecord,
    TrustedKeyRecord,
)
from tinyops.security.audit import AuditRecord

ARTIFACT_URL = "/api/v1/device/artifacts/{release_id}"


def release_out(r: ReleaseRecord) -> ReleaseOut:
    return ReleaseOut(
        id=r.id,
        name=r.name,
        version=r.version,
        target=r.target,
        sha256=r.sha256,
        size=r.size,
        key_id=r.key_id,
        created_at=r.created_at,
        expires_at=r.expires_at,
        uploaded_at=r.uploaded_at,
        uploaded_by=r.uploaded_by,
        manifest=r.manifest,
    )


def release_offer(r: ReleaseRecord) -> ReleaseOffer:
    return ReleaseOffer(
        name=r.name,
        version=r.version,
        target=r.target,
        url=ARTIFACT_URL.format(release_id=r.id),
        size=r.size,
        sha256=r.sha256,
    )


def deployment_out(d: DeploymentRecord) -> DeploymentOut:
    phases = [
        PhaseOut(
            index=i,
            percent=spec.percent,
            count=spec.count,
            soak_s=spec.soak_s,
            success_threshold=spec.threshold(d.max_failure_rate),
            max_failure_rate=spec.max_failure_rate,
            devices=sum(d.phase_counts[i].values()) if d.phase_counts else 0,
            counts=dict(d.phase_counts[i]) if d.phase_counts else {},
            opened_at=d.state.phase_opened_at[i],
            passed_at=d.state.phase_passed_at[i],
        )
        for i, spec in enumerate(d.phases)
    ]
    return DeploymentOut(
        id=d.id,
        status=d.state.status,
        reason=d.reason,
        release=release_out(d.release),
        selector=d.selector.to_dict(),
        max_failure_rate=d.max_failure_rate,
        device_count=d.device_count,
        open_phase=d.state.open_phase,
        phases=phases,
        created_at=d.created_at,
        created_by=d.created_by,
        updated_at=d.updated_at,
    )


def device_fields(d: DeviceRecord) -> dict[str, object]:
    installed = (
        None
        if d.installed is None
        else InstalledOut(
            name=d.installed.name, version=d.installed.version, sha256=d.installed.sha256
        )
    )
    return {
        "id": d.id,
        "hardware": d.hardware,
        "tags": d.tags,
        "status": d.status,
        "installed": installed,
        "installed_release_id": d.installed_release_id,
        "previous_release_id": d.previous_release_id,
        "enrolled_at": d.enrolled_at,
        "last_seen": d.last_seen,
        "health": d.health,
        "slot": d.slot,
    }


def device_out(d: DeviceRecord) -> DeviceOut:
    return DeviceOut.model_validate(device_fields(d))


def history_out(h: HistoryEntry) -> HistoryOut:
    return HistoryOut(
        at=h.at,
        event=h.event,
        name=h.name,
        version=h.version,
        sha256=h.sha256,
        release_id=h.release_id,
        deployment_id=h.deployment_id,
    )


def command_out(c: CommandRecord) -> CommandOut:
    return CommandOut(
        id=c.id,
        device_id=c.device_id,
        kind=c.kind,
        args=c.args,
        status=c.status,
        created_at=c.created_at,
        created_by=c.created_by,
        sent_at=c.sent_at,
        completed_at=c.completed_at,
        ok=c.ok,
        output=c.output,
    )


def token_out(t: ApiTokenRecord) -> TokenOut:
    return TokenOut(
        id=t.id,
        name=t.name,
        role=t.role,
        created_at=t.created_at,
        created_by=t.created_by,
        revoked_at=t.revoked_at,
    )


def trusted_key_out(k: TrustedKeyRecord) -> TrustedKeyOut:
    return TrustedKeyOut(key_id=k.key_id, name=k.name, added_at=k.added_at, added_by=k.added_by)


def audit_out(a: AuditRecord) -> AuditOut:
    assert a.id is not None
    return AuditOut(
        id=a.id,
        at=a.at,
        actor=a.actor,
        action=a.action.value,
        target=a.target,
        before=a.before,
        after=a.after,
    )
