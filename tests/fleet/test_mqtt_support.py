"""Helpers of the MQTT tests (no tests here): the broker, a bridge on a test fleet, and a
bare paho client that publishes raw payloads and collects what the server sends.

The broker is the Mosquitto on 127.0.0.1:1883; tests skip with the reason when it is not
reachable, except under CI=true, where they fail. Every test uses its own random topic
prefix, so tests (and other users of the broker) never see each other's messages.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tinyops.fleet.mqtt.bridge import MqttBridge
from tinyops.fleet.mqtt.topics import Topics, parse_broker_url

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 1883
BROKER_URL = f"mqtt://{BROKER_HOST}:{BROKER_PORT}"
# Bound on waiting for a message, in seconds; never reached when all is well.
MESSAGE_TIMEOUT_S = 15.0


def require_broker() -> str:
    """The broker's URL; skips (fails under CI=true) when nothing listens there."""
    try:
        socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=3).close()
    except OSError as exc:
        reason = f"Mosquitto is not reachable at {BROKER_HOST}:{BROKER_PORT}: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: this must not be skipped)")
        pytest.skip(reason)
    return BROKER_URL


def new_prefix() -> str:
    """A topic prefix of this test alone."""
    return f"tinyops-test/{secrets.token_hex(6)}"


@asynccontextmanager
async def bridged(fleet: Any, prefix: str) -> AsyncIterator[MqttBridge]:
    """An `MqttBridge` over the test fleet's runtime (what the app's lifespan starts when
    `mqtt_url` is set); notifications only when the test calls `notify_changes()`."""
    bridge = MqttBridge(
        fleet.runtime,
        parse_broker_url(require_broker()),
        Topics(prefix),
        notify_interval_s=3600.0,
    )
    await bridge.start()
    assert bridge.connected, "the bridge did not subscribe"
    try:
        yield bridge
    finally:
        await bridge.stop()


class RawClient:
    """A bare paho client (its own network thread) under `prefix`: publishes any bytes on
    any device's request topics and collects every reply and notification."""

    def __init__(self, prefix: str) -> None:
        import paho.mqtt.client as mqtt

        require_broker()
        self.topics = Topics(prefix)
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        subscribed = threading.Event()
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=f"raw-{secrets.token_hex(4)}",
            protocol=mqtt.MQTTv311,
        )

        def on_connect(c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
            assert not reason.is_failure, reason
            c.subscribe([(f"{prefix}/dev/+/res/+", 1), (f"{prefix}/dev/+/notify", 1)])

        client.on_connect = on_connect
        client.on_subscribe = lambda *_args: subscribed.set()
        client.on_message = lambda _c, _u, m: self.messages.put((m.topic, bytes(m.payload)))
        client.connect(BROKER_HOST, BROKER_PORT)
        client.loop_start()
        assert subscribed.wait(MESSAGE_TIMEOUT_S), "the raw client did not subscribe"
        self.client = client

    def publish(self, topic: str, payload: bytes | dict[str, Any]) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        self.client.publish(topic, data, qos=1).wait_for_publish(MESSAGE_TIMEOUT_S)

    async def next(self) -> tuple[str, Any]:
        """The next message: its topic and decoded JSON."""
        import asyncio

        topic, payload = await asyncio.to_thread(self.messages.get, True, MESSAGE_TIMEOUT_S)
        return topic, json.loads(payload)

    async def ask(
        self, device_id: str, op: str, payload: bytes | dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """Publish a request on `device_id`'s `op` topic; the reply's topic and JSON."""
        self.publish(self.topics.request(device_id, op), payload)
        topic, reply = await self.next()
        assert isinstance(reply, dict), reply
        return topic, reply

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
