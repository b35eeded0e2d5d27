"""The server's hot paths: the check-in and telemetry fast path, group-committed telemetry,
and the shared objects of the in-memory device directory.

The fast path validates with exact subsets of the request models, and declines whatever
it does not cover so that the models decide. The property tests below hold it to that:
for any body, either the fast path declines, or the model accepts the body too and
yields exactly the same values. The HTTP tests then check that a request answered by the
fast path and one that went through the model are indistinguishable from outside.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyops.fleet.server.device_service import (
    UNREPORTED,
    CheckinParts,
    fast_checkin,
    fast_telemetry,
)
from tinyops.fleet.server.models import CheckinRequest, TelemetryRequest
from tinyops.fleet.server.runtime import DeviceDirectory, TelemetryWriter
from tinyops.fleet.store import (
    DeviceCredential,
    Installed,
    LogRow,
    PointRow,
    PreparedRows,
)

pytestmark = pytest.mark.anyio

PLAIN_CHECKIN = {
    "installed": {"name": "kws", "version": "1.0.0", "sha256": "ab" * 32},
    "slot": {"active": "a", "state": "committed"},
    "health": {"uptime_s": 3600, "resets": 0, "free_memory_bytes": 81234},
}


# --- the fast path's validation against the models -------------------------------------------


def model_checkin(data: Any) -> CheckinParts:
    """What `DeviceService.checkin` derives from a body the model accepted."""
    body = CheckinRequest.model_validate(data)
    installed: Any = UNREPORTED
    if "installed" in body.model_fields_set:
        installed = (
            None
            if body.installed is None
            else Installed(body.installed.name, body.installed.version, body.installed.sha256)
        )
    return (
        installed,
        None if body.health is None else body.health.model_dump(),
        None if body.slot is None else body.slot.model_dump(),
    )


def test_plain_checkins_take_the_fast_path() -> None:
    assert fast_checkin(PLAIN_CHECKIN) == (
        Installed("kws", "1.0.0", "ab" * 32),
        {"uptime_s": 3600, "resets": 0, "free_memory_bytes": 81234},
        {"active": "a", "state": "committed"},
    )
    assert fast_checkin({}) == (UNREPORTED, None, None)
    assert fast_checkin({"installed": None, "slot": {"active": None, "state": "trial"}}) == (
        None,
        None,
        {"active": None, "state": "trial"},
    )
    assert fast_checkin({"health": {"uptime_s": 1, "resets": 2}}) == (
        UNREPORTED,
        {"uptime_s": 1, "resets": 2, "free_memory_bytes": None},
        None,
    )


@pytest.mark.parametrize(
    "body",
    [
        # Valid, but only after the model's coercion: the model must take them.
        {"health": {"uptime_s": 3600.0, "resets": 0}},
        {"health": {"uptime_s": "3600", "resets": 0}},
        {"health": {"uptime_s": True, "resets": 0}},
        # Invalid: the model explains.
        {"health": {"uptime_s": -1, "resets": 0}},
        {"health": {"uptime_s": 2**53 + 1, "resets": 0}},
        {"health": {"resets": 0}},
        {"installed": {"name": "kws\n", "version": "1.0.0"}},
        {"installed": {"name": "kws", "version": "1.0.0", "sha256": "AB" * 32}},
        {"installed": {"name": "kws", "version": ""}},
        {"slot": {"active": "a"}},
        {"slot": {"active": "c", "state": "trial"}},
        {"uptime": 3},
        [],
        None,
    ],
)
def test_unusual_checkins_are_left_to_the_model(body: Any) -> None:
    assert fast_checkin(body) is None


def mostly(valid: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`valid` nine times in ten, else `odd`: bodies that are valid but for a detail or
    two, where a too lenient fast path would show."""
    return st.integers(min_value=0, max_value=9).flatmap(lambda n: odd if n == 0 else valid)


