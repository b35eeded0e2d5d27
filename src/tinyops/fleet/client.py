"""A small synchronous client of the fleet management API, for the CLI and CI scripts.

    upload_release(server, token, path)                    POST /api/v1/releases
    create_deployment(server, token, name, version, ...)    POST /api/v1/deployments
    deployment_action(server, token, id, action)           POST /api/v1/deployments/{id}/{action}
    deployment_status(server, token, id)                   GET  /api/v1/deployments/{id}
    list_devices(server, token, status=, hardware=, tags=) GET  /api/v1/devices (all pages)
    search_logs(server, token, device_id=, level=, ...)    GET  /api/v1/[devices/{id}/]logs
    send_command(server, token, device_id, kind, args)     POST /api/v1/devices/{id}/commands
    get_command(server, token, device_id, command_id)      GET  /api/v1/devices/{id}/commands
    list_samples(server, token, dataset, since_id)         GET  /api/v1/samples (all pages)
    submit_samples(server, token, dataset, items)          POST /api/v1/samples
    submit_feedback(server, token, name, version, device, items)  POST /api/v1/feedback
    get_drift(server, token, release, device=, group=, ...) GET  /api/v1/drift
    drift_devices(server, token, release, ...)             GET  /api/v1/drift/devices (all pages)
    drift_profile(server, token, release)                  GET  /api/v1/drift/profile
    list_alerts(server, token, state=)                     GET  /api/v1/alerts

Every function returns the server's JSON answer as a dict. A refusal raises
`FleetClientError` carrying the HTTP status and the server's error code, message and field;
a server that cannot be reached raises it too, with status None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
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


def list_deployments(
    server: str,
    token: str,
    status: str | None = None,
    *,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Deployments, newest first (only those in `status` when given)."""
    params = {"status": status} if status is not None else None
    page = _request("GET", server, token, "/api/v1/deployments", client=client, params=params)
    return list(page["deployments"])


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


def list_alerts(
    server: str, token: str, state: str | None = None, *, client: httpx.Client | None = None
) -> list[dict[str, Any]]:
    """The server's current alerts (GET /api/v1/alerts), optionally of one state."""
    params = {} if state is None else {"state": state}
    return list(
        _request("GET", server, token, "/api/v1/alerts", client=client, params=params)["alerts"]
    )


# --- devices, logs and remote debug (tinyops device ...) ------------------------------------


