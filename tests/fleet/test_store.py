"""The fleet store: every test runs on SQLite and on PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import inspect

from tinyops.bundle.bundle import verify_bundle
from tinyops.fleet.rollout import InvalidTransition, PhaseSpec
from tinyops.fleet.store import (
    CheckinWrite,
    Conflict,
    Forbidden,
    Installed,
    Invalid,
    NotFound,
    ReleaseRecord,
    Selector,
    Store,
    Unauthorized,
)
from tinyops.fleet.store.engine import current_revision, head_revision, upgrade
from tinyops.fleet.store.schema import Base
from tinyops.security.audit import AuditAction
from tinyops.security.roles import Role
from tinyops.security.tokens import hash_token, new_token
from tinyops.store.atomic import sha256_file

BuildBundle = Callable[..., Path]

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
ADMIN = "token:admin"


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[Store]:
    s = Store(db_url, tmp_path / "data")
    s.migrate()
    yield s
    s.close()


def _release(
    store: Store, build: BuildBundle, version: str, target: str = "nano33ble"
) -> ReleaseRecord:
    """Upload a freshly built, verified bundle the way the server does."""
    path = build(version, target)
    return _add(store, path)


def _add(store: Store, path: Path) -> ReleaseRecord:
    """Verify (with the key of conftest's build_bundle) and store, as the server does."""
    staged = path.parent / f".staged-{path.name}"
    shutil.copyfile(path, staged)
    manifest = verify_bundle(path, [_KEY.public_key()], now=T0).manifest
    size = path.stat().st_size
    record, _ = store.add_release(staged, manifest, sha256_file(path), size, ADMIN, T0)
    return record


# The same fixed key as conftest's `release_key`, which signs every `build_bundle` bundle.
_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))


def _enroll_token(
    store: Store, max_uses: int | None = None, expires: datetime | None = None
) -> str:
    token, digest = new_token("etk_")
    store.create_enrollment_token("lab", digest, expires, max_uses, ADMIN, T0)
    return token


def _enroll(
    store: Store,
    etk: str,
    device_id: str,
    *,
    hardware: str = "nano33ble",
    tags: dict[str, str] | None = None,
    installed: Installed | None = None,
) -> str:
    token, digest = new_token("dev_")
    store.enroll_device(
        enrollment_token_hash=hash_token(etk),
        device_id=device_id,
        hardware=hardware,
        tags=tags or {"group": "lab"},
        public_key=None,
        installed=installed,
        device_token_hash=digest,
        now=T0,
    )
    return token


# --- schema and migrations ----------------------------------------------------------------