def dicts(
    required: dict[str, st.SearchStrategy[Any]], extra: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[Any]:
    """Dicts with the `required` keys, sometimes one missing, sometimes an `extra` key."""
    whole = st.fixed_dictionaries(required)
    missing = [
        st.fixed_dictionaries({k: v for k, v in required.items() if k != key}) for key in required
    ]
    odd = st.one_of(*missing, st.fixed_dictionaries(required, optional=extra))
    return mostly(whole, odd)


_counters = mostly(
    st.integers(min_value=0, max_value=2**53),
    st.one_of(
        st.sampled_from([-1, 2**53 + 1, 3600.0, 1.5, True, "7", None]),
        st.floats(allow_nan=True, allow_infinity=True),
    ),
)
_names = mostly(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True),
    st.one_of(
        st.sampled_from(["kws\n", "", "-kws", "é", "k" * 65]), st.text(max_size=4), st.integers()
    ),
)
_versions = mostly(
    st.from_regex(r"[0-9A-Za-z.+-]{1,128}", fullmatch=True),
    st.sampled_from(["", "1 0", "v" * 129, "1.0\n", 1]),
)
_sha = mostly(
    st.one_of(st.none(), st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
    st.sampled_from(["AB" * 32, "a" * 63, "g" * 64, 7]),
)
_installed = mostly(
    st.one_of(st.none(), dicts({"name": _names, "version": _versions}, {"sha256": _sha})),
    st.sampled_from([1, "kws", []]),
)
_slot = mostly(
    st.one_of(
        st.none(),
        dicts(
            {
                "active": mostly(
                    st.sampled_from(["a", "b", None]), st.sampled_from(["c", 1, ["a"]])
                ),
                "state": mostly(
                    st.sampled_from(["committed", "trial"]), st.sampled_from(["x", None])
                ),
            },
            {"extra": st.none()},
        ),
    ),
    st.text(max_size=2),
)
_health = mostly(
    st.one_of(
        st.none(),
        dicts(
            {"uptime_s": _counters, "resets": _counters},
            {"free_memory_bytes": _counters, "temperature": _counters},
        ),
    ),
    st.lists(st.integers(), max_size=1),
)
_checkins = mostly(
    st.fixed_dictionaries({}, optional={"installed": _installed, "slot": _slot, "health": _health}),
    st.one_of(
        st.fixed_dictionaries({"bogus": st.none()}, optional={"health": _health}),
        st.none(),
        st.lists(st.none(), max_size=1),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_checkins)
def test_fast_checkin_accepts_only_what_the_model_accepts_alike(data: Any) -> None:
    parts = fast_checkin(data)
    if parts is not None:
        assert parts == model_checkin(data)


_times = mostly(
    st.datetimes(
        min_value=datetime(1970, 1, 2),
        max_value=datetime(8999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
        ),
    ).map(lambda moment: moment.isoformat().replace("+00:00", "Z")),
    st.one_of(
        st.sampled_from(
            [
                "2026-11-27T10:00:00.1234567Z",
                "2026-11-27 10:00:00Z",
                "2026-11-27t10:00:00z",
                "2026-11-27T10:00:00",
                "2026-11-27T24:00:00Z",
                "2026-11-27T10:00:60Z",
                "2026-02-30T10:00:00Z",
                "1969-12-31T23:59:59Z",
                "1970-01-01T00:30:00+01:00",
                "9000-01-01T00:00:00Z",
                "9000-01-01T00:00:00-00:01",
                "9999-12-31T23:59:59-14:00",
                "2026-11-27T10:00:00+24:00",
            ]
        ),
        st.integers(min_value=0, max_value=2_000_000_000),
        st.text(max_size=3),
    ),
)
_values = mostly(
    st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**53), 2**53)),
    st.one_of(
        st.sampled_from([float("nan"), float("inf"), 2**53 + 1, -(2**60), True, "3.4", "x", None])
    ),
)
_points = dicts(
    {
        "t": _times,
        "metric": mostly(
            st.sampled_from(["inference_latency_ms", "battery_v", "uptime_s"]),
            st.sampled_from(["joy", 3]),
        ),
        "value": _values,
    },
    {"extra": st.none()},
)
_messages = mostly(
    st.text(st.characters(blacklist_categories=["Cc", "Cs"]), max_size=8),
    st.sampled_from(["tab\tok", "nul\x00", "esc\x1b", "lone \ud800", "x" * 4097, "x" * 4096, 5]),
)
_lines = dicts(
    {
        "t": _times,
        "level": mostly(st.sampled_from(["info", "error"]), st.sampled_from(["fatal", None])),
        "message": _messages,
    },
    {"extra": st.none()},
)
_telemetry = mostly(
    st.fixed_dictionaries(
        {}, optional={"points": st.lists(_points, max_size=3), "logs": st.lists(_lines, max_size=2)}
    ),
    st.one_of(
        st.fixed_dictionaries({"points": st.sampled_from([None, 3, {}])}),
        st.fixed_dictionaries({"bogus": st.none()}),
        st.none(),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_telemetry)
def test_fast_telemetry_accepts_only_what_the_model_accepts_alike(data: Any) -> None:
    rows = fast_telemetry("nano-1", data)
    if rows is None:
        return
    body = TelemetryRequest.model_validate(data)
    points, logs = rows
    assert points == [("nano-1", p.t, p.metric, p.value) for p in body.points]
    assert logs == [("nano-1", line.t, line.level, line.message) for line in body.logs]
    assert all(type(p[3]) is float and p[1].tzinfo is UTC for p in points)


def test_plain_telemetry_takes_the_fast_path() -> None:
    rows = fast_telemetry(
        "nano-1",
        {
            "points": [{"t": "2026-11-27T11:00:00.25+01:00", "metric": "battery_v", "value": 3}],
            "logs": [{"t": "2026-11-27T10:00:00Z", "level": "info", "message": "tab\tok"}],
        },
    )
    assert rows == (
        [("nano-1", datetime(2026, 11, 27, 10, 0, 0, 250000, tzinfo=UTC), "battery_v", 3.0)],
        [("nano-1", datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC), "info", "tab\tok")],
    )


