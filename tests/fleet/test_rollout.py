"""The staged-rollout engine: phase assignment, transitions, and the evaluation rules."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyops.errors import TinyopsError
from tinyops.fleet.rollout import (
    ALLOWED,
    DEVICE_STATUSES,
    FINAL,
    REACHED,
    Decision,
    DeviceStatus,
    InvalidTransition,
    PhaseSpec,
    Progress,
    RolloutState,
    apply,
    assign_phases,
    cancel,
    check_transition,
    evaluate,
    evaluate_counts,
    initial_state,
    manual_rollback,
    parse_phases,
    parse_share,
    pause,
    phase_counts,
    phase_sizes,
    phases_from_dicts,
    resume,
    rollout_order,
    validate_phases,
)

T0 = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)
FOUR = parse_phases("1%,10%,50%,100%")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def progress(*phases: list[DeviceStatus]) -> list[Progress]:
    """Devices named p<phase>-<index>, with the given statuses per phase."""
    return [
        Progress(f"p{q}-{i:02d}", q, status)
        for q, statuses in enumerate(phases)
        for i, status in enumerate(statuses)
    ]


def sizes(assignment: dict[str, int], k: int) -> list[int]:
    return [sum(1 for q in assignment.values() if q == p) for p in range(k)]


# --- assignment ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "expected"),
    [
        (1, [1, 0, 0, 0]),  # fewer devices than phases: later phases empty
        (3, [1, 0, 1, 1]),  # cuts ceil(0.03)=1, ceil(0.3)=1, ceil(1.5)=2, 3
        (10, [1, 1, 3, 5]),  # raw cuts 1, 1, 5, 10; phase 1 raised to one device
        (1000, [10, 90, 400, 500]),  # cuts 10, 100, 500, 1000: plain percentages
    ],
)
def test_assignment_split_counts(n: int, expected: list[int]) -> None:
    ids = [f"nano-{i:04d}" for i in range(n)]
    assignment = assign_phases(ids, FOUR, seed="deploy-17")
    assert sizes(assignment, 4) == expected
    assert list(phase_sizes(FOUR, n)) == expected
    assert sorted(assignment) == sorted(ids)


def test_assignment_golden_order_for_a_fixed_seed() -> None:
    # Order by sha256(b"deploy-17\x00" + id); checked independently with hashlib once.
    ids = [f"dev-{i:02d}" for i in range(10)]
    assignment = assign_phases(ids, FOUR, seed="deploy-17")
    assert assignment == {
        "dev-00": 0,
        "dev-05": 1,
        "dev-02": 2,
        "dev-04": 2,
        "dev-08": 2,
        "dev-07": 3,
        "dev-06": 3,
        "dev-01": 3,
        "dev-03": 3,
        "dev-09": 3,
    }
    assert list(assignment) == rollout_order(ids, "deploy-17")


def test_assignment_is_stable_under_permutations_and_depends_on_seed() -> None:
    ids = [f"nano-{i:04d}" for i in range(1000)]
    reference = assign_phases(ids, FOUR, seed="s1")
    rng = random.Random(7)
    for _ in range(3):
        shuffled = ids[:]
        rng.shuffle(shuffled)
        again = assign_phases(shuffled, FOUR, seed="s1")
        assert again == reference
        assert list(again) == list(reference)
    other = assign_phases(ids, FOUR, seed="s2")
    canaries = {d for d, q in reference.items() if q == 0}
    assert canaries != {d for d, q in other.items() if q == 0}
    assert sizes(other, 4) == sizes(reference, 4) == [10, 90, 400, 500]


def test_count_phases_and_exact_percent_arithmetic() -> None:
    counts = parse_phases("5,50,100%")
    assert phase_sizes(counts, 1000) == (5, 45, 950)
    # Cuts 5, min(50, 20) = 20 → held at 19 so the last phase keeps one device, 20.
    assert phase_sizes(counts, 20) == (5, 14, 1)
    # 8.8 % of 375 is exactly 33; in floats 8.8 * 375 / 100 = 33.00000000000001 → ceil 34.
    assert phase_sizes(parse_phases("8.8%,100%"), 375) == (33, 342)
    assert phase_sizes(FOUR, 0) == (0, 0, 0, 0)
    assert assign_phases([], FOUR, "s") == {}


def test_assignment_rejects_duplicates_and_short_final_count() -> None:
    with pytest.raises(ValueError, match=r"device_ids: 'a' appears more than once"):
        assign_phases(["a", "b", "a"], FOUR, "s")
    with pytest.raises(ValueError, match=r"phases\[1\]\.count: the last phase must reach all 60"):
        assign_phases([f"d{i}" for i in range(60)], [PhaseSpec(count=5), PhaseSpec(count=50)], "s")
    # A final count at least the device count covers everyone.
    assert sizes(assign_phases(["a", "b", "c"], [PhaseSpec(count=1), PhaseSpec(count=9)], "s"), 2)


# --- phase validation and parsing --------------------------------------------------------


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        ([], r"phases: at least one phase is required"),
        (
            [PhaseSpec(percent=10), PhaseSpec(percent=50), PhaseSpec(percent=40)],
            r"phases\[2\]\.percent: 40 is not above the previous phase's 50",
        ),
        ([PhaseSpec()], r"phases\[0\]: give exactly one of percent or count, got neither"),
        ([PhaseSpec(percent=100, count=3)], r"phases\[0\]: .*got both"),
        ([PhaseSpec(percent=0), PhaseSpec(percent=100)], r"phases\[0\]\.percent: 0 is not in"),
        ([PhaseSpec(percent=150)], r"phases\[0\]\.percent: 150 is not in \(0, 100\]"),
        ([PhaseSpec(percent=10), PhaseSpec(percent=50)], r"phases\[1\]\.percent: the last"),
        ([PhaseSpec(count=0), PhaseSpec(percent=100)], r"phases\[0\]\.count: 0 is not a whole"),
        (
            [PhaseSpec(count=10), PhaseSpec(count=10), PhaseSpec(percent=100)],
            r"phases\[1\]\.count: 10 is not above the previous phase's 10",
        ),
        (
            [PhaseSpec(percent=10), PhaseSpec(count=50), PhaseSpec(percent=100)],
            r"phases\[1\]\.count: a count cannot follow a percentage \(phases\[0\]\)",
        ),
        ([PhaseSpec(percent=100, soak_s=-1)], r"phases\[0\]\.soak_s: -1 is not a number"),
        (
            [PhaseSpec(percent=50), PhaseSpec(percent=100, success_threshold=1.5)],
            r"phases\[1\]\.success_threshold: 1\.5 is not a share between 0 and 1",
        ),
        (
            [PhaseSpec(percent=100, max_failure_rate=-0.1)],
            r"phases\[0\]\.max_failure_rate: -0\.1 is not a share",
        ),
    ],
)
def test_validate_phases_names_phase_and_field(phases: list[PhaseSpec], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_phases(phases)


def test_parse_phases() -> None:
    assert parse_phases("1%,10%,50%,100%") == tuple(
        PhaseSpec(percent=p) for p in (1.0, 10.0, 50.0, 100.0)
    )
    assert parse_phases(" 5, 50 ,100 %") == (
        PhaseSpec(count=5),
        PhaseSpec(count=50),
        PhaseSpec(percent=100.0),
    )
    assert parse_phases("0.5%,100%")[0] == PhaseSpec(percent=0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", r"phases: empty"),
        ("10%,abc,100%", r"phases\[1\]: 'abc' is not a percentage like \"10%\" or a whole"),
        ("2.5,100%", r"phases\[0\]: '2.5' is not a percentage .* or a whole device count"),
        ("-5%,100%", r"phases\[0\]: '-5%' is not a percentage like \"10%\""),
        ("10%,,100%", r"phases\[1\]: '' is not"),
        ("50%,10%,100%", r"phases\[1\]\.percent: 10 is not above the previous phase's 50"),
        ("10%,50%", r"phases\[1\]\.percent: the last phase must reach 100"),
    ],
)
def test_parse_phases_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_phases(text)


def test_parse_share() -> None:
    assert parse_share("5%") == 0.05
    assert parse_share("0.05") == 0.05
    assert parse_share("0.1%") == 0.001
    assert parse_share("100%") == 1.0
    with pytest.raises(ValueError, match=r"max failure rate: '150%' is not between 0 and 1"):
        parse_share("150%")
    with pytest.raises(ValueError, match=r"max failure rate: 'five' is not a share"):
        parse_share("five")


def test_phases_json_round_trip_and_errors() -> None:
    phases = (
        PhaseSpec(count=5, soak_s=600.0),
        PhaseSpec(percent=50, success_threshold=0.95, max_failure_rate=0.05),
        PhaseSpec(percent=100),
    )
    as_json = [p.to_dict() for p in phases]
    assert as_json[0] == {"count": 5, "soak_s": 600.0}
    assert phases_from_dicts(as_json) == phases
    assert phases_from_dicts([{"count": 5.0}, {"percent": 100}])[0].count == 5
    with pytest.raises(ValueError, match=r"phases\[0\]: unknown key 'soak'"):
        phases_from_dicts([{"percent": 100, "soak": 3}])
    with pytest.raises(ValueError, match=r"phases\[0\]\.percent: expected a number, got '10'"):
        phases_from_dicts([{"percent": "10"}])
    with pytest.raises(ValueError, match=r"phases\[0\]\.count: 2\.5 is not a whole number"):
        phases_from_dicts([{"count": 2.5}, {"percent": 100}])


# --- device status transitions -----------------------------------------------------------


def test_transition_table() -> None:
    happy = ["pending", "downloading", "downloading", "downloaded", "installing", "trial"]
    for current, new in zip(happy, [*happy[1:], "success"], strict=True):
        check_transition(current, new)  # type: ignore[arg-type]
    for status in DEVICE_STATUSES:
        if status in FINAL:
            assert ALLOWED[status] == frozenset()
        else:
            check_transition(status, "failure")
    assert {"success", "failure", "rolled-back"} == FINAL
    assert ALLOWED["rollback-pending"] == {"rolled-back", "failure"}
    assert all("rollback-pending" not in nxt for nxt in ALLOWED.values())


def test_invalid_transition_lists_allowed_next_states() -> None:
    with pytest.raises(InvalidTransition) as info:
        check_transition("downloaded", "success")
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, TinyopsError)
    assert (err.current, err.new, err.allowed) == (
        "downloaded",
        "success",
        ("installing", "failure"),
    )
    assert str(err) == (
        "device status cannot go from 'downloaded' to 'success': "
        "allowed next: 'installing', 'failure'"
    )
    with pytest.raises(InvalidTransition, match=r"'success' is final: nothing may follow it"):
        check_transition("success", "trial")
    with pytest.raises(InvalidTransition, match=r"allowed next: 'downloading', 'failure'"):
        check_transition("pending", "trial")
    # A device cannot report that it rolled back unless the server ordered it.
    with pytest.raises(InvalidTransition):
        check_transition("trial", "rolled-back")
    with pytest.raises(ValueError, match=r"unknown device status 'bogus'"):
        check_transition("bogus", "failure")  # type: ignore[arg-type]


def test_server_sets_rollback_pending_only_where_the_update_reached() -> None:
    for status in DEVICE_STATUSES:
        if status in REACHED:
            check_transition(status, "rollback-pending", by="server")
            with pytest.raises(InvalidTransition):
                check_transition(status, "rollback-pending")  # a device never reports it
        else:
            with pytest.raises(InvalidTransition):
                check_transition(status, "rollback-pending", by="server")
    check_transition("rollback-pending", "rolled-back")
    check_transition("rollback-pending", "failure")


# --- evaluation rules --------------------------------------------------------------------


def test_failure_rate_at_limit_continues_and_just_over_aborts() -> None:
    phases = [PhaseSpec(percent=50, success_threshold=0.9), PhaseSpec(percent=100)]
    state = initial_state(phases, T0)
    # 1 of 20 failed = exactly 5 %: not above the 5 % limit.
    at_limit = progress(["failure"] + ["success"] * 18 + ["trial"], ["pending"] * 20)
    decision = evaluate(state, phases, at_limit, at(10), default_max_failure_rate=0.05)
    assert decision.action == "open-phase"  # 18 of 20 = 90 % meets the threshold
    # 2 of 20 failed = 10 %: above.
    over = progress(["failure"] * 2 + ["success"] * 18, ["pending"] * 20)
    decision = evaluate(state, phases, over, at(10), default_max_failure_rate=0.05)
    assert decision.action == "abort"
    assert decision.phase == 0
    assert decision.reason == (
        "phase 0: 2 of 20 devices failed (10%), above the maximum failure rate 5%"
    )
    assert decision.rollback == tuple(f"p0-{i:02d}" for i in range(2, 20))


def test_phase_limit_overrides_the_default() -> None:
    phases = [PhaseSpec(percent=100, success_threshold=0.5, max_failure_rate=0.25)]
    state = initial_state(phases, T0)
    three_of_ten = progress(["failure"] * 3 + ["trial"] * 7)
    decision = evaluate(state, phases, three_of_ten, at(1), default_max_failure_rate=0.5)
    assert decision.action == "abort"
    assert "maximum failure rate 25%" in decision.reason
    two_of_ten = progress(["failure"] * 2 + ["trial"] * 8)
    decision = evaluate(state, phases, two_of_ten, at(1), default_max_failure_rate=0.0)
    assert decision.action == "none"
    # No limit anywhere: only the success threshold (7 of 10 still ≥ 50 %) could abort.
    no_limit = [replace(phases[0], max_failure_rate=None)]
    assert evaluate(state, no_limit, three_of_ten, at(1), None).action == "none"


def test_unreachable_success_threshold_aborts() -> None:
    phases = [PhaseSpec(percent=100, success_threshold=0.9)]
    state = initial_state(phases, T0)
    one = progress(["failure"] + ["trial"] * 9)  # at most 9 of 10 = 90 %: still reachable
    assert evaluate(state, phases, one, at(1), None).action == "none"
    two = progress(["failure"] * 2 + ["trial"] * 8)
    decision = evaluate(state, phases, two, at(1), None)
    assert decision.action == "abort"
    assert decision.reason == (
        "phase 0: 2 of 10 devices failed, so at most 8 (80%) can succeed, "
        "below the success threshold 90%"
    )
    # Without a threshold of its own a phase needs 1 - its failure limit: with a 5 %
    # limit, 1 failure in 100 is tolerated and the phase passes at 99 % successes ...
    lenient = [PhaseSpec(percent=100)]
    single = progress(["failure"] + ["success"] * 99)
    decision = evaluate(initial_state(lenient, T0), lenient, single, at(1), 0.05)
    assert decision.action == "succeed"
    # ... and with no failure limit at all the threshold is 100 %: any failure aborts.
    decision = evaluate(initial_state(lenient, T0), lenient, single, at(1), None)
    assert decision.action == "abort" and "below the success threshold 100%" in decision.reason


def test_rollback_set_is_every_device_the_update_reached() -> None:
    phases = [PhaseSpec(percent=10, success_threshold=0.5), PhaseSpec(percent=100)]
    state = replace(
        initial_state(phases, T0),
        open_phase=1,
        phase_opened_at=(T0, at(60)),
        phase_passed_at=(at(30), None),
    )
    items = progress(
        ["success", "success", "failure", "failure", "failure"],
        ["pending", "downloading", "downloaded", "installing", "trial", "success", "failure"],
    )
    decision = evaluate(state, phases, items, at(90), default_max_failure_rate=0.5)
    # Phase 0 went over after phase 1 opened: 3 of 5 = 60 % > 50 %.
    assert decision.action == "abort" and decision.phase == 0
    assert decision.rollback == (
        "p0-00",
        "p0-01",
        "p1-01",
        "p1-02",
        "p1-03",
        "p1-04",
        "p1-05",
    )


def test_soak_gates_the_next_phase() -> None:
    phases = [PhaseSpec(count=2, soak_s=600), PhaseSpec(percent=100)]
    state = initial_state(phases, T0)
    assert state.phase_opened_at == (T0, None)
    waiting = progress(["success", "trial"], ["pending"] * 3)
    decision = evaluate(state, phases, waiting, at(100), None)
    assert decision == Decision(
        "none", None, "phase 0: 1 of 2 devices succeeded (50%), waiting for 100%"
    )
    assert apply(state, decision, at(100)) is state

    done = progress(["success", "success"], ["pending"] * 3)
    decision = evaluate(state, phases, done, at(200), None)
    assert decision == Decision("none", None, "phase 0: passed, soaking 0 of 600 s", passed_phase=0)
    state = apply(state, decision, at(200))
    assert state.phase_passed_at == (at(200), None)

    decision = evaluate(state, phases, done, at(799), None)
    assert (decision.action, decision.passed_phase) == ("none", None)
    assert decision.reason == "phase 0: passed, soaking 599 of 600 s"
    assert apply(state, decision, at(799)) is state

    decision = evaluate(state, phases, done, at(800), None)
    assert (decision.action, decision.phase) == ("open-phase", 1)
    state = apply(state, decision, at(800))
    assert state.open_phase == 1
    assert state.phase_opened_at == (T0, at(800))
    assert state.phase_passed_at == (at(200), None)  # the passed time never moves


def test_last_phase_passed_waits_for_every_device_to_finish() -> None:
    # The threshold lets the last phase pass at 90 %, but the deployment keeps serving the
    # stragglers: it succeeds only once every device of every phase has finished.
    phases = [PhaseSpec(percent=10), PhaseSpec(percent=100)]
    state = replace(
        initial_state(phases, T0),
        open_phase=1,
        phase_opened_at=(T0, at(60)),
        phase_passed_at=(at(30), None),
    )
    stragglers = progress(["success"] * 2, ["success"] * 18 + ["pending", "trial"])
    decision = evaluate(state, phases, stragglers, at(90), 0.10)
    assert decision == Decision(
        "none",
        None,
        "phase 1 (the last) passed: 18 of 20 devices succeeded, waiting for 2 devices to finish",
        passed_phase=1,
    )
    state = apply(state, decision, at(90))
    assert state.status == "running" and state.phase_passed_at == (at(30), at(90))
    # One failure among the finished devices is within the 10 % limit: it still succeeds,
    # and the passed time recorded at 90 s does not move.
    finished = progress(["success"] * 2, ["success"] * 19 + ["failure"])
    decision = evaluate(state, phases, finished, at(120), 0.10)
    assert (decision.action, decision.phase, decision.passed_phase) == ("succeed", 1, None)
    assert apply(state, decision, at(120)).status == "succeeded"


def test_full_rollout_to_success_without_soak() -> None:
    ids = [f"nano-{i:02d}" for i in range(10)]
    assignment = assign_phases(ids, FOUR, seed="d1")
    statuses: dict[str, DeviceStatus] = dict.fromkeys(ids, "pending")
    state = initial_state(FOUR, T0)
    t = 0.0
    opened = [0]
    while state.status == "running":
        t += 60
        for device_id, q in assignment.items():
            if q <= state.open_phase:
                statuses[device_id] = "success"
        items = [Progress(d, assignment[d], s) for d, s in statuses.items()]
        decision = evaluate(state, FOUR, items, at(t), 0.05)
        # With no soak a passing phase is recorded and the next one opens in one step.
        assert decision.passed_phase == state.open_phase
        state = apply(state, decision, at(t))
        opened.append(state.open_phase)
    assert state.status == "succeeded"
    assert opened == [0, 1, 2, 3, 3]
    assert state.phase_passed_at == (at(60), at(120), at(180), at(240))
    assert state.phase_opened_at == (T0, at(60), at(120), at(180))
    after = evaluate(state, FOUR, items, at(999), 0.05)
    assert after == Decision("none", None, "deployment is succeeded: no rule runs")


def test_empty_phase_passes_at_once() -> None:
    state = replace(initial_state(FOUR, T0), open_phase=1, phase_opened_at=(T0, at(5), None, None))
    state = replace(state, phase_passed_at=(at(5), None, None, None))
    items = progress(["success"], [], ["pending"], ["pending"])  # N=3: phase 1 is empty
    decision = evaluate(state, FOUR, items, at(6), 0.05)
    assert (decision.action, decision.phase, decision.passed_phase) == ("open-phase", 2, 1)


def test_paused_cancelled_and_aborted_make_no_decisions() -> None:
    phases = [PhaseSpec(percent=100)]
    failing = progress(["failure"] * 5)
    running = initial_state(phases, T0)
    assert evaluate(running, phases, failing, at(1), 0.0).action == "abort"
    for state in (pause(running), cancel(running), replace(running, status="aborted")):
        decision = evaluate(state, phases, failing, at(1), 0.0)
        assert decision == Decision("none", None, f"deployment is {state.status}: no rule runs")
    # The rules run again after resume, against what happened meanwhile.
    assert evaluate(resume(pause(running)), phases, failing, at(2), 0.0).action == "abort"


def test_operator_actions_and_their_errors() -> None:
    running = initial_state(FOUR, T0)
    assert pause(running).status == "paused"
    assert resume(pause(running)).status == "running"
    assert cancel(pause(running)).status == "cancelled"
    with pytest.raises(InvalidTransition) as info:
        resume(cancel(running))
    assert str(info.value) == (
        "deployment cannot go from 'cancelled' to 'running': allowed next: 'aborted'"
    )
    assert info.value.allowed == ("aborted",)
    with pytest.raises(InvalidTransition, match=r"allowed next: 'running', 'cancelled'"):
        pause(pause(running))
    with pytest.raises(InvalidTransition):
        resume(running)
    aborted = replace(running, status="aborted")
    for action in (pause, resume, cancel):
        with pytest.raises(InvalidTransition, match=r"'aborted' is final"):
            action(aborted)


def test_manual_rollback() -> None:
    items = progress(["success", "failure"], ["trial", "pending"], ["pending"], ["pending"])
    cancelled = cancel(initial_state(FOUR, T0))
    decision = manual_rollback(cancelled, items, reason="bad accuracy in the field")
    assert decision == Decision(
        "abort", None, "bad accuracy in the field", rollback=("p0-00", "p1-00")
    )
    assert apply(cancelled, decision, at(1)).status == "aborted"
    succeeded = replace(cancelled, status="succeeded")
    assert manual_rollback(succeeded, items).reason == "rolled back by an operator"
    with pytest.raises(InvalidTransition, match=r"'aborted' is final"):
        manual_rollback(replace(cancelled, status="aborted"), items)


def test_apply_refuses_stale_decisions() -> None:
    phases = [PhaseSpec(percent=50), PhaseSpec(percent=100)]
    state = initial_state(phases, T0)
    items = progress(["success"], ["pending"])
    decision = evaluate(state, phases, items, at(10), None)
    assert (decision.action, decision.passed_phase) == ("open-phase", 0)
    newer = apply(state, decision, at(10))
    with pytest.raises(ValueError, match=r"stale decision: phase 0 passed.*phase 1 open"):
        apply(newer, decision, at(11))
    with pytest.raises(ValueError, match=r"stale decision: open-phase 1.*and not passed"):
        apply(state, replace(decision, passed_phase=None), at(10))
    with pytest.raises(ValueError, match=r"stale decision: phase 0 passed, but the deployment"):
        apply(pause(state), decision, at(10))


def test_phase_counts_and_count_based_evaluation() -> None:
    phases = [PhaseSpec(percent=50, success_threshold=0.5), PhaseSpec(percent=100)]
    items = progress(["success", "failure", "trial"], ["pending", "pending"])
    counts = phase_counts(phases, items)
    assert list(counts[0]) == list(DEVICE_STATUSES)
    assert counts[0] == dict.fromkeys(DEVICE_STATUSES, 0) | {
        "success": 1,
        "failure": 1,
        "trial": 1,
    }
    assert counts[1]["pending"] == 2 and sum(counts[1].values()) == 2
    state = initial_state(phases, T0)
    decision = evaluate_counts(state, phases, counts, at(5), 0.25)
    # 1 of 3 = 33 % > 25 %: the count form aborts but leaves the device list to the caller.
    assert (decision.action, decision.rollback) == ("abort", ())
    assert evaluate(state, phases, items, at(5), 0.25).rollback == ("p0-00", "p0-02")
    with pytest.raises(ValueError, match=r"counts: need one entry per phase \(2\), got 1"):
        evaluate_counts(state, phases, counts[:1], at(5), 0.25)
    with pytest.raises(ValueError, match=r"counts\[0\]\['trial'\]: -1 is not a count"):
        evaluate_counts(state, phases, [{"trial": -1}, {}], at(5), 0.25)


def test_evaluate_input_errors() -> None:
    phases = [PhaseSpec(percent=100)]
    state = initial_state(phases, T0)
    with pytest.raises(ValueError, match=r"now: .* is not a timezone-aware datetime"):
        evaluate(state, phases, [], datetime(2026, 11, 27, 10, 0), None)
    with pytest.raises(ValueError, match=r"device 'x' is in phase 3, but the deployment has"):
        evaluate(state, phases, [Progress("x", 3, "pending")], at(1), None)
    with pytest.raises(ValueError, match=r"progress: device 'x' appears more than once"):
        evaluate(state, phases, [Progress("x", 0, "pending")] * 2, at(1), None)
    with pytest.raises(ValueError, match=r"default_max_failure_rate: 5 is not a share"):
        evaluate(state, phases, [], at(1), 5)
    with pytest.raises(ValueError, match=r"state: phase_opened_at and phase_passed_at need one"):
        evaluate(state, FOUR, [], at(1), None)


def test_state_json_round_trip() -> None:
    state = RolloutState("paused", 1, (T0, at(60), None), (at(30), None, None))
    data = state.to_dict()
    assert data == {
        "status": "paused",
        "open_phase": 1,
        "phase_opened_at": ["2026-11-27T10:00:00+00:00", "2026-11-27T10:01:00+00:00", None],
        "phase_passed_at": ["2026-11-27T10:00:30+00:00", None, None],
    }
    assert RolloutState.from_dict(data) == state
    with pytest.raises(ValueError, match=r"rollout state\.status: 'done' is not one of"):
        RolloutState.from_dict(data | {"status": "done"})
    with pytest.raises(ValueError, match=r"phase_passed_at\[0\]: .* is not a timezone-aware"):
        RolloutState.from_dict(data | {"phase_passed_at": ["2026-11-27T10:00:30", None, None]})


# --- properties --------------------------------------------------------------------------


@st.composite
def phase_lists(draw: st.DrawFn) -> list[PhaseSpec]:
    counts = sorted(draw(st.sets(st.integers(1, 30), max_size=2)))
    percents = sorted(draw(st.sets(st.integers(1, 99), max_size=3)))
    threshold = draw(st.sampled_from([0.0, 0.5, 0.9, 1.0]))
    limit = draw(st.sampled_from([None, 0.0, 0.1, 0.5]))
    soak = draw(st.sampled_from([0.0, 60.0]))
    return [
        PhaseSpec(count=c, soak_s=soak, success_threshold=threshold, max_failure_rate=limit)
        for c in counts
    ] + [
        PhaseSpec(percent=float(p), soak_s=soak, success_threshold=threshold)
        for p in [*percents, 100]
    ]


@given(
    phases=phase_lists(),
    n=st.integers(0, 60),
    seed=st.text(max_size=8),
)
@settings(max_examples=60, deadline=None)
def test_property_assignment_is_a_partition(phases: list[PhaseSpec], n: int, seed: str) -> None:
    ids = [f"dev-{i}" for i in range(n)]
    assignment = assign_phases(ids, phases, seed)
    assert sorted(assignment) == sorted(ids)  # every device exactly once
    k = len(phases)
    assert set(assignment.values()) <= set(range(k))
    assert sizes(assignment, k) == list(phase_sizes(phases, n))
    if n >= k:
        assert all(size >= 1 for size in sizes(assignment, k))
    # Rollout order is phase order: phases never interleave.
    assert list(assignment.values()) == sorted(assignment.values())


@given(
    phases=phase_lists(),
    statuses=st.lists(st.sampled_from(DEVICE_STATUSES), max_size=40),
    open_fraction=st.floats(0, 1),
    passed=st.booleans(),
    elapsed=st.floats(0, 120),
    limit=st.sampled_from([None, 0.0, 0.05, 0.5]),
)
@settings(max_examples=150, deadline=None)
def test_property_decisions_never_roll_back_pending_devices(
    phases: list[PhaseSpec],
    statuses: list[DeviceStatus],
    open_fraction: float,
    passed: bool,
    elapsed: float,
    limit: float | None,
) -> None:
    ids = [f"dev-{i}" for i in range(len(statuses))]
    assignment = assign_phases(ids, phases, "prop")
    items = [Progress(d, assignment[d], s) for d, s in zip(ids, statuses, strict=True)]
    k = len(phases)
    open_phase = min(int(open_fraction * k), k - 1)
    state = RolloutState(
        "running",
        open_phase,
        tuple(T0 if q <= open_phase else None for q in range(k)),
        tuple(T0 if q < open_phase or (q == open_phase and passed) else None for q in range(k)),
    )
    now = at(elapsed)
    decisions = [evaluate(state, phases, items, now, limit), manual_rollback(state, items)]
    by_id = {p.device_id: p.status for p in items}
    for decision in decisions:
        assert all(by_id[d] != "pending" for d in decision.rollback)
        if decision.action == "abort":
            assert set(decision.rollback) == {d for d, s in by_id.items() if s in REACHED}
        else:
            assert decision.rollback == ()
        after = apply(state, decision, now)
        assert after.open_phase >= state.open_phase
