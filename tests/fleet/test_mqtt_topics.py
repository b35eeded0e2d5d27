"""The pure parts of the MQTT transport (no broker): topics, broker URLs, the reply format,
the settings' checks, and the clock that notifications wake."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from tinyops.fleet.agent.clock import ManualClock
from tinyops.fleet.mqtt.topics import Broker, TopicMatch, Topics, parse_broker_url
from tinyops.fleet.mqtt.transport import WakeableClock
from tinyops.fleet.mqtt.wire import parse_reply, reply_payload, request_id_of
from tinyops.fleet.server.settings import FleetSettings

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def test_topics_of_a_device_and_what_they_parse_back_to() -> None:
    topics = Topics("site-a/fleet")
    assert topics.request("nano-1", "checkin") == "site-a/fleet/dev/nano-1/req/checkin"
    assert topics.reply("nano-1", "status") == "site-a/fleet/dev/nano-1/res/status"
    assert topics.notify("nano-1") == "site-a/fleet/dev/nano-1/notify"
    assert topics.requests == "site-a/fleet/dev/+/req/+"
    assert topics.device_filters("nano-1") == (
        "site-a/fleet/dev/nano-1/res/#",
        "site-a/fleet/dev/nano-1/notify",
    )
    assert topics.parse("site-a/fleet/dev/nano-1/req/checkin") == TopicMatch(
        "nano-1", "req", "checkin"
    )
    assert topics.parse("site-a/fleet/dev/nano-1/res/bogus") == TopicMatch("nano-1", "res", "bogus")
    assert topics.parse("site-a/fleet/dev/nano-1/notify") == TopicMatch("nano-1", "notify")
    for other in (
        "site-b/fleet/dev/nano-1/req/checkin",  # another prefix
        "site-a/fleet/dev/nano-1/req",  # no op
        "site-a/fleet/dev/nano-1/req/",  # empty op
        "site-a/fleet/dev//req/checkin",  # empty device id
        "site-a/fleet/dev/nano-1/req/checkin/more",  # too deep
        "site-a/fleet/dev/nano-1/cmd/checkin",  # unknown kind
        "site-a/fleet/devices/nano-1/req/checkin",
    ):
        assert topics.parse(other) is None, other


@pytest.mark.parametrize("prefix", ["", "$SYS", "a//b", "a/+/b", "#", "a/", "x" * 129])
def test_unusable_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValueError, match="MQTT topic prefix"):
        Topics(prefix)


@pytest.mark.parametrize("device_id", ["a/b", "+", "nano#1", ""])
def test_a_device_id_that_cannot_be_a_topic_level_is_refused(device_id: str) -> None:
    with pytest.raises(ValueError, match="device id"):
        Topics().request(device_id, "checkin")


def test_broker_urls() -> None:
    assert parse_broker_url("mqtt://broker") == Broker("broker", 1883)
    assert parse_broker_url("mqtts://broker.example:8884") == Broker(
        "broker.example", 8884, tls=True
    )
    assert parse_broker_url("MQTTS://broker") == Broker("broker", 8883, tls=True)
    with_login = parse_broker_url("mqtt://nano%2D1:p%40ss%3Aword@10.0.0.2:1884/")
    assert with_login == Broker("10.0.0.2", 1884, username="nano-1", password="p@ss:word")
    assert "p@ss" not in repr(with_login)  # the password is not in reprs (logs)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://broker:1883", "expected mqtt://host"),
        ("broker:1883", "expected mqtt://host"),
        ("mqtt://broker/tinyops", "no path"),
        ("mqtt://broker?x=1", "no path"),
        ("mqtt://broker:99999", "port"),
        ("mqtt://user:secret@broker:port", "port"),
        ("mqtt://", "names no host"),
    ],
)
def test_bad_broker_urls_say_what_is_expected(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected) as refused:
        parse_broker_url(url)
    assert "secret" not in str(refused.value)


def test_the_settings_check_the_broker_url_and_prefix() -> None:
    settings = FleetSettings(mqtt_url="mqtt://127.0.0.1:1883", mqtt_prefix="lab/fleet")
    assert (settings.mqtt_url, settings.mqtt_prefix) == ("mqtt://127.0.0.1:1883", "lab/fleet")
    assert (FleetSettings().mqtt_url, FleetSettings().mqtt_prefix) == (None, "tinyops")
    with pytest.raises(ValidationError, match="mqtt_url"):
        FleetSettings(mqtt_url="tcp://broker")
    with pytest.raises(ValidationError, match="mqtt_prefix"):
        FleetSettings(mqtt_prefix="a/#")


def test_replies_and_request_ids() -> None:
    reply = parse_reply(reply_payload("r-1", 409, {"error": {"code": "conflict"}}))
    assert (reply.request_id, reply.status, reply.error) == ("r-1", 409, {"code": "conflict"})
    assert parse_reply(b'{"request_id": null, "status": 204, "body": null}').error is None
    for bad, problem in (
        (b"[]", "expected an object"),
        (b"{", "not JSON"),
        (b'{"status": "200"}', "expected an HTTP status"),
        (b'{"status": true}', "expected an HTTP status"),
        (b'{"status": 99}', "expected an HTTP status"),
        (b'{"status": 200, "request_id": 7}', "request_id"),
    ):
        with pytest.raises(ValueError, match=problem):
            parse_reply(bad)
    assert request_id_of({"request_id": "a.b:c_d-1"}) == "a.b:c_d-1"
    for data in ({"request_id": "x" * 65}, {"request_id": "a b"}, {"request_id": 1}, [], None):
        assert request_id_of(data) is None


async def settle() -> None:
    """Let every ready task run until it waits (a few loop iterations)."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.anyio
async def test_a_notification_ends_the_wait_between_polls() -> None:
    base = ManualClock(NOW)
    clock = WakeableClock(base, spread_s=0.0)
    assert clock.now() == NOW and clock.monotonic() == 0.0
    sleeping = asyncio.ensure_future(clock.sleep(300.0))
    await settle()
    assert not sleeping.done()
    clock.wake()
    await asyncio.wait_for(sleeping, 5.0)
    # Without a notification the sleep lasts its time (virtual: advanced by hand).
    sleeping = asyncio.ensure_future(clock.sleep(300.0))
    await settle()
    base.advance(299.0)
    await settle()
    assert not sleeping.done()
    base.advance(1.0)
    await asyncio.wait_for(sleeping, 5.0)
    # A notification that came while the agent was busy ends its next wait at once.
    clock.wake()
    await asyncio.wait_for(clock.sleep(300.0), 5.0)


@pytest.mark.anyio
async def test_a_woken_clock_waits_a_random_spread_within_its_bound() -> None:
    base = ManualClock(NOW)
    clock = WakeableClock(base, spread_s=1.0)
    sleeping = asyncio.ensure_future(clock.sleep(300.0))
    await settle()
    clock.wake()
    for _ in range(5):
        await settle()
    assert not sleeping.done()  # now waiting the spread, in virtual time
    base.advance(1.0)
    await asyncio.wait_for(sleeping, 5.0)
