"""Notifiers against a real loopback HTTP receiver: Alertmanager's webhook JSON, retries
with backoff on failures, no retry on a refusal, and the log notifier's lines."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from tinyops.monitor.alerts.evaluate import AlertEvaluator, AlertEvent, MetricFrame
from tinyops.monitor.alerts.notify import LogNotifier, WebhookNotifier, webhook_payloads
from tinyops.monitor.alerts.rules import parse_rules

T0 = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers the programmed statuses in turn."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.headers.append(dict(self.headers))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


RULES = parse_rules(
    """
groups:
  - name: hardware
    rules:
      - name: DeviceHot
        metric: device_temperature_celsius
        condition: "> 70"
        severity: critical
        annotations:
          summary: "{{ $labels.device }} at {{ $value }} °C"
          runbook: "https://runbooks.example/hot"
"""
)


def hot_events() -> tuple[list[AlertEvent], list[AlertEvent]]:
    """Two devices start firing, then one resolves."""
    ev = AlertEvaluator(RULES)

    def frame(a: float, b: float) -> MetricFrame:
        return MetricFrame(
            "device_temperature_celsius",
            ("device", "hardware", "release"),
            [("a", "nano33ble", "kws@1.0.0"), ("b", "nano33ble", "kws@1.0.0")],
            np.asarray([a, b]),
        )

    firing = ev.evaluate([frame(75, 80)], T0)
    resolved = ev.evaluate([frame(60, 80)], T0 + timedelta(minutes=1))
    return firing, resolved


@pytest.fixture
def events() -> Iterator[tuple[list[AlertEvent], list[AlertEvent]]]:
    yield hot_events()


def test_webhook_payload_is_alertmanager_v4(events: Any) -> None:
    firing, resolved = events
    with Receiver([]) as receiver:
        notifier = WebhookNotifier(receiver.url, external_url="http://fleet:8080")
        asyncio.run(notifier.notify(firing))
        asyncio.run(notifier.notify(resolved))

    assert notifier.delivered == 2
    first, second = receiver.bodies
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert first["version"] == "4"
    assert first["status"] == "firing"
    assert first["receiver"] == "tinyops"
    assert first["groupKey"] == '{}:{alertname="DeviceHot"}'
    assert first["groupLabels"] == {"alertname": "DeviceHot"}
    assert first["externalURL"] == "http://fleet:8080"
    assert first["truncatedAlerts"] == 0
    assert first["commonLabels"] == {
        "alertname": "DeviceHot",
        "hardware": "nano33ble",
        "release": "kws@1.0.0",
        "severity": "critical",
    }
    assert first["commonAnnotations"] == {"runbook": "https://runbooks.example/hot"}
    a, b = first["alerts"]
    assert a["status"] == "firing"
    assert a["labels"]["device"] == "a"
    assert a["annotations"]["summary"] == "a at 75 °C"
    assert a["startsAt"] == "2026-11-27T10:00:00Z"
    assert a["endsAt"] == "0001-01-01T00:00:00Z"
    assert len(a["fingerprint"]) == 16 and a["fingerprint"] != b["fingerprint"]
    assert second["status"] == "resolved"
    (gone,) = second["alerts"]
    assert gone["labels"]["device"] == "a"
    assert gone["endsAt"] == "2026-11-27T10:01:00Z"
    assert gone["fingerprint"] == a["fingerprint"]


def test_failures_are_retried_with_backoff_until_delivered(events: Any) -> None:
    firing, _ = events
    with Receiver([500, 503, 429]) as receiver:
        notifier = WebhookNotifier(receiver.url, attempts=5, backoff_s=0.01)
        asyncio.run(notifier.notify(firing))
    assert len(receiver.bodies) == 4  # three refusals, then the delivery
    assert receiver.bodies[0] == receiver.bodies[3]
    assert (notifier.delivered, notifier.failed) == (1, 0)


def test_giving_up_after_the_last_attempt_and_not_retrying_a_refusal(
    events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    firing, _ = events
    with Receiver([500, 500, 500]) as receiver:
        notifier = WebhookNotifier(receiver.url, attempts=3, backoff_s=0.01)
        with caplog.at_level(logging.WARNING, "tinyops.alerts"):
            asyncio.run(notifier.notify(firing))
    assert len(receiver.bodies) == 3
    assert (notifier.delivered, notifier.failed) == (0, 1)
    assert "giving up on a firing message for DeviceHot (2 alerts): HTTP 500" in caplog.text

    with Receiver([400]) as receiver:
        notifier = WebhookNotifier(receiver.url, attempts=3, backoff_s=0.01)
        asyncio.run(notifier.notify(firing))
    assert len(receiver.bodies) == 1  # a 4xx is the receiver's verdict on the message
    assert notifier.failed == 1


def test_an_unreachable_receiver_times_out_and_is_reported(
    events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    firing, _ = events
    with Receiver([]) as receiver:
        url = receiver.url
    # The receiver is gone: connections are refused.
    notifier = WebhookNotifier(url, attempts=2, backoff_s=0.01, timeout_s=2)
    with caplog.at_level(logging.WARNING, "tinyops.alerts"):
        asyncio.run(notifier.notify(firing))
    assert notifier.failed == 1
    assert "ConnectError" in caplog.text


def test_large_batches_are_split(events: Any) -> None:
    firing, _ = events
    payloads = webhook_payloads(firing, max_alerts=1)
    assert [len(p["alerts"]) for p in payloads] == [1, 1]
    assert [p["alerts"][0]["labels"]["device"] for p in payloads] == ["a", "b"]


def test_log_notifier_writes_one_json_line_per_event(
    events: Any, caplog: pytest.LogCaptureFixture
) -> None:
    firing, resolved = events
    with caplog.at_level(logging.INFO, "tinyops.alerts"):
        asyncio.run(LogNotifier().notify([*firing, *resolved]))
    records = [(r.levelname, json.loads(r.getMessage())) for r in caplog.records]
    assert [(level, r["status"], r["labels"]["device"]) for level, r in records] == [
        ("ERROR", "firing", "a"),  # critical → ERROR
        ("ERROR", "firing", "b"),
        ("INFO", "resolved", "a"),
    ]
    assert records[0][1]["summary"] == "a at 75 °C"
    assert records[0][1]["rule"] == "DeviceHot"
