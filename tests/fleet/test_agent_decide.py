"""The pure parts of the agent: state transitions, crash-loop counting, and `decide`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from test_agent_support import HARDWARE, NOW, SERVER_KEY

from tinyops.fleet.agent.decide import Confirm, Idle, Proceed, Refuse, Skip, decide
from tinyops.fleet.agent.messages import CheckinResponse, ReleaseOffer
from tinyops.fleet.agent.state import (
    MAX_FINISHED,
    AgentState,
    SlotContent,
    advance_update,
    begin_update,
    commit_trial,
    confirm_rollback,
    drop_report,
    enter_trial,
    on_boot,
    record_slot,
    refuse_update,
    revert_trial,
)
from tinyops.security.rollback import sign_rollback_order

DEVICE = "pi-0001"
SHA_OLD, SHA_NEW = "a" * 64, "b" * 64


def content(version: str, sha: str) -> SlotContent:
    return SlotContent(
        name="digits",
        version=version,
        target=HARDWARE,
        sha256=sha,
        size=1000,
        filename=f"digits-{version}-{HARDWARE}.tinybundle",
        installed_at=NOW,
    )


def offer(version: str = "1.2.0", sha: str = SHA_NEW, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "digits",
        "version": version,
        "target": HARDWARE,
        "url": "/api/v1/device/artifacts/5",
        "size": 1000,
        "sha256": sha,
        **overrides,
    }


def update(deployment_id: int = 17, rollback: Any = None, **release: Any) -> CheckinResponse:
    return CheckinResponse.model_validate(
        {
            "action": "update",
            "poll_interval_s": 60,
            "deployment_id": deployment_id,
            "release": offer(**release),
            "rollback": rollback,
        }
    )


def running(version: str = "1.1.0") -> AgentState:
    """A device committed on `version` in slot a."""
    return AgentState(active="a", slots={"a": content(version, SHA_OLD)}, boots=1)


def statuses(state: AgentState) -> list[str]:
    return [entry.report.status for entry in state.outbox]


def installed_on_trial(state: AgentState) -> AgentState:
    """Walk the update of deployment 17 (1.2.0) up to its trial in slot b."""
    state = begin_update(state, 17, "update", ReleaseOffer.model_validate(offer()), None)
    state = advance_update(state, "downloaded")
    state = advance_update(state, "installing")
    state = record_slot(state, "b", None)
    state = record_slot(state, "b", content("1.2.0", SHA_NEW))
    return enter_trial(state, "b", NOW)


def decide_now(state: AgentState, answer: CheckinResponse) -> Any:
    return decide(
        state,
        answer,
        hardware=HARDWARE,
        device_id=DEVICE,
        server_key=SERVER_KEY.public_key(),
        now=NOW,
    )


# ---- transitions ----------------------------------------------------------------------


def test_update_walks_to_trial_reporting_each_stage() -> None:
    state = installed_on_trial(running())
    assert (state.active, state.phase, state.update) == ("b", "trial", None)
    assert state.trial is not None
    assert (state.trial.slot, state.trial.previous, state.trial.boots) == ("b", "a", 1)
    assert statuses(state) == ["downloading", "downloaded", "installing", "trial"]
    assert {e.report.version for e in state.outbox} == {"1.2.0"}
    # Reaching a stage twice (resume after a crash) reports it once.
    assert (
        advance_update(
            begin_update(running(), 1, "update", ReleaseOffer.model_validate(offer()), None),
            "downloading",
        ).outbox
        == begin_update(running(), 1, "update", ReleaseOffer.model_validate(offer()), None).outbox
    )


def test_commit_and_revert() -> None:
    trial = installed_on_trial(running())
    committed = commit_trial(trial)
    assert (committed.active, committed.phase, committed.installed) == (
        "b",
        "committed",
        content("1.2.0", SHA_NEW),
    )
    assert statuses(committed)[-1] == "success"
    assert committed.finished_status(17) == "success"
    reverted = revert_trial(trial, "self-test failed: 1/3")
    assert (reverted.active, reverted.phase) == ("a", "committed")
    assert reverted.installed == content("1.1.0", SHA_OLD)
    assert reverted.outbox[-1].report.status == "failure"
    assert reverted.outbox[-1].report.reason == "self-test failed: 1/3"
    # The failed release stays in slot b, inactive.
    assert reverted.slots["b"].version == "1.2.0"


def test_rollback_reports_only_its_outcome() -> None:
    # The server moved the device to rollback-pending: only rolled-back or failure may follow.
    release = ReleaseOffer.model_validate(offer("1.0.0"))
    state = begin_update(running("1.2.0"), 9, "rollback", release, None)
    state = advance_update(advance_update(state, "downloaded"), "installing")
    state = record_slot(state, "b", content("1.0.0", SHA_NEW))
    trial = enter_trial(state, "b", NOW)
    assert statuses(trial) == []
    committed = commit_trial(trial)
    assert statuses(committed) == ["rolled-back"]
    assert committed.finished_status(9, "rollback") == "rolled-back"
    assert committed.finished_status(9, "update") is None
    assert statuses(revert_trial(trial, "self-test failed")) == ["failure"]
    confirmed = confirm_rollback(running("1.2.0"), 9, "1.2.0")
    assert statuses(confirmed) == ["rolled-back"]


def test_refusal_finishes_the_deployment_and_drop_report_pops_in_order() -> None:
    state = refuse_update(running(), 17, "1.2.0", "wrong target")
    assert statuses(state) == ["failure"]
    assert state.finished_status(17) == "failure"
    assert drop_report(state).outbox == ()


def test_active_slot_is_never_overwritten() -> None:
    with pytest.raises(ValueError, match="slot a is active"):
        record_slot(running(), "a", None)


def test_finished_deployments_are_bounded() -> None:
    state = running()
    for deployment in range(MAX_FINISHED + 5):
        state = drop_report(refuse_update(state, deployment, "1.2.0", "no"))
    assert len(state.finished) == MAX_FINISHED
    assert state.finished_status(0) is None
    assert state.finished_status(MAX_FINISHED + 4) == "failure"


def test_crash_loop_reverts_after_three_boots_on_trial() -> None:
    state = installed_on_trial(running())
    # The switch was boot 1 of the trial; each restart before a commit adds one.
    outcomes = []
    for _ in range(3):
        outcome = on_boot(state, max_trial_boots=3)
        outcomes.append(outcome.action)
        state = outcome.state
    assert outcomes == ["continue-trial", "continue-trial", "reverted"]
    assert (state.active, state.phase, state.trial) == ("a", "committed", None)
    assert state.outbox[-1].report.status == "failure"
    assert state.outbox[-1].report.reason == (
        "crash loop: 4 boots on trial without a commit (at most 3 allowed)"
    )
    assert state.boots == 4
    assert state.resets_total == 3
    assert on_boot(state).action == "normal"


def test_state_rejects_inconsistent_combinations() -> None:
    with pytest.raises(ValueError, match="phase is 'trial' exactly when trial is set"):
        AgentState(active="a", slots={"a": content("1.0.0", SHA_OLD)}, phase="trial")
    with pytest.raises(ValueError, match="active slot b holds no bundle"):
        AgentState(active="b")


# ---- decide ---------------------------------------------------------------------------


def test_no_action_is_idle_and_abandons_an_unfinished_job() -> None:
    none = CheckinResponse(action="none", poll_interval_s=42)
    assert decide_now(running(), none) == Idle(42)
    fetching = begin_update(running(), 17, "update", ReleaseOffer.model_validate(offer()), None)
    assert decide_now(fetching, none) == Idle(42, abandon=True)


def test_upgrade_proceeds_and_resumes_its_own_job() -> None:
    decision = decide_now(running(), update())
    assert isinstance(decision, Proceed)
    assert (decision.kind, decision.resume, decision.deployment_id) == ("update", False, 17)
    fetching = begin_update(running(), 17, "update", decision.release, None)
    assert decide_now(fetching, update()) == Proceed(17, "update", decision.release, None, True)
    # Same deployment, other file: start over.
    other = decide_now(fetching, update(sha="c" * 64))
    assert isinstance(other, Proceed) and not other.resume


def test_fresh_device_accepts_any_version() -> None:
    assert isinstance(decide_now(AgentState(), update(version="0.0.1")), Proceed)


def test_wrong_target_is_refused_without_download() -> None:
    decision = decide_now(running(), update(target="nano33ble"))
    assert isinstance(decision, Refuse)
    assert decision.check == "target"
    assert "targets 'nano33ble', this device is 'rpi4'" in decision.reason


def test_downgrade_without_order_is_refused_without_download() -> None:
    decision = decide_now(running("1.2.0"), update(version="1.1.0"))
    assert isinstance(decision, Refuse) and decision.check == "downgrade"
    # Build metadata does not order versions: 1.2.0+b is not newer than 1.2.0.
    same = decide_now(running("1.2.0"), update(version="1.2.0+b"))
    assert isinstance(same, Refuse) and same.check == "downgrade"


def test_signed_rollback_proceeds_and_a_foreign_one_is_refused() -> None:
    order = {
        "device_id": DEVICE,
        "deployment_id": 17,
        "sha256": SHA_NEW,
        "version": "1.0.0",
        "issued_at": NOW,
        "expires_at": NOW + timedelta(hours=1),
    }
    good = decide_now(
        running("1.2.0"), update(version="1.0.0", rollback=sign_rollback_order(SERVER_KEY, order))
    )
    assert isinstance(good, Proceed) and good.kind == "rollback"
    foreign = sign_rollback_order(SERVER_KEY, {**order, "device_id": "pi-0002"})
    bad = decide_now(running("1.2.0"), update(version="1.0.0", rollback=foreign))
    assert isinstance(bad, Refuse) and bad.check == "rollback-order"


def test_finished_deployment_and_trial_are_skipped() -> None:
    done = refuse_update(running(), 17, "1.2.0", "no")
    assert decide_now(done, update()) == Skip(
        "deployment 17 (update) already finished here: failure"
    )
    on_trial = installed_on_trial(running())
    decision = decide_now(on_trial, update(deployment_id=18, version="1.3.0"))
    assert isinstance(decision, Skip) and "on trial" in decision.reason


def rollback_order(sha: str, version: str, deployment_id: int = 17) -> dict[str, Any]:
    return sign_rollback_order(
        SERVER_KEY,
        {
            "device_id": DEVICE,
            "deployment_id": deployment_id,
            "sha256": sha,
            "version": version,
            "issued_at": NOW,
            "expires_at": NOW + timedelta(hours=1),
        },
    )


def test_rollback_of_a_deployment_whose_update_succeeded_proceeds() -> None:
    # Deployment 17 installed 1.2.0 (slot b); the server aborts 17 and sends 1.1.0 back.
    after = commit_trial(installed_on_trial(running()))
    back = update(version="1.1.0", sha="c" * 64, rollback=rollback_order("c" * 64, "1.1.0"))
    decision = decide_now(after, back)
    assert isinstance(decision, Proceed) and decision.kind == "rollback"
    # Once rolled back, the same offer is not acted on again.
    done = commit_trial(
        enter_trial(
            record_slot(
                begin_update(after, 17, "rollback", decision.release, decision.rollback),
                "a",
                content("1.1.0", "c" * 64),
            ),
            "a",
            NOW,
        )
    )
    assert isinstance(decide_now(done, back), Skip)


def test_rollback_to_the_running_release_is_confirmed_without_install() -> None:
    # Deployment 17 was still downloading when it was aborted: 1.1.0 still runs.
    fetching = begin_update(running(), 17, "update", ReleaseOffer.model_validate(offer()), None)
    back = update(version="1.1.0", sha=SHA_OLD, rollback=rollback_order(SHA_OLD, "1.1.0"))
    assert decide_now(fetching, back) == Confirm(17, "1.1.0")


def test_update_answer_without_release_is_malformed() -> None:
    with pytest.raises(ValueError, match="needs deployment_id and release"):
        CheckinResponse.model_validate({"action": "update", "poll_interval_s": 60})
