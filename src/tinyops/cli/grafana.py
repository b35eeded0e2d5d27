"""`tinyops grafana export DIR`: the Grafana provisioning folder for a fleet (docs/grafana.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tinyops.cli.console import out

grafana_app = typer.Typer(help="Grafana dashboards for the fleet.", no_args_is_help=True)


@grafana_app.command("export")
def grafana_export(
    directory: Annotated[Path, typer.Argument(help="provisioning folder to write")],
    prometheus_url: Annotated[
        str, typer.Option(help="URL of the Prometheus that scrapes the server's /metrics")
    ] = "http://localhost:9090",
    dashboards_path: Annotated[
        str | None,
        typer.Option(
            help="where Grafana will read the dashboard JSON files (default: DIR/dashboards/json "
            "on this machine)"
        ),
    ] = None,
) -> None:
    """Write datasources/prometheus.yaml, dashboards/provider.yaml and the dashboards'
    JSON (fleet overview, model quality and drift, hardware health)."""
    from tinyops.monitor.grafana import write_provisioning

    for path in write_provisioning(
        directory, prometheus_url=prometheus_url, dashboards_path=dashboards_path
    ):
        out.print(f"wrote {escape(str(path))}", soft_wrap=True)
