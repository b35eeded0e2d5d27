"""The whole agent over HTTP against a real test server: updates, refusals, reverts, rollbacks,
resumed downloads, backoff, re-enrollment, remote-debug commands and telemetry."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from test_agent_support import (
    GOLDEN_INPUTS,
    GOLDEN_OUTPUTS,
    HARDWARE,
    NOW,
    RELEASE_KEY,
    SERVER_KEY,
    LiveServer,
    make_bundle,
    offer_for,
    serve_stub,
)

from tinyops.bundle.golden import GoldenVectors
from tinyops.errors import ProjectError, UsageError
from tinyops.fleet.agent.agent import Agent, AgentConfig, run_agent
from tinyops.fleet.agent.clock import ManualClock
from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.selftest import LiteRtSelfTest, SelfTest, SelfTestResult
from tinyops.fleet.agent.slots import DiskSlotStore, MemorySlotStore, SlotStore
from tinyops.fleet.agent.state import AgentState, SlotContent
from tinyops.security.rollback import sign_rollback_order
from tinyops.store.atomic import sha256_bytes

DEVICE = "pi-1"


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    with serve_stub() as server:
        yield server


class RecordingClock(ManualClock):
    """Virtual time that jumps forward on each sleep and remembers how long each was."""

    def __init__(self) -> None:
        super().__init__(NOW, auto_advance=True)
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        await super().sleep(seconds)


def new_agent(
    server: LiveServer,
    store: SlotStore,
    *,
    selftest: SelfTest | None = None,
    clock: ManualClock | None = None,
    seed: int = 0,
    **config: Any,
) -> Agent:
    return Agent(
        AgentConfig(hardware=HARDWARE, device_id=DEVICE, tags={"group": "lab"}, **config),
        transport=HttpTransport(server.url),
        store=store,
        clock=clock if clock is not None else ManualClock(NOW, auto_advance=True),
        selftest=selftest if selftest is not None else LiteRtSelfTest(),
        trusted_keys=[RELEASE_KEY.public_key()],
        enrollment_token=server.stub.enrollment_token,
        rng=random.Random(seed),
    )


def drive(agent: Agent, polls: int) -> None:
    async def main() -> None:
        try:
            await agent.run(max_polls=polls)
        finally:
            await agent.transport.aclose()

    asyncio.run(main())


def offer_update(
    server: LiveServer, path: Path, deployment_id: int, release_id: int, **extra: Any
) -> None:
    server.stub.artifacts[release_id] = path.read_bytes()
    server.stub.answers[DEVICE] = {
        "action": "update",
        "poll_interval_s": 60,
        "deployment_id": deployment_id,
        "release": offer_for(path, release_id),
        "rollback": None,
        "deadline": None,
        **extra,
    }


def preinstall(store: SlotStore, path: Path, version: str) -> None:
    """A device committed on the bundle at `path`, in slot a."""
    data = path.read_bytes()
    content = SlotContent(
        name="digits",
        version=version,
        target=HARDWARE,
        sha256=sha256_bytes(data),
        size=len(data),
        filename=path.name,
        installed_at=NOW - timedelta(days=30),
    )
    store.write_slot("a", content, data)
    store.save_state(AgentState(active="a", slots={"a": content}))


def state_of(store: SlotStore) -> AgentState:
    state = store.load_state()
    assert state is not None
    return state


def installed_version(store: SlotStore) -> str | None:
    installed = state_of(store).installed
    return installed.version if installed else None


FULL_UPDATE = ["downloading", "downloaded", "installing", "trial"]


def test_fresh_device_enrolls_installs_and_sends_telemetry(
    live_server: LiveServer, tmp_path: Path
) -> None:
    stub = live_server.stub
    offer_update(live_server, make_bundle(tmp_path / "r", "1.0.0"), 17, 1)
    store = DiskSlotStore(tmp_path / "device")
    drive(new_agent(live_server, store, telemetry_every_polls=2), polls=2)

    assert [e["device_id"] for e in stub.enrollments] == [DEVICE]
    assert stub.enrollments[0]["tags"] == {"group": "lab"}
    assert stub.statuses_of(17) == [*FULL_UPDATE, "success"]
    assert {body["version"] for _, body in stub.reports} == {"1.0.0"}
    first, second = stub.checkins
    assert first["installed"] is None
    assert second["installed"]["version"] == "1.0.0"
    assert second["slot"] == {"active": "a", "state": "committed"}
    state = state_of(store)
    assert (state.active, state.phase, state.outbox) == ("a", "committed", ())
    assert (tmp_path / "device" / "slots" / "a" / "digits-1.0.0-rpi4.tinybundle").is_file()
    assert not list((tmp_path / "device" / "downloads").iterdir())

    (batch,) = stub.telemetry
    metrics = [p["metric"] for p in batch["points"]]
    assert metrics.count("uptime_s") == 2 and metrics.count("resets_total") == 2
    # Latency is measured once a model is committed: after the first poll's install.
    assert metrics.count("inference_latency_ms") == 2
    messages = [line["message"] for line in batch["logs"]]
    assert any(m.startswith("committed slot a: digits 1.0.0") for m in messages)


def test_failed_self_test_reverts_to_the_previous_slot(
    live_server: LiveServer, tmp_path: Path
) -> None:
    store = DiskSlotStore(tmp_path / "device")
    preinstall(store, make_bundle(tmp_path / "r", "1.0.0"), "1.0.0")
    wrong = GoldenVectors(GOLDEN_INPUTS, GOLDEN_OUTPUTS + np.int8(3), (0.5, 0), (1.0, 0), 1)
    offer_update(live_server, make_bundle(tmp_path / "r", "1.1.0", golden=wrong), 18, 2)
    drive(new_agent(live_server, store), polls=2)

    stub = live_server.stub
    assert stub.statuses_of(18) == [*FULL_UPDATE, "failure"]
    reason = stub.reports[-1][1]["reason"]
    assert reason.startswith("self-test failed: 3/3 golden vectors off by more than 1")
    state = state_of(store)
    assert (state.active, state.phase) == ("a", "committed")
    assert state.installed is not None and state.installed.version == "1.0.0"
    assert stub.checkins[-1]["installed"]["version"] == "1.0.0"
    # The server still offers it: the device does not try again.
    assert len(stub.ranges) == 1


class DeviceCrash(Exception):
    """The release took the device down during its self-test."""


class CrashOn:
    """Crashes whenever the self-test of the bundle with sha256 `bad` runs."""

    def __init__(self, bad: str) -> None:
        self.bad = bad
        self.real = LiteRtSelfTest()

    async def run(self, sha256: str, files: Mapping[str, bytes]) -> SelfTestResult:
        if sha256 == self.bad:
            raise DeviceCrash(sha256)
        return await self.real.run(sha256, files)

    async def latency_ms(self, sha256: str, files: Mapping[str, bytes]) -> float | None:
        return await self.real.latency_ms(sha256, files)


def test_crash_loop_is_reverted_and_reported(live_server: LiveServer, tmp_path: Path) -> None:
    store = DiskSlotStore(tmp_path / "device")
    preinstall(store, make_bundle(tmp_path / "r", "1.0.0"), "1.0.0")
    bad = make_bundle(tmp_path / "r", "1.1.0")
    offer_update(live_server, bad, 19, 3)
    selftest = CrashOn(sha256_bytes(bad.read_bytes()))
    restarts = 0
    while True:
        try:
            drive(new_agent(live_server, store, selftest=selftest), polls=1)
            break
        except DeviceCrash:
            restarts += 1
    assert restarts == 3  # the install's self-test, then boots 2 and 3; boot 4 reverts
    stub = live_server.stub
    assert stub.statuses_of(19) == [*FULL_UPDATE, "failure"]
    assert stub.reports[-1][1]["reason"] == (
        "crash loop: 4 boots on trial without a commit (at most 3 allowed)"
    )
    state = state_of(store)
    assert state.installed is not None and state.installed.version == "1.0.0"
    assert state.resets_total == 3


def test_interrupted_download_resumes_with_range_after_a_restart(
    live_server: LiveServer, tmp_path: Path
) -> None:
    noise = np.random.default_rng(0).bytes(200_000)  # incompressible: the zip stays ~200 kB
    path = make_bundle(tmp_path / "r", "1.0.0", extra={"notes.bin": noise})
    offer_update(live_server, path, 20, 4)
    stub = live_server.stub
    stub.drop_after = [80_000]
    store = DiskSlotStore(tmp_path / "device")
    drive(new_agent(live_server, store, download_flush_bytes=16_384), polls=1)
    kept = store.partial_size(sha256_bytes(path.read_bytes()))
    assert 0 < kept <= 80_000
    assert stub.statuses_of(20) == ["downloading"]

    # The device restarts (a new agent on the same flash) and picks up where it stopped.
    drive(new_agent(live_server, store), polls=1)
    assert stub.ranges == [None, f"bytes={kept}-"]
    assert stub.statuses_of(20) == [*FULL_UPDATE, "success"]
    assert state_of(store).installed is not None


def signed_order(path: Path, deployment_id: int) -> dict[str, Any]:
    return sign_rollback_order(
        SERVER_KEY,
        {
            "device_id": DEVICE,
            "deployment_id": deployment_id,
            "sha256": sha256_bytes(path.read_bytes()),
            "version": "1.0.0",
            "issued_at": NOW,
            "expires_at": NOW + timedelta(hours=6),
        },
    )


def test_aborted_deployment_is_rolled_back_with_a_signed_order(
    live_server: LiveServer, tmp_path: Path
) -> None:
    store = DiskSlotStore(tmp_path / "device")
    older = make_bundle(tmp_path / "r", "1.0.0")
    preinstall(store, older, "1.0.0")
    offer_update(live_server, make_bundle(tmp_path / "r", "1.1.0"), 21, 5)
    drive(new_agent(live_server, store), polls=1)
    assert installed_version(store) == "1.1.0"

    # The server aborts deployment 21 and hands the device its previous release back.
    live_server.stub.abort(DEVICE, 21)
    offer_update(live_server, older, 21, 6, rollback=signed_order(older, 21))
    drive(new_agent(live_server, store), polls=2)
    stub = live_server.stub
    assert stub.statuses_of(21) == [*FULL_UPDATE, "success", "rolled-back"]
    state = state_of(store)
    assert (state.active, state.installed and state.installed.version) == ("a", "1.0.0")
    # The older release was still in slot a: nothing was downloaded for the rollback.
    assert stub.ranges == [None]


def test_rollback_to_the_running_release_reports_at_once(
    live_server: LiveServer, tmp_path: Path
) -> None:
    store = DiskSlotStore(tmp_path / "device")
    older = make_bundle(tmp_path / "r", "1.0.0")
    preinstall(store, older, "1.0.0")
    noise = np.random.default_rng(1).bytes(100_000)
    offer_update(live_server, make_bundle(tmp_path / "r", "1.1.0", extra={"n.bin": noise}), 25, 7)
    live_server.stub.drop_after = [10_000]
    drive(new_agent(live_server, store), polls=1)
    live_server.stub.abort(DEVICE, 25)
    offer_update(live_server, older, 25, 8, rollback=signed_order(older, 25))
    drive(new_agent(live_server, store), polls=1)
    assert live_server.stub.statuses_of(25) == ["downloading", "rolled-back"]
    state = state_of(store)
    assert (state.active, state.update, installed_version(store)) == ("a", None, "1.0.0")
    assert not list((tmp_path / "device" / "downloads").iterdir())


def test_downgrade_without_order_is_refused_before_download(
    live_server: LiveServer, tmp_path: Path
) -> None:
    store = DiskSlotStore(tmp_path / "device")
    preinstall(store, make_bundle(tmp_path / "r", "1.1.0"), "1.1.0")
    offer_update(live_server, make_bundle(tmp_path / "r", "1.0.0"), 22, 6)
    drive(new_agent(live_server, store), polls=1)
    stub = live_server.stub
    assert stub.statuses_of(22) == ["failure"]
    assert "1.0.0 is not newer than the installed 1.1.0" in stub.reports[-1][1]["reason"]
    assert stub.ranges == []


def test_corrupted_downloads_are_retried_then_reported(
    live_server: LiveServer, tmp_path: Path
) -> None:
    path = make_bundle(tmp_path / "r", "1.0.0")
    offer_update(live_server, path, 23, 7)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    live_server.stub.artifacts[7] = bytes(data)
    store = DiskSlotStore(tmp_path / "device")
    drive(new_agent(live_server, store), polls=1)
    stub = live_server.stub
    assert stub.statuses_of(23) == ["downloading", "failure"]
    assert "(attempt 3 of 3)" in stub.reports[-1][1]["reason"]
    assert stub.ranges == [None, None, None]
    assert state_of(store).active is None


def test_tampered_bundle_announced_by_its_own_hash_is_refused(
    live_server: LiveServer, tmp_path: Path
) -> None:
    store = DiskSlotStore(tmp_path / "device")
    preinstall(store, make_bundle(tmp_path / "r", "1.0.0"), "1.0.0")
    path = make_bundle(tmp_path / "r", "1.1.0")
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    offer_update(live_server, path, 24, 8)
    # A compromised server serves the altered file and announces its hash.
    live_server.stub.artifacts[8] = bytes(data)
    live_server.stub.answers[DEVICE]["release"]["sha256"] = sha256_bytes(bytes(data))
    drive(new_agent(live_server, store), polls=1)
    stub = live_server.stub
    assert stub.statuses_of(24) == ["downloading", "downloaded", "failure"]
    state = state_of(store)
    assert (state.active, sorted(state.slots)) == ("a", ["a"])


def test_backoff_on_errors_and_jitter_on_success(live_server: LiveServer, tmp_path: Path) -> None:
    live_server.stub.failures = [503, 503, 503, None, 503]
    clock = RecordingClock()
    drive(new_agent(live_server, DiskSlotStore(tmp_path), clock=clock, seed=5), polls=6)
    reference = random.Random(5)
    expected = [
        reference.uniform(0, 1),
        reference.uniform(0, 2),
        reference.uniform(0, 4),
        60 * reference.uniform(0.9, 1.1),
        reference.uniform(0, 1),  # reset by the success
    ]
    assert clock.sleeps == expected


def test_revoked_token_leads_to_a_new_enrollment(live_server: LiveServer, tmp_path: Path) -> None:
    store = DiskSlotStore(tmp_path)
    drive(new_agent(live_server, store), polls=1)
    live_server.stub.tokens.clear()
    drive(new_agent(live_server, store), polls=2)
    assert len(live_server.stub.enrollments) == 2
    assert len(live_server.stub.checkins) == 2
    identity = store.load_identity()
    assert identity is not None and identity.device_token in live_server.stub.tokens


def test_remote_debug_commands(live_server: LiveServer, tmp_path: Path) -> None:
    store = DiskSlotStore(tmp_path / "device")
    preinstall(store, make_bundle(tmp_path / "r", "1.0.0"), "1.0.0")
    live_server.stub.commands[DEVICE] = [
        {"id": 1, "kind": "fetch_logs", "args": {"lines": 2}},
        {"id": 2, "kind": "run_self_test", "args": {}},
        {"id": 3, "kind": "report_inventory", "args": {}},
        {"id": 4, "kind": "set_log_level", "args": {"level": "debug"}},
        {"id": 5, "kind": "set_log_level", "args": {"level": "loud"}},
        {"id": 6, "kind": "format_disk", "args": {}},
        {"id": 7, "kind": "reboot", "args": {}},
    ]
    drive(new_agent(live_server, store), polls=2)
    results = dict(live_server.stub.results)
    assert sorted(results) == [1, 2, 3, 4, 5, 6, 7]
    lines = results[1]["output"]["lines"]
    assert [line["message"] for line in lines] == ["enrolled as pi-1", "command 1: fetch_logs"]
    assert results[2]["ok"] and results[2]["output"]["passed"]
    assert results[2]["output"]["vectors"] == 3
    inventory = results[3]["output"]
    assert inventory["hardware"] == HARDWARE
    assert inventory["installed"]["version"] == "1.0.0"
    assert inventory["slots"]["a"]["version"] == "1.0.0" and inventory["slots"]["b"] is None
    assert inventory["agent_version"] == "0.1.0"
    assert results[4] == {"ok": True, "output": {"previous": "info", "level": "debug"}}
    assert not results[5]["ok"] and "level must be one of" in results[5]["output"]["error"]
    assert (
        not results[6]["ok"]
        and "unknown command kind 'format_disk'" in results[6]["output"]["error"]
    )
    assert results[7] == {"ok": True, "output": {"rebooting": True}}
    state = state_of(store)
    # The reboot is a boot: two in all; the log level survived it.
    assert (state.boots, state.resets_total, state.log_level) == (2, 1, "debug")


def test_memory_store_device_updates_like_a_disk_one(
    live_server: LiveServer, tmp_path: Path
) -> None:
    offer_update(live_server, make_bundle(tmp_path / "r", "1.0.0"), 26, 9)
    store = MemorySlotStore()
    drive(new_agent(live_server, store), polls=1)
    assert live_server.stub.statuses_of(26) == [*FULL_UPDATE, "success"]
    assert installed_version(store) == "1.0.0"


def test_run_agent_uses_pem_keys_and_the_data_dir(live_server: LiveServer, tmp_path: Path) -> None:
    pem = tmp_path / "release.pub"
    pem.write_bytes(
        RELEASE_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    # Bundles made for the real clock: created an hour ago, valid for a year.
    now = datetime.now(UTC).replace(microsecond=0)
    bundle = make_bundle(tmp_path / "r", "1.0.0", created_at=now - timedelta(hours=1))
    offer_update(live_server, bundle, 27, 10)
    data_dir = tmp_path / "device"
    run_agent(
        live_server.url,
        live_server.stub.enrollment_token,
        data_dir,
        HARDWARE,
        DEVICE,
        {"group": "lab"},
        trusted_keys=[pem],
        max_polls=1,
    )
    assert live_server.stub.statuses_of(27) == [*FULL_UPDATE, "success"]
    assert installed_version(DiskSlotStore(data_dir)) == "1.0.0"
    with pytest.raises(ProjectError, match="unknown board 'toaster'"):
        run_agent(live_server.url, None, data_dir, "toaster", trusted_keys=[pem], max_polls=1)
    with pytest.raises(UsageError, match="at least one trusted release key"):
        run_agent(live_server.url, None, data_dir, HARDWARE, trusted_keys=[], max_polls=1)
