"""The dashboard's monitoring pages: drift per release, and alerts.

    /ui/drift    ?release=name@version [&target=] [&group=key:value | &device=id] [&hours=24]
                 the release's merged windows over the last `hours` against its reference
                 profile: dataset verdict, per-feature statistic and verdict with the
                 reference and current histograms side by side (inline SVG), prediction and
                 confidence drift, accuracy from feedback, and the devices with drifted
                 features (each links to its own report). Without `release`: the newest
                 release that has a profile.
    /ui/alerts   ?state=firing|pending|resolved
                 the alerts of the server's rules as the last evaluation left them, and the
                 rules themselves.

Both read what the API reads (`DriftService.report` / `device_verdicts` behind
GET /api/v1/drift[/devices], `AlertService.alerts` behind GET /api/v1/alerts), so the
page and the API cannot disagree. Bin labels are derived from the profile here (pure).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from itertools import pairwise
from typing import Any, Final

from fastapi import APIRouter, Request, Response

from tinyops.fleet.server.auth import Runtime
from tinyops.fleet.server.runtime import FleetRuntime, utcnow
from tinyops.fleet.server.web import params
from tinyops.fleet.server.web.access import Viewer, guard
from tinyops.fleet.server.web.charts import PairedBars, paired_bars
from tinyops.fleet.server.web.render import render
from tinyops.monitor.reference import CONFIDENCE_EDGES, FeatureProfile, NumericProfile
from tinyops.security.roles import Permission

router = APIRouter(include_in_schema=False)

DEFAULT_HOURS: Final = 24
MAX_HOURS: Final = 24 * 90
SHOWN_DEVICES: Final = 200
ALERT_STATES: Final = ("firing", "pending", "resolved")


def _edge(value: float) -> str:
    return f"{value:.4g}"


def bin_labels(feature: FeatureProfile) -> list[str]:
    """A label per bin: numeric '< e1', 'e1–e2', ..., '≥ ek'; categorical values, 'other'."""
    if isinstance(feature, NumericProfile):
        edges = feature.edges
        if not edges:
            return ["all"]
        if feature.discrete:
            # One bin per reference value: bin i+1 holds values in [edges[i], edges[i+1]).
            return [f"< {_edge(edges[0])}", *(_edge(e) for e in edges)]
        inner = [f"{_edge(a)}–{_edge(b)}" for a, b in pairwise(edges)]
        return [f"< {_edge(edges[0])}", *inner, f"≥ {_edge(edges[-1])}"]
    return [*(_edge(v) for v in feature.values), "other"]


def confidence_labels() -> list[str]:
    edges = (0.0, *CONFIDENCE_EDGES, 1.0)
    return [f"{a:.1f}–{b:.1f}" for a, b in pairwise(edges)]


@dataclass(frozen=True)
class FeatureRow:
    name: str
    kind: str
    method: str
    statistic: float
    threshold: float
    drifted: bool
    chart: PairedBars | None


@dataclass(frozen=True)
class ReleaseChoice:
    label: str
    targets: tuple[str, ...]


def monitored_releases(rt: FleetRuntime) -> list[ReleaseChoice]:
    """Releases with a reference profile, newest upload first, one per name@version."""
    targets: dict[str, list[str]] = {}
    for release in sorted(rt.store.list_releases(), key=lambda r: r.id, reverse=True):
        if rt.store.drift.release_monitoring(release.id) is not None:
            targets.setdefault(f"{release.name}@{release.version}", []).append(release.target)
    return [ReleaseChoice(label, tuple(sorted(t))) for label, t in targets.items()]


def _paired(labels: list[str], reference: Any, current: Any) -> PairedBars | None:
    if reference is None or current is None or len(reference) != len(current):
        return None
    if len(labels) != len(reference):
        labels = [str(i) for i in range(len(reference))]
    return paired_bars(labels, list(reference), list(current))


@router.get("/ui/drift")
def drift(request: Request, rt: Runtime) -> Response:
    def build(viewer: Viewer) -> Response:
        q = request.query_params
        release_param = params.single(q.getlist("release"), "release")
        if release_param is not None and not isinstance(params.release(release_param), tuple):
            raise params.BadParam("release", f"{release_param!r} is not name@version")
        target = params.name(params.single(q.getlist("target"), "target"), "target")
        group = params.tag(params.single(q.getlist("group"), "group"))
        device = params.name(params.single(q.getlist("device"), "device"), "device")
        if group is not None and device is not None:
            raise params.BadParam("group", "give device or group, not both")
        hours_text = params.single(q.getlist("hours"), "hours")
        hours = DEFAULT_HOURS
        if hours_text is not None:
            if not hours_text.isdigit() or not 1 <= int(hours_text) <= MAX_HOURS:
                raise params.BadParam(
                    "hours", f"{hours_text!r} is not a whole number of hours from 1 to {MAX_HOURS}"
                )
            hours = int(hours_text)
        choices = monitored_releases(rt)
        release = release_param or (choices[0].label if choices else None)
        context: dict[str, Any] = {
            "viewer": viewer,
            "choices": choices,
            "release": release,
            "target": target,
            "group": None if group is None else ":".join(group),
            "device": device,
            "hours": hours,
            "report": None,
        }
        if release is None:
            return render(request, "drift.html", **context)
        now = utcnow()
        start = now - timedelta(hours=hours)
        group_text = context["group"]
        result = rt.drift.report(
            release, target=target, device=device, group=group_text, start=start, end=now, now=now
        )
        monitored = rt.drift.releases(release, target)[0]
        profile = monitored.profile
        report = result["report"]
        histograms = result["histograms"] or {}
        features = []
        for f in (report or {}).get("features", []):
            current = (histograms.get("features") or {}).get(f["feature"])
            reference = profile.feature(f["feature"]).reference_counts().tolist()
            features.append(
                FeatureRow(
                    name=f["feature"],
                    kind=f["kind"],
                    method=f["method"],
                    statistic=f["statistic"],
                    threshold=f["threshold"],
                    drifted=f["drifted"],
                    chart=_paired(bin_labels(profile.feature(f["feature"])), reference, current),
                )
            )
        predictions = _paired(
            [str(i) for i in range(len(profile.prediction_counts or ()))],
            profile.prediction_counts,
            histograms.get("predictions"),
        )
        confidence = _paired(
            confidence_labels(),
            None if profile.confidence is None else profile.confidence.counts,
            histograms.get("confidence"),
        )
        verdicts: list[dict[str, Any]] = []
        if device is None:
            verdicts = rt.drift.device_verdicts(
                release,
                target=target,
                group=group_text,
                start=start,
                end=now,
                limit=SHOWN_DEVICES,
                now=now,
            )["devices"]
        context.update(
            result=result,
            report=report,
            features=features,
            predictions=predictions,
            confidence=confidence,
            drifted_devices=[v for v in verdicts if v["drifted_features"]],
            quiet_devices=sum(1 for v in verdicts if not v["drifted_features"]),
            start=start,
            end=now,
        )
        return render(request, "drift.html", **context)

    return guard(request, rt, Permission.READ, build)


@router.get("/ui/alerts")
def alerts(request: Request, rt: Runtime) -> Response:
    def build(viewer: Viewer) -> Response:
        state = params.choice(
            params.single(request.query_params.getlist("state"), "state"), "state", ALERT_STATES
        )
        every = rt.alerting.alerts()
        counts = Counter(a.state for a in every)
        shown = [a for a in every if state is None or a.state == state]
        # Firing first, then pending, then resolved; the newest change first within each.
        order = {s: i for i, s in enumerate(ALERT_STATES)}
        shown.sort(key=lambda a: (order[a.state], -a.since.timestamp()))
        rules = [] if rt.alerting.rules is None else rt.alerting.rules.rules()
        return render(
            request,
            "alerts.html",
            viewer=viewer,
            enabled=rt.alerting.enabled,
            alerts=shown,
            counts=[(s, counts.get(s, 0)) for s in ALERT_STATES],
            state=state,
            rules=rules,
            device_link=lambda labels: (
                labels.get("device") if params.NAME.match(labels.get("device", "")) else None
            ),
        )

    return guard(request, rt, Permission.READ, build)
