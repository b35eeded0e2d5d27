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

The database stays the truth: the directory and the view are caches of it, rebuilt on
start, so a server killed at any moment restarts consistent.

`Evaluator` runs the rollout rules (`Store.evaluate_deployment`) after device reports and
every `evaluate_interval_s` in the background (soak timers, and to carry a deployment on
after a restart). Requests for the same deployment are coalesced: while one evaluation
runs, every new request waits for the next one, which starts after they arrived and so
sees their reports; a burst of reports costs two evaluations, not one each.

This assumes one server process per database (the caches are per process).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from starlette.concurrency import run_in_threadpool

from tinyops.bundle.keys import generate_keypair, load_private_key
from tinyops.errors import StoreError
from tinyops.fleet.server.metrics import FleetMetrics
from tinyops.fleet.server.settings import FleetSettings
from tinyops.fleet.store import (
    CheckinWrite,
    DeviceCredential,
    EvaluationOutcome,
    Installed,
    PendingAction,
    Store,
)
from tinyops.security.rollback import format_time, public_key_to_b64, sign_rollback_order

log = logging.getLogger("tinyops.fleet.server")

# Evaluations per request at most: each changing step records a pass, opens a phase or
# ends the deployment, so 100 phases (the API's bound) need at most 2 * 100 + 1 steps.
MAX_EVALUATION_STEPS: Final = 256
# The deployment status a change leads to ('open-phase' keeps it running).
STATUS_ENTERED: Final = {
    "abort": "aborted",
    "succeed": "succeeded",
    "pause": "paused",
    "resume": "running",
    "cancel": "cancelled",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class DeviceDirectory:
    """Device credentials by token hash, in memory (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_hash: dict[str, DeviceCredential] = {}
        self._hash_of: dict[str, str] = {}

    def load(self, credentials: list[DeviceCredential]) -> None:
        with self._lock:
            self._by_hash = {c.token_hash: c for c in credentials}
            self._hash_of = {c.device_id: c.token_hash for c in credentials}

    def lookup(self, token_hash: str) -> DeviceCredential | None:
        return self._by_hash.get(token_hash)

    def put(self, credential: DeviceCredential) -> None:
        """Add a device, or replace its token (the old one stops working at once)."""
        with self._lock:
            old = self._hash_of.get(credential.device_id)
            if old is not None:
                self._by_hash.pop(old, None)
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
                self._by_hash[token_hash] = replace(credential, installed=installed)

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
        self.evaluator = Evaluator(self.evaluate_now)
        self.server_key: Ed25519PrivateKey | None = None
        self.server_key_b64 = ""
        self._background: list[asyncio.Task[None]] = []

    # --- life cycle -----------------------------------------------------------------------

    def open(self) -> None:
        """Migrate the database, load the signing key and fill the caches."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store.migrate()
        self.server_key = load_or_create_server_key(self.settings)
        self.server_key_b64 = public_key_to_b64(self.server_key.public_key())
        self.directory.load(self.store.device_credentials())
        self.view.rebuild()

    async def start(self) -> None:
        """Open (in a thread) and start the background evaluator and check-in writer."""
        await run_in_threadpool(self.open)
        loop = asyncio.get_running_loop()
        self._background = [
            loop.create_task(self._evaluate_periodically()),
            loop.create_task(self._flush_periodically()),
        ]

    async def stop(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background = []
        await self.evaluator.wait_idle()
        await self.flush()
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

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.flush_interval_s)
            await self.flush()

    async def flush(self) -> None:
        """Write the buffered check-ins now."""
        batch = self.buffer.drain()
        if not batch:
            return
        try:
            await run_in_threadpool(self.store.record_checkins, batch)
        except Exception:
            log.exception("writing %d check-ins failed; will retry", len(batch))
            self.buffer.requeue(batch)

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
