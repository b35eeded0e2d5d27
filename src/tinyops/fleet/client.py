"""A small synchronous client of the fleet management API, for the CLI and CI scripts.

    upload_release(server, token, path)                    POST /api/v1/releases
    create_deployment(server, token, name, version, ...)    POST /api/v1/deployments
    deployment_action(server, token, id, action)           POST /api/v1/deployments/{id}/{action}
    deployment_status(server, token, id)                   GET  /api/v1/deployments/{id}

Every function returns the server's JSON answer as a dict. A refusal raises
`FleetClientError` carrying the HTTP status and the server's error code, message and field;
a server that cannot be reached raises it too, with status None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import httpx

if TYPE_CHECKING:
    from tinyops.fleet.rollout import PhaseSpec

from tinyops.errors import TinyopsError

# Seconds to wait for an answer; an upload of a large bundle can take a while.
DEFAULT_TIMEOUT_S: Final = 60.0
DeploymentAction = Literal["pause", "resume", "cancel", "rollback"]


class FleetClientError(TinyopsError):
    """The fleet server refused a request, or could not be reached."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


def _request(
    method: str,
    server: str,
    token: str,
    path: str,
    *,
    client: httpx.Client | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    url = server.rstrip("/") + path
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    try:
        if client is not None:
            response = client.request(method, url, headers=headers, **kwargs)
        else:
            response = httpx.request(
                method, url, headers=headers, timeout=DEFAULT_TIMEOUT_S, **kwargs
            )
    except httpx.HTTPError as exc:
        raise FleetClientError(f"cannot reach the fleet server at {server}: {exc}") from exc
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            message, code, field = str(error["message"]), error.get("code"), error.get("field")
        except (ValueError, KeyError, TypeError):
            message, code, field = response.text[:500] or response.reason_phrase, None, None
        where = f" ({field})" if field else ""
        raise FleetClientError(
            f"{method} {path} → {response.status_code}{where}: {message}",
            response.status_code,
            code,
            field,
        )
    body = response.json()
    if not isinstance(body, dict):
        raise FleetClientError(f"{method} {path}: expected a JSON object, got {body!r:.200}")
    return body


def upload_release(
    server: str, token: str, path: Path, *, client: httpx.Client | None = None
) -> dict[str, Any]:
    """Upload a `.tinybundle`; the release (created, or the identical one that existed)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise FleetClientError(f"cannot read bundle {path}: {exc.strerror or exc}") from exc
    return _request(
        "POST",
        server,
        token,
        "/api/v1/releases",
        client=client,
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )


def _phase_dicts(phases: str | Sequence[PhaseSpec | Mapping[str, Any]]) -> list[dict[str, Any]]:
    from tinyops.fleet.rollout import PhaseSpec, parse_phases

    if isinstance(phases, str):
        try:
            return [p.to_dict() for p in parse_phases(phases)]
        except ValueError as exc:
            raise FleetClientError(str(exc), field="phases") from exc
    return [p.to_dict() if isinstance(p, PhaseSpec) else dict(p) for p in phases]


def create_deployment(
    server: str,
    token: str,
    name: str,
    version: str,
    *,
    target: str | None = None,
    tags: Mapping[str, str] | None = None,
    installed_version: str | None = None,
    phases: str | Sequence[PhaseSpec | Mapping[str, Any]] = "100%",
    max_failure_rate: float | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Deploy release `name` `version` to the devices with `tags` (and `installed_version`).

    `target` may be omitted when the release exists for exactly one target. `phases` is
    the CLI form ("1%,10%,50%,100%") or a list of PhaseSpec / phase dicts.
    """
    body_phases = _phase_dicts(phases)
    if target is None:
        releases = _request(
            "GET", server, token, "/api/v1/releases", client=client, params={"name": name}
        )["releases"]
        targets = sorted({r["target"] for r in releases if r["version"] == version})
        if not targets:
            raise FleetClientError(
                f"no release {name} {version} on the server: upload it first", field="release"
            )
        if len(targets) > 1:
            raise FleetClientError(
                f"release {name} {version} exists for {', '.join(targets)}: choose a target",
                field="release.target",
            )
        target = targets[0]
    body: dict[str, Any] = {
        "release": {"name": name, "version": version, "target": target},
        "selector": {"tags": dict(tags or {}), "installed_version": installed_version},
        "phases": body_phases,
        "max_failure_rate": max_failure_rate,
    }
    return _request("POST", server, token, "/api/v1/deployments", client=client, json=body)


def deployment_action(
    server: str,
    token: str,
    deployment_id: int,
    action: DeploymentAction,
    *,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Pause, resume, cancel or roll back a deployment; its new status."""
    if action not in ("pause", "resume", "cancel", "rollback"):
        raise FleetClientError(
            f"deployment action {action!r}: expected pause, resume, cancel or rollback"
        )
    return _request(
        "POST", server, token, f"/api/v1/deployments/{int(deployment_id)}/{action}", client=client
    )


def deployment_status(
    server: str, token: str, deployment_id: int, *, client: httpx.Client | None = None
) -> dict[str, Any]:
    """A deployment's status, reason and per-phase device counts."""
    return _request(
        "GET", server, token, f"/api/v1/deployments/{int(deployment_id)}", client=client
    )


def create_enrollment_token(
    server: str,
    token: str,
    name: str,
    *,
    expires_in_s: float | None = None,
    max_uses: int | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """A new fleet enrollment token (its plaintext is in `token`, shown once)."""
    body = {"name": name, "expires_in_s": expires_in_s, "max_uses": max_uses}
    return _request("POST", server, token, "/api/v1/enrollment-tokens", client=client, json=body)


def add_trusted_key(
    server: str, token: str, name: str, public_key: Path, *, client: httpx.Client | None = None
) -> dict[str, Any]:
    """Trust a release-signing public key (PEM file) for uploads."""
    try:
        pem = Path(public_key).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetClientError(f"cannot read public key {public_key}: {exc}") from exc
    body = {"name": name, "public_key_pem": pem}
    return _request("POST", server, token, "/api/v1/trusted-keys", client=client, json=body)
