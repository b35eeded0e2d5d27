"""Staged rollouts: which device gets a release when, and when a deployment stops by itself.

A deployment offers one release to the devices its selector matched, in *phases*, as
hawkBit does with rollout groups and AWS IoT Jobs with rollout and abort configs. This
module is the whole decision logic as pure functions over frozen dataclasses: no I/O, no
database, no clock (the caller passes `now`). The server owns persistence; it calls

    assign_phases(device_ids, phases, seed)            once, when the deployment is created
    evaluate(state, phases, progress, now, limit)      after device reports, or on a timer
    evaluate_counts(state, phases, counts, now, limit) the same from per-phase status counts
    apply(state, decision, now)                        the one new state to persist
    pause(state) / resume(state) / cancel(state)       operator actions
    manual_rollback(state, progress)                   the operator's "rollback" action

Device status (per device, per deployment)
------------------------------------------
    pending → downloading → downloaded → installing → trial → success
    (downloading may repeat: a resumed download reports it again)
    any non-final status → failure
    downloading..success → rollback-pending    set by the server when the deployment aborts
    rollback-pending → rolled-back | failure   the device reports how its rollback went

`success`, `failure` and `rolled-back` are final: nothing follows them. `ALLOWED` holds what
a device may report; `check_transition(current, new)` raises `InvalidTransition` (a
`ValueError`, a 409 on the wire) naming the allowed next states. `rollback-pending` is never
reported by a device: the server sets it with `check_transition(current, new, by="server")`,
only on devices the update *reached* (`REACHED`: downloading through success), because a
device still `pending` never saw the release and has nothing to undo. A device whose
rollback fails reports `failure`, which is final too: it needs a person, not another rule.

Phases
------
A phase is `PhaseSpec(percent=...)` or `PhaseSpec(count=...)`, exactly one of them, both
CUMULATIVE: `1%, 10%, 50%, 100%` means the first 1 % of the selected devices, then up to
10 % in total, and so on (phase 1 adds 9 %). Counts are cumulative device counts and may
only come before percentages (`5, 50, 100%`: a canary of 5 devices, then 50 in total, then
everyone), because a count and a percentage can only be compared once the device count is
known. The last phase must reach every selected device: `100%`, or a count of at least the
number of selected devices. Percentages must rise, counts must rise. `validate_phases`
checks all of this and names the phase and field: `phases[2].percent: 40 is not above the
previous phase's 50`. `parse_phases("1%,10%,50%,100%")` reads the CLI form.

Assignment (`assign_phases`)
----------------------------
Devices are ordered by sha256(seed ‖ 0x00 ‖ device id) (UTF-8; ties, which need a sha256
collision, by id), so the order does not depend on the order ids are listed in and a new
seed gives a new canary set. Phase i ends at the cumulative cut ceil(percent_i · N / 100),
or min(count_i, N). When N is at least the number of phases k, every phase gets at least
one device: each cut is raised to one past the previous cut, and held back far enough
that every later phase keeps one (`1%,10%,50%,100%` on 10 devices: 1, 1, 3, 5 devices).
When N < k some phases are necessarily empty (`1%,10%,50%,100%` on 3 devices: 1, 0, 1, 1);
an empty phase passes as soon as it opens, so it only adds its soak time.

Evaluation (`evaluate`), only while the deployment is `running`
----------------------------------------------------------------
The open phase p is the highest phase whose devices may receive the release; phases above
it are not offered yet. Rules, in this order:

1. Abort. For every opened phase q ≤ p, in order:
   a. failure rate = devices of q in `failure` / all devices of q. When it is strictly
      above the limit (the phase's `max_failure_rate`, else the deployment's default; no
      limit when both are None), the deployment aborts. At exactly the limit it does not.
      The denominator is the whole phase, not only the devices that finished, so the
      first failure of a 1,000-device phase is 0.1 %, not 100 %: AWS IoT Jobs needs
      `minNumberOfExecutedThings` in its abort criteria to avoid that early trip.
   b. threshold unreachable: when (devices of q − failures) / devices of q is below the
      phase's success threshold, the phase can never pass; the deployment aborts
      rather than waiting forever. A phase without its own `success_threshold` uses
      1 − its failure limit (the phase's `max_failure_rate`, else the deployment's), so
      `--max-failure 5%` alone lets a phase pass with 95 % successes; with no failure
      limit at all the threshold is 1.0 and any failure aborts.
   An abort names the phase, the measured share and the limit, and lists for rollback
   every device of the deployment (any phase) in `REACHED`. Like hawkBit's error
   condition ("emergency shutdown of the entire rollout") and AWS IoT Jobs' CANCEL abort
   action, it stops the rollout; unlike both, it also rolls back the devices it reached.
   Earlier phases stay under watch after the next one opens: a device in trial in phase
   0 that fails late still counts.
2. Pass and soak. The open phase passes when (devices in `success`) / (devices of the
   phase) ≥ its `success_threshold` (an empty phase passes at once). The decision then
   carries `passed_phase=p` and `apply` records `phase_passed_at[p] = now`; that time is
   recorded once and never moves. Phase p+1 opens (`open-phase`) once
   now − phase_passed_at[p] ≥ phases[p].soak_s seconds; until then the decision is
   `none`, while rule 1 keeps watching the soaking devices. This is hawkBit's success
   condition with its "next group" action, plus a bake time.
3. Succeed. When the last phase has passed and soaked and every device of the
   deployment has finished (status in `FINAL`), the deployment `succeed`s. The success
   threshold decides when the next phase may open, not when the devices beyond it stop
   being served: until the last device reports, the deployment stays `running` and keeps
   offering the release to the devices still `pending` (hawkBit finishes a rollout group
   only when all its actions are closed; Mender keeps a deployment in progress until every
   device reports). A device that never comes back keeps the deployment running; the
   operator cancels it.

One call makes one step: after an `open-phase` the new phase is judged at the next call
(an empty phase with no soak opens the next one at once on that call). Every decision must
go through `apply`, including a `none` that carries `passed_phase`; otherwise the soak
clock restarts at the next call. `apply` refuses a decision made against another state
(a stale one) with `ValueError`, so two racing evaluators cannot both open a phase.

Shares are compared as exact ratios of whole numbers against the given limit: 19 of 20
succeeded is 0.95 and meets a threshold of 0.95, 1 of 20 failed is 0.05 and does not
exceed a limit of 0.05.

Deployment status and operator actions
--------------------------------------
    running → paused (pause) → running (resume)
    running | paused → cancelled (cancel: no new device is offered the release; devices
                                  already updating finish, as an AWS IoT Jobs cancel
                                  without force does)
    running → aborted (rule 1)        running → succeeded (rule 3)
    running | paused | cancelled | succeeded → aborted (manual_rollback)
Nothing leaves `aborted`. Rules run only while `running`: a paused deployment makes no
decision, and its soak clock keeps running, so a phase that soaked while paused opens
the next one on the first evaluation after `resume` (and a failure rate that went over the
limit while paused aborts then). An illegal action (resume a cancelled deployment) raises
`InvalidTransition` listing what is allowed.

All times are timezone-aware datetimes (UTC on the wire); durations are seconds.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from fractions import Fraction
from typing import Any, Final, Literal, cast, get_args

from tinyops.errors import TinyopsError

DeviceStatus = Literal[
    "pending",
    "downloading",
    "downloaded",
    "installing",
    "trial",
    "success",
    "failure",
    "rollback-pending",
    "rolled-back",
]
RolloutStatus = Literal["running", "paused", "cancelled", "aborted", "succeeded"]
Action = Literal["none", "open-phase", "abort", "succeed"]

# Lifecycle order: the order status lists and per-phase counts are shown in.
DEVICE_STATUSES: Final[tuple[DeviceStatus, ...]] = cast(
    "tuple[DeviceStatus, ...]", get_args(DeviceStatus)
)
ROLLOUT_STATUSES: Final[tuple[RolloutStatus, ...]] = cast(
    "tuple[RolloutStatus, ...]", get_args(RolloutStatus)
)

FINAL: Final[frozenset[DeviceStatus]] = frozenset({"success", "failure", "rolled-back"})

# Statuses that mean the release reached the device (it started downloading at least):
# exactly the devices an abort must roll back.
REACHED: Final[frozenset[DeviceStatus]] = frozenset(
    {"downloading", "downloaded", "installing", "trial", "success"}
)

ALLOWED: Final[dict[DeviceStatus, frozenset[DeviceStatus]]] = {
    "pending": frozenset({"downloading", "failure"}),
    "downloading": frozenset({"downloading", "downloaded", "failure"}),
    "downloaded": frozenset({"installing", "failure"}),
    "installing": frozenset({"trial", "failure"}),
    "trial": frozenset({"success", "failure"}),
    "success": frozenset(),
    "failure": frozenset(),
    "rollback-pending": frozenset({"rolled-back", "failure"}),
    "rolled-back": frozenset(),
}

# Deployment status transitions, operator actions and rule outcomes together.
ROLLOUT_ALLOWED: Final[dict[RolloutStatus, frozenset[RolloutStatus]]] = {
    "running": frozenset({"paused", "cancelled", "aborted", "succeeded"}),
    "paused": frozenset({"running", "cancelled", "aborted"}),
    "cancelled": frozenset({"aborted"}),
    "succeeded": frozenset({"aborted"}),
    "aborted": frozenset(),
}


class InvalidTransition(TinyopsError, ValueError):
    """A status change that the device or deployment lifecycle does not allow.

    `allowed` lists the statuses that may follow `current`, in lifecycle order; the server
    answers 409 with them.
    """

    def __init__(
        self, current: str, new: str, allowed: Iterable[str], subject: str = "device status"
    ) -> None:
        order: dict[str, int] = {s: i for i, s in enumerate((*DEVICE_STATUSES, *ROLLOUT_STATUSES))}
        self.current = current
        self.new = new
        self.allowed: tuple[str, ...] = tuple(sorted(allowed, key=lambda s: order.get(s, -1)))
        self.subject = subject
        if self.allowed:
            nxt = "allowed next: " + ", ".join(repr(s) for s in self.allowed)
        else:
            nxt = f"{current!r} is final: nothing may follow it"
        super().__init__(f"{subject} cannot go from {current!r} to {new!r}: {nxt}")


def check_transition(
    current: DeviceStatus, new: DeviceStatus, *, by: Literal["device", "server"] = "device"
) -> None:
    """Raise `InvalidTransition` unless a device in `current` may move to `new`.

    `by="server"` also allows `rollback-pending` from every status in `REACHED`: the
    server sets it when a deployment aborts; a device never reports it.
    """
    if current not in ALLOWED:
        raise ValueError(
            f"unknown device status {current!r}; expected one of {', '.join(DEVICE_STATUSES)}"
        )
    allowed = ALLOWED[current]
    if by == "server" and current in REACHED:
        allowed = allowed | {"rollback-pending"}
    if new not in allowed:
        raise InvalidTransition(current, new, allowed)


# --- phases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseSpec:
    """One rollout phase. Exactly one of `percent` / `count`; both are cumulative.

    percent            share of the selected devices reached by the end of this phase, %
    count              number of devices reached by the end of this phase
    soak_s             seconds to wait after the phase passed before the next one opens
    success_threshold  share of the phase's devices (0..1) that must reach `success`;
                       None = 1 − the failure limit that applies to the phase
    max_failure_rate   share (0..1) of the phase's devices allowed to fail; None = the
                       deployment's default
    """

    percent: float | None = None
    count: int | None = None
    soak_s: float = 0.0
    success_threshold: float | None = None
    max_failure_rate: float | None = None

    def threshold(self, default_max_failure_rate: float | None) -> float:
        """The success share this phase needs: its own, else 1 − its failure limit."""
        if self.success_threshold is not None:
            return self.success_threshold
        limit = (
            self.max_failure_rate if self.max_failure_rate is not None else default_max_failure_rate
        )
        return 1.0 - limit if limit is not None else 1.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of the protocol (`{"percent": 10, "soak_s": 600, ...}`)."""
        out: dict[str, Any] = {}
        if self.percent is not None:
            out["percent"] = self.percent
        if self.count is not None:
            out["count"] = self.count
        out["soak_s"] = self.soak_s
        if self.success_threshold is not None:
            out["success_threshold"] = self.success_threshold
        if self.max_failure_rate is not None:
            out["max_failure_rate"] = self.max_failure_rate
        return out


