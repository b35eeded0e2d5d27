"""The dashboard's read-only pages: fleet overview, deployments, one deployment, one device.

Each route reads its parameters raw, checks them (web/params.py), asks the store what
the API's routes ask it, and renders a template. Routes are plain `def`: FastAPI runs
them in its thread pool, where the store's blocking calls belong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, get_args

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from tinyops.fleet.rollout import DEVICE_STATUSES, ROLLOUT_STATUSES, DeviceStatus
from tinyops.fleet.server.auth import Runtime
from tinyops.fleet.server.models import MetricName
from tinyops.fleet.server.runtime import FleetRuntime
from tinyops.fleet.server.web import params
from tinyops.fleet.server.web.access import Viewer, guard
from tinyops.fleet.server.web.charts import line_chart, stacked_bar
from tinyops.fleet.server.web.render import STATIC, error_page, render
from tinyops.fleet.store import DeviceRecord
from tinyops.fleet.store.records import DEVICE_STATES
from tinyops.fleet.store.store import MAX_PAGE
from tinyops.security.roles import Permission

router = APIRouter(include_in_schema=False)
# Included after every other dashboard router: its catch-all route must match last.
fallback_router = APIRouter(include_in_schema=False)

PAGE_SIZE: Final = 100
CHART_POINTS: Final = 200
LOG_LINES: Final = 100
SHOWN_COMMANDS: Final = 50
SHOWN_PROGRESS: Final = 500
TELEMETRY_METRICS: Final[tuple[str, ...]] = get_args(MetricName)
LOG_SEVERITY: Final = {level: i for i, level in enumerate(params.LOG_LEVELS)}
STATIC_TYPES: Final = {"style.css": "text/css", "dashboard.js": "text/javascript"}


def _release_label(device: DeviceRecord) -> str:
    installed = device.installed
    return "none" if installed is None else f"{installed.name}@{installed.version}"


def _query(request: Request, field: str) -> str | None:
    """The one value of a query parameter (None if absent or empty)."""
    return params.single(request.query_params.getlist(field), field)


@dataclass(frozen=True)
class FleetFilter:
    status: str | None
    hardware: str | None
    release: tuple[str, str] | str | None
    tag: tuple[str, str] | None
    after: str | None

    @classmethod
    def from_query(cls, request: Request) -> FleetFilter:
        return cls(
            status=params.choice(_query(request, "status"), "status", DEVICE_STATES),
            hardware=params.name(_query(request, "hardware"), "hardware"),
            release=params.release(_query(request, "release")),
            tag=params.tag(_query(request, "tag")),
            after=params.name(_query(request, "after"), "after"),
        )

    def release_matches(self, device: DeviceRecord) -> bool:
        if self.release is None:
            return True
        if self.release == "none":
            return device.installed is None
        return (
            device.installed is not None
            and (
                device.installed.name,
                device.installed.version,
            )
            == self.release
        )

    def query(self, **changes: str | None) -> dict[str, str]:
        """This filter as query parameters, with `changes` applied (None removes one)."""
        current: dict[str, str | None] = {
            "status": self.status,
            "hardware": self.hardware,
            "release": self.release
            if isinstance(self.release, str) or self.release is None
            else "@".join(self.release),
            "tag": None if self.tag is None else ":".join(self.tag),
        }
        current.update(changes)
        return {k: v for k, v in current.items() if v is not None}


def matching_devices(rt: FleetRuntime, f: FleetFilter) -> tuple[list[DeviceRecord], str | None]:
    """A page of devices matching `f`, and the `after` of the next page (None at the end).

    The store filters status, hardware and tags; the installed release is filtered here,
    reading the store's pages until this page is full.
    """
    out: list[DeviceRecord] = []
    cursor = f.after
    while True:
        batch = rt.store.list_devices(
            status=f.status,
            hardware=f.hardware,
            tags=dict([f.tag]) if f.tag else None,
            after=cursor,
            limit=MAX_PAGE,
        )
        for device in batch:
            if f.release_matches(device):
                out.append(device)
                if len(out) == PAGE_SIZE:
                    return out, device.id
        if len(batch) < MAX_PAGE:
            return out, None
        cursor = batch[-1].id


@router.get("/ui")
def fleet(request: Request, rt: Runtime) -> Response:
    def build(viewer: Viewer) -> Response:
        f = FleetFilter.from_query(request)
        by_status: Counter[str] = Counter()
        by_release: Counter[str] = Counter()
        by_hardware: Counter[str] = Counter()
        for status, hardware, release, count in rt.store.device_counts():
            by_status[status] += count
            by_release[release] += count
            by_hardware[hardware] += count
        devices, next_after = matching_devices(rt, f)
        return render(
            request,
            "fleet.html",
            viewer=viewer,
            filter=f,
            total=sum(by_status.values()),
            by_status=[(s, by_status[s]) for s in DEVICE_STATES if by_status[s]],
            by_release=sorted(by_release.items()),
            by_hardware=sorted(by_hardware.items()),
            statuses=DEVICE_STATES,
            devices=devices,
            release_of=_release_label,
            next_after=next_after,
        )

    return guard(request, rt, Permission.READ, build)


def _totals(phase_counts: Sequence[Mapping[DeviceStatus, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for counts in phase_counts:
        total.update(counts)
    return dict(total)


@router.get("/ui/deployments")
def deployments(request: Request, rt: Runtime) -> Response:
    def build(viewer: Viewer) -> Response:
        status = params.choice(_query(request, "status"), "status", ROLLOUT_STATUSES)
        rows = []
        for d in rt.store.list_deployments(status):
            totals = _totals(d.phase_counts)
            rows.append((d, totals, stacked_bar(totals, DEVICE_STATUSES, width=200)))
        return render(
            request,
            "deployments.html",
            viewer=viewer,
            rows=rows,
            status_filter=status,
            statuses=ROLLOUT_STATUSES,
        )

    return guard(request, rt, Permission.READ, build)


@router.get("/ui/deployments/{deployment_id}")
def deployment(deployment_id: str, request: Request, rt: Runtime) -> Response:
    def build(viewer: Viewer) -> Response:
        did = params.record_id(deployment_id, "deployment_id")
        d = rt.store.get_deployment(did)
        phases = []
        for i, spec in enumerate(d.phases):
            counts = {str(k): n for k, n in (d.phase_counts[i] if d.phase_counts else {}).items()}
            phases.append(
                {
                    "index": i,
                    "spec": spec,
                    "threshold": spec.threshold(d.max_failure_rate),
                    "devices": sum(counts.values()),
                    "counts": [(s, counts[s]) for s in DEVICE_STATUSES if counts.get(s)],
                    "bar": stacked_bar(counts, DEVICE_STATUSES),
                    "opened_at": d.state.phase_opened_at[i],
                    "passed_at": d.state.phase_passed_at[i],
                }
            )
        progress = rt.store.deployment_progress(did)
        return render(
            request,
            "deployment.html",
            viewer=viewer,
            d=d,
            phases=phases,
            device_progress=progress[:SHOWN_PROGRESS],
            progress_total=len(progress),
            audit=rt.store.audit_log(target=f"deployment:{did}", limit=50),
        )

    return guard(request, rt, Permission.READ, build)


@router.get("/ui/devices/{device_id}")
def device(device_id: str, request: Request, rt: Runtime) -> Response:
    def build(viewer: Viewer) -> Response:
        params.name(device_id, "device_id")
        level = params.choice(_query(request, "level"), "level", params.LOG_LEVELS)
        sent = _query(request, "sent")
        record = rt.store.get_device(device_id)
        charts = []
        for metric in TELEMETRY_METRICS:
            points = rt.store.telemetry(device_id, metric, limit=CHART_POINTS)
            chart = line_chart([(p.t, p.value) for p in points])
            if chart is not None:
                charts.append((metric, points[0].value, len(points), chart))
        logs = rt.store.device_logs(device_id, limit=LOG_LINES)
        if level is not None:
            floor = LOG_SEVERITY[level]
            logs = [line for line in logs if LOG_SEVERITY.get(line.level, 0) >= floor]
        return render(
            request,
            "device.html",
            viewer=viewer,
            device=record,
            release=_release_label(record),
            history=rt.store.device_history(device_id),
            charts=charts,
            logs=logs,
            level=level,
            levels=params.LOG_LEVELS,
            commands=rt.store.list_commands(device_id)[:SHOWN_COMMANDS],
            command_kinds=params.COMMAND_KINDS,
            sent=sent if sent is not None and sent.isdigit() else None,
        )

    return guard(request, rt, Permission.READ, build)


@router.get("/ui/static/{name}")
def static(name: str, request: Request) -> Response:
    # Public like the login page that needs it: fixed files, no fleet data.
    media = STATIC_TYPES.get(name)
    if media is None:
        return error_page(request, 404, f"no static file {name!r}")
    return FileResponse(
        STATIC / name,
        media_type=media,
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@fallback_router.get("/ui/{rest:path}")
def unknown(rest: str, request: Request, rt: Runtime) -> Response:
    """Any other dashboard path: 404 as a page (after the login check, like the rest)."""

    def build(viewer: Viewer) -> Response:
        return error_page(request, 404, f"no dashboard page /ui/{rest}", viewer)

    return guard(request, rt, Permission.READ, build)
