"""The web dashboard (/ui) against a real server process, with httpx: login and sessions,
roles, pages with real data, actions with CSRF and audit, and bad input as HTML 4xx.

The fleet is seeded through the real API (tests/fleet/web_fleet.py): three devices on two
targets, telemetry and logs (one hostile to HTML), a release and a two-phase deployment.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fleet_process import Server
from web_fleet import (
    HOSTILE_LOG,
    SeededFleet,
    csrf_of,
    device_call,
    hidden_inputs,
    login,
    seed,
    seed_drift,
)

BuildBundle = Callable[..., Path]
PAGES = (
    "/ui",
    "/ui/deployments",
    "/ui/deployments/1",
    "/ui/devices/nano-01",
    "/ui/drift",
    "/ui/alerts",
    "/ui/no-such-page",
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "fleet", None, tmp_path / "server.log")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def fleet(server: Server, build_bundle: BuildBundle, release_key: Ed25519PrivateKey) -> SeededFleet:
    return seed(server, build_bundle, release_key)


@pytest.fixture
def fleet_on_each_db(
    db_url: str, tmp_path: Path, build_bundle: BuildBundle, release_key: Ed25519PrivateKey
) -> Iterator[SeededFleet]:
    running = Server(
        tmp_path / "fleet", None if db_url.startswith("sqlite") else db_url, tmp_path / "server.log"
    )
    try:
        yield seed(running, build_bundle, release_key)
    finally:
        running.stop()


def _html(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, (r.status_code, r.text[:2000])
    assert r.headers["content-type"].startswith("text/html"), r.headers
    assert "default-src 'none'" in r.headers["content-security-policy"]
    return r.text


def _commands(fleet: SeededFleet, device_id: str) -> list[dict[str, object]]:
    r = fleet.api("GET", f"/api/v1/devices/{device_id}/commands")
    assert r.status_code == 200, r.text
    return list(r.json()["commands"])


# --- no session: nothing but the login page --------------------------------------------------


def test_without_a_session_every_page_redirects_to_login_and_shows_no_data(
    fleet: SeededFleet,
) -> None:
    client = httpx.Client(base_url=fleet.url, timeout=30)
    root = client.get("/")
    assert (root.status_code, root.headers["location"]) == (303, "/ui")
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 303, (path, r.status_code)
        assert r.headers["location"].startswith("/ui/login?next="), r.headers["location"]
        assert "nano-01" not in r.text and "kws" not in r.text
    # Actions without a session change nothing.
    r = client.post("/ui/devices/nano-01/commands", data={"kind": "reboot"})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")
    r = client.post(f"/ui/deployments/{fleet.deployment_id}/pause", data={})
    assert r.status_code == 303
    assert _commands(fleet, "nano-01") == []
    assert fleet.api("GET", f"/api/v1/deployments/{fleet.deployment_id}").json()["status"] == (
        "running"
    )
    # A forged or tampered cookie is no session either.
    for cookie in ("garbage", "eyJ0aWQiOjF9.AAAA", "x" * 5000):
        r = client.get("/ui", cookies={"tinyops_session": cookie})
        assert r.status_code == 303, cookie


def test_login_issues_a_signed_httponly_strict_cookie_that_holds_no_token(
    fleet: SeededFleet, server: Server
) -> None:
    client = httpx.Client(base_url=fleet.url, timeout=30)
    page = client.get("/ui/login?next=/ui/devices/nano-01")
    _html(page, 200)
    form = hidden_inputs(page.text)
    assert form["next"] == "/ui/devices/nano-01"
    token = fleet.tokens["viewer"]
    r = client.post("/ui/login", data={"token": token, **form})
    assert (r.status_code, r.headers["location"]) == (303, "/ui/devices/nano-01")
    set_cookie = next(
        v for v in r.headers.get_list("set-cookie") if v.startswith("tinyops_session=")
    )
    attributes = {a.strip().lower() for a in set_cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/ui"} <= attributes
    value = set_cookie.split(";", 1)[0].split("=", 1)[1]
    assert token not in value and token[4:] not in value
    # The session secret is the server's, private to its user.
    secret = server.data_dir / "ui-session.key"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    body = _html(client.get("/ui/devices/nano-01"), 200)
    assert "viewer-1" in body and "nano-01" in body
    # Tampering with one character of the signature ends the session.
    forged = value[:-1] + ("A" if value[-1] != "A" else "B")
    r = httpx.get(fleet.url + "/ui", cookies={"tinyops_session": forged})
    assert r.status_code == 303


def test_login_refuses_bad_tokens_and_forms_without_their_csrf_token(fleet: SeededFleet) -> None:
    client = httpx.Client(base_url=fleet.url, timeout=30)
    form = hidden_inputs(client.get("/ui/login").text)
    for token, status in (
        ("tok_not-a-real-token", 401),
        (fleet.devices["nano-01"], 401),  # a device token opens no dashboard
        ("", 422),
        ("t" * 300, 422),
    ):
        r = client.post("/ui/login", data={**form, "token": token})
        text = _html(r, status)
        assert "token:" in text
        assert "tinyops_session=" not in r.headers.get("set-cookie", "")
        # The form comes back with a new login cookie and its CSRF token.
        form = hidden_inputs(text)
    # Without the login page's cookie/CSRF pair (a cross-site login form): refused.
    r = httpx.post(fleet.url + "/ui/login", data={"token": fleet.admin, "csrf": form["csrf"]})
    _html(r, 403)
    assert "tinyops_session=" not in r.headers.get("set-cookie", "")
    # Not a form at all.
    r = client.post("/ui/login", json={"token": fleet.admin})
    assert _html(r, 415)
    # An offsite `next` is ignored: after login, the dashboard.
    form = hidden_inputs(client.get("/ui/login?next=https://evil.example/").text)
    assert form["next"] == "/ui"
    r = client.post("/ui/login", data={**form, "token": fleet.admin, "next": "//evil.example"})
    assert (r.status_code, r.headers["location"]) == (303, "/ui")


def test_logout_and_revocation_end_the_session(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["devops"])
    csrf = csrf_of(client, "/ui")
    # Logout needs the CSRF token too (a cross-site post cannot log one out).
    _html(client.post("/ui/logout", data={}), 403)
    assert client.get("/ui").status_code == 200
    r = client.post("/ui/logout", data={"csrf": csrf})
    assert (r.status_code, r.headers["location"]) == (303, "/ui/login")
    assert client.get("/ui").status_code == 303
    # A session whose token is revoked ends at the next request.
    viewer = login(fleet.url, fleet.tokens["viewer"])
    assert viewer.get("/ui").status_code == 200
    assert fleet.api("DELETE", "/api/v1/tokens/viewer-1").status_code == 204
    r = viewer.get("/ui")
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/login")


# --- pages ---------------------------------------------------------------------------------


def test_fleet_overview_counts_and_filters_on_each_database(
    fleet_on_each_db: SeededFleet,
) -> None:
    fleet = fleet_on_each_db
    client = login(fleet.url, fleet.tokens["viewer"])
    page = _html(client.get("/ui"), 200)
    assert re.search(r"Fleet <small>3 devices</small>", page)
    by_target = page.split('data-testid="by-target"', 1)[1].split("</div>", 1)[0]
    assert re.search(r">nano33ble</a></td><td class=\"num\">2<", by_target), by_target
    assert re.search(r">rpi4</a></td><td class=\"num\">1<", by_target), by_target
    by_release = page.split('data-testid="by-release"', 1)[1].split("</div>", 1)[0]
    assert re.search(r">kws@0\.9\.0</a></td><td class=\"num\">2<", by_release), by_release
    assert re.search(r">kws@1\.0\.0</a></td><td class=\"num\">1<", by_release), by_release

    def listed(query: str) -> list[str]:
        html = _html(client.get("/ui" + query), 200)
        table = html.split('data-testid="devices"', 1)[1].split("</table>", 1)[0]
        return re.findall(r'<a href="/ui/devices/([^"]+)">', table)

    assert listed("") == ["nano-01", "nano-02", "pi-01"]
    assert listed("?hardware=rpi4") == ["pi-01"]
    assert listed("?tag=group:lab") == ["nano-01", "pi-01"]
    assert listed("?status=decommissioned") == []
    updated = listed("?release=kws@1.0.0")
    assert len(updated) == 1 and updated[0] in ("nano-01", "nano-02")
    assert sorted(listed("?release=kws@0.9.0") + updated) == ["nano-01", "nano-02", "pi-01"]
    assert listed("?after=nano-02") == ["pi-01"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("?status=sleeping", "status"),
        ("?status=active&status=updating", "status"),
        ("?hardware=%3Cscript%3E", "hardware"),
        ("?tag=nocolon", "tag"),
        ("?release=kws", "release"),
        ("?release=kws@1.0.0%00", "release"),
        ("?after=" + "a" * 2000, "after"),
    ],
)
def test_malformed_fleet_filters_are_a_422_page_naming_the_parameter(
    fleet: SeededFleet, query: str, field: str
) -> None:
    client = login(fleet.url, fleet.tokens["viewer"])
    text = _html(client.get("/ui" + query), 422)
    assert f"<code>{field}</code>" in text
    assert "<script>" not in text.split("<main>", 1)[1]


def test_malformed_and_unknown_paths_are_4xx_pages(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["viewer"])
    for path, status in (
        ("/ui/deployments/abc", 422),
        ("/ui/deployments/0", 422),
        ("/ui/deployments/99999999999", 422),
        ("/ui/deployments/4242", 404),
        ("/ui/deployments?status=exploded", 422),
        ("/ui/devices/no-such-device", 404),
        ("/ui/devices/bad%20id", 422),
        ("/ui/devices/nano-01?level=loud", 422),
        ("/ui/no-such-page", 404),
    ):
        _html(client.get(path), status)


def test_device_page_shows_telemetry_as_svg_logs_escaped_and_history(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["viewer"])
    page = _html(client.get("/ui/devices/nano-01"), 200)
    telemetry = page.split('data-testid="telemetry"', 1)[1].split("<h2", 1)[0]
    assert 'data-metric="temperature_c"' in telemetry
    assert 'data-metric="free_memory_bytes"' in telemetry
    assert "latest 52 · 5 points" in telemetry
    temperature = telemetry.split('data-metric="temperature_c"', 1)[1].split("</svg>", 1)[0]
    polyline = re.search(r'<polyline class="series" points="([^"]+)"', temperature)
    assert polyline is not None
    ys = [float(p.split(",")[1]) for p in polyline[1].split()]
    # Five points, oldest first; the hottest (52.0, last) is highest (smallest y).
    assert len(ys) == 5 and min(ys) == ys[-1] and max(ys) == ys[0]
    logs = page.split('data-testid="logs"', 1)[1].split("</table>", 1)[0]
    assert "booted slot a" in logs
    assert HOSTILE_LOG not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in logs
    errors_only = _html(client.get("/ui/devices/nano-01?level=error"), 200)
    logs = errors_only.split('data-testid="logs"', 1)[1].split("</table>", 1)[0]
    assert "booted slot a" not in logs and "&lt;script&gt;" in logs
    history = page.split('data-testid="history"', 1)[1].split("</table>", 1)[0]
    assert "enrolled" in history and "kws 0.9.0" in history
    # A viewer has no command form.
    assert 'data-testid="command-form"' not in page


def test_deployment_pages_show_phases_with_counts_and_progress(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["viewer"])
    listing = _html(client.get("/ui/deployments"), 200)
    rows = listing.split('data-testid="deployments"', 1)[1]
    assert f'<a href="/ui/deployments/{fleet.deployment_id}">' in rows
    assert "kws 1.0.0" in rows and "1 ok" in rows
    assert (
        _html(client.get("/ui/deployments?status=succeeded"), 200).count('href="/ui/deployments/')
        == 0
    )
    page = _html(client.get(f"/ui/deployments/{fleet.deployment_id}"), 200)
    phases = page.split('data-testid="phases"', 1)[1].split("</table>", 1)[0]
    first = phases.split('data-phase="0"', 1)[1].split("</tr>", 1)[0]
    second = phases.split('data-phase="1"', 1)[1].split("</tr>", 1)[0]
    assert "1 devices" in first and 's-success">success</span> 1' in first
    # The progress bar: all of phase 1's width is success.
    assert '<rect class="seg s-success" x="0.0" y="0" width="300.0"' in first
    assert "100 %" in second and 's-pending">pending</span> 1' in second
    assert "(open)" in second
    # A viewer sees no pause button.
    assert 'data-testid="deployment-actions"' not in page
    audit = page.split('data-testid="audit"', 1)[1]
    assert "deployment.create" in audit and "token:" in audit


# --- actions ----------------------------------------------------------------------------------


def test_command_sent_from_the_dashboard_is_queued_audited_and_listed(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["devops"])
    page = _html(client.get("/ui/devices/nano-02"), 200)
    assert 'data-testid="command-form"' in page
    csrf = hidden_inputs(page)["csrf"]
    r = client.post(
        "/ui/devices/nano-02/commands",
        data={"kind": "fetch_logs", "lines": "5", "level": "", "csrf": csrf},
    )
    assert r.status_code == 303, r.text
    commands = _commands(fleet, "nano-02")
    assert [(c["kind"], c["args"], c["created_by"]) for c in commands] == [
        ("fetch_logs", {"lines": 5}, "token:devops-1")
    ]
    assert r.headers["location"] == f"/ui/devices/nano-02?sent={commands[0]['id']}#commands"
    audit = fleet.api("GET", "/api/v1/audit?action=command.create").json()["records"]
    assert [(a["actor"], a["target"]) for a in audit] == [
        ("token:devops-1", f"device:nano-02/command:{commands[0]['id']}")
    ]
    # The device gets it at its next poll, exactly as if sent through the API.
    polled = device_call(fleet, "nano-02", "GET", "/commands").json()["commands"]
    assert [(c["kind"], c["args"]) for c in polled] == [("fetch_logs", {"lines": 5})]
    listed = _html(client.get("/ui/devices/nano-02?sent=1"), 200)
    table = listed.split('data-testid="commands"', 1)[1].split("</table>", 1)[0]
    assert "fetch_logs" in table and 's-sent">sent' in table


@pytest.mark.parametrize(
    ("form", "status", "field"),
    [
        ({"kind": "format_disk"}, 422, "kind"),
        ({"kind": ""}, 422, "kind"),
        ({"kind": "set_log_level", "level": ""}, 422, "level"),
        ({"kind": "set_log_level", "level": "loud"}, 422, "level"),
        ({"kind": "fetch_logs", "lines": "-3"}, 422, "lines"),
        ({"kind": "fetch_logs", "lines": "many"}, 422, "lines"),
        ({"kind": "reboot", "csrf": "wrong"}, 403, "csrf"),
        ({"kind": "reboot", "csrf": None}, 403, "csrf"),
    ],
)
def test_bad_command_forms_are_refused_naming_the_field_and_store_nothing(
    fleet: SeededFleet, form: dict[str, str | None], status: int, field: str
) -> None:
    client = login(fleet.url, fleet.tokens["devops"])
    csrf = csrf_of(client, "/ui/devices/nano-01")
    data = {"csrf": csrf, **form}
    text = _html(
        client.post(
            "/ui/devices/nano-01/commands", data={k: v for k, v in data.items() if v is not None}
        ),
        status,
    )
    assert f"<code>{field}</code>" in text
    assert _commands(fleet, "nano-01") == []


def test_a_viewer_cannot_send_commands_or_pause_even_with_a_valid_csrf_token(
    fleet: SeededFleet,
) -> None:
    client = login(fleet.url, fleet.tokens["viewer"])
    csrf = csrf_of(client, "/ui")
    r = client.post("/ui/devices/nano-01/commands", data={"kind": "reboot", "csrf": csrf})
    assert "lacks the permission &#39;send-commands&#39;" in _html(r, 403)
    r = client.post(f"/ui/deployments/{fleet.deployment_id}/pause", data={"csrf": csrf})
    assert "manage-deployments" in _html(r, 403)
    assert _commands(fleet, "nano-01") == []
    assert fleet.api("GET", f"/api/v1/deployments/{fleet.deployment_id}").json()["status"] == (
        "running"
    )
    # An ml-engineer may read but not command either (the API's matrix).
    engineer = login(fleet.url, fleet.tokens["ml-engineer"])
    csrf = csrf_of(engineer, "/ui")
    r = engineer.post("/ui/devices/nano-01/commands", data={"kind": "reboot", "csrf": csrf})
    _html(r, 403)


def test_pause_and_resume_from_the_dashboard_are_audited_under_the_token(
    fleet: SeededFleet,
) -> None:
    client = login(fleet.url, fleet.tokens["devops"])
    path = f"/ui/deployments/{fleet.deployment_id}"
    page = _html(client.get(path), 200)
    actions = page.split('data-testid="deployment-actions"', 1)[1].split("</div>", 1)[0]
    assert "Pause" in actions and "Resume" not in actions
    csrf = hidden_inputs(page)["csrf"]
    _html(client.post(path + "/pause", data={}), 403)  # no CSRF token
    r = client.post(path + "/pause", data={"csrf": csrf})
    assert (r.status_code, r.headers["location"]) == (303, path)
    assert fleet.api("GET", f"/api/v1/deployments/{fleet.deployment_id}").json()["status"] == (
        "paused"
    )
    page = _html(client.get(path), 200)
    assert 's-paused">paused</span>' in page
    # Pausing twice is an invalid transition: a 409 page, nothing changes.
    _html(client.post(path + "/pause", data={"csrf": csrf}), 409)
    r = client.post(path + "/resume", data={"csrf": csrf})
    assert r.status_code == 303
    assert fleet.api("GET", f"/api/v1/deployments/{fleet.deployment_id}").json()["status"] == (
        "running"
    )
    audit = fleet.api(
        "GET", f"/api/v1/audit?target=deployment:{fleet.deployment_id}&actor=token:devops-1"
    ).json()["records"]
    assert [a["action"] for a in audit] == ["deployment.resume", "deployment.pause"]


def test_action_forms_must_be_urlencoded_and_bounded(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["devops"])
    csrf = csrf_of(client, "/ui")
    url = "/ui/devices/nano-01/commands"
    _html(client.post(url, json={"kind": "reboot", "csrf": csrf}), 415)
    _html(
        client.post(
            url,
            content=b"kind=reboot&csrf=" + csrf.encode() + b"&x=\xff",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        400,
    )
    _html(client.post(url, data={"kind": "reboot", "csrf": csrf, "lines": "9" * 2000}), 422)
    many = {f"f{i}": "1" for i in range(40)}
    _html(client.post(url, data={"kind": "reboot", "csrf": csrf, **many}), 400)
    assert _commands(fleet, "nano-01") == []


# --- drift and alerts ---------------------------------------------------------------------------


@pytest.fixture
def drift_fleet(
    tmp_path: Path,
    kws_payload: tuple[dict[str, bytes], dict[str, object]],
    release_key: Ed25519PrivateKey,
) -> Iterator[SeededFleet]:
    fleet = seed_drift(tmp_path, kws_payload, release_key)
    try:
        yield fleet
    finally:
        fleet.server.stop()


def test_drift_page_shows_per_feature_drift_with_histograms_and_the_drifted_device(
    drift_fleet: SeededFleet,
) -> None:
    fleet = drift_fleet
    client = login(fleet.url, fleet.tokens["viewer"])
    page = _html(client.get("/ui/drift"), 200)
    assert 'option value="kws@1.0.0" selected' in page  # the newest monitored release
    features = page.split('data-testid="drift-features"', 1)[1].split("</table>", 1)[0]
    f0 = features.split('data-feature="f0"', 1)[1].split("</tr>", 1)[0]
    assert f0.startswith(' class="drifted"')
    assert 's-drifted">drifted' in f0
    # Reference and current histograms of f0 as bars (shares of each total).
    assert f0.count('<rect class="ref"') == f0.count('<rect class="cur"') > 2
    f2 = features.split('data-feature="f2"', 1)[1].split("</tr>", 1)[0]
    assert 's-ok">ok' in f2
    devices = page.split('data-testid="drift-devices"', 1)[1].split("</table>", 1)[0]
    assert re.findall(r'data-device="([^"]+)"', devices) == ["nano-01"]
    assert '<span class="tag">f0</span>' in devices
    assert "1 drifted · 1 not" in page
    # One device's own report: nano-02 did not drift.
    page = _html(client.get("/ui/drift?release=kws@1.0.0&device=nano-02"), 200)
    features = page.split('data-testid="drift-features"', 1)[1].split("</table>", 1)[0]
    assert "s-drifted" not in features and 'data-feature="f0"' in features
    for query, status in (
        ("?release=kws", 422),
        ("?release=kws@9.9.9", 404),
        ("?release=kws@1.0.0&hours=0", 422),
        ("?release=kws@1.0.0&device=nano-01&group=group:lab", 422),
        ("?release=kws@1.0.0&group=nocolon", 422),
    ):
        _html(client.get("/ui/drift" + query), status)


def test_alerts_page_lists_the_firing_drift_alert_and_the_rules(drift_fleet: SeededFleet) -> None:
    client = login(drift_fleet.url, drift_fleet.tokens["viewer"])
    page = _html(client.get("/ui/alerts?state=firing"), 200)
    table = page.split('data-testid="alerts"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr data-rule="([^"]+)" data-state="([^"]+)">(.*?)</tr>', table, re.S)
    device_rows = [r for r in rows if "device=nano-01" in r[2]]
    assert [(rule, state) for rule, state, _ in device_rows] == [("FeatureDrifted", "firing")]
    assert "f0 drifted on nano-01" in device_rows[0][2]
    assert '<a href="/ui/devices/nano-01">device</a>' in device_rows[0][2]
    assert not any("device=nano-02" in r[2] for r in rows)
    rules = page.split('data-testid="rules"', 1)[1]
    assert "FeatureDrifted" in rules and "feature_drifted" in rules
    assert _html(client.get("/ui/alerts?state=resolved"), 200).count("<tr data-rule=") == 0
    _html(client.get("/ui/alerts?state=burning"), 422)


def test_without_rules_or_profiles_the_monitoring_pages_say_so(fleet: SeededFleet) -> None:
    client = login(fleet.url, fleet.tokens["viewer"])
    assert 'data-testid="no-profile"' in _html(client.get("/ui/drift"), 200)
    assert 'data-testid="no-rules"' in _html(client.get("/ui/alerts"), 200)
    # The seeded release has no profile: its drift report is a 409 page.
    _html(client.get("/ui/drift?release=kws@1.0.0"), 409)
