"""The dashboard's pure parts: session signing, CSRF tokens, chart geometry, bin labels,
parameter checks. (The pages themselves: test_web_dashboard.py, test_web_browser.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tinyops.fleet.server.web import params
from tinyops.fleet.server.web.charts import line_chart, paired_bars, shares, stacked_bar
from tinyops.fleet.server.web.monitoring import bin_labels, confidence_labels
from tinyops.fleet.server.web.session import (
    LOGIN_MAX_AGE_S,
    SESSION_MAX_AGE_S,
    SessionSigner,
    load_or_create_secret,
)
from tinyops.monitor.reference import CategoricalProfile, NumericProfile

NOW = 1_800_000_000


def test_a_session_reads_back_until_it_expires_and_not_after_any_change() -> None:
    signer = SessionSigner(b"k" * 32)
    cookie = signer.issue(7, NOW)
    session = signer.read(cookie, NOW + 10)
    assert session is not None and session.token_id == 7 and session.issued_at == NOW
    assert signer.read(cookie, NOW + SESSION_MAX_AGE_S - 1) is not None
    assert signer.read(cookie, NOW + SESSION_MAX_AGE_S) is None
    assert signer.read(cookie, NOW - 1) is None  # issued in the future
    assert SessionSigner(b"x" * 32).read(cookie, NOW) is None  # another server's secret
    body, mac = cookie.split(".")
    for forged in (
        body + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B"),
        body[:-2] + "." + mac,
        body,
        "",
        "." * 3,
        body + "." + mac + "x" * 600,
    ):
        assert signer.read(forged, NOW) is None, forged
    with pytest.raises(ValueError, match="32 bytes"):
        SessionSigner(b"short")


def test_csrf_tokens_are_per_session_and_compared_exactly() -> None:
    signer = SessionSigner(b"k" * 32)
    a = signer.read(signer.issue(1, NOW), NOW)
    b = signer.read(signer.issue(1, NOW), NOW)
    assert a is not None and b is not None
    assert signer.csrf(a) != signer.csrf(b)
    assert signer.csrf_ok(a, signer.csrf(a))
    assert not signer.csrf_ok(a, signer.csrf(b))
    assert not signer.csrf_ok(a, None)
    assert not signer.csrf_ok(a, "")


def test_the_login_guard_needs_its_own_fresh_cookie_and_token() -> None:
    signer = SessionSigner(b"k" * 32)
    nonce = signer.login_nonce(NOW)
    token = signer.login_csrf(nonce)
    assert signer.login_ok(nonce, token, NOW + 5)
    assert not signer.login_ok(nonce, token, NOW + LOGIN_MAX_AGE_S)
    assert not signer.login_ok(signer.login_nonce(NOW), token, NOW)
    assert not signer.login_ok(nonce, token + "x", NOW)
    assert not signer.login_ok(None, token, NOW)
    assert not signer.login_ok(nonce.replace(".", "-", 1), token, NOW)


def test_the_session_secret_is_made_once_0600(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    first = load_or_create_secret(tmp_path)
    assert len(first) == 32
    assert (tmp_path / "ui-session.key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(tmp_path) == first
    (tmp_path / "ui-session.key").write_bytes(b"tiny")
    with pytest.raises(ValueError, match=r"ui-session\.key"):
        load_or_create_secret(tmp_path)


def test_line_chart_spans_the_plot_oldest_left_highest_top() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    series = [(t0 + timedelta(minutes=m), v) for m, v in ((2, 30.0), (0, 10.0), (1, 20.0))]
    chart = line_chart(series, width=200, height=100)
    assert chart is not None
    xs = [p.x for p in chart.points]
    ys = [p.y for p in chart.points]
    assert xs == [chart.plot_left, (chart.plot_left + chart.plot_right) / 2, chart.plot_right]
    assert ys == [chart.plot_bottom, (chart.plot_top + chart.plot_bottom) / 2, chart.plot_top]
    assert (chart.y_min, chart.y_max, chart.t_start, chart.t_end) == (
        10.0,
        30.0,
        t0,
        t0 + timedelta(minutes=2),
    )
    assert chart.polyline.split()[0] == f"{xs[0]},{ys[0]}"
    assert line_chart([]) is None
    assert line_chart([(t0, float("nan"))]) is None
    flat = line_chart([(t0, 5.0), (t0 + timedelta(seconds=1), 5.0)], height=100)
    assert flat is not None and {p.y for p in flat.points} == {50.0}
    single = line_chart([(t0, 1.0)])
    assert single is not None and single.points[0].x == single.plot_left


def test_paired_bars_compare_shares_not_counts() -> None:
    chart = paired_bars(["a", "b"], [500, 1500], [1, 3], height=114)
    # 14 padding each side: 86 units of bar height for the largest share (0.75).
    (a, b) = chart.bars
    assert (a.reference, a.current, b.reference, b.current) == (0.25, 0.25, 0.75, 0.75)
    assert a.reference_height == a.current_height and b.reference_height == 86.0
    assert b.reference_y == chart.baseline - 86.0
    empty = paired_bars(["a"], [0], [0])
    assert empty.bars[0].reference_height == 0.0
    assert shares([0, 0]) == [0.0, 0.0]
    with pytest.raises(ValueError, match="differ in length"):
        paired_bars(["a"], [1, 2], [1, 2])


def test_stacked_bar_orders_statuses_and_fills_the_width() -> None:
    segments = stacked_bar(
        {"failure": 1, "success": 3, "zzz": 0, "odd": 4}, ("success", "failure"), 80
    )
    assert [(s.status, s.count, s.x, s.width) for s in segments] == [
        ("success", 3, 0.0, 30.0),
        ("failure", 1, 30.0, 10.0),
        ("odd", 4, 40.0, 40.0),
    ]
    assert stacked_bar({}, ("success",)) == ()


def test_bin_labels_follow_the_profile_bin_rule() -> None:
    numeric = NumericProfile("t", (1.0, 2.5), (1, 2, 3), (0.5, 2.0, 3.0), 2.0, 1.0)
    assert bin_labels(numeric) == ["< 1", "1–2.5", "≥ 2.5"]
    assert len(bin_labels(numeric)) == numeric.n_bins
    discrete = NumericProfile("d", (0.0, 1.0, 2.0), (0, 4, 5, 6), (0, 0, 1, 2), 1.1, 0.8, True)
    assert bin_labels(discrete) == ["< 0", "0", "1", "2"]
    categorical = CategoricalProfile("c", (3.0, 7.0), (10, 20))
    assert bin_labels(categorical) == ["3", "7", "other"]
    assert len(bin_labels(categorical)) == categorical.n_bins
    assert confidence_labels()[0] == "0.0–0.1" and len(confidence_labels()) == 10


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "/ui"),
        ("/ui/devices/x?level=error", "/ui/devices/x?level=error"),
        ("/ui", "/ui"),
        ("https://evil.example/ui", "/ui"),
        ("//evil.example", "/ui"),
        ("/uix", "/ui"),
        ("/ui/\\evil", "/ui"),
        ("/ui/\r\nSet-Cookie: x", "/ui"),
        ("/api/v1/tokens", "/ui"),
    ],
)
def test_next_path_stays_on_the_dashboard(value: str | None, expected: str) -> None:
    assert params.next_path(value) == expected


def test_command_forms_become_the_api_command() -> None:
    assert params.command({"kind": "fetch_logs", "lines": "20", "level": "debug"}) == (
        params.CommandRequest("fetch_logs", {"lines": 20})
    )
    assert params.command({"kind": "fetch_logs", "lines": ""}).args == {}
    assert params.command({"kind": "set_log_level", "level": "warning", "lines": "x"}).args == {
        "level": "warning"
    }
    assert params.command({"kind": "reboot", "lines": "3"}).args == {}
    with pytest.raises(params.BadParam) as err:
        params.command({"kind": "set_log_level"})
    assert err.value.field == "level"


def test_forms_parse_strictly() -> None:
    form_type = "application/x-www-form-urlencoded; charset=utf-8"
    assert params.parse_form(b"a=1&b=", form_type) == {"a": "1", "b": ""}
    assert params.parse_form(b"", None) == {}
    for body, content_type, field, status in (
        (b"a=1&a=2", form_type, "a", 422),
        (b"a=%ff", form_type, "body", 400),
        (b"{}", "application/json", "body", 415),
        (b"&".join(b"f%d=1" % i for i in range(40)), form_type, "body", 400),
    ):
        with pytest.raises(params.BadParam) as err:
            params.parse_form(body, content_type)
        assert (err.value.field, err.value.status) == (field, status), body
