"""The store's bulk paths, below the ORM: bulk enrollment, check-in writes, telemetry.

Every test runs on SQLite and on PostgreSQL (`db_url`): the two databases take these
rows in different forms (multi-row statements with SQLite's time text, COPY text on
PostgreSQL), and what is read back through the ORM must be the same on both, to the
microsecond and the character.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tinyops.fleet.store import (
    CheckinWrite,
    Conflict,
    Installed,
    NewDevice,
    Store,
    Unauthorized,
)
from tinyops.security.audit import AuditAction
from tinyops.security.tokens import new_token

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
KWS = Installed("kws", "1.0.0", None)


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(db_url, tmp_path / "data")
    s.migrate()
    yield s
    s.close()


def _etk(store: Store, max_uses: int | None = None) -> str:
    _token, digest = new_token("etk_")
    store.create_enrollment_token("factory", digest, None, max_uses, "token:admin", T0)
    return digest


def _devices(count: int, installed: Installed | None = KWS) -> list[NewDevice]:
    return [
        NewDevice(f"bulk-{i:04d}", "nano33ble", new_token("dev_")[1], {"group": "lab"}, installed)
        for i in range(count)
    ]


def test_bulk_enrollment_writes_devices_history_and_audit(store: Store) -> None:
    etk = _etk(store, max_uses=5)
    devices = [*_devices(3), NewDevice("bulk-bare", "rpi4", new_token("dev_")[1])]
    assert store.enroll_devices(enrollment_token_hash=etk, devices=devices, now=T0) == 4

    record = store.get_device("bulk-0001")
    assert (record.hardware, record.tags, record.status) == (
        "nano33ble",
        {"group": "lab"},
        "active",
    )
    assert record.installed == KWS and record.enrolled_at == T0
    assert [h.event for h in store.device_history("bulk-0001")] == ["enrolled"]
    assert store.device_history("bulk-bare") == []
    credentials = {c.device_id: c.token_hash for c in store.device_credentials()}
    assert credentials == {d.device_id: d.token_hash for d in devices}
    audit = store.audit_log(action=AuditAction.DEVICE_ENROLL.value)
    assert sorted(a.target for a in audit) == sorted(f"device:{d.device_id}" for d in devices)
    assert audit[0].after is not None and audit[0].after["enrollment_token"] == "factory"

    # One use left: two more devices exceed the token, and nothing is enrolled.
    with pytest.raises(Unauthorized, match="1 uses left"):
        store.enroll_devices(
            enrollment_token_hash=etk, devices=_devices(6)[4:], now=T0 + timedelta(seconds=1)
        )
    with pytest.raises(Conflict, match="bulk-0002"):
        store.enroll_devices(enrollment_token_hash=etk, devices=_devices(3)[2:], now=T0)
    with pytest.raises(Conflict, match="repeat"):
        store.enroll_devices(enrollment_token_hash=etk, devices=_devices(1) * 2, now=T0)
    with pytest.raises(Unauthorized):
        store.enroll_devices(enrollment_token_hash="0" * 64, devices=_devices(1), now=T0)
    assert len(store.device_credentials()) == 4


def test_credentials_share_equal_hardware_and_releases(store: Store) -> None:
    etk = _etk(store)
    store.enroll_devices(enrollment_token_hash=etk, devices=_devices(3), now=T0)
    first, second, third = sorted(store.device_credentials(), key=lambda c: c.device_id)
    assert first.installed == KWS
    assert first.installed is second.installed is third.installed
    assert first.hardware is second.hardware


def test_checkin_writes_round_trip_exactly(store: Store) -> None:
    etk = _etk(store)
    store.enroll_devices(enrollment_token_hash=etk, devices=_devices(3), now=T0)
    # Microseconds, an offset other than UTC, and JSON text with the characters COPY's
    # text format must escape (backslash, tab, newline).
    at = datetime(2026, 11, 27, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    odd = {"uptime_s": 7, "note": "back\\slash\ttab\nnewline \u00e9"}
    store.record_checkins(
        [
            CheckinWrite("bulk-0000", at, odd, {"active": "b", "state": "trial"}),
            CheckinWrite("bulk-0001", T0, None, None),
        ]
    )
    updated = store.get_device("bulk-0000")
    assert updated.last_seen == at.astimezone(UTC)
    assert updated.health == odd and updated.slot == {"active": "b", "state": "trial"}
    untouched = store.get_device("bulk-0001")
    assert (untouched.last_seen, untouched.health, untouched.slot) == (T0, None, None)
    assert store.get_device("bulk-0002").last_seen is None
    # Prepared in slices and written at once: what the server's flush does.
    rows = store.prepare_checkins([CheckinWrite("bulk-0002", T0, {"uptime_s": 1}, None)])
    rows.add(store.prepare_checkins([CheckinWrite("bulk-0001", at, {"uptime_s": 2}, None)]))
    store.write_checkins(rows)
    assert store.get_device("bulk-0002").health == {"uptime_s": 1}
    assert store.get_device("bulk-0001").last_seen == at.astimezone(UTC)


def test_telemetry_of_many_devices_in_one_transaction(store: Store) -> None:
    etk = _etk(store)
    store.enroll_devices(enrollment_token_hash=etk, devices=_devices(2), now=T0)
    at = datetime(2026, 11, 27, 11, 0, 0, 250000, tzinfo=timezone(timedelta(hours=1)))
    # More points than one SQLite statement takes (SQLITE_CHUNK_ROWS): the remainder
    # goes in a second statement.
    points = [
        ("bulk-0000", T0 + timedelta(seconds=i), "temperature_c", 20.0 + i) for i in range(2500)
    ]
    points.append(("bulk-0001", at, "battery_v", 3.25))
    logs = [("bulk-0001", at, "warning", "tab\there\\ and a\nnewline")]
    assert store.ingest_telemetry(points, logs) == (2501, 1)
    newest = store.telemetry("bulk-0000", "temperature_c", limit=2)
    assert [(p.t, p.value) for p in newest] == [
        (T0 + timedelta(seconds=2499), 2519.0),
        (T0 + timedelta(seconds=2498), 2518.0),
    ]
    (battery,) = store.telemetry("bulk-0001")
    assert (battery.t, battery.metric, battery.value) == (at.astimezone(UTC), "battery_v", 3.25)
    (line,) = store.device_logs("bulk-0001")
    assert (line.t, line.level, line.message) == (
        datetime(2026, 11, 27, 10, 0, 0, 250000, tzinfo=UTC),
        "warning",
        "tab\there\\ and a\nnewline",
    )
    assert store.ingest_telemetry([], []) == (0, 0)


def test_bulk_writes_refuse_naive_times(store: Store) -> None:
    naive = datetime(2026, 11, 27, 10, 0, 0)
    with pytest.raises(ValueError, match="naive"):
        store.prepare_points([("bulk-0000", naive, "uptime_s", 1.0)])
    with pytest.raises(ValueError, match="naive"):
        store.prepare_checkins([CheckinWrite("bulk-0000", naive, None, None)])
