"""`MqttSession`: one MQTT connection on the asyncio loop, for one device or for thousands.

The agent's side of MQTT runs on the event loop itself, with no thread: paho's client is
driven through its external-loop API (`loop_read` when `add_reader` says the socket is
readable, `loop_write` while paho has bytes to send, `loop_misc` once a second for
keepalive pings). Why not paho's own network thread (`loop_start`)? The fleet simulator
runs thousands of agents in one process: a thread per device would cost a stack and a
context switch per message each, and every reply would have to hop back into the loop.
Here a connection is a socket and a few dicts, and a reply resolves its request's future
directly.

A session serves any number of devices (`MqttTransport`s): requests carry random request
ids and replies are matched by id (and by the device and op in the reply topic). A real
device has a session of its own, logged in to the broker as itself (username = device id,
which the broker ACL confines to the device's topics); the simulator shares one session,
logged in as a gateway allowed under the whole prefix, among all of its devices — the
server cannot tell the difference, since every request still names its device in the topic
and proves it with that device's token.

Connection handling: `ensure_connected` connects when needed (the blocking TCP and TLS
set-up runs in a worker thread, so the loop never stalls on a slow broker) and raises a
retryable `TransportError` when the broker cannot be reached, so the agent backs off as it
does over HTTP. A connection lost later fails the requests waiting for replies (retryable)
and is re-established in the background, with the subscriptions, so that notifications
keep arriving while a device sleeps. Subscriptions use QoS 1 and a clean session: replies
to requests sent before a reconnection are lost, the requests time out and are retried.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from tinyops.fleet.agent.transport import TransportError
from tinyops.fleet.mqtt.topics import Broker, Topics
from tinyops.fleet.mqtt.wire import Reply, encode, parse_reply

log = logging.getLogger("tinyops.fleet.mqtt")

# MQTT keepalive, in seconds: a ping after this long without traffic.
KEEPALIVE_S: Final = 60
# Seconds for the TCP (and TLS) connection and then for the broker's CONNACK.
CONNECT_TIMEOUT_S: Final = 10.0
# Seconds for the broker to confirm a subscription.
SUBSCRIBE_TIMEOUT_S: Final = 10.0
# Background reconnection delays, in seconds: first, doubling up to the cap.
RECONNECT_FIRST_S: Final = 0.5
RECONNECT_CAP_S: Final = 30.0
# Seconds between runs of paho's housekeeping (keepalive pings, dead-connection checks).
MISC_INTERVAL_S: Final = 1.0
# Filters per SUBSCRIBE packet when a shared session subscribes again after a reconnection.
FILTERS_PER_SUBSCRIBE: Final = 500
# QoS 1 publishes in flight at once (paho's default of 20 would throttle a busy simulator).
MAX_INFLIGHT: Final = 1000


@dataclass
class _Pending:
    device_id: str
    op: str
    future: asyncio.Future[Reply]


class MqttSession:
    """One broker connection; requests and notifications of any number of devices."""

    def __init__(
        self,
        broker: Broker,
        topics: Topics,
        *,
        client_id: str | None = None,
        keepalive_s: int = KEEPALIVE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        import paho.mqtt.client as mqtt

        self.broker = broker
        self.topics = topics
        self.connect_timeout_s = connect_timeout_s
        self.keepalive_s = keepalive_s
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"tinyops-{secrets.token_hex(6)}",
            clean_session=True,
            protocol=mqtt.MQTTv311,
            reconnect_on_failure=False,
        )
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set()
        client.connect_timeout = connect_timeout_s
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._client = client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = False
        self._closing = False
        self._ever_connected = False
        # Paho is not thread-safe: while a worker thread connects, the loop leaves it alone.
        self._in_thread = False
        self._connecting: asyncio.Future[None] | None = None
        self._connack: asyncio.Future[None] | None = None
        self._filters: set[str] = set()
        self._subacks: dict[int, asyncio.Future[None]] = {}
        self._pending: dict[str, _Pending] = {}
        self._listeners: dict[str, Callable[[], None]] = {}
        self._misc: asyncio.Task[None] | None = None
        self._reconnect: asyncio.Task[None] | None = None

    # --- connection -------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Connected, with every subscription in place."""
        return self._ready

    async def ensure_connected(self) -> None:
        """Connect (and subscribe again) unless connected; TransportError if impossible."""
        if self._ready:
            return
        if self._closing:
            raise TransportError("the MQTT session is closed", retryable=False)
        if self._connecting is None or self._connecting.done():
            loop = self._bind_loop()
            self._connecting = loop.create_future()
            task = loop.create_task(self._connect_once())
            task.add_done_callback(self._settle_connecting)
        await asyncio.shield(self._connecting)

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._misc = loop.create_task(self._housekeeping())
        elif self._loop is not loop:
            raise RuntimeError("an MqttSession serves the event loop it first connected on")
        return loop

    def _settle_connecting(self, task: asyncio.Task[None]) -> None:
        future = self._connecting
        if future is None or future.done():
            return
        if task.cancelled():
            future.set_exception(TransportError("MQTT connection cancelled", retryable=True))
        elif (exc := task.exception()) is not None:
            future.set_exception(exc)
        else:
            future.set_result(None)
        # Nobody may be waiting (a background reconnection): mark the outcome as seen.
        future.exception()

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        first = not self._ever_connected
        self._drop_socket()
        self._in_thread = True
        try:
            if first:
                await asyncio.to_thread(
                    self._client.connect, self.broker.host, self.broker.port, self.keepalive_s
                )
            else:
                await asyncio.to_thread(self._client.reconnect)
        except (OSError, ValueError) as exc:
            raise TransportError(
                f"MQTT broker {self.broker.address} unreachable: {type(exc).__name__}: {exc}",
                retryable=True,
            ) from exc
        finally:
            self._in_thread = False
        self._ever_connected = True
        self._register_socket()
        try:
            await asyncio.wait_for(asyncio.shield(self._connack), self.connect_timeout_s)
        except TimeoutError:
            self._drop_socket()
            raise TransportError(
                f"MQTT broker {self.broker.address} did not answer CONNECT within "
                f"{self.connect_timeout_s:g} s",
                retryable=True,
            ) from None
        filters = sorted(self._filters)
        for start in range(0, len(filters), FILTERS_PER_SUBSCRIBE):
            await self._subscribe(filters[start : start + FILTERS_PER_SUBSCRIBE])
        self._ready = True

    def _drop_socket(self) -> None:
        """Close the socket without a DISCONNECT (the broker is not answering, or a new
        connection replaces it). paho has no public call for this; `_sock_close` runs the
        socket callbacks — here, in the loop's thread — before the socket is closed."""
        self._client._sock_close()

    async def _reconnect_in_background(self) -> None:
        delay = RECONNECT_FIRST_S
        while not self._closing and not self._ready:
            await asyncio.sleep(delay)
            try:
                await self.ensure_connected()
                log.info("MQTT: reconnected to %s", self.broker.address)
            except TransportError as exc:
                log.debug("MQTT: reconnecting failed: %s", exc)
                delay = min(delay * 2, RECONNECT_CAP_S)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(MISC_INTERVAL_S)
            if not self._in_thread and self._client.socket() is not None:
                self._client.loop_misc()

    async def aclose(self) -> None:
        """Disconnect; waiting requests fail."""
        self._closing = True
        for task in (self._misc, self._reconnect):
            if task is not None:
                task.cancel()
        self._fail_pending("the MQTT session was closed", retryable=False)
        if self._connecting is not None and not self._connecting.done():
            await asyncio.wait([self._connecting], timeout=self.connect_timeout_s)
        if self._client.socket() is not None and not self._in_thread:
            self._client.disconnect()
            # Write the DISCONNECT now: paho then closes the socket.
            self._client.loop_write()
            self._drop_socket()
        self._ready = False

    async def __aenter__(self) -> MqttSession:
        await self.ensure_connected()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # --- subscriptions and requests -----------------------------------------------------------

    async def listen(self, device_id: str, on_notify: Callable[[], None] | None = None) -> None:
        """Receive `device_id`'s replies (and notifications, to `on_notify`) from now on."""
        if on_notify is not None:
            self._listeners[device_id] = on_notify
        await self.ensure_connected()
        filters = self.topics.device_filters(device_id)
        if not self._filters.issuperset(filters):
            # A concurrent caller may go ahead before the SUBACK: the broker handles one
            # connection's packets in order, so its requests follow the subscription.
            await self._subscribe(filters)

    def unlisten(self, device_id: str, on_notify: Callable[[], None] | None = None) -> None:
        """Stop passing notifications to `on_notify` (the subscription stays)."""
        if on_notify is None or self._listeners.get(device_id) is on_notify:
            self._listeners.pop(device_id, None)

    async def _subscribe(self, filters: Iterable[str]) -> None:
        import paho.mqtt.client as mqtt

        wanted = list(filters)
        self._filters.update(wanted)
        result, mid = self._client.subscribe([(f, 1) for f in wanted])
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(
                f"subscribing to {', '.join(wanted)} failed: {mqtt.error_string(result)}",
                retryable=True,
            )
        future = self._bind_loop().create_future()
        self._subacks[mid] = future
        try:
            await asyncio.wait_for(future, SUBSCRIBE_TIMEOUT_S)
        except TimeoutError:
            raise TransportError(
                f"MQTT broker {self.broker.address} did not confirm the subscription to "
                f"{', '.join(wanted)} within {SUBSCRIBE_TIMEOUT_S:g} s",
                retryable=True,
            ) from None
        except TransportError:
            self._filters.difference_update(wanted)
            raise
        finally:
            self._subacks.pop(mid, None)

    async def request(
        self, device_id: str, op: str, fields: dict[str, Any], timeout_s: float
    ) -> Reply:
        """Publish a request of `device_id` and wait for its reply (TransportError, retryable,
        if none comes within `timeout_s` seconds or the connection is lost)."""
        import paho.mqtt.client as mqtt

        await self.ensure_connected()
        request_id = secrets.token_hex(8)
        future: asyncio.Future[Reply] = self._bind_loop().create_future()
        self._pending[request_id] = _Pending(device_id, op, future)
        try:
            info = self._client.publish(
                self.topics.request(device_id, op),
                encode({"request_id": request_id, **fields}),
                qos=1,
            )
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                raise TransportError(
                    f"{op}: publishing over MQTT failed: {mqtt.error_string(info.rc)}",
                    retryable=True,
                )
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise TransportError(
                f"{op}: no reply over MQTT within {timeout_s:g} s", retryable=True
            ) from None
        finally:
            self._pending.pop(request_id, None)

    def _fail_pending(self, message: str, *, retryable: bool) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(
                    TransportError(f"{pending.op}: {message}", retryable=retryable)
                )
        for future in list(self._subacks.values()):
            if not future.done():
                future.set_exception(TransportError(message, retryable=retryable))

    # --- paho callbacks (the loop's thread, or the connecting worker for socket ones) -----------

    def _register_socket(self) -> None:
        """Watch the socket a worker thread just connected (its callbacks were deferred)."""
        sock = self._client.socket()
        if sock is None or self._loop is None:
            return
        self._loop.add_reader(sock, self._readable)
        if self._client.want_write():
            self._loop.add_writer(sock, self._writable)

    # While a worker thread connects, the socket callbacks do nothing: `_register_socket`
    # catches up in the loop's thread once it returns (no event-loop call from the thread).

    def _on_socket_open(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if not self._in_thread and self._loop is not None:
            self._loop.add_reader(sock, self._readable)

    def _on_socket_close(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if not self._in_thread and self._loop is not None and sock.fileno() >= 0:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)

    def _on_socket_register_write(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if not self._in_thread and self._loop is not None:
            self._loop.add_writer(sock, self._writable)

    def _on_socket_unregister_write(self, _client: Any, _userdata: Any, sock: Any) -> None:
        if not self._in_thread and self._loop is not None and sock.fileno() >= 0:
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        client = self._client
        client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see: read them now.
        sock = client.socket()
        while sock is not None and getattr(sock, "pending", lambda: 0)() > 0:
            client.loop_read()
            sock = client.socket()

    def _writable(self) -> None:
        self._client.loop_write()

    def _on_connect(self, _client: Any, _userdata: Any, _flags: Any, reason: Any, _p: Any) -> None:
        future = self._connack
        if future is None or future.done():
            return
        if reason.is_failure:
            # Bad credentials stay bad; a busy or unavailable broker may come back.
            fatal = reason.value in (4, 5, 0x86, 0x87)
            future.set_exception(
                TransportError(
                    f"MQTT broker {self.broker.address} refused the connection: {reason}",
                    retryable=not fatal,
                )
            )
        else:
            future.set_result(None)

    def _on_disconnect(self, _client: Any, _u: Any, _flags: Any, reason: Any, _p: Any) -> None:
        was_ready = self._ready
        self._ready = False
        message = f"connection to MQTT broker {self.broker.address} lost ({reason})"
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(TransportError(message, retryable=True))
        self._fail_pending(message, retryable=True)
        if self._closing or not was_ready or self._loop is None:
            return
        log.warning("MQTT: %s; reconnecting", message)
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = self._loop.create_task(self._reconnect_in_background())

    def _on_subscribe(
        self, _client: Any, _userdata: Any, mid: int, reasons: list[Any], _p: Any
    ) -> None:
        future = self._subacks.get(mid)
        if future is None or future.done():
            return
        if any(r.is_failure for r in reasons):
            future.set_exception(
                TransportError(
                    f"MQTT broker {self.broker.address} refused a subscription (the broker ACL "
                    "must let this login subscribe to its device's res/# and notify topics)",
                    retryable=False,
                )
            )
        else:
            future.set_result(None)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        match = self.topics.parse(message.topic)
        if match is None:
            return
        if match.kind == "notify":
            listener = self._listeners.get(match.device_id)
            if listener is not None:
                listener()
            return
        if match.kind != "res":
            return
        try:
            reply = parse_reply(bytes(message.payload))
        except ValueError as exc:
            log.warning("MQTT: dropped a malformed reply on %s: %s", message.topic, exc)
            return
        pending = self._pending.get(reply.request_id or "")
        if pending is None or pending.future.done():
            # A late reply (its request timed out) or a duplicate delivery.
            return
        if (pending.device_id, pending.op) != (match.device_id, match.op):
            log.warning("MQTT: reply %s on %s is for another request", reply.request_id, match)
            return
        pending.future.set_result(reply)


__all__ = ["MqttSession"]
