"""`MqttTransport`: the agent's `Transport` over MQTT (docs/device-protocol.md, *MQTT*).

Each protocol call is one request on `{prefix}/dev/{device_id}/req/{op}` and its reply on
`.../res/{op}` (an `MqttSession` matches them by request id). The bodies are the HTTP ones,
built from the same `tinyops.fleet.agent.messages` models; a reply whose status is 4xx/5xx
becomes the `TransportError` HTTP would have raised (same status, code, field and
`retryable`), so the agent behaves identically on either transport: it backs off after a
5xx or a timeout, drops a report refused with a 409, enrolls again after a 401.

Drift sketches (`send_sketch`, op `sketches`) carry the body of
`POST /api/v1/device/sketches` as it is (a mapping, as `tinyops.monitor.sketch` builds it)
and get the same `SketchAck` or the same refusal, so an MQTT agent keeps, sends, retries
and drops sketches exactly as an HTTP one does.

Artifacts are not sent over MQTT: `download` fetches the offer's URL over HTTP with Range
(resumable) through an `HttpTransport`, as AWS IoT Jobs hands devices presigned HTTPS URLs.

`WakeableClock` lets a server notification end the agent's wait between polls early: the
transport wakes it when `{"action": "checkin"}` arrives on the device's `notify` topic, so
an MQTT device starts an update within about a second of its phase opening.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from tinyops.fleet.agent.clock import Clock
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
    Transport,
    TransportError,
    malformed_answer,
)
from tinyops.fleet.agent.transport import is_retryable_status as _retryable
from tinyops.fleet.mqtt.session import MqttSession
from tinyops.fleet.mqtt.topics import check_level
from tinyops.fleet.mqtt.wire import Reply

# Seconds to wait for a reply before the call fails (retryable, like an HTTP timeout).
DEFAULT_TIMEOUT_S: Final = 30.0
# Longest random delay, in seconds, between a notification and the check-in it causes:
# a phase that opens for thousands of devices does not bring them all in the same instant.
DEFAULT_WAKE_SPREAD_S: Final = 1.0
M = TypeVar("M", bound=BaseModel)


class WakeableClock:
    """`base`, whose `sleep` a `wake()` ends early (after a random spread)."""

    def __init__(
        self,
        base: Clock,
        *,
        spread_s: float = DEFAULT_WAKE_SPREAD_S,
        rng: random.Random | None = None,
    ) -> None:
        self.base = base
        self.spread_s = spread_s
        self.rng = rng if rng is not None else random.Random()
        self._woken = asyncio.Event()

    def now(self) -> datetime:
        return self.base.now()

    def monotonic(self) -> float:
        return self.base.monotonic()

    def wake(self) -> None:
        """End the current (or the next) sleep early."""
        self._woken.set()

    async def sleep(self, seconds: float) -> None:
        sleeper = asyncio.ensure_future(self.base.sleep(seconds))
        waker = asyncio.ensure_future(self._woken.wait())
        try:
            done, _ = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        self._woken.clear()
        if sleeper not in done and self.spread_s > 0:
            await self.base.sleep(self.rng.uniform(0.0, self.spread_s))


class MqttTransport:
    """The device protocol of one device over an `MqttSession`; downloads over HTTP."""

    def __init__(
        self,
        session: MqttSession,
        device_id: str,
        *,
        http: Transport,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: WakeableClock | None = None,
        device_token: str | None = None,
    ) -> None:
        self.session = session
        self.device_id = check_level(device_id, "device id")
        self.http = http
        self.timeout_s = timeout_s
        self.clock = clock
        self._token = device_token
        # One bound method, so that `unlisten` recognises it.
        self._on_notify = self._notified if clock is not None else None
        http.authenticate(device_token)

    def authenticate(self, device_token: str | None) -> None:
        self._token = device_token
        self.http.authenticate(device_token)

    def _notified(self) -> None:
        if self.clock is not None:
            self.clock.wake()

    async def _call(
        self,
        op: str,
        body: BaseModel | Mapping[str, Any] | None = None,
        *,
        device_id: str | None = None,
        auth: bool = True,
        **ids: int,
    ) -> Reply:
        device = device_id or self.device_id
        await self.session.listen(device, self._on_notify)
        fields: dict[str, Any] = dict(ids)
        if auth and self._token is not None:
            fields["token"] = self._token
        if isinstance(body, BaseModel):
            fields["body"] = body.model_dump(mode="json")
        elif body is not None:
            fields["body"] = dict(body)
        reply = await self.session.request(device, op, fields, self.timeout_s)
        if reply.status >= 400:
            raise _error(reply, op)
        return reply

    @staticmethod
    def _parse(reply: Reply, model: type[M], op: str) -> M:
        try:
            return model.model_validate(reply.body)
        except ValidationError as exc:
            raise malformed_answer(exc, f"{op} over MQTT", reply.status) from exc

    async def enroll(self, request: EnrollRequest) -> EnrollResponse:
        # The topic names the id being enrolled; the server may register it as given only.
        device_id = check_level(request.device_id, "device id")
        reply = await self._call("enroll", request, device_id=device_id, auth=False)
        answer = self._parse(reply, EnrollResponse, "enroll")
        self.device_id = check_level(answer.device_id, "enrolled device id")
        return answer

    async def checkin(self, request: CheckinRequest) -> CheckinResponse:
        return self._parse(await self._call("checkin", request), CheckinResponse, "checkin")

    async def download(self, url: str, offset: int, sink: DownloadSink) -> None:
        await self.http.download(url, offset, sink)

    async def report_status(self, deployment_id: int, report: StatusReport) -> None:
        await self._call("status", report, deployment_id=deployment_id)

    async def send_telemetry(self, batch: TelemetryBatch) -> TelemetryAck:
        return self._parse(await self._call("telemetry", batch), TelemetryAck, "telemetry")

    async def send_sketch(self, body: Mapping[str, Any]) -> SketchAck:
        return self._parse(await self._call("sketches", body), SketchAck, "sketches")

    async def fetch_commands(self) -> list[Command]:
        return self._parse(await self._call("commands"), CommandList, "commands").commands

    async def send_command_result(self, command_id: int, result: CommandResult) -> None:
        await self._call("command_result", result, command_id=command_id)

    async def aclose(self) -> None:
        """Stop waking this device's clock and close the HTTP side (the session is the
        caller's: it may serve other devices)."""
        if self._on_notify is not None:
            self.session.unlisten(self.device_id, self._on_notify)
        await self.http.aclose()


def _error(reply: Reply, op: str) -> TransportError:
    error = reply.error or {}
    code, field = error.get("code"), error.get("field")
    message = str(error.get("message", "no error body"))
    return TransportError(
        f"{op} over MQTT: status {reply.status}" + (f" {code}" if code else "") + f": {message}",
        retryable=_retryable(reply.status),
        status=reply.status,
        code=code if isinstance(code, str) else None,
        field=field if isinstance(field, str) else None,
    )


__all__ = ["MqttTransport", "WakeableClock"]
