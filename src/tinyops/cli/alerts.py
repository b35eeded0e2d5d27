"""`tinyops alerts list|check|export`: alert rules files and the server's current alerts.

    tinyops alerts check alerts.yaml                  validate (exit 2 naming file:line: key)
    tinyops alerts export alerts.yaml -o prom.yml     the rules as Prometheus alerting rules
    tinyops alerts list --server URL --token TOK      alerts on a running server

`check` and `export` need no server: the metric catalogue ships with tinyops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tinyops.cli.console import out, print_json
from tinyops.cli.fleet import JsonFlag, Server, Token
from tinyops.errors import UsageError

alerts_app = typer.Typer(help="Alert rules and the server's alerts.", no_args_is_help=True)

RulesPath = Annotated[Path, typer.Argument(help="alert rules file (alerts.yaml)")]


@alerts_app.command("check")
def alerts_check(rules: RulesPath) -> None:
    """Validate a rules file: exits 2 with file:line and key path on the first problems."""
    from tinyops.monitor.alerts.rules import load_rules

    parsed = load_rules(rules)
    count = len(parsed.rules())
    out.print(
        f"[green]valid[/] {escape(str(rules))}: {count} rule{'s' if count != 1 else ''} in "
        f"{len(parsed.groups)} group{'s' if len(parsed.groups) != 1 else ''}",
        soft_wrap=True,
    )


@alerts_app.command("export")
def alerts_export(
    rules: RulesPath,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="file to write; stdout if omitted")
    ] = None,
) -> None:
    """Write the rules as a Prometheus rule file (`promtool check rules` accepts it)."""
    from tinyops.monitor.alerts.promexport import export_yaml
    from tinyops.monitor.alerts.rules import load_rules
    from tinyops.store.atomic import atomic_write_text

    text = export_yaml(load_rules(rules))
    if output is None:
        typer.echo(text, nl=False)
        return
    atomic_write_text(output, text)
    out.print(f"wrote {escape(str(output))}", soft_wrap=True)


@alerts_app.command("list")
def alerts_list(
    server: Server,
    token: Token,
    state: Annotated[
        str | None, typer.Option(help="only alerts in this state: pending, firing, resolved")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """The alerts of a running server (its --alert-rules), by rule."""
    from tinyops.cli.render import alerts_table
    from tinyops.fleet.client import list_alerts

    if state is not None and state not in ("pending", "firing", "resolved"):
        raise UsageError(f"--state: {state!r} is not pending, firing or resolved")
    alerts = list_alerts(server, token, state)
    if as_json:
        print_json(alerts)
        return
    if not alerts:
        out.print("no alerts")
        return
    out.print(alerts_table(alerts))
