"""`HttpTransport`: the device protocol over HTTP with httpx (docs/device-protocol.md).

    POST /api/v1/device/enroll                         201 EnrollResponse
    POST /api/v1/device/checkin                        200 CheckinResponse
    GET  <release url>   (Range: bytes=N-)             200 whole file, or 206 from N
    POST /api/v1/device/deployments/{id}/status        204
    POST /api/v1/device/telemetry                      202 TelemetryAck
    POST /api/v1/device/sketches                       202 SketchAck (drift, tinyops.monitor)
    GET  /api/v1/device/commands                       200 {"commands": [...]}
    POST /api/v1/device/commands/{id}/result           204

Every call but enroll carries `Authorization: Bearer dev_...`. The token is only sent to the
server the transport was made for: a release url on another origin (a CDN) is fetched
without it. Error answers carry `{"error": {"code", "message", "field"}}`; their message
becomes the TransportError's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from tinyops.fleet.agent.messages import (
    CheckinRequest,
    CheckinResponse,
    Command,
    CommandList,
    CommandResult,
    EnrollRequest,
    EnrollResponse,
    SketchAck,
    StatusReport,
    TelemetryAck,
    TelemetryBatch,
)
from tinyops.fleet.agent.transport import (
    DownloadSink,
    TransportError,
    is_retryable_status,
    malformed_answer,
)

API: Final = "/api/v1/device"
DEFAULT_TIMEOUT_S: Final = 30.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
M = TypeVar("M", bound=BaseModel)


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


class HttpTransport:
    """The device API of one server, for one device."""

    def __init__(
        self,
        server: str,
        *,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        device_token: str | None = None,
    ) -> None:
        if not server.startswith(("http://", "https://")):
            raise ValueError(f"server {server!r} must be an http:// or https:// URL")
        self.server = server.rstrip("/") + "/"
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout_s)
        self._token = device_token

    def authenticate(self, device_token: str | None) -> None:
        self._token = device_token

    def _url(self, path: str) -> str:
        return urljoin(self.server, path)

    def _headers(self, url: str, *, auth: bool = True) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if auth and self._token is not None and _origin(url) == _origin(self.server):
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    @staticmethod
    def _error(response: httpx.Response, what: str) -> TransportError:
        code = field = None
        message = response.text[:300] or response.reason_phrase
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            code, field = error.get("code"), error.get("field")
            message = str(error.get("message", message))
        return TransportError(
            f"{what}: HTTP {response.status_code}" + (f" {code}" if code else "") + f": {message}",
            retryable=is_retryable_status(response.status_code),
            status=response.status_code,
            code=code if isinstance(code, str) else None,
            field=field if isinstance(field, str) else None,
        )

    async def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | Mapping[str, Any] | None = None,
        *,
        auth: bool = True,
    ) -> httpx.Response:
        url = self._url(path)
        what = f"{method} {path}"
        headers = self._headers(url, auth=auth)
        content = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            content = (
                body.model_dump_json().encode()
                if isinstance(body, BaseModel)
                else json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
            )
        try:
            response = await self._client.request(method, url, content=content, headers=headers)
        except httpx.TransportError as exc:
            raise TransportError(
                f"{what}: {type(exc).__name__}: {exc or 'no answer'}", retryable=True
            ) from exc
        if response.is_error:
            raise self._error(response, what)
        return response

    @staticmethod
    def _parse(response: httpx.Response, model: type[M], what: str) -> M:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise malformed_answer(exc, what, response.status_code) from exc

    async def enroll(self, request: EnrollRequest) -> EnrollResponse:
        path = f"{API}/enroll"
        response = await self._call("POST", path, request, auth=False)
        return self._parse(response, EnrollResponse, f"POST {path}")

    async def checkin(self, request: CheckinRequest) -> CheckinResponse:
        path = f"{API}/checkin"
        response = await self._call("POST", path, request)
        return self._parse(response, CheckinResponse, f"POST {path}")

    async def download(self, url: str, offset: int, sink: DownloadSink) -> None:
        full = self._url(url)
        what = f"GET {url}"
        headers = self._headers(full)
        headers["Accept"] = "application/octet-stream"
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        try:
            async with self._client.stream("GET", full, headers=headers) as response:
                if response.is_error:
                    await response.aread()
                    raise self._error(response, what)
                if response.status_code == 206:
                    sink.restart(self._range_start(response, offset, what))
                elif response.status_code == 200:
                    # The server sent the whole file (it ignored or cannot serve the Range).
                    sink.restart(0)
                else:
                    raise TransportError(
                        f"{what}: unexpected HTTP {response.status_code}, expected 200 or 206",
                        retryable=True,
                        status=response.status_code,
                    )
                async for chunk in response.aiter_bytes():
                    sink.write(chunk)
        except httpx.TransportError as exc:
            raise TransportError(
                f"{what}: download interrupted ({type(exc).__name__}: {exc or 'no detail'})",
                retryable=True,
            ) from exc

    @staticmethod
    def _range_start(response: httpx.Response, offset: int, what: str) -> int:
        header = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(header.strip())
        if match is None or int(match[1]) != offset:
            raise TransportError(
                f"{what}: 206 with Content-Range {header!r}, expected 'bytes {offset}-...'",
                retryable=True,
                status=206,
            )
        return offset

    async def report_status(self, deployment_id: int, report: StatusReport) -> None:
        await self._call("POST", f"{API}/deployments/{deployment_id}/status", report)

    async def send_telemetry(self, batch: TelemetryBatch) -> TelemetryAck:
        path = f"{API}/telemetry"
        response = await self._call("POST", path, batch)
        return self._parse(response, TelemetryAck, f"POST {path}")

    async def send_sketch(self, body: Mapping[str, Any]) -> SketchAck:
        path = f"{API}/sketches"
        response = await self._call("POST", path, body)
        return self._parse(response, SketchAck, f"POST {path}")

    async def fetch_commands(self) -> list[Command]:
        path = f"{API}/commands"
        response = await self._call("GET", path)
        return self._parse(response, CommandList, f"GET {path}").commands

    async def send_command_result(self, command_id: int, result: CommandResult) -> None:
        await self._call("POST", f"{API}/commands/{command_id}/result", result)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpTransport:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


__all__ = ["HttpTransport"]