# --- over HTTP: the fast path and the routes answer alike ---------------------------------------


async def test_checkins_answer_the_same_with_and_without_the_fast_path(fleet: Any) -> None:
    fast = await fleet.enroll("nano-fast", installed={"name": "kws", "version": "1.0.0"})
    slow = await fleet.enroll("nano-slow", installed={"name": "kws", "version": "1.0.0"})
    plain = {k: v for k, v in PLAIN_CHECKIN.items() if k != "installed"}
    # Floats where ints are due: valid, but only the model coerces them.
    coerced = {**plain, "health": {"uptime_s": 3600.0, "resets": 0.0, "free_memory_bytes": 81234}}
    assert fast_checkin(plain) is not None and fast_checkin(coerced) is None
    answers = []
    for device, body in ((fast, plain), (slow, coerced)):
        r = await fleet.client.post(
            "/api/v1/device/checkin",
            json=body,
            headers={"Authorization": device["Authorization"]},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        answers.append(r.content)
    assert answers[0] == answers[1]
    assert answers[0] == (
        b'{"action":"none","poll_interval_s":300.0,"deployment_id":null,"release":null,'
        b'"rollback":null,"deadline":null}'
    )
    await fleet.runtime.flush()
    stored = [fleet.runtime.store.get_device(d) for d in ("nano-fast", "nano-slow")]
    assert stored[0].health == stored[1].health == plain["health"]
    assert stored[0].slot == stored[1].slot == plain["slot"]
    # Declined requests still get the routes' errors.
    bad = await fleet.client.post(
        "/api/v1/device/checkin",
        json={**plain, "health": {"uptime_s": -1, "resets": 0}},
        headers={"Authorization": fast["Authorization"]},
    )
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "health.uptime_s"
    anonymous = await fleet.client.post("/api/v1/device/checkin", json=plain)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"


async def test_concurrent_telemetry_is_stored_once_answered(fleet: Any) -> None:
    devices = [await fleet.enroll(f"nano-{i}") for i in range(4)]
    points = [
        {"t": f"2026-11-27T10:00:{s:02d}Z", "metric": "temperature_c", "value": 20 + s}
        for s in range(50)
    ]

    async def send(i: int) -> Any:
        auth = {"Authorization": devices[i % 4]["Authorization"]}
        return await fleet.client.post(
            "/api/v1/device/telemetry", json={"points": points}, headers=auth
        )

    answers = await asyncio.gather(*(send(i) for i in range(20)))
    assert [(r.status_code, r.json()) for r in answers] == [(202, {"accepted": 50, "logs": 0})] * 20
    # 202 means committed: every point is readable at once.
    for i in range(4):
        stored = fleet.runtime.store.telemetry(f"nano-{i}", "temperature_c", limit=1000)
        assert len(stored) == 5 * 50 and stored[0].value == 69.0
    registry = fleet.runtime.metrics.registry
    assert registry.get_sample_value("tinyops_telemetry_points_total") == 1000
    # A string number is valid for the model only; it is stored all the same.
    coerced = await fleet.client.post(
        "/api/v1/device/telemetry",
        json={"points": [{"t": "2026-11-27T11:00:00Z", "metric": "battery_v", "value": "3.4"}]},
        headers={"Authorization": devices[0]["Authorization"]},
    )
    assert coerced.status_code == 202
    assert fleet.runtime.store.telemetry("nano-0", "battery_v")[0].value == 3.4


# --- group commit ------------------------------------------------------------------------------


class GatedStore:
    """A stand-in for `Store`'s two telemetry methods: each write waits for a gate, so a
    test can hold a write in progress, and can be told to fail."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.writing = threading.Event()
        self.fail = False
        self.batches: list[list[Any]] = []
        self.in_progress = 0

    def prepare_points(self, points: list[PointRow]) -> PreparedRows:
        return PreparedRows(len(points), list(points))

    def prepare_logs(self, logs: list[LogRow]) -> PreparedRows:
        return PreparedRows(len(logs), list(logs))

    def write_telemetry(self, points: PreparedRows, logs: PreparedRows) -> tuple[int, int]:
        self.in_progress += 1
        self.writing.set()
        assert self.gate.wait(30)
        if self.fail:
            raise RuntimeError("disk full")
        self.batches.append(points.data + logs.data)
        return points.count, logs.count


def _point(device: str, second: int) -> PointRow:
    return (device, datetime(2026, 11, 27, 10, 0, second, tzinfo=UTC), "uptime_s", float(second))


async def _until(condition: Any) -> None:
    """Yield to other tasks and threads until `condition()` holds (bounded)."""
    for _ in range(100_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_requests_arriving_during_a_write_share_the_next_one() -> None:
    store = GatedStore()
    written: list[tuple[int, int]] = []
    writer = TelemetryWriter(store, lambda p, n: written.append((p, n)))  # type: ignore[arg-type]
    first = asyncio.create_task(writer.write([_point("a", 1)], []))
    await _until(store.writing.is_set)
    later = [
        asyncio.create_task(writer.write([_point("b", 2)], [])),
        asyncio.create_task(
            writer.write([_point("c", 3)], [("c", _point("c", 3)[1], "info", "hi")])
        ),
    ]
    await _until(lambda: len(writer) == 2)
    store.gate.set()
    await asyncio.gather(first, *later)
    assert [[row[0] for row in batch] for batch in store.batches] == [["a"], ["b", "c", "c"]]
    assert written == [(1, 0), (2, 1)]

    # A failed write fails each request of its batch, and only those.
    store.fail = True
    failing = [asyncio.create_task(writer.write([_point(d, 4)], [])) for d in ("d", "e")]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]
    store.fail = False
    await writer.write([_point("f", 5)], [])
    await writer.wait_idle()
    assert [row[0] for row in store.batches[-1]] == ["f"] and len(store.batches) == 3


async def test_two_writers_write_two_batches_at_once_and_group_the_rest() -> None:
    store = GatedStore()
    writer = TelemetryWriter(store, lambda p, n: None, writers=2)  # type: ignore[arg-type]
    first = asyncio.create_task(writer.write([_point("a", 1)], []))
    await _until(lambda: store.in_progress == 1)
    # The first write is held: a second request gets the second writer at once ...
    second = asyncio.create_task(writer.write([_point("b", 2)], []))
    await _until(lambda: store.in_progress == 2)
    # ... and with both busy, the next ones share the batch the first free writer takes.
    later = [asyncio.create_task(writer.write([_point(d, 3)], [])) for d in ("c", "d")]
    await _until(lambda: len(writer) == 2)
    store.gate.set()
    await asyncio.gather(first, second, *later)
    await writer.wait_idle()
    batches = sorted(sorted(row[0] for row in batch) for batch in store.batches)
    assert batches == [["a"], ["b"], ["c", "d"]]
    # Idle again: a new request starts a writer of its own and is written.
    await writer.write([_point("e", 4)], [])
    assert sorted(row[0] for row in store.batches[-1]) == ["e"]
    with pytest.raises(ValueError, match="writers"):
        TelemetryWriter(store, lambda p, n: None, writers=0)  # type: ignore[arg-type]


# --- the device directory ----------------------------------------------------------------------


def test_directory_shares_equal_releases_and_hardware() -> None:
    directory = DeviceDirectory()
    board = "".join(["nano", "33ble"])  # an equal string that is another object
    directory.load([DeviceCredential("a", "h" * 64, "nano33ble", Installed("kws", "1.0.0"))])
    directory.put(DeviceCredential("b", "i" * 64, board, Installed("kws", "1.0.0")))
    a, b = directory.lookup("h" * 64), directory.lookup("i" * 64)
    assert a is not None and b is not None
    assert a.installed is b.installed and a.hardware is b.hardware
    directory.set_installed("a", Installed("kws", "1.1.0"))
    directory.set_installed("b", Installed("kws", "1.1.0"))
    a, b = directory.lookup("h" * 64), directory.lookup("i" * 64)
    assert a is not None and b is not None and a.installed is b.installed
    assert a.installed == Installed("kws", "1.1.0")
    # A new token replaces the old one at once; removal forgets the device.
    directory.put(DeviceCredential("a", "j" * 64, "nano33ble", None))
    assert directory.lookup("h" * 64) is None and len(directory) == 2
    directory.remove("a")
    assert directory.lookup("j" * 64) is None and len(directory) == 1
