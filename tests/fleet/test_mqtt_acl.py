"""A Mosquitto of this test's own, with password logins and the broker ACL of
docs/device-protocol.md (*Broker access control*) exactly as written there: a device can
neither read nor write another device's topics, the fleet server and an agent work through
it, and both reconnect by themselves when the broker restarts."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_mqtt_protocol import CHECKIN, enroll_request
from test_mqtt_support import MESSAGE_TIMEOUT_S

from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.transport import TransportError
from tinyops.fleet.mqtt.bridge import MqttBridge
from tinyops.fleet.mqtt.session import MqttSession
from tinyops.fleet.mqtt.topics import Broker, Topics
from tinyops.fleet.mqtt.transport import MqttTransport

pytestmark = pytest.mark.anyio

DOC = Path(__file__).resolve().parents[2] / "docs" / "device-protocol.md"
LOGINS = {"tinyops-server": "server-pw", "nano-a": "a-pw", "nano-b": "b-pw"}
# Bound on waiting for the broker process to listen, in seconds.
START_TIMEOUT_S = 30.0
# Bound on waiting for both sides to notice a lost broker and to reconnect, in seconds
# (their first retries come after 0.5 s and 1 s, then doubling).
RECONNECT_TIMEOUT_S = 30.0
# Seconds an impostor's request waits for the reply that the broker never lets through.
IMPOSTOR_WAIT_S = 2.0


def documented_acl() -> str:
    """The acl_file example of the protocol document."""
    found = re.search(r"```\n(# acl_file:.*?)```", DOC.read_text(), re.DOTALL)
    assert found, f"{DOC} has no acl_file example"
    return found.group(1)


def _binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        reason = f"{name} is not installed: the ACL test runs its own Mosquitto"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: this must not be skipped)")
        pytest.skip(reason)
    return path


class PrivateBroker:
    """A Mosquitto of this test's own on a free loopback port, with the documented ACL
    and password logins; it can be stopped and started again on the same port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.mosquitto = _binary("mosquitto")
        passwd = _binary("mosquitto_passwd")
        passwords = folder / "passwd"
        for i, (user, password) in enumerate(LOGINS.items()):
            flags = ["-c", "-b"] if i == 0 else ["-b"]
            subprocess.run([passwd, *flags, str(passwords), user, password], check=True)
        (folder / "acl").write_text(documented_acl())
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous false\npersistence false\n"
            f"password_file {passwords}\nacl_file {folder / 'acl'}\n"
            # Started as root, Mosquitto would switch to its own user, which cannot read
            # the test's private folder; as any other user this line does nothing.
            "user root\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.folder / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [self.mosquitto, "-c", str(self.config)], stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, (self.folder / "mosquitto.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "mosquitto did not listen in time"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def login(self, user: str) -> Broker:
        return Broker("127.0.0.1", self.port, username=user, password=LOGINS[user])


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