_PHASE_KEYS: Final = ("percent", "count", "soak_s", "success_threshold", "max_failure_rate")


def _num(x: object) -> str:
    """A number as a person writes it: 40, 0.5, 12.25 (no trailing .0)."""
    return f"{x:g}" if isinstance(x, float) else str(x)


def _is_number(x: object) -> bool:
    # bool is an int subclass, but `True` as a percentage is a typo, not 1 %.
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_share(value: object, where: str) -> None:
    if not _is_number(value) or not 0.0 <= cast(float, value) <= 1.0:
        raise ValueError(f"{where}: {value!r} is not a share between 0 and 1")


def validate_phases(
    phases: Sequence[PhaseSpec], device_count: int | None = None
) -> tuple[PhaseSpec, ...]:
    """Check a phase list and return it as a tuple; `ValueError` names the phase and field.

    With `device_count`, a last phase given as a count must reach that many devices;
    without it that one check waits for `assign_phases`.
    """
    if len(phases) == 0:
        raise ValueError("phases: at least one phase is required (e.g. 100%)")
    prev_percent: tuple[int, float] | None = None
    prev_count: int | None = None
    for i, ph in enumerate(phases):
        where = f"phases[{i}]"
        if not isinstance(ph, PhaseSpec):
            raise ValueError(f"{where}: expected a PhaseSpec, got {type(ph).__name__}")
        if (ph.percent is None) == (ph.count is None):
            got = "neither" if ph.percent is None else "both"
            raise ValueError(f"{where}: give exactly one of percent or count, got {got}")
        if ph.percent is not None:
            p = ph.percent
            if not _is_number(p) or not math.isfinite(p) or not 0 < p <= 100:
                raise ValueError(f"{where}.percent: {p!r} is not in (0, 100]")
            if prev_percent is not None and p <= prev_percent[1]:
                raise ValueError(
                    f"{where}.percent: {_num(p)} is not above the previous phase's "
                    f"{_num(prev_percent[1])}"
                )
            prev_percent = (i, p)
        else:
            c = ph.count
            if not isinstance(c, int) or isinstance(c, bool) or c < 1:
                raise ValueError(f"{where}.count: {c!r} is not a whole number of devices ≥ 1")
            if prev_percent is not None:
                raise ValueError(
                    f"{where}.count: a count cannot follow a percentage "
                    f"(phases[{prev_percent[0]}]); list counts first, e.g. 5,50,100%"
                )
            if prev_count is not None and c <= prev_count:
                raise ValueError(
                    f"{where}.count: {c} is not above the previous phase's {prev_count}"
                )
            prev_count = c
        s = ph.soak_s
        if not _is_number(s) or not math.isfinite(s) or s < 0:
            raise ValueError(f"{where}.soak_s: {s!r} is not a number of seconds ≥ 0")
        if ph.success_threshold is not None:
            _check_share(ph.success_threshold, f"{where}.success_threshold")
        if ph.max_failure_rate is not None:
            _check_share(ph.max_failure_rate, f"{where}.max_failure_rate")
    last = phases[-1]
    where = f"phases[{len(phases) - 1}]"
    if last.percent is not None and last.percent != 100:
        raise ValueError(
            f"{where}.percent: the last phase must reach 100 (every selected device), "
            f"got {_num(last.percent)}"
        )
    if last.count is not None and device_count is not None and last.count < device_count:
        raise ValueError(
            f"{where}.count: the last phase must reach all {device_count} selected devices, "
            f"got {last.count}; end with 100%"
        )
    return tuple(phases)


