"""The server's side of MQTT: one broker connection that carries the device protocol.

`MqttBridge` subscribes to every device's requests (`{prefix}/dev/+/req/+`), runs each
through the same `DeviceService` operation and pydantic models as the HTTP router
(`server/routers/device.py`) — so the same validation, authentication, state changes,
audit records and error bodies — and publishes the reply on the device's `res/{op}`
topic. A device acts only under its own id: the id in the topic must be the one its token
belongs to (403 otherwise), and an enrollment's topic must name the id it enrolls.

Threads: paho's network loop runs in its own thread (`loop_start`: it connects,
reconnects with backoff, and `on_connect` subscribes again each time). `on_message` hands
each request to the server's asyncio loop with `asyncio.run_coroutine_threadsafe`; the
reply is published from the loop (paho's `publish` is thread-safe). At most
`max_concurrent` requests are handled at once: beyond that `on_message` waits, so paho
stops reading and acknowledging and the broker holds further requests — backpressure
rather than an unbounded queue inside the server.

Bad input never stops the bridge. A payload that is too large (413), not JSON (400), lacks
a request_id or fails validation (422), or names an unknown op (404) gets the error reply
HTTP would give; a topic outside the protocol is logged and dropped; an unexpected
exception is logged and answered 500.

QoS 1 delivers at least once: a request delivered twice (same device, op and request_id)
is handled once; the copy gets the first one's reply again (nothing while the first is
still being handled).

Notifications: every `notify_interval_s` the bridge compares, for each device that has
talked to it, the update the server's check-in view holds for the device with the one it
held when the device last checked in. When it changed to an update or a rollback (a
deployment opened a phase for the device, or an abort set it to roll back), the bridge
publishes `{"action": "checkin"}` on the device's `notify` topic: an MQTT device hears of
an update within about a second instead of one poll interval later.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import secrets
import threading
import time
from collections import OrderedDict
from typing import Annotated, Any, ClassVar, Final, TypeVar

from pydantic import Field, StringConstraints, ValidationError

from tinyops.fleet.mqtt.topics import OPS, Broker, TopicMatch, Topics
from tinyops.fleet.mqtt.wire import (
    NOTIFY_CHECKIN,
    REQUEST_ID_PATTERN,
    SUCCESS_STATUS,
    reply_payload,
    request_id_of,
)
from tinyops.fleet.rollout import InvalidTransition
from tinyops.fleet.server.device_service import DeviceService, authenticate_device
from tinyops.fleet.server.drift_models import SketchIn
from tinyops.fleet.server.errors import field_path, validation_message
from tinyops.fleet.server.metrics import LATENCY_BUCKETS
from tinyops.fleet.server.models import (
    MAX_ID,
    CheckinRequest,
    CommandResultRequest,
    EnrollRequest,
    Request,
    StatusReport,
    TelemetryRequest,
    Token,
)
from tinyops.fleet.server.runtime import FleetRuntime
from tinyops.fleet.store import (
    DeviceCredential,
    FleetError,
    Forbidden,
    Invalid,
    NotFound,
    Unauthorized,
)

log = logging.getLogger("tinyops.fleet.mqtt")

# Requests handled at once; more wait at the broker (see the module docstring).
DEFAULT_MAX_CONCURRENT: Final = 256
# Recent request ids remembered to recognise QoS 1 duplicates.
DEDUPE_ENTRIES: Final = 4096
# Seconds between checks for devices to notify.
DEFAULT_NOTIFY_INTERVAL_S: Final = 1.0
# Seconds to wait at start for the first connection and subscription before serving
# without MQTT (paho keeps trying in the background).
CONNECT_WAIT_S: Final = 10.0
# Seconds paho waits between reconnection attempts: first, then doubling up to the last.
RECONNECT_DELAY_S: Final = (1, 30)
# MQTT keepalive, in seconds: the broker drops the server after 1.5× this without a packet.
KEEPALIVE_S: Final = 30
# Seconds `stop` waits for requests being handled to be answered.
DRAIN_S: Final = 5.0
# QoS 1 publishes paho keeps in flight at once (its default, 20, throttles replies).
MAX_INFLIGHT: Final = 1000

M = TypeVar("M", bound=Request)
RequestId = Annotated[str, StringConstraints(pattern=REQUEST_ID_PATTERN)]
ObjectId = Annotated[int, Field(ge=1, le=MAX_ID)]


class Envelope(Request):
    """A request's JSON around the HTTP body (`Request`: unknown fields, NaN, lone
    surrogates are refused as on HTTP)."""

    request_id: RequestId = Field(description="Chosen by the device; echoed in the reply.")
    token: Token | None = Field(default=None, description="The device token, dev_...")
    deployment_id: ObjectId | None = Field(default=None, description="For status.")
    command_id: ObjectId | None = Field(default=None, description="For command_result.")
    body: Any = Field(default=None, description="The HTTP request body.")


class PayloadTooLarge(FleetError):
    status = 413
    default_code = "body-too-large"


class MalformedJson(FleetError):
    status = 400
    default_code = "malformed-json"


class _Answer:
    """A reply being computed (None) or computed, remembered for duplicates."""

    __slots__ = ("payload",)

    def __init__(self) -> None:
        self.payload: bytes | None = None


class MqttBridge:
    """The device protocol over one MQTT broker, for one server runtime."""

    # Operations whose envelope carries an id, and the field that holds it.
    ID_FIELDS: ClassVar[dict[str, str]] = {
        "status": "deployment_id",
        "command_result": "command_id",
    }

    def __init__(
        self,
        runtime: FleetRuntime,
        broker: Broker,
        topics: Topics,
        *,
        client_id: str | None = None,
        max_concurrent: int = DEFAULT_MAX_CONCURRENT,
        notify_interval_s: float = DEFAULT_NOTIFY_INTERVAL_S,
    ) -> None:
        from prometheus_client import Counter, Histogram

        self.rt = runtime
        self.service = DeviceService(runtime)
        self.broker = broker
        self.topics = topics
        self.client_id = client_id or f"tinyops-server-{secrets.token_hex(4)}"
        self.notify_interval_s = notify_interval_s
        self._slots = threading.BoundedSemaphore(max_concurrent)
        self._subscribed = threading.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._inflight: set[concurrent.futures.Future[None]] = set()
        self._answers: OrderedDict[tuple[str, str, str], _Answer] = OrderedDict()
        # Device → the update it was last told of (or None); the devices to notify.
        self._known: dict[str, tuple[int, str, str] | None] = {}
        self._notifier: asyncio.Task[None] | None = None
        self.requests = Counter(
            "tinyops_mqtt_requests",
            "Device requests answered over MQTT, by operation and HTTP-equivalent status.",
            ["op", "status"],
            registry=runtime.metrics.registry,
        )
        self.request_seconds = Histogram(
            "tinyops_mqtt_request_duration_seconds",
            "Time from receiving an MQTT request to publishing its reply, by operation.",
            ["op"],
            buckets=LATENCY_BUCKETS,
            registry=runtime.metrics.registry,
        )
        self.notifications = Counter(
            "tinyops_mqtt_notifications",
            "'Check in now' notifications published.",
            registry=runtime.metrics.registry,
        )

    # --- life cycle -----------------------------------------------------------------------

    async def start(self, wait_s: float = CONNECT_WAIT_S) -> None:
        """Connect, subscribe and start notifying; waits up to `wait_s` for the broker,
        then serves anyway (paho retries in the background; HTTP is unaffected)."""
        import paho.mqtt.client as mqtt

        self._loop = asyncio.get_running_loop()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password)
        if self.broker.tls:
            client.tls_set()
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(*RECONNECT_DELAY_S)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        client.connect_async(self.broker.host, self.broker.port, keepalive=KEEPALIVE_S)
        client.loop_start()
        if await asyncio.to_thread(self._subscribed.wait, wait_s):
            log.info("MQTT: serving %s on %s", self.topics.requests, self.broker.address)
        else:
            log.error(
                "MQTT: broker %s did not accept a subscription within %g s; serving HTTP "
                "and retrying in the background",
                self.broker.address,
                wait_s,
            )
        self._notifier = self._loop.create_task(self._notify_periodically())

    async def stop(self) -> None:
        """Stop taking requests, answer those being handled, disconnect."""
        self._stopping = True
        if self._notifier is not None:
            self._notifier.cancel()
            await asyncio.gather(self._notifier, return_exceptions=True)
        pending = [asyncio.wrap_future(f) for f in list(self._inflight)]
        if pending:
            await asyncio.wait(pending, timeout=DRAIN_S)
        client = self._client
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
            self._client = None

    @property
    def connected(self) -> bool:
        """Whether the request subscription is in place."""
        return self._subscribed.is_set()

    # --- paho callbacks (paho's thread) -----------------------------------------------------

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.error("MQTT: broker %s refused the connection: %s", self.broker.address, reason)
            return
        # A clean session: subscribe again on every (re)connection.
        client.subscribe(self.topics.requests, qos=1)

    def _on_subscribe(
        self, _client: Any, _userdata: Any, _mid: int, reasons: list[Any], _p: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            log.error(
                "MQTT: broker %s refused the subscription to %s (check the server's ACL: it "
                "needs readwrite on %s/dev/#)",
                self.broker.address,
                self.topics.requests,
                self.topics.prefix,
            )
            return
        self._subscribed.set()

    def _on_disconnect(self, _client: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        self._subscribed.clear()
        if not self._stopping:
            log.warning("MQTT: lost the broker %s (%s); reconnecting", self.broker.address, reason)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        loop = self._loop
        if self._stopping or loop is None:
            return
        while not self._slots.acquire(timeout=0.5):
            if self._stopping:
                return
        try:
            future = asyncio.run_coroutine_threadsafe(
                self._serve(message.topic, bytes(message.payload)), loop
            )
        except RuntimeError:
            # The event loop is closed: the server is shutting down.
            self._slots.release()
            return
        self._inflight.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: concurrent.futures.Future[None]) -> None:
        self._inflight.discard(future)
        self._slots.release()

    # --- requests (the event loop) ----------------------------------------------------------

    async def _serve(self, topic: str, payload: bytes) -> None:
        try:
            reply = await self.handle(topic, payload)
            if reply is not None and self._client is not None:
                self._client.publish(reply[0], reply[1], qos=1)
        except Exception:
            log.exception("MQTT: handling a message on %r failed", topic)

    async def handle(self, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        """The reply (topic, payload) to a message on `topic`; None when there is none to
        send (not a request topic of this prefix, or a duplicate still being handled)."""
        match = self.topics.parse(topic)
        if match is None or match.kind != "req" or match.op is None:
            log.warning("MQTT: dropped a message on %r: not a request topic", topic)
            return None
        started = time.perf_counter()
        op = match.op
        reply_topic = self.topics.reply(match.device_id, op)
        request_id: str | None = None
        answer: _Answer | None = None
        try:
            data = self._decode(payload)
            request_id = request_id_of(data)
            if request_id is not None:
                key = (match.device_id, op, request_id)
                seen = self._answers.get(key)
                if seen is not None:
                    return None if seen.payload is None else (reply_topic, seen.payload)
                answer = self._remember(key)
            if op not in OPS:
                raise NotFound(
                    f"unknown operation {op!r} in topic {topic!r}: expected one of {', '.join(OPS)}"
                )
            envelope = _validate(Envelope, data)
            status, body = await self._dispatch(op, match, envelope)
        except FleetError as exc:
            status, body = exc.status, _error_body(exc.code, exc.message, exc.field)
        except InvalidTransition as exc:
            status = 409
            body = _error_body("invalid-transition", str(exc), "status", allowed=list(exc.allowed))
        except Exception:
            log.exception("MQTT: unhandled error on %s", topic)
            status = 500
            body = _error_body("internal", "internal server error: the server log has details")
        out = reply_payload(request_id, status, body)
        if answer is not None:
            answer.payload = out
        label = op if op in OPS else "unknown"
        self.requests.labels(label, str(status)).inc()
        self.request_seconds.labels(label).observe(time.perf_counter() - started)
        return reply_topic, out

    def _decode(self, payload: bytes) -> Any:
        limit = self.rt.settings.max_body_bytes
        if len(payload) > limit:
            raise PayloadTooLarge(
                f"payload of {len(payload)} bytes is larger than the {limit} bytes a device "
                "request may have"
            )
        try:
            return json.loads(payload)
        except json.JSONDecodeError as exc:
            raise MalformedJson(
                f"the payload is not valid JSON ({exc.msg} at byte {exc.pos})"
            ) from exc
        except (ValueError, RecursionError) as exc:
            # Invalid UTF-8, a number too long to convert, nesting too deep for the parser.
            raise MalformedJson(f"the payload is not valid JSON ({exc})") from exc

    def _remember(self, key: tuple[str, str, str]) -> _Answer:
        answer = _Answer()
        self._answers[key] = answer
        while len(self._answers) > DEDUPE_ENTRIES:
            self._answers.popitem(last=False)
        return answer

    async def _dispatch(
        self, op: str, match: TopicMatch, envelope: Envelope
    ) -> tuple[int, dict[str, Any] | None]:
        status = SUCCESS_STATUS[op]
        if op == "enroll":
            if envelope.token is not None:
                raise Invalid(
                    "token: enroll takes no device token (the enrollment token goes in "
                    "body.enrollment_token)",
                    field="token",
                )
            self._check_shape(op, envelope)
            enroll = _validate(EnrollRequest, envelope.body)
            if enroll.device_id != match.device_id:
                raise Forbidden(
                    f"topic device id {match.device_id!r} differs from body.device_id "
                    f"{enroll.device_id!r}: a device enrolls under its own topic"
                )
            enrolled = await self.service.enroll(enroll)
            self._known.setdefault(enrolled.device_id, None)
            return status, enrolled.model_dump(mode="json")
        # Credentials first, as over HTTP: an unauthenticated request learns nothing more.
        device = self._authenticate(envelope.token, match.device_id)
        self._check_shape(op, envelope)
        if op == "checkin":
            checkin = _validate(CheckinRequest, envelope.body)
            # What the answer tells the device (read first: a change while the check-in
            # runs is then notified again, never missed).
            self._known[device.device_id] = self._pending_update(device.device_id)
            answer = await self.service.checkin(device, checkin)
            return status, answer.model_dump(mode="json")
        self._known.setdefault(device.device_id, self._pending_update(device.device_id))
        if op == "status":
            report = _validate(StatusReport, envelope.body)
            assert envelope.deployment_id is not None
            await self.service.report_status(device, envelope.deployment_id, report)
            return status, None
        if op == "telemetry":
            batch = _validate(TelemetryRequest, envelope.body)
            ack = await self.service.telemetry(device, batch)
            return status, ack.model_dump(mode="json")
        if op == "sketches":
            sketch = _validate(SketchIn, envelope.body)
            sketch_ack = await self.service.sketches(device, sketch)
            return status, sketch_ack.model_dump(mode="json")
        if op == "commands":
            commands = await self.service.commands(device)
            return status, commands.model_dump(mode="json")
        result = _validate(CommandResultRequest, envelope.body)
        assert envelope.command_id is not None
        await self.service.command_result(device, envelope.command_id, result)
        return status, None

    def _check_shape(self, op: str, envelope: Envelope) -> None:
        """The ids and body `op` needs are there, and nothing it does not take."""
        for name in ("deployment_id", "command_id"):
            if getattr(envelope, name) is not None and self.ID_FIELDS.get(op) != name:
                raise Invalid(f"{name}: the {op} operation takes no {name}", field=name)
        needed = self.ID_FIELDS.get(op)
        if needed is not None and getattr(envelope, needed) is None:
            raise Invalid(f"{needed}: Field required (the {op} operation's id)", field=needed)
        if op == "commands" and envelope.body is not None:
            raise Invalid("body: the commands operation takes no body", field="body")
        if op != "commands" and envelope.body is None:
            raise Invalid("body: Field required", field="body")

    def _authenticate(self, token: str | None, topic_device: str) -> DeviceCredential:
        if token is None:
            raise Unauthorized(
                "missing credentials: put the device token in the request's token field"
            )
        device = authenticate_device(self.rt, token)
        if device.device_id != topic_device:
            raise Forbidden(
                f"topic device id {topic_device!r} is not this token's device "
                f"{device.device_id!r}: a device publishes only under its own id"
            )
        return device

    # --- notifications ----------------------------------------------------------------------

    def _pending_update(self, device_id: str) -> tuple[int, str, str] | None:
        """The update or rollback a check-in of this device would be answered now."""
        action = self.rt.view.get(device_id)
        if action is None:
            return None
        return action.deployment_id, action.kind, action.release.sha256

    def notify_changes(self) -> list[str]:
        """Notify every known device whose pending update changed; the ids notified.
        Nothing while the broker is away: the changes are notified after it is back."""
        client = self._client
        if client is None or not self._subscribed.is_set():
            return []
        notified = []
        for device_id, known in self._known.items():
            current = self._pending_update(device_id)
            if current == known:
                continue
            self._known[device_id] = current
            if current is not None:
                notified.append(device_id)
        for device_id in notified:
            client.publish(self.topics.notify(device_id), NOTIFY_CHECKIN, qos=1)
        self.notifications.inc(len(notified))
        return notified

    async def _notify_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.notify_interval_s)
            try:
                self.notify_changes()
            except Exception:
                log.exception("MQTT: notifying devices failed")


def _error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _validate(model: type[M], data: Any) -> M:
    """`model` validated from `data`; Invalid (422) worded as the HTTP server words it."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise Invalid(
            validation_message(dict(first)) + more, field=field_path(first["loc"])
        ) from None


__all__ = ["Envelope", "MqttBridge"]
