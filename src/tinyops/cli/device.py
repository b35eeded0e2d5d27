"""`tinyops device logs|exec|inventory`: a fleet's devices from the command line.

    tinyops device logs ID [--level L] [--since T] [--until T] [--grep TEXT] [--limit N]
                           [--follow [--interval S]] [--json]
    tinyops device exec ID KIND [--arg K=V ...] [--wait [--timeout S]] [--json]
    tinyops device inventory [--status S] [--hardware B] [--tag K:V ...] [--json]

They talk to a fleet server over HTTP like the other management commands (`--server`,
`--token` or TINYOPS_SERVER, TINYOPS_TOKEN; tinyops.fleet.client). `logs` prints lines
oldest first, newest last, as a terminal log does; `--follow` keeps polling for lines
stored after the last one shown (paging by id, so nothing is shown twice or skipped).
`exec` queues a remote-debug command through the commands endpoint (audited there);
`--wait` polls until the device has sent its result. `--since`/`--until` take ISO 8601
times (UTC when no zone is given) or an age such as 30s, 15m, 2h, 7d.
"""

from __future__ import annotations

import json
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Final

import typer
from rich.markup import escape

from tinyops.cli.console import out, print_json
from tinyops.cli.fleet import JsonFlag, Server, Token
from tinyops.errors import TinyopsError, UsageError

device_app = typer.Typer(
    help="Devices of a fleet: logs, remote debug, inventory.", no_args_is_help=True
)

LEVELS: Final = ("debug", "info", "warning", "error")
COMMAND_KINDS: Final = (
    "fetch_logs",
    "run_self_test",
    "report_inventory",
    "set_log_level",
    "reboot",
)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_AGE_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
# Lines per request when following a log.
FOLLOW_PAGE: Final = 1000


class CommandFailed(TinyopsError):
    """A remote-debug command came back with ok=false, or no result came in time."""