def phases_from_dicts(items: Sequence[Mapping[str, Any]]) -> tuple[PhaseSpec, ...]:
    """Phases from their JSON form (the API body, a stored column), validated."""
    if isinstance(items, str | bytes) or not isinstance(items, Sequence):
        raise ValueError(f"phases: expected a list of phase objects, got {type(items).__name__}")
    out: list[PhaseSpec] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"phases[{i}]: expected an object, got {type(item).__name__}")
        unknown = sorted(set(item) - set(_PHASE_KEYS))
        if unknown:
            raise ValueError(
                f"phases[{i}]: unknown key {unknown[0]!r}; expected {', '.join(_PHASE_KEYS)}"
            )
        for key, value in item.items():
            if value is not None and not _is_number(value):
                raise ValueError(f"phases[{i}].{key}: expected a number, got {value!r}")
        count = item.get("count")
        if isinstance(count, float) and count.is_integer():
            # JSON has one number type: 5.0 from a client is the count 5.
            count = int(count)
        out.append(
            PhaseSpec(
                percent=item.get("percent"),
                count=count,
                soak_s=item.get("soak_s", 0.0),
                success_threshold=item.get("success_threshold"),
                max_failure_rate=item.get("max_failure_rate"),
            )
        )
    return validate_phases(out)


