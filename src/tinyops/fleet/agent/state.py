"""The agent's persistent state and the pure transitions between its states.

A device has two slots, `a` and `b`, each holding at most one `.tinybundle`. One slot is
active. A new release is always written to the inactive slot, so the running release is
never touched until the new one has proven itself:

    committed ──(install into the inactive slot, switch)──► trial ──(self-test passes)──► committed
                                                              │
                                                              └─(self-test fails, or more than
                                                                 max_trial_boots boots without a
                                                                 commit: a crash loop)──► previous
                                                                                          slot,
                                                                                          committed

While a release is being fetched, `update` records the deployment and how far it got
(downloading → downloaded → installing), so that an agent that loses power resumes where it
stopped.

An update reports every step: downloading, downloaded, installing, trial, then success or
failure. A rollback (the server aborted a deployment and sends a signed order to go back
to the previous release, under the same deployment id) reports only its outcome,
rolled-back or failure: the server has moved the device to rollback-pending, from which
nothing else may follow. A device that still runs the previous release (the update never
got that far) reports rolled-back at once.

Every transition the server must hear about is queued in `outbox` in the same
atomic state write as the transition itself; the agent delivers the queue in order and drops
an entry once the server answered it. A report is therefore never lost by a crash, and
never sent for a transition that did not happen.

Every function here returns a new state and never does I/O: the agent saves the result
(atomically, through its `SlotStore`) before acting on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from tinyops.fleet.agent.messages import (
    MAX_REASON_CHARS,
    DeploymentStatus,
    InstalledRef,
    LogLevel,
    ReleaseOffer,
    SignedRollbackOrder,
    SlotName,
    SlotPhase,
    StatusReport,
    clean_text,
)

STATE_FORMAT: Final = "tinyops.agent-state/1"
# How many finished deployments the agent remembers, so that a server still offering one
# (e.g. before it received the final report) does not make the device install it again.
MAX_FINISHED: Final = 32
DEFAULT_MAX_TRIAL_BOOTS: Final = 3

UpdateKind = Literal["update", "rollback"]
UpdateStage = Literal["downloading", "downloaded", "installing"]
_STAGE_ORDER: Final = {"downloading": 0, "downloaded": 1, "installing": 2}


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SlotContent(_Frozen):
    """The bundle a slot holds."""

    name: str = Field(description="Model name from the verified manifest.")
    version: str = Field(description="SemVer version from the verified manifest.")
    target: str = Field(description="Board id from the verified manifest.")
    sha256: str = Field(description="sha256 of the whole .tinybundle file, hex.")
    size: int = Field(ge=0, description="Size of the .tinybundle file, bytes.")
    filename: str = Field(description="File name inside the slot, <name>-<version>-<target>.")
    installed_at: AwareDatetime = Field(description="When it was written to the slot (UTC).")

    def ref(self) -> InstalledRef:
        return InstalledRef(name=self.name, version=self.version, sha256=self.sha256)


class TrialInfo(_Frozen):
    """A release on trial: active but not yet committed."""

    deployment_id: int = Field(description="Deployment that installed it.")
    kind: UpdateKind = Field(description="update, or rollback (reported as rolled-back).")
    slot: SlotName = Field(description="The slot on trial (the active one).")
    previous: SlotName | None = Field(description="Slot to revert to; None if none was active.")
    boots: int = Field(ge=1, description="Boots into the trial slot, the switch included.")
    started_at: AwareDatetime = Field(description="When the trial started (UTC).")


class UpdateJob(_Frozen):
    """A release being fetched, verified and written, before the switch to trial."""

    deployment_id: int = Field(description="Deployment the release belongs to.")
    kind: UpdateKind = Field(description="update, or rollback (carries a signed order).")
    release: ReleaseOffer = Field(description="What the check-in announced.")
    rollback: SignedRollbackOrder | None = Field(default=None, description="Signed order.")
    stage: UpdateStage = Field(default="downloading", description="How far it got.")
    attempts: int = Field(default=0, ge=0, description="Downloads whose sha256 was wrong.")


class PendingReport(_Frozen):
    """A status report not yet acknowledged by the server."""

    deployment_id: int = Field(description="Deployment the report is about.")
    report: StatusReport = Field(description="The report body.")


class FinishedDeployment(_Frozen):
    """A deployment's update, or its rollback, that reached a final state on this device."""

    deployment_id: int = Field(description="Deployment id.")
    kind: UpdateKind = Field(default="update", description="The update, or its rollback.")
    status: DeploymentStatus = Field(description="success, failure or rolled-back.")


