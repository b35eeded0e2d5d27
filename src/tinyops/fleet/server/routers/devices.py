"""Devices (`/api/v1/devices`): list, inspect with version history, send commands,
decommission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from tinyops.fleet.server.auth import Commander, DeviceManager, Reader, Runtime
from tinyops.fleet.server.errors import ERROR_RESPONSES
from tinyops.fleet.server.models import (
    NAME_PATTERN,
    CommandCreate,
    CommandOut,
    CommandsOut,
    DeviceDetail,
    DeviceList,
    DeviceOut,
    Name,
)
from tinyops.fleet.server.runtime import utcnow
from tinyops.fleet.server.views import command_out, device_fields, device_out, history_out
from tinyops.fleet.store import Invalid
from tinyops.fleet.store.store import MAX_PAGE

router = APIRouter(prefix="/api/v1/devices", tags=["devices"], responses=ERROR_RESPONSES)

DeviceId = Annotated[str, Path(pattern=NAME_PATTERN)]
DeviceStatusFilter = Annotated[
    str | None,
    Query(pattern="^(active|updating|rollback-pending|decommissioned)$", description="Status."),
]


def _tags(values: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values:
        key, sep, tag_value = value.partition(":")
        if not sep or not key:
            raise Invalid(f"tag {value!r}: expected key:value, e.g. group:lab", field="tag")
        tags[key] = tag_value
    return tags


@router.get("", response_model=DeviceList)
def list_devices(
    who: Reader,
    rt: Runtime,
    status: DeviceStatusFilter = None,
    hardware: Annotated[Name | None, Query(description="Board id.")] = None,
    tag: Annotated[
        list[Annotated[str, Query(max_length=200)]],
        Query(max_length=32, description="key:value, repeatable; all must match."),
    ] = [],  # noqa: B006 (FastAPI copies query defaults)
    after: Annotated[Name | None, Query(description="Last id of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
) -> DeviceList:
    """Devices by id, filtered, one page at a time."""
    devices = rt.store.list_devices(
        status=status, hardware=hardware, tags=_tags(tag), after=after, limit=limit
    )
    return DeviceList(
        devices=[device_out(d) for d in devices],
        next_after=devices[-1].id if len(devices) == limit else None,
    )


@router.get("/{device_id}", response_model=DeviceDetail)
def get_device(device_id: DeviceId, who: Reader, rt: Runtime) -> DeviceDetail:
    """One device with its version history, newest first."""
    device = rt.store.get_device(device_id)
    history = [history_out(h) for h in rt.store.device_history(device_id)]
    return DeviceDetail.model_validate({**device_fields(device), "history": history})


@router.post("/{device_id}/commands", status_code=201, response_model=CommandOut)
def send_command(
    device_id: DeviceId, body: CommandCreate, who: Commander, rt: Runtime
) -> CommandOut:
    """Queue a remote-debug command; the device fetches it at its next poll."""
    return command_out(
        rt.store.create_command(device_id, body.kind, body.args, who.actor, utcnow())
    )


@router.get("/{device_id}/commands", response_model=CommandsOut)
def list_commands(device_id: DeviceId, who: Reader, rt: Runtime) -> CommandsOut:
    """The device's commands and their results, newest first."""
    return CommandsOut(commands=[command_out(c) for c in rt.store.list_commands(device_id)])


@router.post("/{device_id}/decommission", response_model=DeviceOut)
def decommission(device_id: DeviceId, who: DeviceManager, rt: Runtime) -> DeviceOut:
    """Retire a device: its token stops working at once."""
    device = rt.store.decommission_device(device_id, who.actor, utcnow())
    rt.directory.remove(device_id)
    rt.view.refresh(device_id)
    return device_out(device)