def _parse_decimal(text: str) -> Fraction | None:
    """A plain decimal number (`10`, `0.5`, `.5`) as an exact fraction, else None."""
    if not text or not all(ch.isdigit() or ch == "." for ch in text) or text.count(".") > 1:
        return None
    if text == ".":
        return None
    return Fraction(text)


def parse_phases(text: str) -> tuple[PhaseSpec, ...]:
    """Read the CLI form: comma-separated cumulative percentages and/or device counts.

    `"1%,10%,50%,100%"` → four percent phases; `"5,50,100%"` → counts 5 and 50, then
    everyone. Soak, thresholds and limits keep their defaults (set them with
    `dataclasses.replace`).
    """
    parts = [p.strip() for p in text.split(",")]
    if parts == [""]:
        raise ValueError('phases: empty; expected e.g. "1%,10%,50%,100%" or "5,50,100%"')
    out: list[PhaseSpec] = []
    for i, part in enumerate(parts):
        if part.endswith("%"):
            value = _parse_decimal(part[:-1].strip())
            if value is None:
                raise ValueError(f'phases[{i}]: {part!r} is not a percentage like "10%"')
            out.append(PhaseSpec(percent=float(value)))
        else:
            value = _parse_decimal(part)
            if value is None or value.denominator != 1:
                raise ValueError(
                    f'phases[{i}]: {part!r} is not a percentage like "10%" '
                    'or a whole device count like "5"'
                )
            out.append(PhaseSpec(count=int(value)))
    return validate_phases(out)


