"""Query parameters and form bodies of the dashboard, checked: pure functions.

Pages read their parameters as raw strings and check them here, so that a malformed one
gives an HTML error page (422, naming the parameter) rather than FastAPI's JSON error or
a 500. Forms are `application/x-www-form-urlencoded` (what a plain HTML form posts),
parsed with the standard library: no multipart parser is needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args
from urllib.parse import parse_qsl

from tinyops.fleet.server.models import MAX_ID, NAME_PATTERN, CommandKind, LogLevel

NAME: Final = re.compile(NAME_PATTERN)
VERSION: Final = re.compile(r"^[0-9A-Za-z.+-]{1,128}$")
TAG: Final = re.compile(r"^([^\x00-\x1f\x7f:]{1,64}):([^\x00-\x1f\x7f]{0,128})$")
MAX_FORM_FIELDS: Final = 16
MAX_FIELD_CHARS: Final = 1024
COMMAND_KINDS: Final[tuple[str, ...]] = get_args(CommandKind)
LOG_LEVELS: Final[tuple[str, ...]] = get_args(LogLevel)
FORM_TYPE: Final = "application/x-www-form-urlencoded"


class BadParam(ValueError):
    """A query parameter or form field is malformed (HTTP 422 or 400)."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.status = status


def single(values: Sequence[str], field: str) -> str | None:
    """The one value of a parameter, None when absent or empty; more than one is refused."""
    if len(values) > 1:
        raise BadParam(field, f"given {len(values)} times; give it once")
    value = values[0] if values else ""
    if len(value) > MAX_FIELD_CHARS:
        raise BadParam(field, f"longer than {MAX_FIELD_CHARS} characters")
    return value or None


def choice(value: str | None, field: str, choices: Sequence[str]) -> str | None:
    if value is not None and value not in choices:
        raise BadParam(field, f"{value!r} is not one of {', '.join(choices)}")
    return value


def name(value: str | None, field: str) -> str | None:
    if value is not None and not NAME.match(value):
        raise BadParam(
            field, f"{value!r} is not a name (letters, digits, '.', '_', '-'; at most 64)"
        )
    return value


def tag(value: str | None) -> tuple[str, str] | None:
    """`key:value` → (key, value)."""
    if value is None:
        return None
    match = TAG.match(value)
    if match is None:
        raise BadParam("tag", f"{value!r} is not key:value, e.g. group:lab")
    return match[1], match[2]


def release(value: str | None) -> tuple[str, str] | str | None:
    """`name@version` → (name, version); 'none' (no release installed) stays 'none'."""
    if value is None or value == "none":
        return value
    rel_name, sep, version = value.partition("@")
    if not sep or not NAME.match(rel_name) or not VERSION.match(version):
        raise BadParam("release", f"{value!r} is not name@version (or 'none')")
    return rel_name, version


def record_id(value: str, field: str) -> int:
    """A positive database id from a path segment."""
    if not value.isdigit() or not 1 <= int(value) <= MAX_ID:
        raise BadParam(field, f"{value!r} is not an id (an integer from 1 to {MAX_ID})")
    return int(value)


def next_path(value: str | None) -> str:
    """Where to go after logging in: a dashboard path only (no open redirect)."""
    if (
        value is None
        or len(value) > 512
        or not (value == "/ui" or value.startswith(("/ui/", "/ui?")))
        or any(c in value for c in "\\\r\n\t\x00")
    ):
        return "/ui"
    return value


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    """A urlencoded form body → field → value (a repeated field is refused)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if not body and not media:
        return {}  # a form without fields (a bare button) may come without a type
    if media != FORM_TYPE:
        raise BadParam("body", f"expected a form ({FORM_TYPE}), got {media or 'nothing'!r}", 415)
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
            errors="strict",
        )
    except UnicodeDecodeError as exc:
        raise BadParam("body", "the form is not UTF-8", 400) from exc
    except ValueError as exc:
        raise BadParam("body", f"the form has more than {MAX_FORM_FIELDS} fields", 400) from exc
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise BadParam(key, "given more than once")
        if len(value) > MAX_FIELD_CHARS:
            raise BadParam(key, f"longer than {MAX_FIELD_CHARS} characters")
        form[key] = value
    return form


@dataclass(frozen=True)
class CommandRequest:
    kind: str
    args: dict[str, Any]


def command(form: Mapping[str, str]) -> CommandRequest:
    """The remote-debug command a device page's form asks for, with its arguments.

    Only the arguments of the chosen kind are read (the form shows all of them):
    fetch_logs takes an optional positive `lines`, set_log_level a required `level`.
    """
    kind = form.get("kind") or None
    if kind is None:
        raise BadParam("kind", f"choose a command: one of {', '.join(COMMAND_KINDS)}")
    choice(kind, "kind", COMMAND_KINDS)
    args: dict[str, Any] = {}
    if kind == "fetch_logs" and form.get("lines"):
        lines = form["lines"].strip()
        if not lines.isdigit() or not 1 <= int(lines) <= 100_000:
            raise BadParam("lines", f"{lines!r} is not a whole number from 1 to 100000")
        args["lines"] = int(lines)
    if kind == "set_log_level":
        level = form.get("level") or None
        if level is None:
            raise BadParam("level", f"set_log_level needs a level: {', '.join(LOG_LEVELS)}")
        args["level"] = choice(level, "level", LOG_LEVELS)
    return CommandRequest(kind, args)
