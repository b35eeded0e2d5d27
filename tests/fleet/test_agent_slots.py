"""Slot stores (disk and memory, same test bodies) and crash-loop reverts through `Agent.boot`."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from test_agent_support import HARDWARE, NOW, RELEASE_KEY, make_bundle, offer_for

from tinyops.errors import StoreError
from tinyops.fleet.agent.agent import Agent, AgentConfig
from tinyops.fleet.agent.clock import ManualClock
from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.messages import ReleaseOffer
from tinyops.fleet.agent.selftest import LiteRtSelfTest, SelfTest, SelfTestResult
from tinyops.fleet.agent.slots import DiskSlotStore, MemorySlotStore, SlotStore
from tinyops.fleet.agent.state import (
    AgentState,
    Identity,
    SlotContent,
    begin_update,
    enter_trial,
    record_slot,
)
from tinyops.store.atomic import sha256_bytes

# Connections to the discard port of loopback are refused at once: a server that is down.
UNREACHABLE = "http://127.0.0.1:9"
STORES = ["disk", "memory"]


@pytest.fixture(params=STORES)
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SlotStore]:
    """Returns the device's store as found after a restart (a new object on the same flash)."""
    memory = MemorySlotStore()

    def again() -> SlotStore:
        return DiskSlotStore(tmp_path / "device") if request.param == "disk" else memory

    return again


def content_of(path: Path, version: str) -> SlotContent:
    data = path.read_bytes()
    return SlotContent(
        name="digits",
        version=version,
        target=HARDWARE,
        sha256=sha256_bytes(data),
        size=len(data),
        filename=path.name,
        installed_at=NOW,
    )


def test_fresh_store_is_empty(reopen: Callable[[], SlotStore]) -> None:
    store = reopen()
    assert store.load_state() is None
    assert store.load_identity() is None
    assert store.partial_size("0" * 64) == 0


def test_state_and_identity_survive_a_restart(reopen: Callable[[], SlotStore]) -> None:
    state = AgentState(boots=3, log_level="debug")
    identity = Identity(
        device_id="pi-1", device_token="dev_" + "x" * 43, server_key="k", poll_interval_s=60
    )
    store = reopen()
    store.save_state(state)
    store.save_identity(identity)
    again = reopen()
    assert again.load_state() == state
    assert again.load_identity() == identity
    again.save_identity(None)
    assert reopen().load_identity() is None


def test_slots_hold_verified_bytes(reopen: Callable[[], SlotStore], tmp_path: Path) -> None:
    v1 = make_bundle(tmp_path / "b", "1.0.0")
    v2 = make_bundle(tmp_path / "b", "1.1.0")
    store = reopen()
    store.write_slot("a", content_of(v1, "1.0.0"), v1.read_bytes())
    store.write_slot("b", content_of(v2, "1.1.0"), v2.read_bytes())
    assert reopen().read_slot("a", content_of(v1, "1.0.0")) == v1.read_bytes()
    # Replacing slot b leaves only the new bundle there.
    store.write_slot("b", content_of(v1, "1.0.0"), v1.read_bytes())
    assert reopen().read_slot("b", content_of(v1, "1.0.0")) == v1.read_bytes()
    with pytest.raises(StoreError):
        reopen().read_slot("b", content_of(v2, "1.1.0"))
    # Bytes that do not match the description are never written.
    with pytest.raises(StoreError, match="the slot is damaged"):
        store.write_slot("a", content_of(v1, "1.0.0"), v2.read_bytes())


def test_partial_downloads_resume_from_their_kept_size(reopen: Callable[[], SlotStore]) -> None:
    sha, other = "1" * 64, "2" * 64
    store = reopen()
    store.append_partial(sha, b"abc")
    store.append_partial(sha, b"")
    store.append_partial(sha, b"defg")
    store.append_partial(other, b"zz")
    again = reopen()
    assert (again.partial_size(sha), again.read_partial(sha)) == (7, b"abcdefg")
    again.discard_partials(keep=sha)
    assert (again.partial_size(sha), again.partial_size(other)) == (7, 0)
    again.discard_partials()
    assert reopen().read_partial(sha) == b""


def test_disk_state_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DiskSlotStore(tmp_path)
    committed = AgentState(boots=1)
    store.save_state(committed)
    # A writer that died mid-write leaves a temp file behind; it is never read.
    (tmp_path / ".state.json.dead.tmp").write_text('{"format": "tinyops.agent-st')

    # A crash between writing the temp file and renaming it over state.json.
    def power_loss(src: str, dst: str) -> None:
        raise OSError("power lost")

    monkeypatch.setattr(os, "replace", power_loss)
    with pytest.raises(OSError, match="power lost"):
        store.save_state(AgentState(boots=2))
    monkeypatch.undo()
    assert DiskSlotStore(tmp_path).load_state() == committed
    # The failed write cleaned up its own temp file; only the dead writer's remains.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".state.json.dead.tmp", "state.json"]


