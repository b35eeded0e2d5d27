"""The dashboard's actions: send a remote-debug command, pause or resume a deployment.

Each is a plain HTML form post (urlencoded, with the session's CSRF token), checked by
`guard_action` for the same permission as its API route, and carried out by the same
code the API route runs: `Store.create_command` for a command, the deployments
router's `apply_operator_action` for pause and resume (store transition, audit record,
metrics, check-in view rebuild, evaluation on resume). The audit actor is the logged-in
token's, so the audit trail cannot tell a dashboard click from an API call, by design.
Success answers 303 back to the page (post/redirect/get: a reload does not repeat the
action).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tinyops.fleet.server.auth import Runtime
from tinyops.fleet.server.models import CommandCreate
from tinyops.fleet.server.routers.deployments import apply_operator_action
from tinyops.fleet.server.runtime import utcnow
from tinyops.fleet.server.web import params
from tinyops.fleet.server.web.access import Viewer, guard_action
from tinyops.security.roles import Permission

router = APIRouter(include_in_schema=False)


@router.post("/ui/devices/{device_id}/commands")
async def send_command(device_id: str, request: Request, rt: Runtime) -> Response:
    async def act(viewer: Viewer, form: dict[str, str]) -> Response:
        params.name(device_id, "device_id")
        wanted = params.command(form)
        try:
            # The API's own body model: the same limits on kind and args.
            body = CommandCreate.model_validate({"kind": wanted.kind, "args": wanted.args})
        except ValidationError as exc:
            raise params.BadParam("kind", str(exc.errors()[0]["msg"])) from exc
        command = await run_in_threadpool(
            rt.store.create_command,
            device_id,
            body.kind,
            body.args,
            viewer.identity.actor,
            utcnow(),
        )
        return RedirectResponse(f"/ui/devices/{device_id}?sent={command.id}#commands", 303)

    return await guard_action(request, rt, Permission.SEND_COMMANDS, act)


async def _deployment_action(
    deployment_id: str, action: Literal["pause", "resume"], request: Request, rt: Runtime
) -> Response:
    async def act(viewer: Viewer, _form: dict[str, str]) -> Response:
        did = params.record_id(deployment_id, "deployment_id")
        await apply_operator_action(rt, did, action, viewer.identity)
        return RedirectResponse(f"/ui/deployments/{did}", 303)

    return await guard_action(request, rt, Permission.MANAGE_DEPLOYMENTS, act)


@router.post("/ui/deployments/{deployment_id}/pause")
async def pause(deployment_id: str, request: Request, rt: Runtime) -> Response:
    return await _deployment_action(deployment_id, "pause", request, rt)


@router.post("/ui/deployments/{deployment_id}/resume")
async def resume(deployment_id: str, request: Request, rt: Runtime) -> Response:
    return await _deployment_action(deployment_id, "resume", request, rt)
