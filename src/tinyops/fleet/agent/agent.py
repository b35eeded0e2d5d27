"""The device agent: enroll, poll, install releases into A/B slots, self-test, report.

One `Agent` per device, every part injected (transport, slot store, clock, self-test,
probe, random source), so the same code is the reference agent of a Linux device
(`run_agent`: HTTP, files on disk, real time, LiteRT) and one of thousands of simulated
devices in a single asyncio process (memory slots, virtual clock, shared caches).

A boot (`boot()`: process start, or the `reboot` command) counts towards the crash-loop
limit of a release on trial and finishes that trial. Then every poll (`poll_once()`):

    enroll if needed → deliver queued reports → check in → act on the answer (pure
    `decide`) → run remote-debug commands → sample telemetry, send it every N polls or
    when the batch is full → deliver queued reports → wait the server's interval ±10 %

An update goes downloading (resumable, Range) → downloaded (size and sha256 of the whole
file) → verification (`verify_release`) → installing (inactive slot) → trial (switch; the
state records the slot and its boots) → self-test → success / rolled-back, or revert to the
previous slot and failure with the reason. Each transition is saved atomically together
with its queued report before the next step, so a power loss at any point resumes
correctly. When the server cannot be reached, `run()` backs off exponentially (base 1 s,
×2, cap 300 s, full jitter) and starts again at the base after the next success.

Drift sketches: when the committed release's bundle carries `monitoring/profile.json` and
`monitoring/policy.json`, the application hands each inference to `observe()` (a summary
row) or `observe_input()` (the model input, summarised as the policy says). The agent
folds them into a `SketchAccumulator` per window (aligned to multiples of the policy's
`window_s`); at each poll a window that has ended is closed and queued, and the queue is
sent to `POST /api/v1/device/sketches` — best effort, like telemetry: kept for the next
poll when the server cannot be reached (at most `sketch_queue` windows, oldest dropped;
in memory, so a reboot loses them), dropped when the server refuses one (4xx). A new
release closes the old one's window.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from tinyops import __version__
from tinyops.bundle.bundle import VerifiedBundle, bundle_filename
from tinyops.errors import BundleError, DataError, StoreError, TinyopsError, UsageError
from tinyops.fleet.agent.backoff import Backoff, jittered_interval
from tinyops.fleet.agent.clock import Clock
from tinyops.fleet.agent.decide import Confirm, Idle, Proceed, Refuse, Skip, decide
from tinyops.fleet.agent.logbook import AgentLog
from tinyops.fleet.agent.messages import (
    MAX_LOG_LINES,
    MAX_TELEMETRY_POINTS,
    CheckinRequest,
    CheckinResponse,
    Command,
    CommandResult,
    EnrollRequest,
    Health,
    LogLevel,
    MetricName,
    ReleaseOffer,
    ReleaseRef,
    SlotName,
    SlotReport,
    TelemetryBatch,
    TelemetryPoint,
)
from tinyops.fleet.agent.probe import DeviceProbe, FixedProbe
from tinyops.fleet.agent.selftest import SelfTest, SelfTestResult
from tinyops.fleet.agent.slots import SlotStore
from tinyops.fleet.agent.state import (
    AgentState,
    Identity,
    SlotContent,
    UpdateKind,
    advance_update,
    begin_update,
    clear_update,
    commit_trial,
    confirm_rollback,
    count_download_attempt,
    drop_report,
    enter_trial,
    on_boot,
    record_slot,
    refuse_update,
    revert_trial,
)
from tinyops.fleet.agent.transport import SketchTransport, Transport, TransportError
from tinyops.fleet.agent.verify import BundleCache, UpdateRefused, verify_release
from tinyops.security.rollback import public_key_from_b64
from tinyops.store.atomic import sha256_bytes

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from tinyops.monitor.reference import ReferenceProfile
    from tinyops.monitor.sketch import SketchAccumulator
    from tinyops.monitor.summaries import Summarizer

# Downloaded bytes are kept in memory up to this size, then written as one chunk file.
DEFAULT_FLUSH_BYTES: Final = 1 << 20
DEFAULT_LOG_LINES: Final = 100
COMMAND_KINDS: Final = (
    "fetch_logs",
    "run_self_test",
    "report_inventory",
    "set_log_level",
    "reboot",
)


class AgentError(TinyopsError):
    """The agent cannot go on by itself (no credentials, enrollment refused)."""


class AgentConfig(BaseModel):
    """How one agent behaves; everything but hardware and device_id has a default."""

    model_config = ConfigDict(extra="forbid")

    hardware: str = Field(description="Board id of the catalog this device is, e.g. 'rpi4'.")
    device_id: str = Field(description="Id to enroll with (the server may keep another).")
    tags: dict[str, str] = Field(default_factory=dict, description="Selector tags to enroll.")
    max_trial_boots: int = Field(
        default=3, ge=1, description="Boots on trial without a commit before reverting."
    )
    poll_interval_s: float = Field(
        default=300.0, gt=0, description="Seconds between check-ins until the server sets it."
    )
    poll_jitter: float = Field(
        default=0.1, ge=0, lt=1, description="Relative jitter of the poll interval (0.1 = ±10%)."
    )
    backoff_base_s: float = Field(default=1.0, gt=0, description="First backoff ceiling, s.")
    backoff_cap_s: float = Field(default=300.0, gt=0, description="Largest backoff ceiling, s.")
    telemetry_every_polls: int = Field(
        default=10, ge=1, description="Send the telemetry batch every this many polls."
    )
    telemetry_max_points: int = Field(
        default=1000,
        ge=1,
        le=MAX_TELEMETRY_POINTS,
        description="Send the batch early once it holds this many points.",
    )
    commands_every_polls: int = Field(
        default=1, ge=1, description="Fetch remote-debug commands every this many polls."
    )
    max_download_attempts: int = Field(
        default=3, ge=1, description="Downloads with a wrong sha256 before giving up."
    )
    download_flush_bytes: int = Field(
        default=DEFAULT_FLUSH_BYTES, ge=1, description="Bytes buffered before a chunk is saved."
    )
    log_capacity: int = Field(default=1000, ge=1, description="Log lines kept for fetch_logs.")
    log_level: LogLevel = Field(default="info", description="Initial lowest level recorded.")
    sketch_window_s: float | None = Field(
        default=None,
        gt=0,
        description="Drift sketch window, s; None = the installed bundle's policy window_s "
        "(shorter windows are for simulations and tests).",
    )
    sketch_queue: int = Field(
        default=24, ge=1, description="Closed sketch windows kept while the server is away."
    )


@dataclass
class _Sketching:
    """The drift sketch of the committed release: its window and accumulator."""

    sha256: str
    accumulator: SketchAccumulator | None
    """None: this release has no monitoring members (or they cannot be read)."""
    summarizer: Summarizer | None
    window_s: float
    start: datetime
    end: datetime


class _PartialSink:
    """Buffers a download and saves it in chunks to the slot store, never past `size`."""

    def __init__(self, store: SlotStore, sha256: str, size: int, flush_bytes: int) -> None:
        self.store = store
        self.sha256 = sha256
        self.size = size
        self.flush_bytes = flush_bytes
        self.kept = store.partial_size(sha256)
        self.buffer = bytearray()

    def restart(self, offset: int) -> None:
        self.buffer.clear()
        if offset != self.kept:
            # The server answers from the start (200): what was kept is superseded.
            self.store.discard_partials()
            self.kept = 0

    def write(self, chunk: bytes) -> None:
        if self.kept + len(self.buffer) + len(chunk) > self.size:
            self.buffer.clear()
            self.store.discard_partials()
            raise TransportError(
                f"the server sent more than the announced {self.size} bytes", retryable=True
            )
        self.buffer += chunk
        if len(self.buffer) >= self.flush_bytes:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.store.append_partial(self.sha256, bytes(self.buffer))
            self.kept += len(self.buffer)
            self.buffer.clear()


class Agent:
    """One device's agent. `run()` for the whole life; `boot()` and `poll_once()` for drivers."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        transport: Transport,
        store: SlotStore,
        clock: Clock,
        selftest: SelfTest,
        trusted_keys: Sequence[Ed25519PublicKey],
        enrollment_token: str | None = None,
        server_key: Ed25519PublicKey | None = None,
        probe: DeviceProbe | None = None,
        rng: random.Random | None = None,
        bundles: BundleCache | None = None,
    ) -> None:
        if not trusted_keys:
            raise UsageError("the agent needs at least one trusted release key to verify bundles")
        self.config = config
        self.transport = transport
        self.store = store
        self.clock = clock
        self.selftest = selftest
        self.trusted_keys = list(trusted_keys)
        self.enrollment_token = enrollment_token
        self.probe: DeviceProbe = probe if probe is not None else FixedProbe()
        self.rng = rng if rng is not None else random.Random()
        self.bundles = bundles if bundles is not None else BundleCache()
        self.log = AgentLog(
            clock.now, config.device_id, level=config.log_level, capacity=config.log_capacity
        )
        self._pinned_server_key = server_key
        self._enrolled_server_key: Ed25519PublicKey | None = None
        self._identity = store.load_identity()
        self.poll_interval_s = (
            self._identity.poll_interval_s if self._identity else config.poll_interval_s
        )
        self._backoff = Backoff(config.backoff_base_s, 2.0, config.backoff_cap_s, self.rng)
        self._state: AgentState | None = None
        self._boot_monotonic = clock.monotonic()
        self._polls = 0
        self._polls_since_telemetry = 0
        self._points: list[TelemetryPoint] = []
        self._results: list[tuple[int, CommandResult]] = []
        self.reboot_requested = False
        self._sketch: _Sketching | None = None
        self._sketches: list[dict[str, Any]] = []
        self.sketches_sent = 0
        self.sketches_dropped = 0

    # ---- state -----------------------------------------------------------------------

    @property
    def state(self) -> AgentState:
        if self._state is None:
            raise AgentError("the agent has not booted yet: call boot() or run() first")
        return self._state

    def _save(self, state: AgentState) -> AgentState:
        self.store.save_state(state)
        self._state = state
        return state

    @property
    def device_id(self) -> str:
        return self._identity.device_id if self._identity else self.config.device_id

    @property
    def uptime_s(self) -> float:
        return self.clock.monotonic() - self._boot_monotonic

    @property
    def server_key(self) -> Ed25519PublicKey | None:
        """The key rollback orders must be signed with: pinned, else learnt at enrollment."""
        if self._pinned_server_key is not None:
            return self._pinned_server_key
        if self._enrolled_server_key is None and self._identity is not None:
            self._enrolled_server_key = public_key_from_b64(
                self._identity.server_key, "identity server_key"
            )
        return self._enrolled_server_key

    # ---- boot ------------------------------------------------------------------------

    async def boot(self) -> None:
        """Start (or restart) the device: count the boot, settle a release on trial."""
        self._boot_monotonic = self.clock.monotonic()
        self.reboot_requested = False
        loaded = self.store.load_state() or AgentState(log_level=self.config.log_level)
        outcome = on_boot(loaded, self.config.max_trial_boots)
        state = self._save(outcome.state)
        self.log.level = state.log_level
        installed = state.installed
        self.log.info(
            f"boot {state.boots}: slot {state.active or '-'} {state.phase}, running "
            + (f"{installed.name} {installed.version}" if installed else "no model")
        )
        if outcome.action == "reverted":
            self.log.error(f"{outcome.reason}: reverted to slot {state.active or '-'}")
        if state.phase == "trial":
            await self._finish_trial()

    # ---- polling ---------------------------------------------------------------------

    async def run(self, max_polls: int | None = None) -> None:
        """Boot, then poll until cancelled (or `max_polls` polls, for bounded runs)."""
        await self.boot()
        done = 0
        while max_polls is None or done < max_polls:
            try:
                delay = await self.poll_once()
                self._backoff.reset()
            except TransportError as exc:
                delay = self._backoff.next_delay()
                self.log.warning(f"{exc}; next attempt in {delay:.1f} s")
            done += 1
            if self.reboot_requested:
                self.log.info("rebooting on request")
                await self.boot()
                continue
            if max_polls is not None and done >= max_polls:
                break
            await self.clock.sleep(delay)

    async def poll_once(self) -> float:
        """One check-in cycle; the seconds to wait before the next. TransportError if the
        server could not be reached or refused (the caller backs off)."""
        if self._state is None:
            await self.boot()
        try:
            await self._ensure_enrolled()
            await self._flush_outbox()
            answer = await self.transport.checkin(self._checkin_request())
            self.poll_interval_s = answer.poll_interval_s
            await self._act(answer)
            self._polls += 1
            if self._polls % self.config.commands_every_polls == 0:
                await self._run_commands()
            await self._sample()
            self._polls_since_telemetry += 1
            if (
                self._polls_since_telemetry >= self.config.telemetry_every_polls
                or len(self._points) >= self.config.telemetry_max_points
            ):
                await self._send_telemetry()
            await self._send_sketches()
            await self._flush_outbox()
        except TransportError as exc:
            if exc.status == 401:
                self._forget_identity(exc)
            raise
        return jittered_interval(self.poll_interval_s, self.rng, self.config.poll_jitter)

    def _checkin_request(self) -> CheckinRequest:
        state = self.state
        installed = state.installed
        return CheckinRequest(
            installed=installed.ref() if installed else None,
            slot=SlotReport(active=state.active, state=state.phase),
            health=Health(
                uptime_s=int(self.uptime_s),
                resets=state.resets_total,
                free_memory_bytes=self.probe.free_memory_bytes(),
            ),
        )

    # ---- enrollment ------------------------------------------------------------------

    async def _ensure_enrolled(self) -> None:
        if self._identity is not None:
            self.transport.authenticate(self._identity.device_token)
            return
        if self.enrollment_token is None:
            raise AgentError(
                f"device {self.config.device_id} is not enrolled and has no enrollment token"
            )
        installed = self.state.installed
        request = EnrollRequest(
            enrollment_token=self.enrollment_token,
            device_id=self.config.device_id,
            hardware=self.config.hardware,
            tags=self.config.tags,
            public_key=None,
            installed=ReleaseRef(name=installed.name, version=installed.version)
            if installed
            else None,
        )
        self.transport.authenticate(None)
        try:
            answer = await self.transport.enroll(request)
        except TransportError as exc:
            if exc.retryable:
                raise
            raise AgentError(f"enrollment refused: {exc}") from exc
        try:
            server_key = public_key_from_b64(answer.server_key, "enrollment server_key")
        except BundleError as exc:
            raise TransportError(f"enrollment answer: {exc}", retryable=True) from exc
        identity = Identity(
            device_id=answer.device_id,
            device_token=answer.device_token,
            server_key=answer.server_key,
            poll_interval_s=answer.poll_interval_s,
        )
        self.store.save_identity(identity)
        self._identity = identity
        self._enrolled_server_key = server_key
        self.poll_interval_s = answer.poll_interval_s
        self.log.device_id = identity.device_id
        self.transport.authenticate(identity.device_token)
        self.log.info(f"enrolled as {identity.device_id}")

    def _forget_identity(self, exc: TransportError) -> None:
        """The server no longer accepts the token: enroll again (rotates it) if possible."""
        if self._identity is None:
            return
        self.store.save_identity(None)
        self._identity = None
        self._enrolled_server_key = None
        self.transport.authenticate(None)
        if self.enrollment_token is None:
            raise AgentError(
                f"the server refused this device's token ({exc}) and there is no enrollment "
                "token to enroll again"
            ) from exc
        self.log.warning(f"the server refused the device token ({exc}); enrolling again")

    # ---- reports ---------------------------------------------------------------------

    async def _flush_outbox(self) -> None:
        """Deliver queued reports in order; a report the server refuses (4xx) is dropped."""
        while self.state.outbox:
            entry = self.state.outbox[0]
            try:
                await self.transport.report_status(entry.deployment_id, entry.report)
            except TransportError as exc:
                if exc.retryable or exc.status == 401:
                    raise
                self.log.warning(
                    f"server refused report {entry.report.status} of deployment "
                    f"{entry.deployment_id}: {exc}; dropped"
                )
            self._save(drop_report(self.state))

    async def _flush_outbox_quietly(self) -> None:
        try:
            await self._flush_outbox()
        except TransportError as exc:
            self.log.debug(f"reports kept for later: {exc}")

    # ---- updates ---------------------------------------------------------------------

    async def _act(self, answer: CheckinResponse) -> None:
        decision = decide(
            self.state,
            answer,
            hardware=self.config.hardware,
            device_id=self.device_id,
            server_key=self.server_key,
            now=self.clock.now(),
        )
        if isinstance(decision, Idle):
            if decision.abandon and self.state.update is not None:
                job = self.state.update
                self.log.info(f"deployment {job.deployment_id} no longer offered; abandoned")
                self._save(clear_update(self.state))
        elif isinstance(decision, Skip):
            self.log.debug(decision.reason)
        elif isinstance(decision, Refuse):
            self._refuse(decision.deployment_id, decision.version, decision.reason, decision.kind)
        elif isinstance(decision, Confirm):
            self.log.info(
                f"deployment {decision.deployment_id}: rollback to {decision.version}, "
                "which is running already"
            )
            self._save(confirm_rollback(self.state, decision.deployment_id, decision.version))
            self.store.discard_partials()
        elif isinstance(decision, Proceed):
            await self._update(decision)

    def _refuse(
        self, deployment_id: int, version: str, reason: str, kind: UpdateKind = "update"
    ) -> None:
        self.log.error(f"deployment {deployment_id}: refused {version}: {reason}")
        self._save(refuse_update(self.state, deployment_id, version, reason, kind))
        self.store.discard_partials()

    async def _update(self, decision: Proceed) -> None:
        release = decision.release
        if not decision.resume:
            self._save(
                begin_update(
                    self.state, decision.deployment_id, decision.kind, release, decision.rollback
                )
            )
            self.store.discard_partials(keep=release.sha256)
            self.log.info(
                f"deployment {decision.deployment_id}: fetching {release.name} "
                f"{release.version} ({release.size} bytes, {decision.kind})"
            )
            # Tell the server before a download that may take long (or fail half-way).
            await self._flush_outbox_quietly()
        data = await self._fetch(decision.deployment_id, release)
        if data is None:
            return
        self._save(advance_update(self.state, "downloaded"))
        now = self.clock.now()
        try:
            verified = verify_release(
                data,
                offer=release,
                trusted_keys=self.trusted_keys,
                hardware=self.config.hardware,
                device_id=self.device_id,
                installed=self.state.installed,
                rollback=decision.rollback,
                server_key=self.server_key,
                now=now,
                cache=self.bundles,
            )
        except UpdateRefused as refused:
            self._refuse(decision.deployment_id, release.version, str(refused), decision.kind)
            return
        self._save(advance_update(self.state, "installing"))
        manifest = verified.bundle.manifest
        slot = self.state.inactive_slot
        content = SlotContent(
            name=manifest.name,
            version=manifest.version,
            target=manifest.target,
            sha256=verified.sha256,
            size=verified.size,
            filename=bundle_filename(manifest.name, manifest.version, manifest.target),
            installed_at=now,
        )
        # Mark the slot empty first: a power loss while writing leaves no stale claim.
        self._save(record_slot(self.state, slot, None))
        self.store.write_slot(slot, content, data)
        self._save(record_slot(self.state, slot, content))
        self.store.discard_partials()
        self._save(enter_trial(self.state, slot, self.clock.now()))
        self.log.info(
            f"deployment {decision.deployment_id}: {manifest.name} {manifest.version} "
            f"written to slot {slot}; on trial"
        )
        await self._flush_outbox_quietly()
        await self._finish_trial()

    async def _fetch(self, deployment_id: int, release: ReleaseOffer) -> bytes | None:
        """The release's bytes with the announced size and sha256, or None if given up."""
        for slot, content in self.state.slots.items():
            if content.sha256 == release.sha256:
                try:
                    return self.store.read_slot(slot, content)
                except StoreError as exc:
                    self.log.warning(f"{exc}; downloading instead")
        sha = release.sha256
        while True:
            have = self.store.partial_size(sha)
            if have > release.size:
                self.store.discard_partials()
                have = 0
            if have < release.size:
                if have:
                    self.log.info(f"resuming download at byte {have} of {release.size}")
                sink = _PartialSink(self.store, sha, release.size, self.config.download_flush_bytes)
                try:
                    await self.transport.download(release.url, have, sink)
                except TransportError as exc:
                    if exc.status == 416:
                        self.store.discard_partials()
                    raise
                finally:
                    sink.flush()
            data = self.store.read_partial(sha)
            if len(data) < release.size:
                raise TransportError(
                    f"download of {release.url} ended after {len(data)} of {release.size} bytes",
                    retryable=True,
                )
            digest = sha256_bytes(data)
            if digest == sha:
                return data
            self.store.discard_partials()
            state = self._save(count_download_attempt(self.state))
            attempts = state.update.attempts if state.update else 0
            reason = (
                f"downloaded file has sha256 {digest}, the check-in announced {sha} "
                f"(attempt {attempts} of {self.config.max_download_attempts})"
            )
            if attempts >= self.config.max_download_attempts:
                kind = state.update.kind if state.update else "update"
                self._refuse(deployment_id, release.version, reason, kind)
                return None
            self.log.warning(f"{reason}; downloading again")

    def _open_slot(self, slot: SlotName, content: SlotContent) -> VerifiedBundle:
        cached = self.bundles.get(content.sha256, self.trusted_keys)
        if cached is not None:
            return cached
        data = self.store.read_slot(slot, content)
        return self.bundles.open(data, self.trusted_keys, content.sha256)

    async def _self_test(self, slot: SlotName, content: SlotContent) -> SelfTestResult:
        try:
            bundle = self._open_slot(slot, content)
        except (StoreError, BundleError) as exc:
            return SelfTestResult(
                passed=False,
                vectors=0,
                failed=0,
                max_error=0,
                tolerance=0,
                runtime="none",
                reason=f"self-test failed: slot {slot} cannot be read: {exc}",
            )
        return await self.selftest.run(content.sha256, bundle.files)

    async def _finish_trial(self) -> None:
        state = self.state
        trial = state.trial
        if trial is None:
            return
        content = state.slots[trial.slot]
        result = await self._self_test(trial.slot, content)
        if result.passed:
            self._save(commit_trial(self.state))
            self.log.info(
                f"committed slot {trial.slot}: {content.name} {content.version} "
                f"({result.vectors} golden vectors within {result.tolerance})"
            )
        else:
            reason = result.reason or "self-test failed"
            self._save(revert_trial(self.state, reason))
            self.log.error(f"{reason}: reverted to slot {trial.previous or '-'}")
        await self._flush_outbox_quietly()

    # ---- remote-debug commands -------------------------------------------------------

    async def _send_results(self) -> None:
        while self._results:
            command_id, result = self._results[0]
            try:
                await self.transport.send_command_result(command_id, result)
            except TransportError as exc:
                if exc.retryable or exc.status == 401:
                    raise
                self.log.warning(f"server refused the result of command {command_id}: {exc}")
            self._results.pop(0)

    async def _run_commands(self) -> None:
        await self._send_results()
        for command in await self.transport.fetch_commands():
            result = await self.execute(command)
            self._results.append((command.id, result))
            await self._send_results()
            if self.reboot_requested:
                # Later commands are fetched again after the reboot.
                break

    def inventory(self) -> dict[str, Any]:
        """What report_inventory answers: hardware, releases per slot, agent version."""
        state = self.state
        installed = state.installed
        return {
            "device_id": self.device_id,
            "hardware": self.config.hardware,
            "agent_version": __version__,
            "installed": installed.ref().model_dump(mode="json") if installed else None,
            "active": state.active,
            "state": state.phase,
            "slots": {
                slot: (state.slots[slot].model_dump(mode="json") if slot in state.slots else None)
                for slot in ("a", "b")
            },
            "boots": state.boots,
            "resets_total": state.resets_total,
            "log_level": state.log_level,
            "tags": dict(self.config.tags),
        }

    async def execute(self, command: Command) -> CommandResult:
        """Run one remote-debug command; bad arguments give ok=false with the reason."""
        args = command.args
        self.log.info(f"command {command.id}: {command.kind}")
        if command.kind == "fetch_logs":
            count = args.get("lines", DEFAULT_LOG_LINES)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                return _bad(f"fetch_logs: lines must be a positive integer, got {count!r}")
            lines = [line.model_dump(mode="json") for line in self.log.last(count)]
            return CommandResult(ok=True, output={"lines": lines})
        if command.kind == "run_self_test":
            state = self.state
            installed = state.installed
            if state.active is None or installed is None:
                return _bad("run_self_test: no release is installed")
            result = await self._self_test(state.active, installed)
            return CommandResult(ok=True, output=result.to_dict())
        if command.kind == "report_inventory":
            return CommandResult(ok=True, output=self.inventory())
        if command.kind == "set_log_level":
            level = args.get("level")
            allowed = get_args(LogLevel)
            if level not in allowed:
                return _bad(
                    f"set_log_level: level must be one of {', '.join(allowed)}, got {level!r}"
                )
            previous = self.state.log_level
            self._save(AgentState.model_validate({**dict(self.state), "log_level": level}))
            self.log.level = self.state.log_level
            return CommandResult(ok=True, output={"previous": previous, "level": level})
        if command.kind == "reboot":
            self.reboot_requested = True
            return CommandResult(ok=True, output={"rebooting": True})
        return _bad(
            f"unknown command kind {command.kind!r}: expected one of {', '.join(COMMAND_KINDS)}"
        )

    # ---- telemetry -------------------------------------------------------------------

    async def _sample(self) -> None:
        now = self.clock.now()
        values: list[tuple[MetricName, float | None]] = [
            ("uptime_s", self.uptime_s),
            ("resets_total", float(self.state.resets_total)),
            ("free_memory_bytes", _float(self.probe.free_memory_bytes())),
            ("temperature_c", self.probe.temperature_c()),
            ("inference_latency_ms", await self._latency_ms()),
        ]
        self._points.extend(
            TelemetryPoint(t=now, metric=metric, value=value)
            for metric, value in values
            if value is not None
        )
        # Keep the newest points a single request can carry.
        del self._points[:-MAX_TELEMETRY_POINTS]

    async def _latency_ms(self) -> float | None:
        state = self.state
        installed = state.installed
        if state.active is None or installed is None or state.phase != "committed":
            return None
        try:
            bundle = self._open_slot(state.active, installed)
        except (StoreError, BundleError):
            return None
        return await self.selftest.latency_ms(installed.sha256, bundle.files)

    async def _send_telemetry(self) -> None:
        logs = self.log.take_unsent(MAX_LOG_LINES)
        batch = TelemetryBatch(points=self._points, logs=logs)
        try:
            await self.transport.send_telemetry(batch)
        except TransportError as exc:
            if exc.retryable or exc.status == 401:
                self.log.give_back(logs)
                raise
            self.log.warning(f"server refused a telemetry batch: {exc}; dropped")
        self._points = []
        self._polls_since_telemetry = 0

    # ---- drift sketches ------------------------------------------------------------------

    def observe(
        self,
        summary_row: ArrayLike,
        probabilities: ArrayLike | None = None,
        *,
        prediction_id: str | None = None,
    ) -> bool:
        """Count one inference of the running release in the current drift sketch.

        `summary_row`: the profile's features of the model input (tinyops.monitor.summaries);
        `probabilities`: the model's class probabilities; `prediction_id`: an id feedback
        labels may refer to. False (nothing kept) when no committed release has monitoring.
        DataError for a row or probabilities that do not fit the profile.
        """
        sketching = self._sketching()
        if sketching is None or sketching.accumulator is None:
            return False
        sketching.accumulator.observe(summary_row, probabilities, prediction_id=prediction_id)
        return True

    def observe_input(
        self,
        model_input: ArrayLike,
        probabilities: ArrayLike | None = None,
        *,
        prediction_id: str | None = None,
    ) -> bool:
        """`observe` for one float model input (without its batch axis), summarised as the
        bundle's policy says."""
        sketching = self._sketching()
        if sketching is None or sketching.accumulator is None or sketching.summarizer is None:
            return False
        row = sketching.summarizer.summarize_one(model_input)
        sketching.accumulator.observe(row, probabilities, prediction_id=prediction_id)
        return True

    def observe_many(self, rows: ArrayLike, probabilities: ArrayLike | None = None) -> bool:
        """`observe` for a batch of summary rows (N × features) and probabilities."""
        sketching = self._sketching()
        if sketching is None or sketching.accumulator is None:
            return False
        sketching.accumulator.observe_many(rows, probabilities)
        return True

    @property
    def sketch_profile(self) -> ReferenceProfile | None:
        """The reference profile the committed release is sketched against, or None."""
        sketching = self._sketching()
        if sketching is None or sketching.accumulator is None:
            return None
        return sketching.accumulator.profile

    def _sketching(self) -> _Sketching | None:
        """The committed release's sketch, opened on first use and rolled when its window
        has ended; None while nothing is committed."""
        state = self._state
        if state is None:
            return None
        installed = state.installed
        if state.active is None or installed is None or state.phase != "committed":
            return None
        now = self.clock.now()
        current = self._sketch
        if current is None or current.sha256 != installed.sha256:
            if current is not None:
                # The previous release stopped running now: its window ends here.
                self._close_window(current, min(current.end, now))
            current = self._sketch = self._open_sketching(state.active, installed, now)
        elif now >= current.end:
            from tinyops.monitor.sketch import window_bounds

            self._close_window(current, current.end)
            current.start, current.end = window_bounds(now, current.window_s)
        return current

    def _open_sketching(self, slot: SlotName, installed: SlotContent, now: datetime) -> _Sketching:
        from tinyops.monitor.policy import monitoring_from_files
        from tinyops.monitor.sketch import SketchAccumulator, window_bounds
        from tinyops.monitor.summaries import summarizer

        release = f"{installed.name} {installed.version}"
        parsed = None
        shape: tuple[int, ...] = ()
        if isinstance(self.transport, SketchTransport):
            try:
                bundle = self._open_slot(slot, installed)
                parsed = monitoring_from_files(bundle.files)
                shape = tuple(bundle.manifest.model.input.shape)
            except (StoreError, BundleError, DataError) as exc:
                self.log.error(f"drift sketches off for {release}: {exc}")
        else:
            self.log.info(f"drift sketches off for {release}: the transport cannot send them")
        if parsed is None:
            return _Sketching(installed.sha256, None, None, 1.0, now, now)
        profile, policy = parsed
        window_s = self.config.sketch_window_s or float(policy.window_s)
        seed = int.from_bytes(
            hashlib.sha256(f"{self.device_id}:{installed.sha256}".encode()).digest()[:8], "big"
        )
        accumulator = SketchAccumulator(
            profile, policy, release=(installed.name, installed.version), seed=seed
        )
        summary: Summarizer | None = None
        try:
            # The manifest's input shape has the batch axis (1) first.
            made = summarizer(policy.summaries, shape[1:], column_names=profile.feature_names)
            if made.feature_names == profile.feature_names:
                summary = made
        except DataError as exc:
            self.log.warning(f"{release}: model inputs cannot be summarised here: {exc}")
        start, end = window_bounds(now, window_s)
        self.log.info(
            f"drift sketches on for {release}: {len(profile.features)} features, "
            f"{window_s:g} s windows"
        )
        return _Sketching(installed.sha256, accumulator, summary, window_s, start, end)

    def _close_window(self, sketching: _Sketching, end: datetime) -> None:
        if sketching.accumulator is None or not sketching.start < end:
            return
        body = sketching.accumulator.flush(sketching.start, end)
        if body is None:
            return
        self._sketches.append(body)
        if len(self._sketches) > self.config.sketch_queue:
            dropped = self._sketches.pop(0)
            self.sketches_dropped += 1
            self.log.warning(
                f"sketch queue full: dropped the window starting {dropped['window']['start']}"
            )

    async def _send_sketches(self) -> None:
        """Close an ended window, then deliver the queued sketches in order."""
        self._sketching()
        if not self._sketches or not isinstance(self.transport, SketchTransport):
            return
        while self._sketches:
            body = self._sketches[0]
            try:
                await self.transport.send_sketch(body)
            except TransportError as exc:
                if exc.retryable or exc.status == 401:
                    raise
                self.sketches_dropped += 1
                self.log.warning(
                    f"server refused the sketch of window {body['window']['start']}: {exc}; dropped"
                )
            else:
                self.sketches_sent += 1
            self._sketches.pop(0)