def test_migrations_build_exactly_the_orm_schema(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = store._engines.write
    assert current_revision(engine) == head_revision()
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    # Applying again is a no-op.
    upgrade(engine)
    assert current_revision(engine) == head_revision()


def test_times_come_back_aware_utc_and_naive_times_are_refused(store: Store) -> None:
    local = datetime(2026, 11, 27, 12, 0, tzinfo=UTC).astimezone()
    record = store.create_api_token("ci", Role.VIEWER, "a" * 64, ADMIN, local)
    assert record.created_at == local
    assert store.list_api_tokens()[0].created_at.tzinfo == UTC
    with pytest.raises(Exception, match="naive datetime"):
        store.create_api_token("ci2", Role.VIEWER, "b" * 64, ADMIN, datetime(2026, 1, 1))
    assert [t.name for t in store.list_api_tokens()] == ["ci"]


# --- tokens and enrollment ----------------------------------------------------------------


def test_api_tokens_are_found_by_hash_until_revoked(store: Store) -> None:
    token, digest = new_token("tok_")
    store.create_api_token("ci", Role.ML_ENGINEER, digest, ADMIN, T0)
    found = store.api_token(hash_token(token))
    assert found is not None and found.name == "ci" and found.role is Role.ML_ENGINEER
    assert store.api_token(hash_token(token + "x")) is None
    with pytest.raises(Conflict, match="'ci' exists"):
        store.create_api_token("ci", Role.ADMIN, "c" * 64, ADMIN, T0)
    assert store.count_api_tokens() == 1
    assert store.count_api_tokens(Role.ADMIN) == 0

    store.revoke_api_token("ci", ADMIN, T0 + timedelta(seconds=1))
    assert store.api_token(hash_token(token)) is None
    with pytest.raises(Conflict, match="revoked"):
        store.revoke_api_token("ci", ADMIN, T0)
    with pytest.raises(NotFound):
        store.revoke_api_token("nobody", ADMIN, T0)
    actions = [r.action for r in store.audit_log(target="token:ci")]
    assert actions == [AuditAction.TOKEN_REVOKE, AuditAction.TOKEN_CREATE]


def test_enrollment_checks_the_token_and_rotates_device_tokens(store: Store) -> None:
    etk = _enroll_token(store, max_uses=3)
    first = _enroll(store, etk, "nano-1", installed=Installed("kws", "1.0.0"))
    device = store.get_device("nano-1")
    assert device.hardware == "nano33ble" and device.status == "active"
    assert device.installed == Installed("kws", "1.0.0")
    assert [h.event for h in store.device_history("nano-1")] == ["enrolled"]

    second, digest = new_token("dev_")
    _, old = store.enroll_device(
        enrollment_token_hash=hash_token(etk),
        device_id="nano-1",
        hardware="nano33ble",
        tags={"group": "field"},
        public_key=None,
        installed=Installed("kws", "1.0.0"),
        device_token_hash=digest,
        now=T0,
    )
    assert old == hash_token(first)
    credentials = {c.token_hash: c.device_id for c in store.device_credentials()}
    assert credentials == {hash_token(second): "nano-1"}
    assert store.get_device("nano-1").tags == {"group": "field"}

    with pytest.raises(Conflict, match="cannot change hardware"):
        _enroll(store, etk, "nano-1", hardware="rpi4")
    # The refused enrollment did not spend a use: the third one still works, a fourth not.
    _enroll(store, etk, "nano-2")
    with pytest.raises(Unauthorized, match="used 3 times"):
        _enroll(store, etk, "nano-3")
    with pytest.raises(Unauthorized, match="not a valid enrollment token"):
        _enroll(store, "etk_" + "A" * 43, "nano-3")
    expired = _enroll_token(store, expires=T0)
    with pytest.raises(Unauthorized, match="expired"):
        _enroll(store, expired, "nano-3")
    with pytest.raises(NotFound):
        store.get_device("nano-3")
    enrolls = store.audit_log(action=AuditAction.DEVICE_ENROLL.value)
    assert [r.target for r in enrolls] == ["device:nano-2", "device:nano-1", "device:nano-1"]
    assert enrolls[1].after is not None and enrolls[1].after["token_rotated"] is True


def test_checkins_are_written_in_batches(store: Store) -> None:
    etk = _enroll_token(store)
    for i in range(3):
        _enroll(store, etk, f"nano-{i}")
    later = T0 + timedelta(minutes=5)
    store.record_checkins(
        [
            CheckinWrite(f"nano-{i}", later, {"uptime_s": 60 * i, "resets": 0}, {"active": "a"})
            for i in range(3)
        ]
    )
    device = store.get_device("nano-2")
    assert device.last_seen == later
    assert device.health == {"uptime_s": 120, "resets": 0}
    assert device.slot == {"active": "a"}
    store.record_checkins([])


def test_reported_installed_release_is_recorded_once(store: Store) -> None:
    etk = _enroll_token(store)
    _enroll(store, etk, "nano-1", installed=Installed("kws", "1.0.0"))
    store.report_installed("nano-1", Installed("kws", "1.0.1", "e" * 64), T0)
    store.report_installed("nano-1", Installed("kws", "1.0.1", "e" * 64), T0)
    history = store.device_history("nano-1")
    assert [(h.event, h.version) for h in history] == [("reported", "1.0.1"), ("enrolled", "1.0.0")]


def test_decommissioned_devices_cannot_authenticate(store: Store) -> None:
    etk = _enroll_token(store)
    _enroll(store, etk, "nano-1")
    store.decommission_device("nano-1", ADMIN, T0)
    assert store.device_credentials() == []
    assert store.get_device("nano-1").status == "decommissioned"
    with pytest.raises(Conflict, match="already"):
        store.decommission_device("nano-1", ADMIN, T0)
    with pytest.raises(Conflict, match="decommissioned"):
        store.create_command("nano-1", "reboot", {}, ADMIN, T0)
    # Re-enrolling with a valid enrollment token brings it back.
    _enroll(store, etk, "nano-1")
    assert store.get_device("nano-1").status == "active"


# --- releases -------------------------------------------------------------------------------


def test_releases_are_content_addressed_and_immutable(
    store: Store, build_bundle: BuildBundle, tmp_path: Path
) -> None:
    path = build_bundle("1.0.0")
    first = _add(store, path)
    artifact = store.artifact_path(first.sha256)
    assert artifact.read_bytes() == path.read_bytes()
    assert (
        first.size == path.stat().st_size
        and first.key_id == verify_bundle(path, [_KEY.public_key()], now=T0).key_id
    )
    # The identical bundle again: the same record, nothing new.
    again = _add(store, path)
    assert again == first
    # Same name/version/target, other bytes (a different expiry): refused.
    other = build_bundle("1.0.0", expired=False, key=_KEY, name="kws")
    assert other.read_bytes() == path.read_bytes()
    tampered_manifest = verify_bundle(path, [_KEY.public_key()], now=T0).manifest
    staged = tmp_path / "other.tinybundle"
    staged.write_bytes(b"different bytes")
    with pytest.raises(Conflict, match="versions are immutable"):
        store.add_release(staged, tampered_manifest, "f" * 64, 15, ADMIN, T0)
    assert not staged.exists()
    assert len(store.list_releases()) == 1
    uploads = store.audit_log(action=AuditAction.RELEASE_UPLOAD.value)
    assert len(uploads) == 1 and uploads[0].after is not None
    assert uploads[0].after["sha256"] == first.sha256


def test_release_history_is_newest_version_first(store: Store, build_bundle: BuildBundle) -> None:
    for version in ("1.2.0", "1.10.0", "1.2.0-rc.1", "1.9.3"):
        _release(store, build_bundle, version)
    _release(store, build_bundle, "2.0.0", target="rpi4")
    assert [r.version for r in store.list_releases(name="kws", target="nano33ble")] == [
        "1.10.0",
        "1.9.3",
        "1.2.0",
        "1.2.0-rc.1",
    ]
    assert [r.target for r in store.list_releases(target="rpi4")] == ["rpi4"]
    assert store.find_release("kws", "1.9.3", "nano33ble") is not None
    assert store.find_release("kws", "1.9.3", "rpi4") is None
    with pytest.raises(NotFound):
        store.get_release(999)


# --- deployments ----------------------------------------------------------------------------


@pytest.fixture
def fleet(store: Store, build_bundle: BuildBundle) -> tuple[ReleaseRecord, ReleaseRecord]:
    """Ten lab nanos on 1.0.0, two field nanos, one rpi4; releases 1.0.0 and 1.1.0."""
    old = _release(store, build_bundle, "1.0.0")
    new = _release(store, build_bundle, "1.1.0")
    etk = _enroll_token(store)
    running = Installed("kws", "1.0.0", old.sha256)
    for i in range(10):
        _enroll(store, etk, f"lab-{i}", installed=running)
    for i in range(2):
        _enroll(store, etk, f"field-{i}", tags={"group": "field"}, installed=running)
    _enroll(store, etk, "pi-0", hardware="rpi4", installed=Installed("kws", "1.0.0"))
    return old, new


def _deploy(store: Store, release: ReleaseRecord, *phases: PhaseSpec, **selector: object) -> int:
    record = store.create_deployment(
        release_id=release.id,
        selector=Selector(**selector),  # type: ignore[arg-type]
        phases=phases or (PhaseSpec(percent=100),),
        max_failure_rate=0.0,
        seed="seed",
        actor=ADMIN,
        now=T0,
    )
    return record.id


def _walk(store: Store, deployment: int, device: str, *statuses: str, at: datetime = T0) -> None:
    for status in statuses:
        store.report_status(
            deployment_id=deployment,
            device_id=device,
            status=status,  # type: ignore[arg-type]
            reason=None,
            version=None,
            now=at,
        )


def test_selectors_that_match_nothing_name_the_field(store: Store, fleet: tuple) -> None:
    _, new = fleet
    cases = [
        ({"hardware": "rpi4"}, "selector.hardware", "differs from the release's target"),
        ({"tags": {"group": "moon"}}, "selector.tags", "group=moon matched nothing"),
        ({"installed_version": "0.9.0"}, "selector.installed_version", "'0.9.0' matched nothing"),
    ]
    for selector, field, message in cases:
        with pytest.raises(Invalid, match=message) as info:
            _deploy(store, new, **selector)
        assert info.value.field == field
    with pytest.raises(Invalid, match=r"phases\[1\]\.percent") as bad:
        _deploy(store, new, PhaseSpec(percent=50), PhaseSpec(percent=40))
    assert bad.value.field == "phases"
    assert store.list_deployments() == []


def test_no_device_of_the_target_and_devices_already_on_the_release(
    store: Store, build_bundle: BuildBundle, fleet: tuple
) -> None:
    old, _ = fleet
    esp = _release(store, build_bundle, "1.0.0", target="esp32-s3")
    with pytest.raises(Invalid, match="no enrolled device has hardware 'esp32-s3'"):
        _deploy(store, esp)
    with pytest.raises(Invalid, match=r"already run kws 1\.0\.0") as info:
        _deploy(store, old, tags={"group": "lab"})
    assert info.value.field == "selector"


def test_deployment_assigns_phases_and_blocks_overlaps(store: Store, fleet: tuple) -> None:
    _, new = fleet
    deployment = store.get_deployment(
        _deploy(
            store,
            new,
            PhaseSpec(count=1),
            PhaseSpec(percent=50),
            PhaseSpec(percent=100),
            tags={"group": "lab"},
        )
    )
    assert deployment.device_count == 10
    assert deployment.state.status == "running" and deployment.state.open_phase == 0
    assert [sum(c.values()) for c in deployment.phase_counts] == [1, 4, 5]
    progress = store.deployment_progress(deployment.id)
    assert {p.device_id for p in progress} == {f"lab-{i}" for i in range(10)}
    assert all(p.previous_release_id == fleet[0].id for p in progress)
    # Only the canary is offered the release.
    canary = next(p.device_id for p in progress if p.phase == 0)
    actions = store.pending_actions()
    assert set(actions) == {canary}
    assert actions[canary].kind == "update" and actions[canary].release.id == new.id
    assert store.may_download(canary, new.id)
    assert not store.may_download("lab-x", new.id)
    other = next(p.device_id for p in progress if p.phase == 1)
    assert not store.may_download(other, new.id)

    with pytest.raises(Conflict, match="still being updated by deployment") as info:
        _deploy(store, new)
    assert info.value.code == "devices-busy"
    assert len(store.list_deployments()) == 1
    # Devices outside it are free.
    field = _deploy(store, new, tags={"group": "field"})
    assert store.get_deployment(field).device_count == 2


def test_status_reports_are_validated(store: Store, fleet: tuple) -> None:
    _, new = fleet
    deployment = _deploy(store, new, tags={"group": "lab"})
    with pytest.raises(InvalidTransition, match="allowed next: 'downloading', 'failure'") as info:
        _walk(store, deployment, "lab-0", "trial")
    assert info.value.allowed == ("downloading", "failure")
    with pytest.raises(Forbidden, match="not part of deployment"):
        _walk(store, deployment, "field-0", "downloading")
    with pytest.raises(NotFound):
        _walk(store, 999, "lab-0", "downloading")
    with pytest.raises(Invalid, match=r"'9\.9\.9' is not the version") as bad:
        store.report_status(
            deployment_id=deployment,
            device_id="lab-0",
            status="downloading",
            reason=None,
            version="9.9.9",
            now=T0,
        )
    assert bad.value.field == "version"
    _walk(store, deployment, "lab-0", "downloading", "downloading", "downloaded", "installing")
    assert store.get_device("lab-0").status == "updating"
    _walk(store, deployment, "lab-0", "trial", "success")
    with pytest.raises(InvalidTransition, match="final"):
        _walk(store, deployment, "lab-0", "failure")
    device = store.get_device("lab-0")
    assert device.status == "active"
    assert device.installed == Installed("kws", "1.1.0", new.sha256)
    assert device.installed_release_id == new.id and device.previous_release_id == fleet[0].id
    assert [h.event for h in store.device_history("lab-0")] == ["updated", "enrolled"]
    statuses = [
        r.after["status"]
        for r in reversed(store.audit_log(target=f"deployment:{deployment}/device:lab-0"))
        if r.after is not None
    ]
    assert statuses == [
        "downloading",
        "downloading",
        "downloaded",
        "installing",
        "trial",
        "success",
    ]


def test_phases_open_on_success_then_the_deployment_succeeds(store: Store, fleet: tuple) -> None:
    _, new = fleet
    deployment = _deploy(
        store, new, PhaseSpec(count=1, soak_s=60), PhaseSpec(percent=100), tags={"group": "field"}
    )
    phase_of = {p.device_id: p.phase for p in store.deployment_progress(deployment)}
    canary = next(d for d, p in phase_of.items() if p == 0)
    rest = next(d for d, p in phase_of.items() if p == 1)
    assert store.evaluate_deployment(deployment, T0).changed is False
    _walk(store, deployment, canary, "downloading", "downloaded", "installing", "trial", "success")
    passed = store.evaluate_deployment(deployment, T0 + timedelta(seconds=1))
    assert passed.changed and passed.action == "none"  # passed, now soaking
    assert store.evaluate_deployment(deployment, T0 + timedelta(seconds=30)).changed is False
    assert set(store.pending_actions()) == set()
    opened = store.evaluate_deployment(deployment, T0 + timedelta(seconds=61))
    assert opened.action == "open-phase" and opened.changed
    assert set(store.pending_actions()) == {rest}
    _walk(store, deployment, rest, "downloading", "downloaded", "installing", "trial", "success")
    done = store.evaluate_deployment(deployment, T0 + timedelta(seconds=62))
    assert done.action == "succeed"
    record = store.get_deployment(deployment)
    assert record.state.status == "succeeded"
    assert record.reason is not None and "the last" in record.reason
    actions = [r.action for r in store.audit_log(target=f"deployment:{deployment}", limit=1000)]
    assert AuditAction.DEPLOYMENT_OPEN_PHASE in actions
    assert actions[0] == AuditAction.DEPLOYMENT_SUCCEED


def test_abort_rolls_back_reached_devices_only(store: Store, fleet: tuple) -> None:
    old, new = fleet
    deployment = _deploy(
        store, new, PhaseSpec(count=4), PhaseSpec(percent=100), tags={"group": "lab"}
    )
    phase0 = sorted(p.device_id for p in store.deployment_progress(deployment) if p.phase == 0)
    assert len(phase0) == 4
    a, b, c, d = phase0
    _walk(store, deployment, a, "downloading", "downloaded", "installing", "trial", "success")
    _walk(store, deployment, b, "downloading")
    _walk(store, deployment, c, "downloading", "downloaded", "installing", "trial", "failure")
    outcome = store.evaluate_deployment(deployment, T0 + timedelta(seconds=5))
    assert outcome.action == "abort"
    assert outcome.rolled_back == tuple(sorted((a, b)))
    record = store.get_deployment(deployment)
    assert record.state.status == "aborted" and "phase 0" in (record.reason or "")
    progress = {p.device_id: p.status for p in store.deployment_progress(deployment)}
    assert progress[a] == progress[b] == "rollback-pending"
    assert progress[c] == "failure" and progress[d] == "pending"
    assert all(s == "pending" for dev, s in progress.items() if dev not in phase0)
    actions = store.pending_actions()
    assert set(actions) == {a, b}
    assert actions[a].kind == "rollback" and actions[a].release.id == old.id
    assert store.may_download(a, old.id) and not store.may_download(a, new.id)
    assert not store.may_download(d, new.id)
    assert store.get_device(a).status == "rollback-pending"

    with pytest.raises(Invalid, match=r"'1\.1\.0' is not the version"):
        store.report_status(
            deployment_id=deployment,
            device_id=a,
            status="rolled-back",
            reason=None,
            version="1.1.0",
            now=T0,
        )
    _walk(store, deployment, a, "rolled-back")
    _walk(store, deployment, b, "rolled-back")
    assert store.pending_actions() == {}
    device_a = store.get_device(a)
    assert device_a.installed == Installed("kws", "1.0.0", old.sha256)
    assert device_a.status == "active"
    assert [h.event for h in store.device_history(a)] == ["rolled-back", "updated", "enrolled"]
    # b never committed 1.1.0: its record did not change.
    assert [h.event for h in store.device_history(b)] == ["enrolled"]
    # Nothing more happens to an aborted deployment.
    assert store.evaluate_deployment(deployment, T0 + timedelta(hours=1)).changed is False
    # d got the offer just before the abort and starts downloading after it: turned around.
    _walk(store, deployment, d, "downloading")
    assert {p.device_id: p.status for p in store.deployment_progress(deployment)}[d] == (
        "rollback-pending"
    )
    assert store.pending_actions()[d].kind == "rollback"
    turned = store.audit_log(target=f"deployment:{deployment}/device:{d}")[0]
    assert turned.after == {"status": "rollback-pending", "reason": None, "reported": "downloading"}


def test_operator_actions(store: Store, fleet: tuple) -> None:
    _, new = fleet
    deployment = _deploy(store, new, tags={"group": "lab"})
    record, _ = store.deployment_action(deployment, "pause", ADMIN, T0)
    assert record.state.status == "paused"
    assert store.pending_actions() == {}
    with pytest.raises(InvalidTransition, match="'paused' to 'paused'"):
        store.deployment_action(deployment, "pause", ADMIN, T0)
    store.deployment_action(deployment, "resume", ADMIN, T0)
    assert len(store.pending_actions()) == 10
    _walk(store, deployment, "lab-3", "downloading", "downloaded", "installing", "trial", "success")
    record, outcome = store.deployment_action(deployment, "rollback", ADMIN, T0)
    assert record.state.status == "aborted" and outcome.rolled_back == ("lab-3",)
    assert record.reason == f"operator: rolled back by {ADMIN}"
    assert set(store.pending_actions()) == {"lab-3"}
    with pytest.raises(InvalidTransition):
        store.deployment_action(deployment, "resume", ADMIN, T0)
    second = _deploy(store, new, tags={"group": "field"})
    store.deployment_action(second, "cancel", ADMIN, T0)
    assert store.get_deployment(second).state.status == "cancelled"
    with pytest.raises(NotFound):
        store.deployment_action(999, "pause", ADMIN, T0)
    actions = [r.action for r in store.audit_log(target=f"deployment:{deployment}", limit=1000)]
    assert actions.count(AuditAction.DEPLOYMENT_PAUSE) == 1
    assert AuditAction.DEPLOYMENT_ABORT in actions


# --- commands, telemetry, audit, metrics ------------------------------------------------------


def test_commands_are_delivered_once_and_answered_once(store: Store) -> None:
    etk = _enroll_token(store)
    _enroll(store, etk, "nano-1")
    _enroll(store, etk, "nano-2")
    command = store.create_command("nano-1", "fetch_logs", {"lines": 50}, ADMIN, T0)
    assert [c.id for c in store.take_commands("nano-1", T0)] == [command.id]
    assert store.take_commands("nano-1", T0) == []
    assert store.take_commands("nano-2", T0) == []
    with pytest.raises(Forbidden):
        store.complete_command("nano-2", command.id, True, {}, T0)
    done = store.complete_command("nano-1", command.id, True, {"lines": ["a"]}, T0)
    assert done.status == "done" and done.ok is True and done.output == {"lines": ["a"]}
    with pytest.raises(Conflict):
        store.complete_command("nano-1", command.id, True, {}, T0)
    with pytest.raises(NotFound):
        store.complete_command("nano-1", 999, True, {}, T0)
    assert [c.status for c in store.list_commands("nano-1")] == ["done"]
    with pytest.raises(NotFound):
        store.create_command("nope", "reboot", {}, ADMIN, T0)


def test_telemetry_and_logs(store: Store) -> None:
    etk = _enroll_token(store)
    _enroll(store, etk, "nano-1")
    points = [(T0 + timedelta(seconds=i), "inference_latency_ms", 3.0 + i) for i in range(2500)]
    logs = [(T0, "info", "committed slot b")]
    assert store.add_telemetry("nano-1", points, logs) == (2500, 1)
    newest = store.telemetry("nano-1", "inference_latency_ms", limit=2)
    assert [p.value for p in newest] == [2502.0, 2501.0]
    assert store.device_logs("nano-1")[0].message == "committed slot b"


def test_metrics_counts(store: Store, fleet: tuple) -> None:
    _, new = fleet
    counts = {(s, h, r): n for s, h, r, n in store.device_counts()}
    assert counts == {
        ("active", "nano33ble", "kws@1.0.0"): 12,
        ("active", "rpi4", "kws@1.0.0"): 1,
    }
    deployment = _deploy(
        store, new, PhaseSpec(count=2), PhaseSpec(percent=100), tags={"group": "lab"}
    )
    live = store.live_deployment_counts()
    assert sorted((p, st, n) for d, p, st, n in live if d == deployment) == [
        (0, "pending", 2),
        (1, "pending", 8),
    ]
    assert store.deployment_status_counts() == {"running": 1}


def test_concurrent_writers_neither_fail_nor_lose_updates(store: Store, fleet: tuple) -> None:
    import threading

    _, new = fleet
    deployment = _deploy(store, new, tags={"group": "lab"})
    errors: list[BaseException] = []
    update = ("downloading", "downloaded", "installing", "trial", "success")

    def guarded(work: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except BaseException as exc:  # collected: a thread's failure must fail the test
                errors.append(exc)

        return run

    def evaluations() -> None:
        for _ in range(20):
            store.evaluate_deployment(deployment, T0 + timedelta(seconds=1))

    def checkins() -> None:
        for n in range(20):
            store.record_checkins(
                [
                    CheckinWrite(f"lab-{i}", T0 + timedelta(seconds=n), {"n": n}, None)
                    for i in range(10)
                ]
            )

    work = [lambda d=f"lab-{i}": _walk(store, deployment, d, *update) for i in range(10)]
    threads = [threading.Thread(target=guarded(w)) for w in (*work, evaluations, checkins)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    store.evaluate_deployment(deployment, T0 + timedelta(seconds=2))
    record = store.get_deployment(deployment)
    assert record.state.status == "succeeded"
    assert record.phase_counts[0]["success"] == 10
    reports = store.audit_log(
        target=f"deployment:{deployment}",
        action=AuditAction.DEPLOYMENT_DEVICE_STATUS.value,
        limit=1000,
    )
    assert len(reports) == 10 * len(update)
    assert store.get_device("lab-3").health == {"n": 19}
