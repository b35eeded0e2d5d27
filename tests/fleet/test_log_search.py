"""Device log search and retention, against a real server process on SQLite and PostgreSQL.

Devices enroll and send their log lines over the real device API (telemetry); the search
API (`GET /api/v1/devices/{id}/logs`, `GET /api/v1/logs`) must return exactly the lines
each filter selects, page by id without gaps or repeats, and refuse bad queries with a
4xx naming the parameter. Retention is checked on the store directly (both limits,
deterministically) and on the running server (its periodic prune).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fleet_process import Server

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEVELS = ["debug", "info", "warning", "error"]
# Bound on waiting for the server's background prune; never reached when all is well.
PRUNE_DEADLINE_S = 60.0


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Api:
    """Admin-authenticated calls to a running server, and device helpers."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.admin = {"Authorization": f"Bearer {token}"}
        self.http = httpx.Client(base_url=url, timeout=30)

    def token(self, role: str) -> dict[str, str]:
        r = self.http.post("/api/v1/tokens", json={"name": role, "role": role}, headers=self.admin)
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    def enroll(self, device_id: str) -> dict[str, str]:
        r = self.http.post("/api/v1/enrollment-tokens", json={"name": "lab"}, headers=self.admin)
        assert r.status_code == 201, r.text
        r = self.http.post(
            "/api/v1/device/enroll",
            json={
                "enrollment_token": r.json()["token"],
                "device_id": device_id,
                "hardware": "nano33ble",
                "tags": {"group": "lab"},
                "installed": None,
            },
        )
        assert r.status_code == 201, r.text
        return {"Authorization": f"Bearer {r.json()['device_token']}"}

    def send_logs(self, device: dict[str, str], lines: list[tuple[datetime, str, str]]) -> None:
        body = {"logs": [{"t": iso(t), "level": lv, "message": m} for t, lv, m in lines]}
        r = self.http.post("/api/v1/device/telemetry", json=body, headers=device)
        assert r.status_code == 202, r.text
        assert r.json()["logs"] == len(lines)

    def logs(
        self, path: str = "/api/v1/logs", headers: dict[str, str] | None = None, **params: Any
    ) -> httpx.Response:
        return self.http.get(path, params=params, headers=headers or self.admin)

    def messages(self, path: str = "/api/v1/logs", **params: Any) -> list[str]:
        r = self.logs(path, **params)
        assert r.status_code == 200, r.text
        return [line["message"] for line in r.json()["logs"]]


@pytest.fixture
def api(tmp_path: Path, db_url: str) -> Iterator[Api]:
    server = Server(tmp_path / "fleet", db_url, tmp_path / "server.log")
    token = server.start(init=True)
    assert token is not None
    client = Api(server.url, token)
    try:
        yield client
    finally:
        client.http.close()
        server.stop()


def fill(api: Api) -> None:
    """dev-a: 8 lines, two of each level, a minute apart; dev-b: 2 lines."""
    a, b = api.enroll("dev-a"), api.enroll("dev-b")
    api.send_logs(
        a,
        [
            (T0 + timedelta(minutes=i), LEVELS[i % 4], f"a{i} {LEVELS[i % 4]} step")
            for i in range(8)
        ],
    )
    api.send_logs(
        b,
        [
            (T0, "error", "b0 Sensor FAULT 100% load"),
            (T0 + timedelta(minutes=1), "info", "b1 sensor ok_1"),
        ],
    )


