"""Authentication and authorization of requests (docs/device-protocol.md, *Identities*).

    device API       `Authorization: Bearer dev_...`, looked up in the in-memory
                     directory (no database read on the check-in path)
    management API   `Authorization: Bearer tok_...`, looked up by hash in the store
                     (revocation takes effect at once), then the role is checked

401 when the credential is missing or unknown; 403 when it is valid but may not do this:
a role without the permission, a device token on the management API, an API token on the
device API. Acting for another device is impossible by construction: device endpoints
take the device id from the token, never from the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tinyops.fleet.server.runtime import FleetRuntime
from tinyops.fleet.store import DeviceCredential, Forbidden, Unauthorized
from tinyops.security.audit import token_actor
from tinyops.security.roles import Permission, Role, require
from tinyops.security.tokens import hash_token

_bearer = HTTPBearer(auto_error=False, description="dev_... (devices) or tok_... (API)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def runtime(request: Request) -> FleetRuntime:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop through
    # another thread (and the GIL) on every request for a mere attribute read.
    value = request.app.state.runtime
    assert isinstance(value, FleetRuntime)
    return value


Runtime = Annotated[FleetRuntime, Depends(runtime)]


@dataclass(frozen=True)
class ApiIdentity:
    """The API token a management request authenticated with."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        return token_actor(self.name)


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials:
        raise Unauthorized("missing credentials: send the header Authorization: Bearer <token>")
    return credentials.credentials


async def device_identity(credentials: Credentials, rt: Runtime) -> DeviceCredential:
    from tinyops.fleet.server.device_service import authenticate_device

    return authenticate_device(rt, credentials.credentials if credentials else "")


Device = Annotated[DeviceCredential, Depends(device_identity)]


def permission(needed: Permission) -> Callable[..., ApiIdentity]:
    """A dependency that authenticates an API token and checks its role for `needed`."""

    def check(credentials: Credentials, rt: Runtime) -> ApiIdentity:
        token = _token(credentials)
        digest = hash_token(token)
        record = rt.store.api_token(digest)
        if record is None:
            if rt.directory.lookup(digest) is not None:
                raise Forbidden("a device token may only use the device API (/api/v1/device/...)")
            raise Unauthorized("unknown or revoked API token")
        require(record.role, needed)
        return ApiIdentity(record.name, record.role)

    return check


Reader = Annotated[ApiIdentity, Depends(permission(Permission.READ))]
Uploader = Annotated[ApiIdentity, Depends(permission(Permission.UPLOAD_RELEASE))]
Deployer = Annotated[ApiIdentity, Depends(permission(Permission.MANAGE_DEPLOYMENTS))]
Commander = Annotated[ApiIdentity, Depends(permission(Permission.SEND_COMMANDS))]
DeviceManager = Annotated[ApiIdentity, Depends(permission(Permission.MANAGE_DEVICES))]
Admin = Annotated[ApiIdentity, Depends(permission(Permission.MANAGE_ACCESS))]
DataSubmitter = Annotated[ApiIdentity, Depends(permission(Permission.SUBMIT_DATA))]
