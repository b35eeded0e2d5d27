"""The server's running state: the store plus the in-memory structures of the hot path.

Check-ins are the one request every device sends every few minutes, so answering one
touches no database:

    DeviceDirectory   token hash → device, loaded at start, updated on enrollment,
                      re-enrollment and decommissioning (authentication in a dict lookup)
    CheckinView       device → pending update or rollback, rebuilt from the database
                      whenever a deployment changes state and refreshed per device after
                      each of its status reports; a device absent from it gets "none"
    CheckinBuffer     each device's latest last_seen/health/slot, written to the database
                      in one batch every `flush_interval_s` and at shutdown (write-behind:
                      a SIGKILL loses at most that interval of last_seen updates, nothing
                      else; every state change is written in its own transaction)

Telemetry is written by group commit (`TelemetryWriter`): the points and log lines of
every request that arrives while a write is running go to the database together in the
next transaction, one multi-row statement per table, and each request is answered (202)
once the transaction holding its points has committed. So a 202 means stored, as with
one transaction per request, but a busy server writes thousands of points per commit.

Drift sketches are written the same way (`SketchWriter`): the windows of the requests
that arrive during a write are stored together in the next transaction
(`DriftStore.add_sketches`), each request answered with its own outcome once that
transaction has committed. Unlike telemetry, a sketch can be refused by what is already
stored (its window reported before with other counts, a prediction id taken): the batch
checks those per request before writing anything, so a refused request stores nothing
and gets its own 409 while the others of its batch are stored.

The database stays the truth: the directory and the view are caches of it, rebuilt on
start, so a server killed at any moment restarts consistent.

Alert rules (`FleetSettings.alert_rules`) run every `alert_interval_s` over the metric
sources (HardwareSource, DriftSource) in `AlertService` (alerting.py), which notifies the
log and the webhook and keeps the current alerts in memory.

Device logs are pruned to their retention limits (`FleetSettings.log_max_age_days`,
`log_max_lines_per_device`) at start and every `log_prune_interval_s`
(tinyops.fleet.store.logs).

`Evaluator` runs the rollout rules (`Store.evaluate_deployment`) after device reports and
every `evaluate_interval_s` in the background (soak timers, and to carry a deployment on
after a restart). Requests for the same deployment are coalesced: while one evaluation
runs, every new request waits for the next one, which starts after they arrived and so
sees their reports; a burst of reports costs two evaluations, not one each.

This assumes one server process per database (the caches are per process).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar, cast

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from starlette.concurrency import run_in_threadpool

from tinyops.bundle.keys import generate_keypair, load_private_key
from tinyops.errors import StoreError
from tinyops.fleet.server.alerting import AlertService
from tinyops.fleet.server.drift_service import DriftService, load_drift_config
from tinyops.fleet.server.drift_source import DriftSource
from tinyops.fleet.server.hardware_source import HardwareSource
from tinyops.fleet.server.metrics import FleetMetrics
from tinyops.fleet.server.settings import FleetSettings
from tinyops.fleet.store import (
    CheckinWrite,
    DeviceCredential,
    EvaluationOutcome,
    Installed,
    LogRow,
    PendingAction,
    PointRow,
    PreparedRows,
    Store,
)
from tinyops.fleet.store.drift_store import SketchWrite
from tinyops.fleet.store.logs import Retention
from tinyops.security.rollback import format_time, public_key_to_b64, sign_rollback_order

log = logging.getLogger("tinyops.fleet.server")

# Evaluations per request at most: each changing step records a pass, opens a phase or
# ends the deployment, so 100 phases (the API's bound) need at most 2 * 100 + 1 steps.
MAX_EVALUATION_STEPS: Final = 256
# Check-ins turned into rows per event-loop turn when flushing: about 1 ms of work.
FLUSH_SLICE: Final = 250
# The deployment status a change leads to ('open-phase' keeps it running).
STATUS_ENTERED: Final = {
    "abort": "aborted",
    "succeed": "succeeded",
    "pause": "paused",
    "resume": "running",
    "cancel": "cancelled",
}


_Shareable = TypeVar("_Shareable", str, Installed | None)


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeviceDirectory:
    """Device credentials by token hash, in memory (thread-safe).

    Held for every enrolled device for as long as the server runs (about 500 bytes per
    device): equal hardware ids and installed releases are shared objects, not copies.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_hash: dict[str, DeviceCredential] = {}
        self._hash_of: dict[str, str] = {}
        self._shared: dict[object, Any] = {}

    def load(self, credentials: list[DeviceCredential]) -> None:
        with self._lock:
            self._by_hash = {c.token_hash: c for c in credentials}
            self._hash_of = {c.device_id: c.token_hash for c in credentials}
            self._shared = {}
            for c in credentials:
                self._shared.setdefault(c.hardware, c.hardware)
                if c.installed is not None:
                    self._shared.setdefault(c.installed, c.installed)

    def lookup(self, token_hash: str) -> DeviceCredential | None:
        return self._by_hash.get(token_hash)

    def put(self, credential: DeviceCredential) -> None:
        """Add a device, or replace its token (the old one stops working at once)."""
        with self._lock:
            old = self._hash_of.get(credential.device_id)
            if old is not None:
                self._by_hash.pop(old, None)
            credential = replace(
                credential,
                hardware=self._share(credential.hardware),
                installed=self._share(credential.installed),
            )
            self._by_hash[credential.token_hash] = credential
            self._hash_of[credential.device_id] = credential.token_hash

    def remove(self, device_id: str) -> None:
        with self._lock:
            old = self._hash_of.pop(device_id, None)
            if old is not None:
                self._by_hash.pop(old, None)

    def set_installed(self, device_id: str, installed: Installed | None) -> None:
        with self._lock:
            token_hash = self._hash_of.get(device_id)
            if token_hash is not None:
                credential = self._by_hash[token_hash]
                self._by_hash[token_hash] = replace(credential, installed=self._share(installed))

    def _share(self, value: _Shareable) -> _Shareable:
        """The equal value already held, or `value` (now held); called under the lock."""
        if value is None:
            return value
        return cast(_Shareable, self._shared.setdefault(value, value))

    def __len__(self) -> int:
        return len(self._by_hash)


