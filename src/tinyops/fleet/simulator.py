"""The fleet simulator: thousands of device agents in one asyncio process.

Each simulated device is a real `Agent` — the same code a Linux device runs — with its own
identity, A/B slots (`MemorySlotStore`), clock and random stream, talking to a real server
over HTTP, or over MQTT (`transport="mqtt"`: every device's requests on its own topics,
multiplexed over one broker connection, see `tinyops.fleet.mqtt.session`; artifacts still
over HTTP). Only the device's surroundings are simulated, by wrapping the agent's parts:

    network drop        a request fails before it reaches the server (per request)
    slow link           a share of devices download at `slow_link_bytes_per_s`
    corrupt download    a byte of the artifact arrives flipped (per download)
    power loss          the device loses power part-way through a download or an install
                        (per update); it boots again with what its store kept
    crash               a share of devices crash when they run a bad release (a reboot in
                        trial; after `max_trial_boots` the agent reverts on its own)
    self-test failure   a share of devices fail the bad release's golden-vector self-test
    clock skew          each device's wall clock is off by up to ± `clock_skew_s`
    drift               some devices' sensors shift: the summary features a `DriftFault`
                        names move by a number of reference standard deviations

"Bad" releases are those whose version is in `bad_versions` (all releases when empty).
A power loss or crash ends the agent's task with an exception below `Exception` (like a
real power cut, nothing in the agent gets to handle it); the device then boots a new
`Agent` over the same store, which is what a reboot is.

Inferences (`inferences_per_poll` > 0): before each poll, a device whose committed release
carries a reference profile runs that many simulated inferences and hands them to its
agent's drift sketch (`Agent.observe_many`). `ProfileSampler` draws them from the profile
itself: per numeric feature a bin with the reference's proportion, then a value uniform
between the bin's edges (its reference mean for an open-ended first or last bin, or for a
feature binned by value); per categorical feature a value with its reference share; a
predicted class with the reference class distribution and a confidence from the reference
confidence histogram. A device that sees the training distribution thus shows no drift; a
drifted device adds `shift × σ_ref` to each feature its `DriftFault`s name.

The fault draws come from one seeded `random.Random` per device, so a run's faults are
reproducible for a given seed; timing (and so interleaving with the server) is real. Which
devices drift, and the inferences they draw, come from their own seeded streams, so adding
inferences changes none of the other faults' draws.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import DataError, UsageError
from tinyops.fleet.agent import (
    Agent,
    AgentConfig,
    BundleCache,
    MemorySlotStore,
    SelfTest,
    SelfTestResult,
    SkewedClock,
    SystemClock,
)
from tinyops.fleet.agent.messages import SlotName
from tinyops.fleet.agent.state import SlotContent
from tinyops.fleet.agent.transport import (
    DownloadSink,
    SketchTransport,
    Transport,
    TransportError,
)

if TYPE_CHECKING:
    import httpx
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from tinyops.fleet.agent.clock import Clock
    from tinyops.fleet.mqtt.session import MqttSession
    from tinyops.monitor.reference import ReferenceProfile


# Devices per HTTP connection pool of the simulator (see FleetSimulator.__aenter__).
DEVICES_PER_CLIENT = 250


class PowerLoss(BaseException):
    """The simulated device lost power: its agent stops wherever it was."""


class DeviceCrash(BaseException):
    """The simulated device crashed (a bad release took it down)."""


@dataclass(frozen=True)
class DriftFault:
    """Sensor drift on some devices: each feature in `shifts` moves by that many reference
    standard deviations. The devices: those in `devices` (ids), plus a share `share` of all
    devices drawn per device from a seeded stream."""

    shifts: Mapping[str, float]
    share: float = 0.0
    devices: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.shifts:
            raise UsageError("drift fault: name at least one feature and its shift")
        for name, shift in self.shifts.items():
            if not name or not np.isfinite(shift):
                raise UsageError(f"drift fault: {name!r}: the shift must be a finite number")
        if not 0 <= self.share <= 1:
            raise UsageError(f"drift fault: share {self.share} is not between 0 and 1")
        if self.share == 0 and not self.devices:
            raise UsageError("drift fault: give a share of devices or device ids")


@dataclass(frozen=True)
class Faults:
    """Fault rates: shares in [0, 1]; per request, per download, per update or per device."""

    network_drop: float = 0.0
    slow_link: float = 0.0
    slow_link_bytes_per_s: float = 20_000.0
    corrupt_download: float = 0.0
    power_loss: float = 0.0
    crash: float = 0.0
    selftest_fail: float = 0.0
    clock_skew_s: float = 0.0
    bad_versions: frozenset[str] = frozenset()
    drift: tuple[DriftFault, ...] = ()


_FAULT_KEYS = {
    "network-drop": "network_drop",
    "slow-link": "slow_link",
    "corrupt-download": "corrupt_download",
    "power-loss": "power_loss",
    "crash": "crash",
    "selftest-fail": "selftest_fail",
    "clock-skew": "clock_skew_s",
}


def parse_faults(text: str, bad_versions: Sequence[str] = ()) -> Faults:
    """`power-loss=2%,corrupt-download=1%,clock-skew=30` → Faults (clock-skew in seconds)."""
    values: dict[str, Any] = {}  # fault field → its share (or seconds, for clock-skew)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, raw = part.partition("=")
        key = _FAULT_KEYS.get(name.strip())
        if not sep or key is None:
            raise UsageError(
                f"--faults: {part!r} is not NAME=VALUE with NAME one of {', '.join(_FAULT_KEYS)}"
            )
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", raw)
        if not match:
            raise UsageError(f"--faults: {name}: {raw!r} is not a number or a percentage")
        value = float(match.group(1)) / (100 if match.group(2) else 1)
        if key != "clock_skew_s" and not 0 <= value <= 1:
            raise UsageError(f"--faults: {name}: {raw!r} is not a share between 0 and 100%")
        values[key] = value
    return Faults(**values, bad_versions=frozenset(bad_versions))


def parse_drift(text: str) -> tuple[DriftFault, ...]:
    """`20%:band_03=2,band_04=-1.5;sim-000001+sim-000007:band_00=3` → DriftFaults.

    Each `;`-separated part is SELECTION:FEATURE=SHIFT[,FEATURE=SHIFT...], the selection a
    percentage or share of the devices, or device ids joined by `+`; shifts in reference
    standard deviations.
    """
    faults: list[DriftFault] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        selection, sep, spec = part.partition(":")
        if not sep or not spec.strip():
            raise UsageError(f"--drift: {part!r} is not SELECTION:FEATURE=SHIFT[,...]")
        shifts: dict[str, float] = {}
        for item in filter(None, (i.strip() for i in spec.split(","))):
            name, eq, raw = item.partition("=")
            try:
                shifts[name.strip()] = float(raw)
            except ValueError:
                raise UsageError(f"--drift: {item!r} is not FEATURE=SHIFT (a number)") from None
            if not eq or not name.strip():
                raise UsageError(f"--drift: {item!r} is not FEATURE=SHIFT")
        selection = selection.strip()
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%?)", selection)
        if match:
            share = float(match.group(1)) / (100 if match.group(2) else 1)
            faults.append(DriftFault(shifts=shifts, share=share))
        else:
            ids = frozenset(filter(None, (d.strip() for d in selection.split("+"))))
            faults.append(DriftFault(shifts=shifts, devices=ids))
    return tuple(faults)


class ProfileSampler:
    """Simulated inferences drawn from a reference profile (see the module docstring)."""

    def __init__(self, profile: ReferenceProfile, shifts: Mapping[str, float]) -> None:
        from tinyops.monitor.reference import CategoricalProfile

        self.profile = profile
        names = profile.feature_names
        unknown = sorted(set(shifts) - set(names))
        if unknown:
            raise DataError(
                f"drift fault names features {unknown} that the release's profile does not "
                f"have; it has {list(names)}"
            )
        self._features: list[tuple[Any, ...]] = []
        for f in profile.features:
            shift = float(shifts.get(f.name, 0.0))
            if isinstance(f, CategoricalProfile):
                if shift:
                    raise DataError(
                        f"drift fault: feature {f.name!r} is categorical; only numeric "
                        "features shift"
                    )
                p = _proportions(f.counts)
                self._features.append(("categorical", np.asarray(f.values), p))
                continue
            p = _proportions(f.counts)
            edges = np.asarray(f.edges, dtype=np.float64)
            lo = np.concatenate(([np.nan], edges))
            hi = np.concatenate((edges, [np.nan]))
            means = np.asarray(f.bin_means, dtype=np.float64)
            # Inner bins of a continuous feature draw uniformly within (lo, hi]; the open
            # ends, and every bin of a feature binned by value, give the bin's mean.
            uniform = np.isfinite(lo) & np.isfinite(hi) & (not f.discrete)
            self._features.append(("numeric", p, lo, hi, means, uniform, shift * f.std))
        self._classes: NDArray[np.float64] | None = None
        self._confidence: tuple[Any, ...] | None = None
        if profile.prediction_counts is not None:
            self._classes = _proportions(profile.prediction_counts)
            conf = profile.confidence
            if conf is not None:
                edges = np.asarray(conf.edges, dtype=np.float64)
                lo = np.concatenate(([0.0], edges))
                hi = np.concatenate((edges, [1.0]))
                self._confidence = (_proportions(conf.counts), lo, hi)

    def sample(
        self, n: int, rng: np.random.Generator
    ) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        """`n` summary rows (n × features) and their class probabilities (or None)."""
        rows = np.empty((n, len(self._features)), dtype=np.float64)
        for j, spec in enumerate(self._features):
            if spec[0] == "categorical":
                _, values, p = spec
                rows[:, j] = values[rng.choice(values.size, size=n, p=p)]
                continue
            _, p, lo, hi, means, uniform, offset = spec
            bins = rng.choice(p.size, size=n, p=p)
            col = means[bins]
            drawn = uniform[bins]
            u = rng.random(n)
            # hi - u·(hi - lo), u in [0, 1): within (lo, hi], the bin the value belongs to.
            col[drawn] = hi[bins][drawn] - u[drawn] * (hi[bins][drawn] - lo[bins][drawn])
            rows[:, j] = col + offset
        if self._classes is None:
            return rows, None
        n_classes = self._classes.size
        predicted = rng.choice(n_classes, size=n, p=self._classes)
        if self._confidence is None:
            conf = np.ones(n)
        else:
            p, lo, hi = self._confidence
            bins = rng.choice(p.size, size=n, p=p)
            conf = hi[bins] - rng.random(n) * (hi[bins] - lo[bins])
        # The predicted class must stay the largest: at least 1/C (plus a hair).
        conf = np.clip(conf, 1.0 / n_classes + 1e-6, 1.0)
        probs = np.repeat(((1.0 - conf) / max(n_classes - 1, 1))[:, None], n_classes, axis=1)
        probs[np.arange(n), predicted] = conf
        return rows, probs


def _proportions(counts: Sequence[int]) -> NDArray[np.float64]:
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        raise DataError("reference profile: a histogram without counts cannot be sampled")
    shares: NDArray[np.float64] = c / total
    return shares


@dataclass
class DeviceRecord:
    """What the simulator observed of one device (for the live view and the summary)."""

    device_id: str
    resets: int = 0
    power_losses: int = 0
    crashes: int = 0
    dropped_requests: int = 0
    corrupted_downloads: int = 0
    last_status: str | None = None
    statuses: list[str] = field(default_factory=list)
    installed: str | None = None
    drift_shifts: dict[str, float] = field(default_factory=dict)
    inferences: int = 0
    inference_error: str | None = None


class _FaultySink:
    def __init__(self, inner: DownloadSink, device: SimulatedDevice) -> None:
        self.inner = inner
        self.device = device
        self.corrupt = device.rng.random() < device.faults.corrupt_download
        self.power_cut = device.rng.random() < device.faults.power_loss
        self.written = 0

    def restart(self, offset: int) -> None:
        self.inner.restart(offset)
        self.written = offset

    def write(self, chunk: bytes) -> None:
        if self.corrupt and chunk:
            self.corrupt = False  # one flipped byte per faulty download
            self.device.record.corrupted_downloads += 1
            chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
        self.inner.write(chunk)
        self.written += len(chunk)
        if self.power_cut and self.written > 0:
            self.device.record.power_losses += 1
            raise PowerLoss("power lost during download")


class _FaultyTransport:
    """The device's transport with the network's faults in front of it."""

    def __init__(self, inner: Transport, device: SimulatedDevice) -> None:
        self.inner = inner
        self.device = device

    def _maybe_drop(self, what: str) -> None:
        if self.device.rng.random() < self.device.faults.network_drop:
            self.device.record.dropped_requests += 1
            raise TransportError(f"{what}: simulated network drop", retryable=True)

    def authenticate(self, device_token: str | None) -> None:
        self.inner.authenticate(device_token)

    async def enroll(self, request: Any) -> Any:
        self._maybe_drop("enroll")
        return await self.inner.enroll(request)

    async def checkin(self, request: Any) -> Any:
        self._maybe_drop("check-in")
        return await self.inner.checkin(request)

    async def download(self, url: str, offset: int, sink: DownloadSink) -> None:
        self._maybe_drop("download")
        faulty = _FaultySink(sink, self.device)
        if not self.device.slow:
            await self.inner.download(url, offset, faulty)
            return
        # A slow link: the bytes arrive at the link's rate (the server is not slowed).
        start = time.monotonic()
        await self.inner.download(url, offset, faulty)
        due = (faulty.written - offset) / self.device.faults.slow_link_bytes_per_s
        await asyncio.sleep(max(0.0, due - (time.monotonic() - start)))

    async def report_status(self, deployment_id: int, report: Any) -> None:
        self._maybe_drop("status report")
        await self.inner.report_status(deployment_id, report)
        self.device.record.last_status = report.status
        self.device.record.statuses.append(report.status)

    async def send_telemetry(self, batch: Any) -> Any:
        self._maybe_drop("telemetry")
        return await self.inner.send_telemetry(batch)

    async def send_sketch(self, body: Any) -> Any:
        if not isinstance(self.inner, SketchTransport):
            # HTTP and MQTT channels carry sketches; a channel without them refuses, so
            # the agent drops them.
            raise TransportError("this transport cannot send drift sketches", retryable=False)
        self._maybe_drop("sketch")
        return await self.inner.send_sketch(body)

    async def fetch_commands(self) -> Any:
        self._maybe_drop("commands")
        return await self.inner.fetch_commands()

    async def send_command_result(self, command_id: int, result: Any) -> None:
        self._maybe_drop("command result")
        await self.inner.send_command_result(command_id, result)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _FaultyStore(MemorySlotStore):
    """A memory store whose install can be cut by a power loss; bundles are shared."""

    def __init__(self, device: SimulatedDevice, blobs: dict[str, bytes]) -> None:
        super().__init__()
        self.device = device
        self.blobs = blobs

    def write_slot(self, slot: SlotName, content: SlotContent, data: bytes) -> None:
        if self.device.rng.random() < self.device.faults.power_loss:
            self.device.record.power_losses += 1
            raise PowerLoss("power lost during install")
        if content.version in self.device.faults.bad_versions:
            self.device.sim.bad_sha256.add(content.sha256)
        # Thousands of devices hold the same few bundles: keep one copy of each.
        shared = self.blobs.setdefault(content.sha256, bytes(data))
        super().write_slot(slot, content, shared)


class _FaultySelfTest:
    """The real self-test, except where this device is one that a bad release breaks."""

    def __init__(self, inner: SelfTest, device: SimulatedDevice) -> None:
        self.inner = inner
        self.device = device

    def _bad(self, sha256: str) -> bool:
        # Installs note which bundles have a bad version (the self-test sees only files).
        return not self.device.faults.bad_versions or sha256 in self.device.sim.bad_sha256

    async def run(self, sha256: str, files: Mapping[str, bytes]) -> SelfTestResult:
        if self._bad(sha256):
            if self.device.crashes_on_bad:
                self.device.record.crashes += 1
                raise DeviceCrash("the release crashed the device")
            if self.device.fails_on_bad:
                real = await self.inner.run(sha256, files)
                return SelfTestResult(
                    passed=False,
                    vectors=real.vectors,
                    failed=max(1, real.vectors),
                    max_error=127,
                    tolerance=real.tolerance,
                    runtime=real.runtime,
                )
        return await self.inner.run(sha256, files)

    async def latency_ms(self, sha256: str, files: Mapping[str, bytes]) -> float | None:
        return await self.inner.latency_ms(sha256, files)


class SimulatedDevice:
    """One device: a store that survives reboots, and an agent per boot."""

    def __init__(self, sim: FleetSimulator, index: int) -> None:
        self.sim = sim
        self.index = index
        self.faults = sim.faults
        self.device_id = f"{sim.prefix}-{index:06d}"
        seed = int.from_bytes(hashlib.sha256(f"{sim.seed}:{index}".encode()).digest()[:8], "big")
        self.rng = random.Random(seed)
        self.record = DeviceRecord(self.device_id)
        self.slow = self.rng.random() < self.faults.slow_link
        self.crashes_on_bad = self.rng.random() < self.faults.crash
        self.fails_on_bad = self.rng.random() < self.faults.selftest_fail
        skew = self.rng.uniform(-self.faults.clock_skew_s, self.faults.clock_skew_s)
        self.clock: Clock = SkewedClock(SystemClock(), skew) if skew else SystemClock()
        if sim.transport == "mqtt":
            from tinyops.fleet.mqtt.transport import WakeableClock

            # Server notifications end the wait between polls early.
            self.clock = WakeableClock(self.clock)
        self.store = _FaultyStore(self, sim.blobs)
        self.agent: Agent | None = None
        # Own seeded streams: which devices drift and what they infer leave `rng` alone.
        drift_rng = random.Random(_seed(sim.seed, index, "drift"))
        shifts: dict[str, float] = {}
        for fault in self.faults.drift:
            picked = drift_rng.random() < fault.share
            if picked or self.device_id in fault.devices:
                for name, shift in fault.shifts.items():
                    shifts[name] = shifts.get(name, 0.0) + shift
        self.record.drift_shifts = shifts
        self.inference_rng = np.random.default_rng(_seed(sim.seed, index, "inferences"))
        self._sampler: ProfileSampler | None = None

    def infer(self, agent: Agent) -> None:
        """Run this poll's simulated inferences through the agent's drift sketch."""
        n = self.sim.inferences_per_poll
        if n <= 0 or self.record.inference_error is not None:
            return
        profile = agent.sketch_profile
        if profile is None:
            return
        sampler = self._sampler
        if sampler is None or sampler.profile is not profile:
            try:
                sampler = self._sampler = ProfileSampler(profile, self.record.drift_shifts)
            except DataError as exc:
                # Kept on the record (and in the summary): a misnamed feature must not pass
                # silently as "no drift".
                self.record.inference_error = str(exc)
                agent.log.error(f"simulated inferences stopped: {exc}")
                return
        rows, probs = sampler.sample(n, self.inference_rng)
        agent.observe_many(rows, probs)
        self.record.inferences += n

    def new_agent(self) -> Agent:
        from tinyops.fleet.agent.http import HttpTransport

        client = self.sim.clients[self.index // DEVICES_PER_CLIENT]
        channel: Transport = HttpTransport(self.sim.server, client=client)
        if self.sim.session is not None:
            from tinyops.fleet.mqtt.transport import MqttTransport, WakeableClock

            assert isinstance(self.clock, WakeableClock)
            channel = MqttTransport(
                self.sim.session,
                self.device_id,
                http=channel,
                clock=self.clock,
                timeout_s=self.sim.request_timeout_s,
            )
        transport = _FaultyTransport(channel, self)
        return _SimulatedAgent(
            self,
            AgentConfig(
                hardware=self.sim.hardware,
                device_id=self.device_id,
                tags=dict(self.sim.tags),
                poll_interval_s=self.sim.poll_interval_s,
                backoff_base_s=0.5,
                backoff_cap_s=10.0,
                sketch_window_s=self.sim.sketch_window_s,
            ),
            transport=transport,
            store=self.store,
            clock=self.clock,
            selftest=_FaultySelfTest(self.sim.selftest, self),
            trusted_keys=self.sim.trusted_keys,
            enrollment_token=self.sim.enroll_token,
            rng=self.rng,
            bundles=self.sim.bundle_cache,
        )

    async def live(self) -> None:
        """Boot, run, and boot again after every power loss or crash, until cancelled."""
        # Devices come up spread over the first poll interval, as a real fleet does.
        await asyncio.sleep(self.rng.uniform(0, self.sim.poll_interval_s))
        while True:
            self.agent = self.new_agent()
            try:
                await self.agent.run()
            except (PowerLoss, DeviceCrash):
                self.record.resets += 1
                await asyncio.sleep(self.rng.uniform(0.05, 0.3))  # time to reboot
            self._note_installed()

    def _note_installed(self) -> None:
        if self.agent is not None and self.agent._state is not None:
            installed = self.agent.state.installed
            self.record.installed = installed.version if installed else None


class _SimulatedAgent(Agent):
    """The real agent, whose device runs simulated inferences before each poll."""

    def __init__(self, device: SimulatedDevice, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.device = device

    async def poll_once(self) -> float:
        self.device.infer(self)
        return await super().poll_once()


def _seed(seed: int, index: int, purpose: str) -> int:
    digest = hashlib.sha256(f"{seed}:{index}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass(frozen=True)
class Summary:
    devices: int
    elapsed_s: float
    versions: dict[str, int]
    last_status: dict[str, int]
    resets: int
    power_losses: int
    crashes: int
    dropped_requests: int
    corrupted_downloads: int
    cpu_s: float
    drifted_devices: int = 0
    inferences: int = 0
    inference_errors: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class FleetSimulator:
    """`devices` agents against `server`; `run(until)` drives them and returns a Summary."""

    def __init__(
        self,
        server: str,
        enroll_token: str,
        devices: int,
        *,
        hardware: str,
        trusted_keys: Sequence[Ed25519PublicKey],
        tags: Mapping[str, str] | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        poll_interval_s: float = 2.0,
        prefix: str = "sim",
        selftest: SelfTest | None = None,
        max_connections: int = 64,
        transport: Literal["http", "mqtt"] = "http",
        mqtt_url: str | None = None,
        mqtt_prefix: str = "tinyops",
        request_timeout_s: float = 10.0,
        inferences_per_poll: int = 0,
        sketch_window_s: float | None = None,
    ) -> None:
        from tinyops.fleet.agent import LiteRtSelfTest

        if devices < 1:
            raise UsageError(f"--devices: need at least 1 device, got {devices}")
        if transport == "mqtt" and mqtt_url is None:
            raise UsageError("--mqtt: the MQTT transport needs the broker's URL (mqtt://host:port)")
        self.transport = transport
        self.mqtt_url = mqtt_url
        self.mqtt_prefix = mqtt_prefix
        self.request_timeout_s = request_timeout_s
        if inferences_per_poll < 0:
            raise UsageError(f"--inferences: need 0 or more per poll, got {inferences_per_poll}")
        self.inferences_per_poll = inferences_per_poll
        self.sketch_window_s = sketch_window_s
        self.session: MqttSession | None = None
        self.server = server
        self.enroll_token = enroll_token
        self.hardware = hardware
        self.trusted_keys = list(trusted_keys)
        self.tags = dict(tags or {})
        self.faults = faults or Faults()
        self.seed = seed
        self.poll_interval_s = poll_interval_s
        self.prefix = prefix
        self.selftest: SelfTest = selftest or LiteRtSelfTest()
        self.bundle_cache = BundleCache()
        self.blobs: dict[str, bytes] = {}
        self.bad_sha256: set[str] = set()
        self.max_connections = max_connections
        self.clients: list[httpx.AsyncClient] = []
        self.devices = [SimulatedDevice(self, i) for i in range(devices)]
        self._started = 0.0
        self._cpu0 = 0.0
        self._tasks: list[asyncio.Task[None]] = []

    def summary(self) -> Summary:
        for d in self.devices:
            d._note_installed()
        recs = [d.record for d in self.devices]
        return Summary(
            devices=len(recs),
            elapsed_s=round(time.monotonic() - self._started, 2),
            versions=dict(Counter(r.installed or "(none)" for r in recs).most_common()),
            last_status=dict(Counter(r.last_status or "(none)" for r in recs).most_common()),
            resets=sum(r.resets for r in recs),
            power_losses=sum(r.power_losses for r in recs),
            crashes=sum(r.crashes for r in recs),
            dropped_requests=sum(r.dropped_requests for r in recs),
            corrupted_downloads=sum(r.corrupted_downloads for r in recs),
            cpu_s=round(time.process_time() - self._cpu0, 2),
            drifted_devices=sum(1 for r in recs if r.drift_shifts),
            inferences=sum(r.inferences for r in recs),
            inference_errors=sum(1 for r in recs if r.inference_error is not None),
        )

    async def __aenter__(self) -> FleetSimulator:
        """Power every device on (they come up spread over one poll interval)."""
        import httpx

        self._started, self._cpu0 = time.monotonic(), time.process_time()
        # httpx's pool scans every request waiting on it for each request it serves, so
        # one pool for thousands of devices costs the simulator quadratic CPU: devices
        # share pools of DEVICES_PER_CLIENT, the connections split between them.
        n_clients = -(-len(self.devices) // DEVICES_PER_CLIENT)
        per_client = max(4, -(-self.max_connections // n_clients))
        limits = httpx.Limits(max_connections=per_client, max_keepalive_connections=per_client)
        self.clients = [httpx.AsyncClient(limits=limits, timeout=30.0) for _ in range(n_clients)]
        if self.transport == "mqtt":
            await self._open_mqtt()
        self._tasks = [asyncio.create_task(d.live()) for d in self.devices]
        return self

    async def _open_mqtt(self) -> None:
        """One broker connection for every device (a gateway login: it needs the whole
        prefix in the broker ACL, docs/device-protocol.md)."""
        import secrets

        from tinyops.fleet.mqtt.session import MqttSession
        from tinyops.fleet.mqtt.topics import Topics, parse_broker_url

        assert self.mqtt_url is not None
        try:
            broker, topics = parse_broker_url(self.mqtt_url), Topics(self.mqtt_prefix)
        except ValueError as exc:
            raise UsageError(f"--mqtt: {exc}") from exc
        self.session = MqttSession(
            broker, topics, client_id=f"{self.prefix}-{secrets.token_hex(4)}"
        )
        await self.session.ensure_connected()

    async def __aexit__(self, *_exc: object) -> None:
        """Power every device off."""
        pending = set(self._tasks)
        while pending:
            # Python 3.11's asyncio.wait_for (the MQTT requests) can swallow a cancellation
            # that arrives as its future completes (gh-86296); such a device would live on
            # and this wait never end, so survivors are cancelled again.
            for t in pending:
                t.cancel()
            done, pending = await asyncio.wait(pending, timeout=1.0)
            for t in done:
                if not t.cancelled():
                    t.exception()  # retrieved: a crash at power-off is not reported
        self._tasks = []
        if self.session is not None:
            await self.session.aclose()
            self.session = None
        for client in self.clients:
            await client.aclose()
        self.clients = []

    async def wait(
        self,
        until: Callable[[FleetSimulator], Awaitable[bool]],
        *,
        timeout_s: float,
        check_every_s: float = 0.5,
        on_tick: Callable[[Summary], None] | None = None,
    ) -> Summary:
        """Let the running devices work until `until(self)` is true; TimeoutError after
        `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(check_every_s)
            if on_tick is not None:
                on_tick(self.summary())
            if await until(self):
                return self.summary()
        raise TimeoutError(f"the simulation did not finish within {timeout_s:g} s")

    async def run(
        self,
        until: Callable[[FleetSimulator], Awaitable[bool]],
        *,
        timeout_s: float,
        on_tick: Callable[[Summary], None] | None = None,
    ) -> Summary:
        """Power on, wait for `until`, power off: one bounded simulation."""
        async with self:
            return await self.wait(until, timeout_s=timeout_s, on_tick=on_tick)


def all_installed(version: str) -> Callable[[FleetSimulator], Awaitable[bool]]:
    """Stop condition: every device runs `version`."""

    async def check(sim: FleetSimulator) -> bool:
        return sim.summary().versions.get(version, 0) == len(sim.devices)

    return check


SETTLED_STATUSES = frozenset({"succeeded", "aborted", "cancelled"})
IN_FLIGHT = frozenset({"downloading", "downloaded", "installing", "trial", "rollback-pending"})


def deployment_settled(
    server: str, token: str, deployment_id: int
) -> Callable[[FleetSimulator], Awaitable[bool]]:
    """Stop condition: the deployment is over and no device is still on its way anywhere
    (an aborted deployment is settled once every device it reached has rolled back, a
    succeeded one once its stragglers have finished)."""

    async def check(_sim: FleetSimulator) -> bool:
        from tinyops.fleet.client import deployment_status

        status = await asyncio.to_thread(deployment_status, server, token, deployment_id)
        if status["status"] not in SETTLED_STATUSES:
            return False
        if status["status"] == "cancelled":
            return True  # devices on their way abandon a cancelled deployment
        return not any(
            n for phase in status["phases"] for s, n in phase["counts"].items() if s in IN_FLIGHT
        )

    return check