def parse_share(text: str, where: str = "max failure rate") -> float:
    """`"5%"` or `"0.05"` → 0.05: a share between 0 and 1 (for `--max-failure`)."""
    raw = text.strip()
    percent = raw.endswith("%")
    value = _parse_decimal(raw[:-1].strip() if percent else raw)
    if value is None:
        raise ValueError(f'{where}: {text!r} is not a share like "5%" or "0.05"')
    if percent:
        value /= 100
    if not 0 <= value <= 1:
        raise ValueError(f"{where}: {text!r} is not between 0 and 1 (0% and 100%)")
    # From the exact decimal, so "0.1%" is the double nearest 0.001, as the literal is.
    return float(value)


def phase_cuts(phases: Sequence[PhaseSpec], device_count: int) -> tuple[int, ...]:
    """Cumulative device counts at the end of each phase for `device_count` devices."""
    if isinstance(device_count, bool) or not isinstance(device_count, int) or device_count < 0:
        raise ValueError(f"device_count: {device_count!r} is not a whole number ≥ 0")
    phases = validate_phases(phases, device_count)
    n, k = device_count, len(phases)
    cuts: list[int] = []
    prev = 0
    for i, ph in enumerate(phases):
        if ph.percent is not None:
            # Exact decimal arithmetic: 8.8 % of 375 is 33, not ceil(33.00000000000001) = 34.
            raw = math.ceil(Fraction(repr(float(ph.percent))) * n / 100)
        else:
            raw = min(cast(int, ph.count), n)
        # With n >= k: at least one device per phase, and room for one in each later phase.
        cut = min(max(raw, prev + 1), n - (k - 1 - i)) if n >= k else min(max(raw, prev), n)
        cuts.append(cut)
        prev = cut
    return tuple(cuts)


def phase_sizes(phases: Sequence[PhaseSpec], device_count: int) -> tuple[int, ...]:
    """How many devices each phase holds (not cumulative) for `device_count` devices."""
    cuts = phase_cuts(phases, device_count)
    return tuple(c - p for c, p in zip(cuts, (0, *cuts[:-1]), strict=True))


def rollout_order(device_ids: Iterable[str], seed: str) -> list[str]:
    """Device ids in rollout order: by sha256(seed ‖ 0x00 ‖ id), ties by id."""
    prefix = seed.encode() + b"\x00"
    return sorted(device_ids, key=lambda d: (hashlib.sha256(prefix + d.encode()).digest(), d))


def assign_phases(
    device_ids: Iterable[str], phases: Sequence[PhaseSpec], seed: str
) -> dict[str, int]:
    """Each selected device's phase index, deterministic in (set of ids, phases, seed).

    The dict is in rollout order. Raises `ValueError` for a repeated id or bad phases.
    """
    ids = list(device_ids)
    seen: set[str] = set()
    for d in ids:
        if d in seen:
            raise ValueError(f"device_ids: {d!r} appears more than once")
        seen.add(d)
    cuts = phase_cuts(phases, len(ids))
    out: dict[str, int] = {}
    phase = 0
    for position, device_id in enumerate(rollout_order(ids, seed)):
        while position >= cuts[phase]:
            phase += 1
        out[device_id] = phase
    return out


# --- state and decisions ----------------------------------------------------------------


def _check_aware(t: datetime, where: str) -> None:
    if not isinstance(t, datetime) or t.utcoffset() is None:
        raise ValueError(f"{where}: {t!r} is not a timezone-aware datetime (use UTC)")


