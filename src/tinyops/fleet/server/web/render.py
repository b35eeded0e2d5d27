"""Rendering: the Jinja2 environment, its filters, and the headers of every page.

Autoescaping is on for every template, so a device id, a log line or a tag value with
markup in it shows as text. Undefined variables raise (StrictUndefined): a template typo
fails its test instead of rendering an empty cell.

Every dashboard response carries a Content-Security-Policy that allows nothing but this
server's own stylesheet and script (no inline script, no external origin), forbids
framing, and is not cached (pages show live, role-filtered data).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined

HERE: Final = Path(__file__).resolve().parent
TEMPLATES: Final = HERE / "templates"
STATIC: Final = HERE / "static"

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def when(value: datetime | None) -> str:
    """A UTC time to the second, e.g. 2026-11-27 13:41:17Z; '—' for none."""
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def ago(value: datetime | None, now: datetime) -> str:
    """How long before `now`, coarsely: '42 s ago', '5 min ago', '3 h ago', '2 d ago'."""
    if value is None:
        return "never"
    seconds = (now - value).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def number(value: float | int | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def to_json(value: Any) -> str:
    return json.dumps(value, indent=1, sort_keys=True, default=str)


_env = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(when=when, ago=ago, number=number, percent=percent, to_json=to_json)


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """The page `template` with `context`; `viewer` (None when logged out) and `now` are
    always defined."""
    context.setdefault("viewer", None)
    context.setdefault("now", datetime.now(UTC))
    html = _env.get_template(template).render(path=request.url.path, **context)
    return HTMLResponse(html, status_code=status, headers=dict(SECURITY_HEADERS))


ERROR_TITLES: Final = {
    400: "Bad request",
    401: "Not logged in",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported form",
    422: "Invalid input",
}


def error_page(
    request: Request,
    status: int,
    message: str,
    viewer: Any = None,
    field: str | None = None,
) -> HTMLResponse:
    return render(
        request,
        "error.html",
        status=status,
        viewer=viewer,
        title=ERROR_TITLES.get(status, "Error"),
        status_code=status,
        message=message,
        field=field,
    )