class AgentState(_Frozen):
    """Everything the agent must remember across restarts (state.json)."""

    format: Literal["tinyops.agent-state/1"] = Field(default=STATE_FORMAT, description="Format.")
    active: SlotName | None = Field(default=None, description="Active slot; None: nothing.")
    phase: SlotPhase = Field(default="committed", description="committed or trial.")
    slots: dict[SlotName, SlotContent] = Field(
        default_factory=dict, description="What each slot holds; an absent key is empty."
    )
    trial: TrialInfo | None = Field(default=None, description="The trial, when phase=trial.")
    update: UpdateJob | None = Field(default=None, description="Release being fetched.")
    outbox: tuple[PendingReport, ...] = Field(default=(), description="Reports to deliver.")
    finished: tuple[FinishedDeployment, ...] = Field(
        default=(), description=f"The last {MAX_FINISHED} finished deployments, oldest first."
    )
    boots: int = Field(default=0, ge=0, description="Times the agent has booted.")
    log_level: LogLevel = Field(default="info", description="Lowest log level recorded.")

    @model_validator(mode="after")
    def _consistent(self) -> AgentState:
        if (self.phase == "trial") != (self.trial is not None):
            raise ValueError("phase is 'trial' exactly when trial is set")
        if self.trial is not None and self.trial.slot != self.active:
            raise ValueError(f"the trial slot {self.trial.slot} must be the active slot")
        if self.active is not None and self.active not in self.slots:
            raise ValueError(f"active slot {self.active} holds no bundle")
        return self

    @property
    def installed(self) -> SlotContent | None:
        """The bundle of the active slot (on trial or committed)."""
        return self.slots.get(self.active) if self.active is not None else None

    @property
    def inactive_slot(self) -> SlotName:
        """Where the next release goes."""
        return "b" if self.active == "a" else "a"

    @property
    def resets_total(self) -> int:
        """Boots after the first one."""
        return max(self.boots - 1, 0)

    def finished_status(
        self, deployment_id: int, kind: UpdateKind = "update"
    ) -> DeploymentStatus | None:
        """How the deployment's update (or rollback) ended here; None if it has not."""
        for entry in self.finished:
            if entry.deployment_id == deployment_id and entry.kind == kind:
                return entry.status
        return None


class Identity(_Frozen):
    """What enrollment gave the device (identity.json, owner-readable only)."""

    device_id: str = Field(description="The id the server registered.")
    device_token: str = Field(description="Bearer token, dev_...")
    server_key: str = Field(description="Base64 raw Ed25519 key that signs rollback orders.")
    poll_interval_s: float = Field(gt=0, description="Check-in interval from the server.")


def _update(state: AgentState, **changes: object) -> AgentState:
    # model_validate re-runs the consistency checks; model_copy would skip them.
    return AgentState.model_validate({**dict(state), **changes})


def queue_report(
    state: AgentState,
    deployment_id: int,
    status: DeploymentStatus,
    *,
    version: str | None,
    reason: str | None = None,
) -> AgentState:
    if reason is not None:
        reason = clean_text(reason, MAX_REASON_CHARS)
    report = StatusReport(status=status, reason=reason, version=version)
    entry = PendingReport(deployment_id=deployment_id, report=report)
    return _update(state, outbox=(*state.outbox, entry))


def drop_report(state: AgentState) -> AgentState:
    """The state without the oldest queued report (the server answered it)."""
    return _update(state, outbox=state.outbox[1:])


def _finish(
    state: AgentState, deployment_id: int, kind: UpdateKind, status: DeploymentStatus
) -> AgentState:
    kept = tuple(f for f in state.finished if (f.deployment_id, f.kind) != (deployment_id, kind))
    entry = FinishedDeployment(deployment_id=deployment_id, kind=kind, status=status)
    return _update(state, finished=(*kept, entry)[-MAX_FINISHED:])


def begin_update(
    state: AgentState,
    deployment_id: int,
    kind: UpdateKind,
    release: ReleaseOffer,
    rollback: SignedRollbackOrder | None,
) -> AgentState:
    """Start fetching `release`; replaces any unfinished job (the server moved on)."""
    job = UpdateJob(deployment_id=deployment_id, kind=kind, release=release, rollback=rollback)
    state = _update(state, update=job)
    if kind == "rollback":
        return state
    return queue_report(state, deployment_id, "downloading", version=release.version)


def advance_update(state: AgentState, stage: UpdateStage) -> AgentState:
    """Move the job forward to `stage`, reporting it; a stage already reached is a no-op."""
    job = state.update
    if job is None:
        raise ValueError("no update in progress")
    if _STAGE_ORDER[stage] <= _STAGE_ORDER[job.stage]:
        return state
    state = _update(state, update=job.model_copy(update={"stage": stage}))
    if job.kind == "rollback":
        return state
    return queue_report(state, job.deployment_id, stage, version=job.release.version)


def count_download_attempt(state: AgentState) -> AgentState:
    """One more download came out with the wrong size or sha256."""
    job = state.update
    if job is None:
        raise ValueError("no update in progress")
    return _update(state, update=job.model_copy(update={"attempts": job.attempts + 1}))


def clear_update(state: AgentState) -> AgentState:
    """Forget the job without a report: the server no longer offers it (cancelled)."""
    return _update(state, update=None)