def parse_time(text: str | None, option: str, now: datetime | None = None) -> str | None:
    """An ISO 8601 UTC time for the server from `--since`/`--until` text."""
    if text is None:
        return None
    now = now or datetime.now(UTC)
    match = _AGE.fullmatch(text.strip())
    if match:
        moment = now - timedelta(seconds=float(match.group(1)) * _AGE_UNITS[match.group(2)])
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(
                f"{option}: {text!r} is neither an ISO 8601 time (2026-05-01T12:00:00Z) "
                "nor an age such as 30s, 15m, 2h, 7d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_args(items: list[str] | None) -> dict[str, Any]:
    """`--arg k=v` values: JSON literals (50, true, "x") stay typed, anything else is text."""
    args: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--arg: {item!r} is not KEY=VALUE")
        try:
            args[key] = json.loads(raw)
        except ValueError:
            args[key] = raw
    return args


def _tags(values: list[str] | None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for value in values or []:
        key, sep, tag_value = value.partition(":")
        if not sep or not key:
            raise UsageError(f"--tag: {value!r} is not KEY:VALUE (e.g. group:lab)")
        tags[key] = tag_value
    return tags


def format_line(line: dict[str, Any], with_device: bool = False) -> str:
    """`2026-05-01T12:00:00.123Z WARNING [device] message` (plain text, one line)."""
    where = f" {line['device_id']}" if with_device else ""
    return f"{line['t']} {line['level'].upper():<7}{where} {line['message']}"


def _emit(lines: list[dict[str, Any]], as_json: bool) -> None:
    # Plain writes, flushed: a follower's lines must reach a pipe as they come.
    for line in lines:
        sys.stdout.write((json.dumps(line) if as_json else format_line(line)) + "\n")
    sys.stdout.flush()


@device_app.command("logs")
def device_logs(
    device_id: Annotated[str, typer.Argument(help="device id")],
    server: Server,
    token: Token,
    level: Annotated[
        str | None, typer.Option(help="this level and above: debug, info, warning, error")
    ] = None,
    since: Annotated[str | None, typer.Option(help="ISO 8601 time or age (15m, 2h, 7d)")] = None,
    until: Annotated[str | None, typer.Option(help="ISO 8601 time or age")] = None,
    grep: Annotated[
        str | None, typer.Option(help="only lines containing this text (any case)")
    ] = None,
    limit: Annotated[int, typer.Option(help="newest lines to show first (≤ 1000)")] = 100,
    follow: Annotated[bool, typer.Option(help="keep printing new lines until Ctrl-C")] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls with --follow")] = 2.0,
    as_json: JsonFlag = False,
) -> None:
    """A device's log lines, oldest first (the newest --limit of them); --follow for more."""
    from tinyops.fleet.client import search_logs

    if level is not None and level not in LEVELS:
        raise UsageError(f"--level: {level!r} is not one of {', '.join(LEVELS)}")
    if not 1 <= limit <= 1000:
        raise UsageError(f"--limit: {limit} is not between 1 and 1000")
    if interval <= 0:
        raise UsageError(f"--interval: {interval} is not a positive number of seconds")
    filters: dict[str, Any] = {
        "device_id": device_id,
        "level": level,
        "since": parse_time(since, "--since"),
        "until": parse_time(until, "--until"),
        "text": grep,
    }
    page = search_logs(server, token, **filters, order="newest", limit=limit)
    lines = list(reversed(page["logs"]))
    _emit(lines, as_json)
    if not follow:
        return
    last = lines[-1]["id"] if lines else 0
    try:
        while True:
            page = search_logs(
                server, token, **filters, order="oldest", after_id=last, limit=FOLLOW_PAGE
            )
            if page["logs"]:
                _emit(page["logs"], as_json)
                last = page["logs"][-1]["id"]
            if page["next"] is None:
                time.sleep(interval)
    except KeyboardInterrupt:
        return


@device_app.command("exec")
def device_exec(
    device_id: Annotated[str, typer.Argument(help="device id")],
    kind: Annotated[str, typer.Argument(help=f"command: {', '.join(COMMAND_KINDS)}")],
    server: Server,
    token: Token,
    arg: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE argument, repeatable (lines=50)")
    ] = None,
    wait: Annotated[bool, typer.Option(help="wait for the device's result")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait with --wait")] = 300.0,
    interval: Annotated[float, typer.Option(help="seconds between polls with --wait")] = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Send a remote-debug command to a device (run at its next poll); --wait for the result.

    Exit code 1 when the device reports failure (ok=false) or no result comes in time."""
    from tinyops.fleet.client import get_command, send_command

    if kind not in COMMAND_KINDS:
        raise UsageError(f"KIND: {kind!r} is not one of {', '.join(COMMAND_KINDS)}")
    if timeout <= 0 or interval <= 0:
        raise UsageError("--timeout and --interval must be positive numbers of seconds")
    command = send_command(server, token, device_id, kind, parse_args(arg))
    if not wait:
        if as_json:
            print_json(command)
        else:
            out.print(
                f"command {command['id']} ({kind}) queued for {escape(device_id)}; "
                "it runs at the device's next poll",
                soft_wrap=True,
            )
        return
    deadline = time.monotonic() + timeout
    while command["status"] != "done":
        if time.monotonic() >= deadline:
            raise CommandFailed(
                f"command {command['id']} ({kind}) to {device_id}: no result within "
                f"{timeout:g} s (status {command['status']}); see `tinyops device exec` "
                "--timeout, or the device may be offline"
            )
        time.sleep(interval)
        command = get_command(server, token, device_id, command["id"])
    if as_json:
        print_json(command)
    else:
        out.print(json.dumps(command["output"], indent=2, sort_keys=True), soft_wrap=True)
    if not command["ok"]:
        reason = (command["output"] or {}).get("error", "no reason given")
        raise CommandFailed(f"command {command['id']} ({kind}) failed on {device_id}: {reason}")


@device_app.command("inventory")
def device_inventory(
    server: Server,
    token: Token,
    status: Annotated[
        str | None,
        typer.Option(help="active, updating, rollback-pending or decommissioned"),
    ] = None,
    hardware: Annotated[str | None, typer.Option(help="board id")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY:VALUE, repeatable; all match")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Devices with their release, last check-in and health."""
    from tinyops.cli.render import inventory_table
    from tinyops.fleet.client import list_devices

    devices = list_devices(server, token, status=status, hardware=hardware, tags=_tags(tag))
    if as_json:
        print_json(devices)
        return
    out.print(inventory_table(devices, datetime.now(UTC)))