@dataclass(frozen=True)
class RolloutState:
    """Where a deployment stands. Persist it whole; `apply` gives the next one."""

    status: RolloutStatus
    open_phase: int
    """Highest phase whose devices may receive the release."""
    phase_opened_at: tuple[datetime | None, ...]
    phase_passed_at: tuple[datetime | None, ...]
    """When each phase met its success threshold; the soak counts from here."""

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ISO 8601 times, null where a phase has not opened or passed."""

        def iso(ts: tuple[datetime | None, ...]) -> list[str | None]:
            return [None if t is None else t.isoformat() for t in ts]

        return {
            "status": self.status,
            "open_phase": self.open_phase,
            "phase_opened_at": iso(self.phase_opened_at),
            "phase_passed_at": iso(self.phase_passed_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """Read `to_dict`'s form back; `ValueError` names the bad key."""

        def times(key: str) -> tuple[datetime | None, ...]:
            raw = data.get(key)
            if not isinstance(raw, list):
                raise ValueError(f"rollout state.{key}: expected a list of ISO times or null")
            out: list[datetime | None] = []
            for j, item in enumerate(raw):
                if item is None:
                    out.append(None)
                    continue
                try:
                    t = datetime.fromisoformat(item)
                except (TypeError, ValueError):
                    raise ValueError(
                        f"rollout state.{key}[{j}]: {item!r} is not an ISO 8601 time"
                    ) from None
                _check_aware(t, f"rollout state.{key}[{j}]")
                out.append(t)
            return tuple(out)

        status = data.get("status")
        if status not in ROLLOUT_STATUSES:
            raise ValueError(
                f"rollout state.status: {status!r} is not one of {', '.join(ROLLOUT_STATUSES)}"
            )
        open_phase = data.get("open_phase")
        if isinstance(open_phase, bool) or not isinstance(open_phase, int):
            raise ValueError(f"rollout state.open_phase: {open_phase!r} is not a phase index")
        return cls(
            status=cast(RolloutStatus, status),
            open_phase=open_phase,
            phase_opened_at=times("phase_opened_at"),
            phase_passed_at=times("phase_passed_at"),
        )


@dataclass(frozen=True)
class Progress:
    """One device in one deployment: its phase and its latest reported status."""

    device_id: str
    phase: int
    status: DeviceStatus


@dataclass(frozen=True)
class Decision:
    """What `evaluate` concluded; `apply` turns it into the next state.

    action        none | open-phase (`phase` opens) | abort (`phase` tripped a limit;
                  None for an operator rollback) | succeed (`phase` is the last)
    reason        one sentence for the audit log and the status API
    rollback      devices to roll back, sorted (abort only)
    passed_phase  the open phase met its success threshold at this evaluation's `now`;
                  `apply` records it as that phase's passed time
    """

    action: Action
    phase: int | None
    reason: str
    rollback: tuple[str, ...] = ()
    passed_phase: int | None = None


def initial_state(phases: Sequence[PhaseSpec], now: datetime) -> RolloutState:
    """A new deployment: running, phase 0 open since `now`."""
    k = len(validate_phases(phases))
    _check_aware(now, "now")
    return RolloutState(
        status="running",
        open_phase=0,
        phase_opened_at=(now,) + (None,) * (k - 1),
        phase_passed_at=(None,) * k,
    )


def _check_state(state: RolloutState, k: int) -> None:
    if state.status not in ROLLOUT_STATUSES:
        raise ValueError(f"state.status: {state.status!r} is not a deployment status")
    if len(state.phase_opened_at) != k or len(state.phase_passed_at) != k:
        raise ValueError(
            f"state: phase_opened_at and phase_passed_at need one entry per phase ({k}), "
            f"got {len(state.phase_opened_at)} and {len(state.phase_passed_at)}"
        )
    if not 0 <= state.open_phase < k:
        raise ValueError(f"state.open_phase: {state.open_phase} is not a phase index 0..{k - 1}")
    named = (("phase_opened_at", state.phase_opened_at), ("phase_passed_at", state.phase_passed_at))
    for name, times in named:
        for j, t in enumerate(times):
            if t is not None:
                _check_aware(t, f"state.{name}[{j}]")


PhaseCounts = Mapping[str, int]


def _pct(share: float) -> str:
    """A share as a percentage for messages: 0.05 → 5%, 1/3 → 33.33%."""
    return f"{share * 100:.4g}%"