def test_filters_select_exactly_the_matching_lines(api: Api) -> None:
    fill(api)
    dev_a = "/api/v1/devices/dev-a/logs"
    # Newest first by default; a device's endpoint holds only its lines.
    assert api.messages(dev_a) == [f"a{i} {LEVELS[i % 4]} step" for i in reversed(range(8))]
    # A level means that level and above.
    assert api.messages(dev_a, level="warning", order="oldest") == [
        "a2 warning step",
        "a3 error step",
        "a6 warning step",
        "a7 error step",
    ]
    assert api.messages(dev_a, level="error") == ["a7 error step", "a3 error step"]
    assert len(api.messages(dev_a, level="debug")) == 8
    # since is inclusive, until exclusive, on the line's own time.
    assert api.messages(
        dev_a, since=iso(T0 + timedelta(minutes=2)), until=iso(T0 + timedelta(minutes=5))
    ) == ["a4 debug step", "a3 error step", "a2 warning step"]
    # Text: any case; % and _ are literal characters, not wildcards.
    assert api.messages(q="sensor", order="oldest") == [
        "b0 Sensor FAULT 100% load",
        "b1 sensor ok_1",
    ]
    assert api.messages(q="100%") == ["b0 Sensor FAULT 100% load"]
    assert api.messages(q="ok_1") == ["b1 sensor ok_1"]
    assert api.messages(q="o%1") == []
    assert api.messages(q="k_") == ["b1 sensor ok_1"]
    # Fleet-wide: every device, or one, combined with the other filters.
    assert len(api.messages()) == 10
    assert api.messages(device="dev-b", level="error") == ["b0 Sensor FAULT 100% load"]
    r = api.logs(level="error", order="oldest")
    assert [(x["device_id"], x["level"]) for x in r.json()["logs"]] == [
        ("dev-a", "error"),
        ("dev-a", "error"),
        ("dev-b", "error"),
    ]
    line = r.json()["logs"][0]
    assert line["t"] == "2026-03-01T12:03:00Z" and isinstance(line["id"], int)


def test_paging_by_id_in_both_orders_has_no_gaps_or_repeats(api: Api) -> None:
    fill(api)
    for order, cursor in (("newest", "before_id"), ("oldest", "after_id")):
        seen: list[int] = []
        params: dict[str, Any] = {"order": order, "limit": 3}
        pages = 0
        while True:
            r = api.logs(**params)
            assert r.status_code == 200, r.text
            body = r.json()
            seen += [x["id"] for x in body["logs"]]
            pages += 1
            if body["next"] is None:
                break
            assert body["next"] == body["logs"][-1]["id"]
            params[cursor] = body["next"]
        assert len(seen) == len(set(seen)) == 10
        assert seen == sorted(seen, reverse=order == "newest")
        assert pages == 4  # 3 + 3 + 3 + 1


def test_bad_queries_are_refused_with_the_parameter_named(api: Api) -> None:
    fill(api)
    viewer = api.token("viewer")
    # Any role reads; no credential, no logs.
    assert api.logs(headers=viewer).status_code == 200
    assert api.logs("/api/v1/devices/dev-a/logs", headers=viewer).status_code == 200
    r = api.http.get("/api/v1/logs")
    assert r.status_code == 401
    r = api.logs("/api/v1/devices/nobody/logs")
    assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
    cases: list[tuple[dict[str, Any], str]] = [
        ({"level": "fatal"}, "level"),
        ({"since": "2026-03-01T12:00:00"}, "since"),  # no time zone
        ({"until": "yesterday"}, "until"),
        ({"q": "a\x00b"}, "q"),
        ({"q": "x" * 201}, "q"),
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"after_id": -1}, "after_id"),
        ({"order": "random"}, "order"),
        ({"device": "bad id"}, "device"),
        ({"since": iso(T0), "until": iso(T0)}, "until"),
    ]
    for params, field in cases:
        r = api.logs(**params)
        assert r.status_code == 422, (params, r.text)
        error = r.json()["error"]
        assert field in (error["field"] or "") or field in error["message"], (params, error)


