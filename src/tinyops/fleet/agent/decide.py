"""What the agent does with a check-in answer: a pure function of (state, answer).

    Idle      nothing to install; wait `poll_interval_s` (and forget an unfinished job the
              server no longer offers: its deployment was cancelled or paused)
    Skip      an update is offered but must not be acted on now: its deployment already
              finished on this device (the server has not heard the final report yet),
              or a release is still on trial
    Confirm   a rollback to the release that is running anyway (the update it undoes
              never got installed): report rolled-back, install nothing
    Refuse    the offer fails a check that needs no download (wrong target, downgrade
              without a valid signed rollback order): report failure, download nothing
    Proceed   fetch (or resume fetching) the release and install it

All the I/O (download, verification of the bytes, install, reports) is the agent's; this
module only decides, so every branch is tested without a server or a store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tinyops.fleet.agent.messages import CheckinResponse, ReleaseOffer, SignedRollbackOrder
from tinyops.fleet.agent.state import AgentState, UpdateKind
from tinyops.fleet.agent.verify import RefusalCheck, UpdateRefused, check_offer


@dataclass(frozen=True)
class Idle:
    poll_interval_s: float
    abandon: bool = False
    """True if an unfinished job must be forgotten (no longer offered)."""


@dataclass(frozen=True)
class Skip:
    reason: str


@dataclass(frozen=True)
class Refuse:
    deployment_id: int
    version: str
    check: RefusalCheck
    reason: str
    kind: UpdateKind = "update"


@dataclass(frozen=True)
class Confirm:
    deployment_id: int
    version: str


@dataclass(frozen=True)
class Proceed:
    deployment_id: int
    kind: UpdateKind
    release: ReleaseOffer
    rollback: SignedRollbackOrder | None
    resume: bool
    """True if the state's job is this very release: continue it, do not start over."""


Decision = Idle | Skip | Refuse | Confirm | Proceed


def decide(
    state: AgentState,
    answer: CheckinResponse,
    *,
    hardware: str,
    device_id: str,
    server_key: Ed25519PublicKey | None,
    now: datetime,
) -> Decision:
    if answer.action == "none":
        return Idle(answer.poll_interval_s, abandon=state.update is not None)
    # The response model guarantees both for action "update".
    assert answer.deployment_id is not None and answer.release is not None
    deployment_id, release = answer.deployment_id, answer.release
    # The same deployment comes back with a rollback order after the server aborted it:
    # its update may have finished here, its rollback not yet.
    offered: UpdateKind = "rollback" if answer.rollback is not None else "update"
    finished = state.finished_status(deployment_id, offered)
    if finished is not None:
        return Skip(f"deployment {deployment_id} ({offered}) already finished here: {finished}")
    if state.phase == "trial":
        return Skip(f"a release is on trial in slot {state.active}; deciding after its self-test")
    try:
        kind = check_offer(
            release,
            hardware=hardware,
            device_id=device_id,
            installed=state.installed,
            rollback=answer.rollback,
            server_key=server_key,
            now=now,
        )
    except UpdateRefused as refused:
        return Refuse(deployment_id, release.version, refused.check, str(refused), offered)
    installed = state.installed
    if kind == "rollback" and installed is not None and installed.sha256 == release.sha256:
        return Confirm(deployment_id, release.version)
    job = state.update
    resume = (
        job is not None
        and job.deployment_id == deployment_id
        and job.release.sha256 == release.sha256
        and job.release.size == release.size
    )
    return Proceed(deployment_id, kind, release, answer.rollback, resume)


__all__ = ["Confirm", "Decision", "Idle", "Proceed", "Refuse", "Skip", "decide"]