def _tally(phases: tuple[PhaseSpec, ...], progress: Iterable[Progress]) -> list[dict[str, int]]:
    counts: list[dict[str, int]] = [dict.fromkeys(DEVICE_STATUSES, 0) for _ in phases]
    seen: set[str] = set()
    for item in progress:
        if item.device_id in seen:
            raise ValueError(f"progress: device {item.device_id!r} appears more than once")
        seen.add(item.device_id)
        if (
            isinstance(item.phase, bool)
            or not isinstance(item.phase, int)
            or not 0 <= item.phase < len(phases)
        ):
            raise ValueError(
                f"progress: device {item.device_id!r} is in phase {item.phase!r}, "
                f"but the deployment has phases 0..{len(phases) - 1}"
            )
        if item.status not in ALLOWED:
            raise ValueError(
                f"progress: device {item.device_id!r} has unknown status {item.status!r}"
            )
        counts[item.phase][item.status] += 1
    return counts


def phase_counts(
    phases: Sequence[PhaseSpec], progress: Iterable[Progress]
) -> list[dict[DeviceStatus, int]]:
    """Per phase, how many devices are in each status (every status present, in order)."""
    return cast("list[dict[DeviceStatus, int]]", _tally(validate_phases(phases), progress))


def rollback_set(progress: Iterable[Progress]) -> tuple[str, ...]:
    """Sorted ids of the devices the release reached (status in `REACHED`)."""
    return tuple(sorted(p.device_id for p in progress if p.status in REACHED))


def evaluate_counts(
    state: RolloutState,
    phases: Sequence[PhaseSpec],
    counts: Sequence[PhaseCounts],
    now: datetime,
    default_max_failure_rate: float | None,
) -> Decision:
    """The rules of the module docstring over per-phase status counts.

    For a server that counts with SQL (`GROUP BY phase, status`) instead of loading every
    device: an `abort` here has an empty `rollback`; the devices to roll back are those
    with a status in `REACHED` (`rollback_set`). `evaluate` fills it in.
    """
    phases = validate_phases(phases)
    _check_state(state, len(phases))
    _check_aware(now, "now")
    if default_max_failure_rate is not None:
        _check_share(default_max_failure_rate, "default_max_failure_rate")
    if len(counts) != len(phases):
        raise ValueError(f"counts: need one entry per phase ({len(phases)}), got {len(counts)}")
    for q, per_status in enumerate(counts):
        for status, c in per_status.items():
            if status not in ALLOWED:
                raise ValueError(f"counts[{q}]: unknown device status {status!r}")
            if isinstance(c, bool) or not isinstance(c, int) or c < 0:
                raise ValueError(f"counts[{q}][{status!r}]: {c!r} is not a count ≥ 0")

    if state.status != "running":
        return Decision("none", None, f"deployment is {state.status}: no rule runs")

    # Rule 1: abort on any opened phase over its failure limit or unable to pass.
    for q in range(state.open_phase + 1):
        n = sum(counts[q].values())
        if n == 0:
            continue
        failed = counts[q].get("failure", 0)
        spec = phases[q]
        limit = (
            spec.max_failure_rate if spec.max_failure_rate is not None else default_max_failure_rate
        )
        # Exact ratio against the given limit: f/n is correctly rounded, so 1/20 equals
        # the double 0.05 and is not "above" it.
        if limit is not None and failed / n > limit:
            return Decision(
                "abort",
                q,
                f"phase {q}: {failed} of {n} devices failed ({_pct(failed / n)}), "
                f"above the maximum failure rate {_pct(limit)}",
            )
        needed = spec.threshold(default_max_failure_rate)
        if (n - failed) / n < needed:
            return Decision(
                "abort",
                q,
                f"phase {q}: {failed} of {n} devices failed, so at most {n - failed} "
                f"({_pct((n - failed) / n)}) can succeed, below the success threshold "
                f"{_pct(needed)}",
            )

    # Rule 2: has the open phase passed, and has it soaked?
    p = state.open_phase
    spec = phases[p]
    n = sum(counts[p].values())
    succeeded = counts[p].get("success", 0)
    passed_at = state.phase_passed_at[p]
    newly_passed: int | None = None
    if passed_at is None:
        share = succeeded / n if n else 1.0
        needed = spec.threshold(default_max_failure_rate)
        if share < needed:
            return Decision(
                "none",
                None,
                f"phase {p}: {succeeded} of {n} devices succeeded ({_pct(share)}), "
                f"waiting for {_pct(needed)}",
            )
        passed_at, newly_passed = now, p
    soaked_s = (now - passed_at).total_seconds()
    if soaked_s < spec.soak_s:
        return Decision(
            "none",
            None,
            f"phase {p}: passed, soaking {_num(soaked_s)} of {_num(float(spec.soak_s))} s",
            passed_phase=newly_passed,
        )

    # Rule 3: the last phase passed and soaked, and every device has finished.
    if p == len(phases) - 1:
        unfinished = sum(
            c for per_status in counts for status, c in per_status.items() if status not in FINAL
        )
        if unfinished:
            return Decision(
                "none",
                None,
                f"phase {p} (the last) passed: {succeeded} of {n} devices succeeded, "
                f"waiting for {unfinished} device{'s' if unfinished != 1 else ''} to finish",
                passed_phase=newly_passed,
            )
        return Decision(
            "succeed",
            p,
            f"phase {p} (the last) passed: {succeeded} of {n} devices succeeded",
            passed_phase=newly_passed,
        )
    return Decision(
        "open-phase",
        p + 1,
        f"phase {p} passed ({succeeded} of {n} devices succeeded) and soaked "
        f"{_num(float(spec.soak_s))} s: opening phase {p + 1}",
        passed_phase=newly_passed,
    )


