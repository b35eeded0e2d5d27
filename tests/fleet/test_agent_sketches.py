"""The agent's drift sketches over real HTTP: window by window to the sketch endpoint.

The stub fleet server of test_agent_support (FastAPI on uvicorn, 127.0.0.1) with a
`POST /api/v1/device/sketches` route that records what arrives, or fails as the test
scripts (sketch_support.py). Time is a ManualClock, so windows close exactly when the
test moves time on. The bundle is real and signed: the tiny int8 model plus the two
monitoring members.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sketch_support import (
    WINDOW_S,
    SketchStub,
    monitored_bundle,
    reference_profile,
    serve_with_sketches,
)
from test_agent_support import HARDWARE, NOW, RELEASE_KEY, make_bundle

from tinyops.errors import DataError
from tinyops.fleet.agent.agent import Agent, AgentConfig
from tinyops.fleet.agent.clock import ManualClock
from tinyops.fleet.agent.http import HttpTransport
from tinyops.fleet.agent.selftest import LiteRtSelfTest
from tinyops.fleet.agent.slots import MemorySlotStore, SlotStore
from tinyops.fleet.agent.state import AgentState, SlotContent
from tinyops.fleet.agent.transport import TransportError
from tinyops.store.atomic import sha256_bytes

DEVICE = "pi-1"


@pytest.fixture
def live() -> Iterator[SketchStub]:
    with serve_with_sketches() as server:
        yield server


def preinstall(store: SlotStore, path: Path, version: str) -> None:
    data = path.read_bytes()
    content = SlotContent(
        name="digits",
        version=version,
        target=HARDWARE,
        sha256=sha256_bytes(data),
        size=len(data),
        filename=path.name,
        installed_at=NOW - timedelta(days=3),
    )
    store.write_slot("a", content, data)
    store.save_state(AgentState(active="a", slots={"a": content}))


def new_agent(server: SketchStub, store: SlotStore, clock: ManualClock, **config: Any) -> Agent:
    return Agent(
        AgentConfig(hardware=HARDWARE, device_id=DEVICE, **config),
        transport=HttpTransport(server.url),
        store=store,
        clock=clock,
        selftest=LiteRtSelfTest(),
        trusted_keys=[RELEASE_KEY.public_key()],
        enrollment_token=server.stub.enrollment_token,
        rng=random.Random(0),
    )


def inferences(n: int, seed: int = 1) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.5, 1.0, size=(n, 4)), rng.dirichlet([1.0, 1.0], size=n)


async def poll(agent: Agent) -> None:
    await agent.poll_once()


def test_a_window_of_inferences_reaches_the_server_when_it_ends(
    live: SketchStub, tmp_path: Path
) -> None:
    store = MemorySlotStore()
    preinstall(store, monitored_bundle(tmp_path, "1.0.0"), "1.0.0")
    clock = ManualClock(NOW)
    agent = new_agent(live, store, clock)
    rows, probs = inferences(150)

    async def main() -> None:
        await agent.boot()
        await poll(agent)
        for r, p in zip(rows[:100], probs[:100], strict=True):
            assert agent.observe(r, p)
        clock.advance(300)
        await poll(agent)  # the window (10:00–10:10) is still open: nothing sent
        assert live.received == []
        for r, p in zip(rows[100:], probs[100:], strict=True):
            assert agent.observe(r, p)
        clock.advance(301)  # 10:10:01: the window has ended
        await poll(agent)
        await agent.transport.aclose()

    asyncio.run(main())
    assert len(live.received) == 1
    body = live.received[0]
    expected = reference_profile().histograms(rows, probabilities=probs).to_dict()
    assert body == {
        "release": {"name": "digits", "version": "1.0.0"},
        "window": {"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T10:10:00Z"},
        "count": 150,
        "histograms": expected,
    }
    assert agent.sketches_sent == 1 and agent.sketches_dropped == 0


def test_model_inputs_are_summarised_as_the_policy_says(live: SketchStub, tmp_path: Path) -> None:
    store = MemorySlotStore()
    preinstall(store, monitored_bundle(tmp_path, "1.0.0", samples=2), "1.0.0")
    clock = ManualClock(NOW)
    agent = new_agent(live, store, clock)

    async def main() -> None:
        await agent.boot()
        assert agent.observe_input(
            np.array([0.5, -1.0, 2.0, 0.0]), [0.25, 0.75], prediction_id="a1"
        )
        with pytest.raises(DataError, match=r"inputs must have shape \(N, 4\)"):
            agent.observe_input(np.zeros(5), [0.5, 0.5])
        clock.advance(WINDOW_S)
        await poll(agent)
        await agent.transport.aclose()

    asyncio.run(main())
    (body,) = live.received
    assert body["count"] == 1
    assert body["samples"] == [{"features": [0.5, -1.0, 2.0, 0.0], "prediction": 1, "id": "a1"}]


def test_unreachable_server_keeps_windows_and_a_refused_one_is_dropped(
    live: SketchStub, tmp_path: Path
) -> None:
    store = MemorySlotStore()
    preinstall(store, monitored_bundle(tmp_path, "1.0.0"), "1.0.0")
    clock = ManualClock(NOW)
    agent = new_agent(live, store, clock, sketch_queue=2)
    rows, probs = inferences(40)

    async def main() -> None:
        await agent.boot()
        await poll(agent)
        # Four windows of ten inferences while every sketch request fails with a 503.
        for w in range(4):
            agent.observe_many(rows[10 * w : 10 * w + 10], probs[10 * w : 10 * w + 10])
            clock.advance(WINDOW_S)
            live.failures.append(503)
            with pytest.raises(TransportError, match="503"):
                await poll(agent)
        assert live.received == []
        # Only the two newest windows were kept (sketch_queue=2); the server is back, but
        # refuses the first of them (422): dropped, not retried; the second arrives.
        live.failures.append(422)
        await poll(agent)
        await poll(agent)
        await agent.transport.aclose()

    asyncio.run(main())
    assert [b["window"]["start"] for b in live.received] == ["2026-11-27T10:30:00Z"]
    assert live.received[0]["histograms"]["features"]["column_00"] == (
        reference_profile().histograms(rows[30:40]).features["column_00"].tolist()
    )
    assert agent.sketches_dropped == 3  # two over the queue bound, one refused
    assert agent.sketches_sent == 1


def test_a_new_release_closes_the_old_ones_window(live: SketchStub, tmp_path: Path) -> None:
    store = MemorySlotStore()
    old = monitored_bundle(tmp_path / "old", "1.0.0")
    new = monitored_bundle(tmp_path / "new", "1.1.0")
    preinstall(store, old, "1.0.0")
    clock = ManualClock(NOW)
    agent = new_agent(live, store, clock)
    rows, probs = inferences(20)

    async def main() -> None:
        await agent.boot()
        agent.observe_many(rows[:12], probs[:12])
        clock.advance(120)
        # The device switches to 1.1.0 (as a committed update leaves it) at 10:02.
        data = new.read_bytes()
        content = SlotContent(
            name="digits",
            version="1.1.0",
            target=HARDWARE,
            sha256=sha256_bytes(data),
            size=len(data),
            filename=new.name,
            installed_at=clock.now(),
        )
        store.write_slot("b", content, data)
        state = agent.state.model_copy(
            update={"active": "b", "slots": {**agent.state.slots, "b": content}}
        )
        agent._save(state)
        agent.observe_many(rows[12:], probs[12:])
        clock.advance(WINDOW_S)
        await poll(agent)
        await agent.transport.aclose()

    asyncio.run(main())
    assert [(b["release"]["version"], b["window"], b["count"]) for b in live.received] == [
        ("1.0.0", {"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T10:02:00Z"}, 12),
        ("1.1.0", {"start": "2026-11-27T10:00:00Z", "end": "2026-11-27T10:10:00Z"}, 8),
    ]


def test_a_bundle_without_monitoring_keeps_no_sketch(live: SketchStub, tmp_path: Path) -> None:
    store = MemorySlotStore()
    preinstall(store, make_bundle(tmp_path, "1.0.0"), "1.0.0")
    clock = ManualClock(NOW)
    agent = new_agent(live, store, clock)

    async def main() -> None:
        await agent.boot()
        assert agent.observe([0.0, 0.0, 0.0, 0.0], [0.5, 0.5]) is False
        assert agent.sketch_profile is None
        clock.advance(WINDOW_S)
        await poll(agent)
        await agent.transport.aclose()

    asyncio.run(main())
    assert live.received == []
    assert live.stub.checkins  # the device otherwise works as before


def test_nothing_is_kept_before_a_release_is_committed(live: SketchStub) -> None:
    agent = new_agent(live, MemorySlotStore(), ManualClock(NOW))

    async def main() -> None:
        await agent.boot()
        assert agent.observe([0.0, 0.0, 0.0, 0.0], [0.5, 0.5]) is False
        await agent.transport.aclose()

    asyncio.run(main())