def refuse_update(
    state: AgentState,
    deployment_id: int,
    version: str | None,
    reason: str,
    kind: UpdateKind = "update",
) -> AgentState:
    """Give up on a release before installing it and report `failure` with `reason`."""
    state = _update(state, update=None)
    state = queue_report(state, deployment_id, "failure", version=version, reason=reason)
    return _finish(state, deployment_id, kind, "failure")


def confirm_rollback(state: AgentState, deployment_id: int, version: str) -> AgentState:
    """The rollback's release is the one already running: report rolled-back at once."""
    if state.update is not None and state.update.deployment_id == deployment_id:
        state = _update(state, update=None)
    state = queue_report(state, deployment_id, "rolled-back", version=version)
    return _finish(state, deployment_id, "rollback", "rolled-back")


def record_slot(state: AgentState, slot: SlotName, content: SlotContent | None) -> AgentState:
    """What `slot` holds now; None marks it empty (before it is overwritten)."""
    if slot == state.active:
        raise ValueError(f"slot {slot} is active: a release is only ever written to the other")
    slots = {k: v for k, v in state.slots.items() if k != slot}
    if content is not None:
        slots[slot] = content
    return _update(state, slots=slots)


def enter_trial(state: AgentState, slot: SlotName, now: datetime) -> AgentState:
    """Switch to `slot` (which holds the job's release) and start its trial: boot 1."""
    job = state.update
    if job is None:
        raise ValueError("no update in progress")
    content = state.slots.get(slot)
    if content is None or content.sha256 != job.release.sha256:
        raise ValueError(f"slot {slot} does not hold the release of deployment {job.deployment_id}")
    trial = TrialInfo(
        deployment_id=job.deployment_id,
        kind=job.kind,
        slot=slot,
        previous=state.active,
        boots=1,
        started_at=now,
    )
    state = _update(state, active=slot, phase="trial", trial=trial, update=None)
    if job.kind == "rollback":
        return state
    return queue_report(state, job.deployment_id, "trial", version=content.version)


def commit_trial(state: AgentState) -> AgentState:
    """The trial passed: keep the slot and report success (rolled-back for a rollback)."""
    trial = state.trial
    if trial is None:
        raise ValueError("no release on trial")
    status: DeploymentStatus = "rolled-back" if trial.kind == "rollback" else "success"
    version = state.slots[trial.slot].version
    state = _update(state, phase="committed", trial=None)
    state = queue_report(state, trial.deployment_id, status, version=version)
    return _finish(state, trial.deployment_id, trial.kind, status)


def revert_trial(state: AgentState, reason: str) -> AgentState:
    """The trial failed: make the previous slot active again and report failure."""
    trial = state.trial
    if trial is None:
        raise ValueError("no release on trial")
    version = state.slots[trial.slot].version
    state = _update(state, active=trial.previous, phase="committed", trial=None)
    state = queue_report(state, trial.deployment_id, "failure", version=version, reason=reason)
    return _finish(state, trial.deployment_id, trial.kind, "failure")


@dataclass(frozen=True)
class BootOutcome:
    """What a boot found: `state` to save, and whether a trial must go on or was reverted."""

    state: AgentState
    action: Literal["normal", "continue-trial", "reverted"]
    reason: str | None = None


def on_boot(state: AgentState, max_trial_boots: int = DEFAULT_MAX_TRIAL_BOOTS) -> BootOutcome:
    """Count a boot; a trial that has now booted more than `max_trial_boots` times is reverted.

    A release that crashes the device (or the agent) before its self-test commits it makes
    every boot land here again; after `max_trial_boots` such boots the agent gives up on it
    on its own, without needing the server.
    """
    if max_trial_boots < 1:
        raise ValueError(f"max_trial_boots must be >= 1, got {max_trial_boots}")
    state = _update(state, boots=state.boots + 1)
    trial = state.trial
    if trial is None:
        return BootOutcome(state, "normal")
    boots = trial.boots + 1
    if boots > max_trial_boots:
        reason = (
            f"crash loop: {boots} boots on trial without a commit "
            f"(at most {max_trial_boots} allowed)"
        )
        return BootOutcome(revert_trial(state, reason), "reverted", reason)
    state = _update(state, trial=trial.model_copy(update={"boots": boots}))
    return BootOutcome(state, "continue-trial")


__all__ = [
    "DEFAULT_MAX_TRIAL_BOOTS",
    "MAX_FINISHED",
    "STATE_FORMAT",
    "AgentState",
    "BootOutcome",
    "FinishedDeployment",
    "Identity",
    "PendingReport",
    "SlotContent",
    "TrialInfo",
    "UpdateJob",
    "UpdateKind",
    "UpdateStage",
    "advance_update",
    "begin_update",
    "clear_update",
    "commit_trial",
    "confirm_rollback",
    "count_download_attempt",
    "drop_report",
    "enter_trial",
    "on_boot",
    "queue_report",
    "record_slot",
    "refuse_update",
    "revert_trial",
]