def test_retention_limits_on_the_store(tmp_path: Path, db_url: str) -> None:
    from tinyops.fleet.store import Store
    from tinyops.fleet.store.logs import LogQuery, Retention

    store = Store(db_url, tmp_path / "data")
    store.migrate()
    try:
        now = datetime(2026, 6, 1, tzinfo=UTC)
        ids = ["old-timer", "chatty", "quiet"]
        _enroll(store, ids, now)
        store.add_telemetry(
            "old-timer",
            [],
            [(now - timedelta(days=d), "info", f"{d} days old") for d in (40, 31, 29, 1)],
        )
        store.add_telemetry(
            "chatty", [], [(now - timedelta(seconds=s), "info", f"c{s}") for s in range(12)]
        )
        store.add_telemetry("quiet", [], [(now, "info", "only line")])

        # Age only: the two lines older than 30 days go, nothing else.
        assert store.prune_logs(Retention(max_age_days=30, max_lines_per_device=None), now) == 2
        left = store.search_logs(LogQuery(device_id="old-timer", order="oldest"))
        assert [e.message for e in left] == ["29 days old", "1 days old"]
        # Lines per device: each keeps its newest (by storage order) 5.
        assert store.prune_logs(Retention(max_age_days=None, max_lines_per_device=5), now) == 7
        chatty = store.search_logs(LogQuery(device_id="chatty", order="oldest"))
        assert [e.message for e in chatty] == ["c7", "c8", "c9", "c10", "c11"]
        assert len(store.search_logs(LogQuery(device_id="old-timer"))) == 2
        assert len(store.search_logs(LogQuery(device_id="quiet"))) == 1
        # Already within limits: a second prune deletes nothing.
        assert store.prune_logs(Retention(max_age_days=30, max_lines_per_device=5), now) == 0
    finally:
        store.close()


def test_retention_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More lines than a batch: the prune loops until everything beyond the limit is gone."""
    from tinyops.fleet.store import Store, logs
    from tinyops.fleet.store.logs import LogQuery, Retention

    monkeypatch.setattr(logs, "PRUNE_BATCH", 4)
    store = Store(f"sqlite:///{tmp_path / 'fleet.db'}", tmp_path)
    store.migrate()
    try:
        now = datetime(2026, 6, 1, tzinfo=UTC)
        _enroll(store, ["d"], now)
        store.add_telemetry(
            "d", [], [(now - timedelta(days=40), "info", f"old{i}") for i in range(9)]
        )
        store.add_telemetry("d", [], [(now, "info", f"new{i}") for i in range(13)])
        assert store.prune_logs(Retention(max_age_days=30, max_lines_per_device=3), now) == 19
        kept = store.search_logs(LogQuery(device_id="d", order="oldest"))
        assert [e.message for e in kept] == ["new10", "new11", "new12"]
    finally:
        store.close()


def _enroll(store: Any, ids: list[str], now: datetime) -> None:
    from tinyops.fleet.store import NewDevice
    from tinyops.security.tokens import hash_token

    etk_hash = hash_token("etk_test")
    store.create_enrollment_token("lab", etk_hash, None, None, "token:admin", now)
    devices = [NewDevice(i, "nano33ble", hash_token(f"dev_{i}")) for i in ids]
    store.enroll_devices(enrollment_token_hash=etk_hash, devices=devices, now=now)


def test_server_prunes_logs_in_the_background(tmp_path: Path) -> None:
    server = Server(
        tmp_path / "fleet",
        None,
        tmp_path / "server.log",
        ["--log-max-lines", "3", "--log-prune-interval", "0.2"],
    )
    token = server.start(init=True)
    assert token is not None
    api = Api(server.url, token)
    try:
        device = api.enroll("dev-a")
        now = datetime.now(UTC)
        api.send_logs(device, [(now, "info", f"line {i}") for i in range(10)])
        deadline = time.monotonic() + PRUNE_DEADLINE_S
        while len(kept := api.messages(order="oldest")) > 3:
            assert time.monotonic() < deadline, (kept, (tmp_path / "server.log").read_text())
            time.sleep(0.1)
        assert kept == ["line 7", "line 8", "line 9"]
    finally:
        api.http.close()
        server.stop()
