"""Roles of management API tokens and what each may do.

The matrix is the one of docs/device-protocol.md:

    permission                                    admin  ml-engineer  devops  retrainer  viewer
    read anything (devices, releases, ...)          ✓        ✓          ✓        ✓         ✓
    upload a release                                ✓        ✓                   ✓
    create/pause/resume/cancel/rollback deployment  ✓                   ✓        ✓
    send a remote-debug command to a device         ✓                   ✓
    create enrollment tokens, decommission devices  ✓                   ✓
    create/revoke API tokens, add trusted keys      ✓
    submit feedback labels and labeled samples      ✓        ✓

`retrainer` is the service account of the retraining worker (`tinyops retrain`): one token
that uploads the retrained release and canary-deploys it, and nothing else — it cannot mint
tokens, trust new signing keys, command devices or submit data, so a leaked worker token is
not an admin token. Its releases still need a signature by a key an admin trusted.

Devices are not roles: a device token may only use the device API, for itself.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from tinyops.errors import TinyopsError


class Role(enum.StrEnum):
    """The role an API token was issued with."""

    ADMIN = "admin"
    ML_ENGINEER = "ml-engineer"
    DEVOPS = "devops"
    RETRAINER = "retrainer"
    VIEWER = "viewer"


class Permission(enum.StrEnum):
    """One right of the management API."""

    READ = "read"
    UPLOAD_RELEASE = "upload-release"
    MANAGE_DEPLOYMENTS = "manage-deployments"
    SEND_COMMANDS = "send-commands"
    MANAGE_DEVICES = "manage-devices"
    """Create enrollment tokens, decommission devices."""
    MANAGE_ACCESS = "manage-access"
    """Create and revoke API tokens, add trusted keys."""
    SUBMIT_DATA = "submit-data"
    """Submit ground-truth feedback and newly labeled samples (for retraining)."""


PERMISSIONS: Final[Mapping[Role, frozenset[Permission]]] = {
    Role.ADMIN: frozenset(Permission),
    Role.ML_ENGINEER: frozenset(
        {Permission.READ, Permission.UPLOAD_RELEASE, Permission.SUBMIT_DATA}
    ),
    Role.DEVOPS: frozenset(
        {
            Permission.READ,
            Permission.MANAGE_DEPLOYMENTS,
            Permission.SEND_COMMANDS,
            Permission.MANAGE_DEVICES,
        }
    ),
    Role.RETRAINER: frozenset(
        {Permission.READ, Permission.UPLOAD_RELEASE, Permission.MANAGE_DEPLOYMENTS}
    ),
    Role.VIEWER: frozenset({Permission.READ}),
}


class PermissionDenied(TinyopsError):
    """A valid credential asked for something its role does not allow (HTTP 403)."""

    def __init__(self, role: Role, permission: Permission) -> None:
        allowed = sorted(r.value for r, perms in PERMISSIONS.items() if permission in perms)
        super().__init__(
            f"role {role.value!r} lacks the permission {permission.value!r} "
            f"(roles that have it: {', '.join(allowed)})"
        )
        self.role = role
        self.permission = permission


def allows(role: Role, permission: Permission) -> bool:
    return permission in PERMISSIONS[role]


def require(role: Role, permission: Permission) -> None:
    """Return if `role` has `permission`, else raise PermissionDenied naming both."""
    if not allows(role, permission):
        raise PermissionDenied(role, permission)
