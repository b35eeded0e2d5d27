"""Drift monitoring: device sketches, drift reports, feedback labels, labeled samples.

    POST /api/v1/device/sketches   a device's histograms of one window (device token)
    GET  /api/v1/drift             merged drift of a release over a selection and a time range
    GET  /api/v1/drift/devices     per-device verdicts (the fleet view)
    GET  /api/v1/drift/profile     a release's reference profile, policy and drift config
    POST /api/v1/feedback          ground-truth labels of sampled predictions (submit-data)
    POST /api/v1/samples           newly labeled samples for retraining (submit-data)
    GET  /api/v1/samples           those samples, paged by id

The logic is `DriftService` (drift_service.py); these routes authenticate, move the work
to a worker thread (NumPy and the database) and shape the answers. docs/drift.md,
*Server side*, documents the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from tinyops.fleet.server.auth import DataSubmitter, Device, Reader, Runtime
from tinyops.fleet.server.device_service import DeviceService
from tinyops.fleet.server.drift_models import (
    DATASET_PATTERN,
    FeedbackAck,
    FeedbackIn,
    LabeledSampleOut,
    SamplesAck,
    SamplesIn,
    SamplesPage,
    SketchAck,
    SketchIn,
)
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import NAME_PATTERN, Name
from tinyops.fleet.server.runtime import utcnow
from tinyops.fleet.store.drift_store import MAX_SAMPLES_PAGE

router = APIRouter(tags=["drift"], responses=ERROR_RESPONSES)

ReleaseQuery = Annotated[
    str,
    Query(
        max_length=200,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}@[0-9A-Za-z.+-]{1,128}$",
        description="name@version, e.g. digits@1.0.0.",
    ),
]
TargetQuery = Annotated[Name | None, Query(description="Board id, when the release has several.")]
GroupQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f:]{1,64}:[^\x00-\x1f\x7f]{0,128}$",
        description="tagkey:value: the devices with this tag.",
    ),
]
TimeQuery = Annotated[
    datetime | None, Query(description="ISO 8601 with an offset, e.g. 2026-11-27T10:00:00Z.")
]


def _aware(value: datetime | None, field: str) -> datetime | None:
    from tinyops.fleet.store import Invalid

    if value is not None and value.tzinfo is None:
        raise Invalid(f"{field}: give a time zone offset (e.g. Z for UTC)", field=field)
    return value


@router.post("/api/v1/device/sketches", status_code=202, response_model=SketchAck, tags=["device"])
async def sketches(body: SketchIn, device: Device, rt: Runtime) -> SketchAck:
    """One window's histograms in the bins of the device's release profile."""
    return await DeviceService(rt).sketches(device, body)


@router.get("/api/v1/drift")
def drift(
    who: Reader,
    rt: Runtime,
    release: ReleaseQuery,
    target: TargetQuery = None,
    device: Annotated[str | None, Query(pattern=NAME_PATTERN, description="One device.")] = None,
    group: GroupQuery = None,
    start: TimeQuery = None,
    end: TimeQuery = None,
) -> dict[str, Any]:
    """Drift of the selection's merged windows against the reference (default: last day)."""
    return rt.drift.report(
        release,
        target=target,
        device=device,
        group=group,
        start=_aware(start, "start"),
        end=_aware(end, "end"),
        now=utcnow(),
    )


@router.get("/api/v1/drift/devices")
def drift_devices(
    who: Reader,
    rt: Runtime,
    release: ReleaseQuery,
    target: TargetQuery = None,
    group: GroupQuery = None,
    start: TimeQuery = None,
    end: TimeQuery = None,
    after: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Last device id of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Per-device drift verdicts (drifted features per device), a page at a time."""
    return rt.drift.device_verdicts(
        release,
        target=target,
        group=group,
        start=_aware(start, "start"),
        end=_aware(end, "end"),
        after=after,
        limit=limit,
        now=utcnow(),
    )


@router.get("/api/v1/drift/profile")
def drift_profile(
    who: Reader, rt: Runtime, release: ReleaseQuery, target: TargetQuery = None
) -> dict[str, Any]:
    """The release's reference profile and policy, and the drift config in effect."""
    return rt.drift.profile(release, target)


@router.post("/api/v1/feedback", status_code=201, response_model=FeedbackAck)
def feedback(body: FeedbackIn, who: DataSubmitter, rt: Runtime) -> FeedbackAck:
    """True labels of a device's sampled predictions (performance drift)."""
    return FeedbackAck(accepted=rt.drift.feedback(body, who.actor, utcnow()))


@router.post("/api/v1/samples", status_code=201, response_model=SamplesAck)
def add_samples(body: SamplesIn, who: DataSubmitter, rt: Runtime) -> SamplesAck:
    """Newly labeled samples for retraining."""
    accepted, total = rt.drift.add_samples(body, who.actor, utcnow())
    return SamplesAck(accepted=accepted, total=total)


@router.get("/api/v1/samples", response_model=SamplesPage)
def list_samples(
    who: Reader,
    rt: Runtime,
    dataset: Annotated[str, Query(pattern=DATASET_PATTERN)],
    since_id: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_SAMPLES_PAGE)] = 100,
) -> SamplesPage:
    """The dataset's samples with id > since_id, oldest first."""
    records, next_id = rt.drift.samples(dataset, since_id, limit)
    return SamplesPage(
        items=[
            LabeledSampleOut(
                id=r.id,
                features=r.features,
                values=r.values,
                label=r.label,
                device=r.device_id,
                t=r.t,
                received_at=r.received_at,
            )
            for r in records
        ],
        next=next_id,
    )