class Login:
    """A paho client logged in as `user` (its own network thread), collecting messages."""

    def __init__(self, port: int, user: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[str] = queue.Queue()
        self._subacks: queue.Queue[list[bool]] = queue.Queue()
        connected = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"acl-{user}")
        client.username_pw_set(user, LOGINS[user])
        client.on_connect = lambda *_a: connected.set()
        client.on_subscribe = lambda _c, _u, _m, reasons, _p: self._subacks.put(
            [not r.is_failure for r in reasons]
        )
        client.on_message = lambda _c, _u, m: self.messages.put(m.topic)
        client.connect("127.0.0.1", port)
        client.loop_start()
        assert connected.wait(MESSAGE_TIMEOUT_S)
        self.client = client

    def subscribe(self, topic_filter: str) -> bool:
        """Whether the broker granted the subscription."""
        self.client.subscribe(topic_filter, qos=1)
        return self._subacks.get(timeout=MESSAGE_TIMEOUT_S)[0]

    def publish(self, topic: str) -> None:
        self.client.publish(topic, b"{}", qos=1).wait_for_publish(MESSAGE_TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_the_documented_acl_confines_each_device_to_its_own_topics(
    private_broker: PrivateBroker,
) -> None:
    server, a, b = (Login(private_broker.port, user) for user in LOGINS)
    try:
        assert server.subscribe("tinyops/dev/+/req/+")
        assert a.subscribe("tinyops/dev/nano-a/res/#") and a.subscribe("tinyops/dev/nano-a/notify")
        assert b.subscribe("tinyops/dev/nano-b/res/#") and b.subscribe("tinyops/dev/nano-b/notify")
        # Mosquitto grants any subscription and applies `read` to each message it delivers.
        assert a.subscribe("tinyops/dev/nano-b/res/#") and a.subscribe("tinyops/dev/+/notify")
        # Each refused message is followed by an allowed one to the same reader; the broker
        # forwards messages in the order it took them, so the next arrival shows whether
        # the refused one got through.

        def first(reader: Login) -> str:
            return reader.messages.get(timeout=MESSAGE_TIMEOUT_S)

        # Reading another device's replies (an enrollment reply holds its token): b gets
        # them, a does not.
        for topic in ("tinyops/dev/nano-b/res/enroll", "tinyops/dev/nano-b/notify"):
            server.publish(topic)
            server.publish("tinyops/dev/nano-a/notify")
            assert (first(b), first(a)) == (topic, "tinyops/dev/nano-a/notify")
        # Requests as another device, replies or notifications to another device: dropped.
        a.publish("tinyops/dev/nano-b/req/checkin")
        a.publish("tinyops/dev/nano-a/req/checkin")
        assert first(server) == "tinyops/dev/nano-a/req/checkin"
        for forged in ("tinyops/dev/nano-b/res/checkin", "tinyops/dev/nano-b/notify"):
            a.publish(forged)
            server.publish("tinyops/dev/nano-b/res/status")
            assert first(b) == "tinyops/dev/nano-b/res/status", forged
    finally:
        for login in (server, a, b):
            login.close()


async def test_server_and_agent_work_through_the_documented_acl(
    private_broker: PrivateBroker, fleet: Any
) -> None:
    topics = Topics("tinyops")
    bridge = MqttBridge(fleet.runtime, private_broker.login("tinyops-server"), topics)
    await bridge.start()
    session = MqttSession(private_broker.login("nano-a"), topics)
    http = HttpTransport("http://fleet", client=fleet.client)
    try:
        assert bridge.connected
        device = MqttTransport(session, "nano-a", http=http, timeout_s=MESSAGE_TIMEOUT_S)
        etk = await fleet.enrollment_token()
        device.authenticate((await device.enroll(enroll_request(etk, "nano-a"))).device_token)
        assert (await device.checkin(CHECKIN)).action == "none"
        # Through the same login as another device: the broker drops the request (and would
        # drop a reply), so the call times out like an unanswered HTTP request.
        impostor = MqttTransport(session, "nano-b", http=http, timeout_s=IMPOSTOR_WAIT_S)
        with pytest.raises(TransportError) as unanswered:
            await impostor.checkin(CHECKIN)
        assert unanswered.value.retryable and "no reply" in str(unanswered.value)
        assert fleet.runtime.metrics.registry.get_sample_value("tinyops_device_checkins_total") == 1
    finally:
        await session.aclose()
        await bridge.stop()


async def test_server_and_agent_reconnect_after_the_broker_restarts(
    private_broker: PrivateBroker, fleet: Any
) -> None:
    topics = Topics("tinyops")
    bridge = MqttBridge(fleet.runtime, private_broker.login("tinyops-server"), topics)
    await bridge.start()
    session = MqttSession(private_broker.login("nano-a"), topics)
    http = HttpTransport("http://fleet", client=fleet.client)
    try:
        device = MqttTransport(session, "nano-a", http=http, timeout_s=MESSAGE_TIMEOUT_S)
        etk = await fleet.enrollment_token()
        device.authenticate((await device.enroll(enroll_request(etk, "nano-a"))).device_token)
        assert (await device.checkin(CHECKIN)).action == "none"

        await asyncio.to_thread(private_broker.stop)
        await until(lambda: not session.connected and not bridge.connected, "the loss noticed")
        with pytest.raises(TransportError) as down:
            await device.checkin(CHECKIN)
        assert down.value.retryable and down.value.status is None

        await asyncio.to_thread(private_broker.start)
        # Both sides reconnect by themselves (and subscribe again: clean sessions).
        await until(lambda: session.connected and bridge.connected, "reconnection")
        assert (await device.checkin(CHECKIN)).action == "none"
    finally:
        await session.aclose()
        await bridge.stop()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for `condition` (checked every 50 ms), at most RECONNECT_TIMEOUT_S seconds."""
    deadline = time.monotonic() + RECONNECT_TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen in {RECONNECT_TIMEOUT_S} s"
        await asyncio.sleep(0.05)