class CheckinView:
    """Pending update or rollback per device; absent means 'none'."""

    def __init__(self, store: Store) -> None:
        self._store = store
        # Held across the database read and the swap, so an older read never overwrites
        # a newer one.
        self._lock = threading.Lock()
        self._actions: dict[str, PendingAction] = {}

    def get(self, device_id: str) -> PendingAction | None:
        return self._actions.get(device_id)

    def rebuild(self) -> None:
        with self._lock:
            self._actions = self._store.pending_actions()

    def refresh(self, device_id: str) -> None:
        with self._lock:
            action = self._store.pending_actions(device_id).get(device_id)
            if action is None:
                self._actions.pop(device_id, None)
            else:
                self._actions[device_id] = action

    def __len__(self) -> int:
        return len(self._actions)


class CheckinBuffer:
    """Each device's latest check-in, waiting for the next batched write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, CheckinWrite] = {}

    def record(self, write: CheckinWrite) -> None:
        with self._lock:
            self._pending[write.device_id] = write

    def drain(self) -> list[CheckinWrite]:
        with self._lock:
            batch = list(self._pending.values())
            self._pending = {}
            return batch

    def requeue(self, batch: list[CheckinWrite]) -> None:
        """Put back writes that failed, unless a newer check-in replaced them meanwhile."""
        with self._lock:
            for write in batch:
                self._pending.setdefault(write.device_id, write)

    def __len__(self) -> int:
        return len(self._pending)


class TelemetryWriter:
    """Group commit of telemetry: requests that arrive during a write share the next one.

    Each request's rows are prepared for the database (`Store.prepare_points`, pure
    Python) on the event loop as they arrive; the write itself (`Store.write_telemetry`,
    one transaction) runs in a worker thread. A failed write fails every request of its
    batch (nothing of the batch is stored); the next batch is unaffected.

    Up to `writers` batches are written at once, each in its own transaction: PostgreSQL
    runs each COPY in one backend process, so a second writer lets the database use a
    second core while the first commits. SQLite has one writer at a time anyway (1).
    """

    def __init__(
        self, store: Store, on_written: Callable[[int, int], None], writers: int = 1
    ) -> None:
        if writers < 1:
            raise ValueError(f"writers: {writers} is not a positive number of writers")
        self._store = store
        self._on_written = on_written
        self._writers = writers
        self._points = PreparedRows()
        self._logs = PreparedRows()
        # The batch being filled, and its completion (None while nothing waits).
        self._batch: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, points: Sequence[PointRow], logs: Sequence[LogRow]) -> None:
        """Return once `points` and `logs` are committed (raise if their write failed)."""
        if not points and not logs:
            return
        prepared_points = self._store.prepare_points(points)
        prepared_logs = self._store.prepare_logs(logs)
        loop = asyncio.get_running_loop()
        if self._batch is None:
            self._batch = loop.create_future()
        batch = self._batch
        self._points.add(prepared_points)
        self._logs.add(prepared_logs)
        if len(self._tasks) < self._writers:
            self._tasks.add(loop.create_task(self._drain()))
        # Shielded: a client that disconnects does not cancel the others' write.
        await asyncio.shield(batch)

    async def _drain(self) -> None:
        try:
            await self._write_batches()
        finally:
            # No await between finding no batch and leaving the set: a request that
            # comes after sees the free writer slot and starts a writer itself.
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)

    async def _write_batches(self) -> None:
        while (batch := self._batch) is not None:
            points, logs = self._points, self._logs
            self._batch, self._points, self._logs = None, PreparedRows(), PreparedRows()
            try:
                await run_in_threadpool(self._store.write_telemetry, points, logs)
            except Exception as exc:
                log.exception("writing %d telemetry points failed", points.count)
                batch.set_exception(exc)
                # Retrieved here, so that a batch whose requests all went away does
                # not log "exception was never retrieved" as well.
                batch.exception()
            else:
                self._on_written(points.count, logs.count)
                batch.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until every accepted batch is written."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def __len__(self) -> int:
        """Points waiting for the next write."""
        return self._points.count


class SketchWriter:
    """Group commit of drift sketches: requests that arrive during a write share the next.

    Each request's sketch is checked against its release's profile before it gets here
    (`DriftService.check`); `DriftStore.add_sketches` then stores a whole batch in one
    transaction in a worker thread and answers per sketch. A refusal (FleetError) fails
    its own request only; a failed transaction fails every request of its batch (nothing
    of the batch is stored); the next batch is unaffected.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: list[tuple[SketchWrite, asyncio.Future[tuple[int, bool]]]] = []
        self._task: asyncio.Task[None] | None = None

    async def write(self, write: SketchWrite) -> tuple[int, bool]:
        """(window id, created) once committed; the store's refusal raised as is."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[int, bool]] = loop.create_future()
        self._waiting.append((write, future))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        # Shielded: a client that disconnects does not cancel the others' write.
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                writes = [w for w, _ in batch]
                try:
                    outcomes = await run_in_threadpool(
                        self._store.drift.add_sketches, writes, utcnow()
                    )
                except Exception as exc:
                    log.exception("writing %d sketches failed", len(batch))
                    for _, future in batch:
                        _settle(future, exc)
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    _settle(future, outcome)
        finally:
            self._task = None

    async def wait_idle(self) -> None:
        """Wait until every accepted sketch is written."""
        while (task := self._task) is not None:
            await asyncio.gather(task, return_exceptions=True)

    def __len__(self) -> int:
        """Sketches waiting for the next write."""
        return len(self._waiting)


def _settle(
    future: asyncio.Future[tuple[int, bool]], outcome: tuple[int, bool] | BaseException
) -> None:
    if future.done():  # cancelled: its request went away
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
        # Retrieved here, so that a request that went away does not log "exception was
        # never retrieved" as well.
        future.exception()
    else:
        future.set_result(outcome)


class Evaluator:
    """Coalescing runner of one synchronous evaluation function per deployment."""

    def __init__(self, evaluate: Callable[[int], object]) -> None:
        self._evaluate = evaluate
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._running: set[int] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def request(self, deployment_id: int) -> None:
        """Return once an evaluation that started after this call has finished."""
        loop = asyncio.get_running_loop()
        future = self._pending.get(deployment_id)
        if future is None:
            future = loop.create_future()
            self._pending[deployment_id] = future
            if deployment_id not in self._running:
                self._running.add(deployment_id)
                task = loop.create_task(self._drain(deployment_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        # Shielded: a client that disconnects must not cancel others' evaluation.
        await asyncio.shield(future)

    async def _drain(self, deployment_id: int) -> None:
        try:
            while (future := self._pending.pop(deployment_id, None)) is not None:
                try:
                    await run_in_threadpool(self._evaluate, deployment_id)
                except Exception:
                    # The reports that asked are committed; the periodic run retries.
                    log.exception("evaluating deployment %s failed", deployment_id)
                future.set_result(None)
        finally:
            self._running.discard(deployment_id)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def load_or_create_server_key(settings: FleetSettings) -> Ed25519PrivateKey:
    """The rollback-signing key at `settings.key_path()`, generated on first start."""
    path = settings.key_path()
    if path.exists():
        return load_private_key(path)
    if path.suffix != ".key":
        raise StoreError(
            f"server key path {path} must end with .key (its public half is written "
            "beside it as .pub)"
        )
    return generate_keypair(path.parent, path.stem).private_key


class FleetRuntime:
    """Everything one server process holds: store, caches, evaluator, metrics, key."""

    def __init__(self, settings: FleetSettings) -> None:
        self.settings = settings
        self.store = Store(settings.database_url(), settings.data_dir)
        self.metrics = FleetMetrics(self.store)
        self.directory = DeviceDirectory()
        self.view = CheckinView(self.store)
        self.buffer = CheckinBuffer()
        self.telemetry = TelemetryWriter(
            self.store,
            self._telemetry_written,
            writers=2 if self.store.dialect == "postgresql" else 1,
        )
        self.sketches = SketchWriter(self.store)
        self.evaluator = Evaluator(self.evaluate_now)
        # Drift monitoring: sketches, reports, feedback (drift_service.py); its metrics
        # (drift_source.py) are on /metrics and are a source of the alert rules.
        self.drift = DriftService(self.store)
        self.drift_source = DriftSource(self.drift, settings.drift_group_tags)
        self.metrics.add_source(self.drift_source)
        # Alerts (alerting.py): the rules run over every metric source; a source added
        # here is on /metrics and visible to the rules alike.
        self.hardware_source = HardwareSource.for_store(self.store)
        self.metrics.add_source(self.hardware_source)
        self.alerting = AlertService.configure(
            [self.hardware_source, self.drift_source],
            None if settings.alert_rules is None else str(settings.alert_rules),
            settings.alert_webhook,
        )
        self.metrics.add_alerts(self.alerting.firing_counts)
        self.server_key: Ed25519PrivateKey | None = None
        self.server_key_b64 = ""
        self._background: list[asyncio.Task[None]] = []

    # --- life cycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Migrate the database, load the signing key and fill the caches."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.migrate()
        self.server_key = load_or_create_server_key(self.settings)
        if self.settings.drift_config is not None:
            self.drift.config = load_drift_config(self.settings.drift_config)
        self.server_key_b64 = public_key_to_b64(self.server_key.public_key())
        self.directory.load(self.store.device_credentials())
        self.view.rebuild()

    async def start(self) -> None:
        """Open (in a thread) and start the background evaluator and check-in writer."""
        await run_in_threadpool(self.open)
        # Everything loaded so far (modules, the app, the device directory) lives as long
        # as the process. Frozen, the cyclic garbage collector stops scanning it: a full
        # collection over it took about 100 ms with 10,000 devices (more with more), a
        # pause of every request in flight; afterwards it scans only what came later.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._evaluate_periodically()),
            loop.create_task(self._flush_periodically()),
            loop.create_task(self._prune_logs_periodically()),
        ]
        if self.alerting.enabled:
            self._background.append(loop.create_task(self._alert_periodically()))

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        await self.evaluator.wait_idle()
        await self.telemetry.wait_idle()
        await self.sketches.wait_idle()
        await self.flush()
        await run_in_threadpool(self.hardware_source.close)
        await run_in_threadpool(self.store.close)

    # --- background work ------------------------------------------------------------------

    async def _evaluate_periodically(self) -> None:
        while True:
            try:
                await self.evaluate_running()
            except Exception:
                log.exception("background rollout evaluation failed")
            await asyncio.sleep(self.settings.evaluate_interval_s)

    async def evaluate_running(self) -> None:
        """Evaluate every running deployment once (what the background task does)."""
        ids = await run_in_threadpool(self.store.deployment_ids, "running")
        await asyncio.gather(*(self.evaluator.request(i) for i in ids))

    async def _alert_periodically(self) -> None:
        while True:
            try:
                await self.alerting.run_once(utcnow())
            except Exception:
                log.exception("alert evaluation failed")
            await asyncio.sleep(self.settings.alert_interval_s)

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered check-ins now.

        The rows are built here, on the event loop, a slice at a time with requests
        served in between; the thread that writes them does little but wait for the
        database. (A thread building them itself would contend with the event loop for
        the interpreter lock for as long, and check-ins would wait for both.)
        """
        batch = self.buffer.drain()
        if not batch:
            return
        rows = PreparedRows()
        for start in range(0, len(batch), FLUSH_SLICE):
            rows.add(self.store.prepare_checkins(batch[start : start + FLUSH_SLICE]))
            await asyncio.sleep(0)
        try:
            await run_in_threadpool(self.store.write_checkins, rows)
        except Exception:
            log.exception("writing %d check-ins failed; will retry", len(batch))
            self.buffer.requeue(batch)

    async def _prune_logs_periodically(self) -> None:
        while True:
            try:
                await self.prune_logs()
            except Exception:
                # A failed prune loses nothing; the next one catches up.
                log.exception("pruning device logs failed")
            await asyncio.sleep(self.settings.log_prune_interval_s)

    async def prune_logs(self) -> int:
        """Apply the log retention limits now (what the background task does)."""
        retention = Retention(
            max_age_days=self.settings.log_max_age_days,
            max_lines_per_device=self.settings.log_max_lines_per_device,
        )
        deleted = await run_in_threadpool(self.store.prune_logs, retention, utcnow())
        if deleted:
            log.info("pruned %d device log lines", deleted)
        return deleted

    def _telemetry_written(self, points: int, _logs: int) -> None:
        self.metrics.telemetry_points.inc(points)

    # --- deployments ----------------------------------------------------------------------

    def evaluate_now(self, deployment_id: int) -> EvaluationOutcome:
        """Evaluate until nothing changes; rebuild the check-in view if anything did."""
        outcome = self.store.evaluate_deployment(deployment_id, utcnow())
        changed = False
        for _ in range(MAX_EVALUATION_STEPS):
            if not outcome.changed:
                break
            changed = True
            self.record_decision(outcome)
            outcome = self.store.evaluate_deployment(deployment_id, utcnow())
        if changed:
            self.view.rebuild()
        return outcome

    def record_decision(self, outcome: EvaluationOutcome) -> None:
        """Count a change to a deployment (by rule or operator) in the metrics."""
        if outcome.action != "none":
            self.metrics.decisions.labels(outcome.action).inc()
        status = STATUS_ENTERED.get(outcome.action)
        if status is not None:
            self.metrics.deployment_transitions.labels(status).inc()
        if outcome.rolled_back:
            self.metrics.transitions.labels("rollback-pending").inc(len(outcome.rolled_back))

    def rollback_order(self, action: PendingAction, now: datetime) -> dict[str, Any]:
        """A signed order letting `action.device_id` reinstall `action.release`."""
        assert self.server_key is not None, "the runtime is not open"
        order = {
            "device_id": action.device_id,
            "deployment_id": action.deployment_id,
            "sha256": action.release.sha256,
            "version": action.release.version,
            "issued_at": format_time(now.replace(microsecond=0)),
            "expires_at": format_time(
                now.replace(microsecond=0) + timedelta(seconds=self.settings.rollback_order_ttl_s)
            ),
        }
        return sign_rollback_order(self.server_key, order)

    def trusted_public_keys(self) -> list[Ed25519PublicKey]:
        keys = []
        for record in self.store.trusted_keys():
            key = serialization.load_pem_public_key(record.public_key_pem.encode())
            if isinstance(key, Ed25519PublicKey):
                keys.append(key)
        return keys
