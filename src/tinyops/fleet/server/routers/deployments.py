"""Deployments (`/api/v1/deployments`): create, read, pause, resume, cancel, roll back."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from tinyops.fleet.rollout import PhaseSpec, RolloutStatus, validate_phases
from tinyops.fleet.server.auth import ApiIdentity, Deployer, Reader, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import MAX_ID, DeploymentCreate, DeploymentList, DeploymentOut
from tinyops.fleet.server.runtime import FleetRuntime, utcnow
from tinyops.fleet.server.views import deployment_out
from tinyops.fleet.store import DeploymentRecord, Invalid, Selector

router = APIRouter(prefix="/api/v1/deployments", tags=["deployments"], responses=ERROR_RESPONSES)

Id = Annotated[int, Path(ge=1, le=MAX_ID)]


def _create(rt: FleetRuntime, body: DeploymentCreate, who: ApiIdentity) -> DeploymentRecord:
    phases = [
        PhaseSpec(
            percent=p.percent,
            count=p.count,
            soak_s=p.soak_s,
            success_threshold=p.success_threshold,
            max_failure_rate=p.max_failure_rate,
        )
        for p in body.phases
    ]
    try:
        validate_phases(phases)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise Invalid(str(exc), field=field if field.startswith("phases") else "phases") from exc
    ref = body.release
    release = rt.store.find_release(ref.name, ref.version, ref.target)
    if release is None:
        raise Invalid(
            f"no release {ref.name} {ref.version} for {ref.target}: upload it first "
            "(POST /api/v1/releases)",
            field="release",
            code="unknown-release",
        )
    record = rt.store.create_deployment(
        release_id=release.id,
        selector=Selector(
            tags=dict(body.selector.tags),
            hardware=body.selector.hardware,
            installed_version=body.selector.installed_version,
        ),
        phases=phases,
        max_failure_rate=body.max_failure_rate,
        # 64 random bits: a new canary set for every deployment, stored so it is stable.
        seed=secrets.token_hex(8),
        actor=who.actor,
        now=utcnow(),
    )
    rt.view.rebuild()
    return record


@router.post("", status_code=201, response_model=DeploymentOut)
async def create_deployment(body: DeploymentCreate, who: Deployer, rt: Runtime) -> DeploymentOut:
    """Select devices (hardware = the release's target), assign phases, start phase 0."""
    record = await run_in_threadpool(_create, rt, body, who)
    # A phase with no device passes at once: let the rules run before answering.
    await rt.evaluator.request(record.id)
    return deployment_out(await run_in_threadpool(rt.store.get_deployment, record.id))


@router.get("", response_model=DeploymentList)
def list_deployments(
    who: Reader, rt: Runtime, status: Annotated[RolloutStatus | None, Query()] = None
) -> DeploymentList:
    """Deployments, newest first."""
    return DeploymentList(
        deployments=[deployment_out(d) for d in rt.store.list_deployments(status)]
    )


@router.get("/{deployment_id}", response_model=DeploymentOut)
def get_deployment(deployment_id: Id, who: Reader, rt: Runtime) -> DeploymentOut:
    """Status, reason, and per phase the device counts by status."""
    return deployment_out(rt.store.get_deployment(deployment_id))


async def apply_operator_action(
    rt: FleetRuntime,
    deployment_id: int,
    action: Literal["pause", "resume", "cancel", "rollback"],
    who: ApiIdentity,
) -> DeploymentOut:
    """An operator's action on a deployment, as the API and the web dashboard both run it:
    the store transition (audited as `who`), the decision's metrics, the check-in view."""

    def run() -> None:
        _, outcome = rt.store.deployment_action(deployment_id, action, who.actor, utcnow())
        rt.record_decision(outcome)
        rt.view.rebuild()

    await run_in_threadpool(run)
    if action == "resume":
        await rt.evaluator.request(deployment_id)
    return deployment_out(await run_in_threadpool(rt.store.get_deployment, deployment_id))


@router.post("/{deployment_id}/pause", response_model=DeploymentOut)
async def pause(deployment_id: Id, who: Deployer, rt: Runtime) -> DeploymentOut:
    """Stop offering the release and stop the rules (a running deployment only)."""
    return await apply_operator_action(rt, deployment_id, "pause", who)


@router.post("/{deployment_id}/resume", response_model=DeploymentOut)
async def resume(deployment_id: Id, who: Deployer, rt: Runtime) -> DeploymentOut:
    """Run a paused deployment again."""
    return await apply_operator_action(rt, deployment_id, "resume", who)


@router.post("/{deployment_id}/cancel", response_model=DeploymentOut)
async def cancel(deployment_id: Id, who: Deployer, rt: Runtime) -> DeploymentOut:
    """End it: no new device is offered the release; devices already updating finish."""
    return await apply_operator_action(rt, deployment_id, "cancel", who)


@router.post("/{deployment_id}/rollback", response_model=DeploymentOut)
async def rollback(deployment_id: Id, who: Deployer, rt: Runtime) -> DeploymentOut:
    """Abort with reason 'operator': every device the release reached is rolled back."""
    return await apply_operator_action(rt, deployment_id, "rollback", who)