def _bad(message: str) -> CommandResult:
    return CommandResult(ok=False, output={"error": message})


def _float(value: int | None) -> float | None:
    return float(value) if value is not None else None


def run_agent(
    server: str,
    enroll_token: str | None,
    data_dir: Path,
    hardware: str,
    device_id: str | None = None,
    tags: Mapping[str, str] | None = None,
    *,
    trusted_keys: Sequence[Path | Ed25519PublicKey],
    server_key: str | None = None,
    runtime: Literal["litert", "tflm"] = "litert",
    max_polls: int | None = None,
    max_trial_boots: int = 3,
    log_level: LogLevel = "info",
    transport: Literal["http", "mqtt"] = "http",
    mqtt_url: str | None = None,
    mqtt_prefix: str = "tinyops",
) -> None:
    """Run the reference agent of a Linux device until interrupted (or `max_polls` polls).

    `trusted_keys`: the release signing public keys (PEM files or keys) bundles must be
    signed with. `server_key` (base64 raw Ed25519) pins the rollback-order key instead of
    trusting the one the server hands out at enrollment. `device_id` defaults to the
    enrolled id in `data_dir`, else `<hardware>-<8 random hex digits>`.

    `transport="mqtt"` speaks the protocol over the broker at `mqtt_url` (topics under
    `mqtt_prefix`, the device id as MQTT client id) and downloads artifacts from `server`
    over HTTP; the server's "check in now" notifications end the wait between polls early.
    """
    from tinyops.bundle.keys import load_public_key
    from tinyops.fleet.agent.clock import SystemClock
    from tinyops.fleet.agent.http import HttpTransport
    from tinyops.fleet.agent.probe import LinuxProbe
    from tinyops.fleet.agent.selftest import LiteRtSelfTest, TflmSelfTest
    from tinyops.fleet.agent.slots import DiskSlotStore
    from tinyops.targets.catalog import load_board

    keys = [
        k if isinstance(k, Ed25519PublicKey) else load_public_key(Path(k)) for k in trusted_keys
    ]
    if not keys:
        raise UsageError("at least one trusted release key is required to verify bundles")
    load_board(hardware)
    store = DiskSlotStore(Path(data_dir))
    identity = store.load_identity()
    if device_id is None:
        device_id = identity.device_id if identity else f"{hardware}-{secrets.token_hex(4)}"
    config = AgentConfig(
        hardware=hardware,
        device_id=device_id,
        tags=dict(tags or {}),
        max_trial_boots=max_trial_boots,
        log_level=log_level,
    )
    pinned = public_key_from_b64(server_key, "server_key") if server_key else None
    selftest: SelfTest = LiteRtSelfTest() if runtime == "litert" else TflmSelfTest()
    if transport == "mqtt" and mqtt_url is None:
        raise UsageError("the MQTT transport needs the broker's URL (mqtt://host:port)")

    async def main() -> None:
        http = HttpTransport(server)
        clock: Clock = SystemClock()
        session = None
        channel: Transport = http
        if transport == "mqtt":
            assert mqtt_url is not None
            from tinyops.fleet.mqtt.session import MqttSession
            from tinyops.fleet.mqtt.topics import Topics, parse_broker_url
            from tinyops.fleet.mqtt.transport import MqttTransport, WakeableClock

            try:
                broker, topics = parse_broker_url(mqtt_url), Topics(mqtt_prefix)
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
            session = MqttSession(broker, topics, client_id=device_id)
            clock = WakeableClock(clock)
            channel = MqttTransport(session, device_id, http=http, clock=clock)
        try:
            agent = Agent(
                config,
                transport=channel,
                store=store,
                clock=clock,
                selftest=selftest,
                trusted_keys=keys,
                enrollment_token=enroll_token,
                server_key=pinned,
                probe=LinuxProbe(),
            )
            await agent.run(max_polls=max_polls)
        finally:
            await channel.aclose()
            if session is not None:
                await session.aclose()

    asyncio.run(main())


__all__ = ["COMMAND_KINDS", "Agent", "AgentConfig", "AgentError", "run_agent"]