def evaluate(
    state: RolloutState,
    phases: Sequence[PhaseSpec],
    progress: Sequence[Progress],
    now: datetime,
    default_max_failure_rate: float | None,
) -> Decision:
    """Decide the deployment's next step from every device's progress (rules: module doc)."""
    phases = validate_phases(phases)
    decision = evaluate_counts(
        state, phases, _tally(phases, progress), now, default_max_failure_rate
    )
    if decision.action == "abort":
        return replace(decision, rollback=rollback_set(progress))
    return decision


def _rollout_transition(state: RolloutState, new: RolloutStatus) -> None:
    if new not in ROLLOUT_ALLOWED[state.status]:
        raise InvalidTransition(state.status, new, ROLLOUT_ALLOWED[state.status], "deployment")


def apply(state: RolloutState, decision: Decision, now: datetime) -> RolloutState:
    """The state after `decision`, made at `now`; the same object when nothing changes.

    `ValueError` when the decision was made against another state (stale), so a caller
    that raced another evaluator re-evaluates instead of opening a phase twice.
    """
    _check_aware(now, "now")
    k = len(state.phase_passed_at)
    _check_state(state, k)
    new = state
    if decision.passed_phase is not None:
        p = decision.passed_phase
        already = state.phase_passed_at[state.open_phase] is not None
        if state.status != "running" or p != state.open_phase or already:
            raise ValueError(
                f"stale decision: phase {p} passed, but the deployment is {state.status} "
                f"with phase {state.open_phase} open" + (" and already passed" if already else "")
            )
        passed_times = list(state.phase_passed_at)
        passed_times[p] = now
        new = replace(new, phase_passed_at=tuple(passed_times))
    if decision.action == "none":
        return new
    if decision.action == "abort":
        _rollout_transition(state, "aborted")
        return replace(new, status="aborted")
    # open-phase and succeed follow from a passed open phase, only while running.
    p = state.open_phase
    expected = p if decision.action == "succeed" else p + 1
    passed = new.phase_passed_at[p] is not None
    if state.status != "running" or not passed or decision.phase != expected:
        raise ValueError(
            f"stale decision: {decision.action} {decision.phase}, but the deployment is "
            f"{state.status} with phase {p} open" + ("" if passed else " and not passed")
        )
    if decision.action == "succeed":
        if p != k - 1:
            raise ValueError(f"stale decision: succeed at phase {p}, but the last is {k - 1}")
        return replace(new, status="succeeded")
    if expected >= k:
        raise ValueError(f"stale decision: open-phase {expected}, but the last phase is {k - 1}")
    opened = list(new.phase_opened_at)
    opened[expected] = now
    return replace(new, open_phase=expected, phase_opened_at=tuple(opened))


def pause(state: RolloutState) -> RolloutState:
    """Stop the rules and stop offering the release; only a running deployment pauses."""
    _rollout_transition(state, "paused")
    return replace(state, status="paused")


def resume(state: RolloutState) -> RolloutState:
    """Run a paused deployment again."""
    _rollout_transition(state, "running")
    return replace(state, status="running")


def cancel(state: RolloutState) -> RolloutState:
    """End a running or paused deployment; devices keep what they have installed."""
    _rollout_transition(state, "cancelled")
    return replace(state, status="cancelled")


def manual_rollback(
    state: RolloutState,
    progress: Iterable[Progress],
    reason: str = "rolled back by an operator",
) -> Decision:
    """The operator's rollback: an `abort` decision for every device the release reached.

    Allowed unless the deployment already aborted; `apply` it like any decision.
    """
    _rollout_transition(state, "aborted")
    return Decision("abort", None, reason, rollback=rollback_set(progress))