def test_disk_damaged_state_is_named(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text('{"boots": -1}')
    with pytest.raises(StoreError, match=r"state\.json: not a valid agent state\.json \(boots"):
        DiskSlotStore(tmp_path).load_state()


def test_disk_identity_is_owner_only(tmp_path: Path) -> None:
    identity = Identity(
        device_id="pi-1", device_token="dev_" + "x" * 43, server_key="k", poll_interval_s=60
    )
    DiskSlotStore(tmp_path).save_identity(identity)
    assert stat.S_IMODE((tmp_path / "identity.json").stat().st_mode) == 0o600


def test_disk_partial_stops_at_a_gap(tmp_path: Path) -> None:
    store = DiskSlotStore(tmp_path)
    sha = "3" * 64
    store.append_partial(sha, b"0123")
    # A chunk that does not follow on (its predecessor was lost) is not counted.
    (tmp_path / "downloads" / sha / f"{10:012d}.part").write_bytes(b"xx")
    assert (store.partial_size(sha), store.read_partial(sha)) == (4, b"0123")
    store.append_partial(sha, b"45")
    assert store.read_partial(sha) == b"012345"
    assert sorted(os.listdir(tmp_path / "downloads" / sha)) == [
        "000000000000.part",
        "000000000004.part",
        "000000000010.part",
    ]


# ---- crash loops through Agent.boot ----------------------------------------------------


class DeviceCrash(Exception):
    """The release took the device down during its self-test."""


class CrashingSelfTest:
    """A release that crashes the device whenever its self-test runs."""

    def __init__(self) -> None:
        self.crashes = 0

    async def run(self, sha256: str, files: Mapping[str, bytes]) -> SelfTestResult:
        self.crashes += 1
        raise DeviceCrash(sha256)

    async def latency_ms(self, sha256: str, files: Mapping[str, bytes]) -> float | None:
        return None


def on_trial(store: SlotStore, tmp_path: Path) -> None:
    """Slot a committed on 1.0.0; 1.1.0 switched to in slot b and on trial (boot 1)."""
    v1 = make_bundle(tmp_path / "b", "1.0.0")
    v2 = make_bundle(tmp_path / "b", "1.1.0")
    store.write_slot("a", content_of(v1, "1.0.0"), v1.read_bytes())
    store.write_slot("b", content_of(v2, "1.1.0"), v2.read_bytes())
    state = AgentState(active="a", slots={"a": content_of(v1, "1.0.0")}, boots=1)
    state = begin_update(state, 5, "update", ReleaseOffer.model_validate(offer_for(v2)), None)
    state = record_slot(state, "b", content_of(v2, "1.1.0"))
    store.save_state(enter_trial(state, "b", NOW))


def agent_on(store: SlotStore, selftest: SelfTest) -> Agent:
    return Agent(
        AgentConfig(hardware=HARDWARE, device_id="pi-1"),
        transport=HttpTransport(UNREACHABLE),
        store=store,
        clock=ManualClock(NOW, auto_advance=True),
        selftest=selftest,
        trusted_keys=[RELEASE_KEY.public_key()],
    )


def test_crash_loop_reverts_on_the_fourth_boot(
    reopen: Callable[[], SlotStore], tmp_path: Path
) -> None:
    on_trial(reopen(), tmp_path)
    selftest = CrashingSelfTest()
    boots = 0
    while True:
        boots += 1
        agent = agent_on(reopen(), selftest)
        try:
            asyncio.run(agent.boot())
        except DeviceCrash:
            continue
        break
    # Boot 1 was the switch; boots 2 and 3 crashed in the self-test; boot 4 reverted.
    assert (boots, selftest.crashes) == (3, 2)
    state = reopen().load_state()
    assert state is not None
    assert (state.active, state.phase, state.installed and state.installed.version) == (
        "a",
        "committed",
        "1.0.0",
    )
    (failure,) = [e for e in state.outbox if e.report.status == "failure"]
    assert failure.deployment_id == 5
    assert failure.report.reason is not None and failure.report.reason.startswith("crash loop")
    assert state.finished_status(5) == "failure"


def test_a_boot_on_trial_commits_after_a_passing_self_test(
    reopen: Callable[[], SlotStore], tmp_path: Path
) -> None:
    on_trial(reopen(), tmp_path)
    agent = agent_on(reopen(), LiteRtSelfTest())
    asyncio.run(agent.boot())
    state = reopen().load_state()
    assert state is not None
    assert (state.active, state.phase, state.trial) == ("b", "committed", None)
    # The server was unreachable: every report is still queued, in order.
    assert [e.report.status for e in state.outbox] == ["downloading", "trial", "success"]
