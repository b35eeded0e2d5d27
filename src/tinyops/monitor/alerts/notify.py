"""Where alert notifications go: a webhook (Alertmanager's JSON) and the log.

`WebhookNotifier` POSTs the payload Alertmanager sends to webhook receivers (version 4),
so anything that takes Alertmanager webhooks (chat bridges, incident tools) takes
tinyops' too:

    {"version": "4", "groupKey": "{}:{alertname=\"DeviceHot\"}", "truncatedAlerts": 0,
     "status": "firing" | "resolved", "receiver": "tinyops",
     "groupLabels": {...}, "commonLabels": {...}, "commonAnnotations": {...},
     "externalURL": "http://server:8080",
     "alerts": [{"status", "labels", "annotations", "startsAt", "endsAt",
                 "generatorURL", "fingerprint"}]}

One message per rule and status (Alertmanager groups by alertname by default), at most
`max_alerts` alerts each (a fleet going offline at once would otherwise be one huge body).
`startsAt` is when the alert started firing, `endsAt` when it resolved (Alertmanager's
zero time, 0001-01-01T00:00:00Z, while it fires).

Delivery: a timeout per attempt, retries with exponential backoff on connection errors,
timeouts, 408, 429 and 5xx; other 4xx answers are not retried (the receiver refuses the
message itself). A message that still fails is logged and dropped: alerts are re-sent
every `repeat_interval` while they fire, and the alert list on the server stays right.

`LogNotifier` writes one structured line per notification to the `tinyops.alerts` logger.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import httpx

from tinyops.monitor.alerts.evaluate import Alert, AlertEvent

log = logging.getLogger("tinyops.alerts")

WEBHOOK_VERSION: Final = "4"
# Alertmanager's rendering of "no end yet".
ZERO_TIME: Final = "0001-01-01T00:00:00Z"
RETRY_STATUSES: Final = frozenset({408, 429})


class Notifier(Protocol):
    async def notify(self, events: Sequence[AlertEvent]) -> None:
        """Deliver `events` (never raises for a delivery problem: it logs it)."""
        ...


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def webhook_alert(alert: Alert, status: str, generator_url: str = "") -> dict[str, Any]:
    """One entry of a webhook payload's `alerts`."""
    started = alert.fired_at or alert.active_at
    ended = alert.resolved_at if status == "resolved" and alert.resolved_at else None
    return {
        "status": status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(started),
        "endsAt": rfc3339(ended) if ended is not None else ZERO_TIME,
        "generatorURL": generator_url,
        "fingerprint": alert.fingerprint,
    }


def _common(dicts: Sequence[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first = dicts[0]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in dicts[1:])}


def webhook_payloads(
    events: Sequence[AlertEvent],
    *,
    receiver: str = "tinyops",
    external_url: str = "",
    max_alerts: int = 1000,
) -> list[dict[str, Any]]:
    """The webhook messages for `events`: one per (rule, status), chunked by `max_alerts`."""
    grouped: dict[tuple[str, str], list[AlertEvent]] = {}
    for event in events:
        grouped.setdefault((event.alert.rule, event.status), []).append(event)
    payloads = []
    for (rule, status), group in sorted(grouped.items()):
        for start in range(0, len(group), max_alerts):
            chunk = group[start : start + max_alerts]
            alerts = [webhook_alert(e.alert, status, external_url) for e in chunk]
            group_labels = {"alertname": rule}
            payloads.append(
                {
                    "version": WEBHOOK_VERSION,
                    "groupKey": "{}:" + "{" + f'alertname="{rule}"' + "}",
                    "truncatedAlerts": 0,
                    "status": status,
                    "receiver": receiver,
                    "groupLabels": group_labels,
                    "commonLabels": _common([a["labels"] for a in alerts]),
                    "commonAnnotations": _common([a["annotations"] for a in alerts]),
                    "externalURL": external_url,
                    "alerts": alerts,
                }
            )
    return payloads


class WebhookNotifier:
    """POSTs Alertmanager-style webhook messages to `url`, with retries."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        attempts: int = 5,
        backoff_s: float = 1.0,
        max_backoff_s: float = 30.0,
        max_alerts: int = 1000,
        external_url: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.url = url
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_alerts = max_alerts
        self.external_url = external_url
        self.headers = dict(headers or {})
        self.delivered = 0
        self.failed = 0

    async def notify(self, events: Sequence[AlertEvent]) -> None:
        if not events:
            return
        payloads = webhook_payloads(
            events, external_url=self.external_url, max_alerts=self.max_alerts
        )
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for payload in payloads:
                if await self._send(client, payload):
                    self.delivered += 1
                else:
                    self.failed += 1

    async def _send(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> bool:
        """Deliver one message; False once every attempt failed (logged)."""
        body = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json", **self.headers}
        problem = ""
        for attempt in range(1, self.attempts + 1):
            try:
                response = await client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in RETRY_STATUSES:
                    break  # the receiver refuses this message: sending it again won't help
            if attempt < self.attempts:
                delay = min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)
                log.warning(
                    "alert webhook %s: attempt %d failed (%s); retrying in %.1f s",
                    self.url,
                    attempt,
                    problem,
                    delay,
                )
                await asyncio.sleep(delay)
        log.error(
            "alert webhook %s: giving up on a %s message for %s (%d alerts): %s",
            self.url,
            payload["status"],
            payload["groupLabels"].get("alertname"),
            len(payload["alerts"]),
            problem,
        )
        return False


class LogNotifier:
    """One JSON log line per notification (logger `tinyops.alerts`, level by severity)."""

    LEVELS: Final = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}

    def __init__(self, logger: logging.Logger = log) -> None:
        self.logger = logger

    async def notify(self, events: Sequence[AlertEvent]) -> None:
        for event in events:
            alert = event.alert
            record = {
                "event": "alert",
                "status": event.status,
                "repeat": event.repeat,
                "rule": alert.rule,
                "severity": alert.severity,
                "labels": dict(alert.labels),
                "value": alert.value,
                "since": rfc3339(alert.since),
                "summary": alert.summary,
                "fingerprint": alert.fingerprint,
            }
            level = logging.INFO if event.status == "resolved" else self.LEVELS[alert.severity]
            self.logger.log(level, "%s", json.dumps(record, sort_keys=True))