def list_devices(
    server: str,
    token: str,
    *,
    status: str | None = None,
    hardware: str | None = None,
    tags: Mapping[str, str] | None = None,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Every device matching the filters (all pages of GET /api/v1/devices), by id."""
    params: dict[str, Any] = {"tag": [f"{k}:{v}" for k, v in (tags or {}).items()]}
    if status is not None:
        params["status"] = status
    if hardware is not None:
        params["hardware"] = hardware
    devices: list[dict[str, Any]] = []
    while True:
        page = _request("GET", server, token, "/api/v1/devices", client=client, params=params)
        devices += page["devices"]
        if page.get("next_after") is None:
            return devices
        params["after"] = page["next_after"]


def search_logs(
    server: str,
    token: str,
    *,
    device_id: str | None = None,
    level: str | None = None,
    since: str | None = None,
    until: str | None = None,
    text: str | None = None,
    after_id: int | None = None,
    before_id: int | None = None,
    order: Literal["newest", "oldest"] = "newest",
    limit: int = 100,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """One page of device log lines: {"logs": [...], "next": cursor or None}.

    With `device_id`, GET /api/v1/devices/{id}/logs (404 for an unknown device); without,
    the fleet-wide GET /api/v1/logs. Times are ISO 8601 strings with a zone.
    """
    params = {
        "level": level,
        "since": since,
        "until": until,
        "q": text,
        "after_id": after_id,
        "before_id": before_id,
        "order": order,
        "limit": limit,
    }
    params = {k: v for k, v in params.items() if v is not None}
    path = "/api/v1/logs" if device_id is None else f"/api/v1/devices/{device_id}/logs"
    return _request("GET", server, token, path, client=client, params=params)


def send_command(
    server: str,
    token: str,
    device_id: str,
    kind: str,
    args: Mapping[str, Any] | None = None,
    *,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Queue a remote-debug command; the device runs it at its next poll."""
    body = {"kind": kind, "args": dict(args or {})}
    return _request(
        "POST", server, token, f"/api/v1/devices/{device_id}/commands", client=client, json=body
    )


def get_command(
    server: str,
    token: str,
    device_id: str,
    command_id: int,
    *,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """One command of a device with its status and, once done, its result."""
    commands = _request(
        "GET", server, token, f"/api/v1/devices/{device_id}/commands", client=client
    )["commands"]
    for command in commands:
        if command["id"] == command_id:
            return dict(command)
    raise FleetClientError(f"device {device_id} has no command {command_id}", field="command")


# --- labeled samples (tinyops retrain) ------------------------------------------------------


def list_samples(
    server: str,
    token: str,
    dataset: str,
    since_id: int = 0,
    *,
    page_size: int = 1000,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Every labeled sample of `dataset` with id > `since_id` (all pages), oldest first."""
    items: list[dict[str, Any]] = []
    cursor = since_id
    while True:
        page = _request(
            "GET",
            server,
            token,
            "/api/v1/samples",
            client=client,
            params={"dataset": dataset, "since_id": cursor, "limit": page_size},
        )
        items += page["items"]
        if page.get("next") is None or not page["items"]:
            return items
        cursor = int(page["next"])


# --- drift monitoring, feedback and labeled samples --------------------------------------


def _time(value: datetime | str | None) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else value


def submit_samples(
    server: str,
    token: str,
    dataset: str,
    items: Sequence[Mapping[str, Any]],
    *,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Add labeled samples ({"features": [...] | "values": {...}, "label", "device"?, "t"?})
    to `dataset`; {"accepted": n, "total": N}."""
    body = {"dataset": dataset, "items": [dict(i) for i in items]}
    return _request("POST", server, token, "/api/v1/samples", client=client, json=body)


def submit_feedback(
    server: str,
    token: str,
    name: str,
    version: str,
    device_id: str,
    labels: Mapping[str, int],
    *,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """True labels of a device's sampled predictions, prediction id → class index."""
    body = {
        "release": {"name": name, "version": version},
        "device": device_id,
        "items": [{"prediction_id": k, "label": v} for k, v in labels.items()],
    }
    return _request("POST", server, token, "/api/v1/feedback", client=client, json=body)


def get_drift(
    server: str,
    token: str,
    release: str,
    *,
    target: str | None = None,
    device_id: str | None = None,
    group: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Drift of `release` ("name@version") over a selection (one device, or a "tagkey:value"
    group, or the fleet) and a time range (default: the last day)."""
    params = {
        "release": release,
        "target": target,
        "device": device_id,
        "group": group,
        "start": _time(start),
        "end": _time(end),
    }
    return _request(
        "GET",
        server,
        token,
        "/api/v1/drift",
        client=client,
        params={k: v for k, v in params.items() if v is not None},
    )


def drift_devices(
    server: str,
    token: str,
    release: str,
    *,
    target: str | None = None,
    group: str | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    client: httpx.Client | None = None,
) -> list[dict[str, Any]]:
    """Every device's drift verdict for `release` (all pages of GET /api/v1/drift/devices)."""
    params = {
        "release": release,
        "target": target,
        "group": group,
        "start": _time(start),
        "end": _time(end),
        "limit": 1000,
    }
    query: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    devices: list[dict[str, Any]] = []
    while True:
        page = _request("GET", server, token, "/api/v1/drift/devices", client=client, params=query)
        devices += page["devices"]
        if page.get("next_after") is None:
            return devices
        query["after"] = page["next_after"]


def drift_profile(
    server: str,
    token: str,
    release: str,
    *,
    target: str | None = None,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """The release's reference profile, monitoring policy and the drift config in effect."""
    params = {"release": release} if target is None else {"release": release, "target": target}
    return _request("GET", server, token, "/api/v1/drift/profile", client=client, params=params)
