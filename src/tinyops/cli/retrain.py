"""`tinyops retrain`: the continuous-retraining loop of a project (docs/retrain.md).

    tinyops retrain [--project DIR] [--dry-run]            one cycle
    tinyops retrain --watch [--interval S]                 the retraining worker: a cycle
                                                           every S seconds, until Ctrl-C
                                                           (needs monitoring.retrain.automatic)
    tinyops retrain approve [--project DIR]                upload and deploy the release a
                                                           cycle left waiting for approval

Exit codes: 0 done or nothing to do yet, 3 a gate said no, 1 error (2 bad usage or
project file). The server and token come from --server/--token or TINYOPS_SERVER,
TINYOPS_TOKEN; the token needs both upload-release and manage-deployments (the `retrainer`
role, made for this worker, or admin), since one token uploads the release and creates the
deployment.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tinyops.cli.console import err, out
from tinyops.cli.fleet import Server, Token
from tinyops.errors import GateFailed, TinyopsError, UsageError

retrain_app = typer.Typer(
    help="Retrain on newly labeled field data when drift fires; canary-deploy the result.",
    invoke_without_command=True,
)

OptionalServer = Annotated[
    str | None, typer.Option("--server", envvar="TINYOPS_SERVER", help="fleet server URL")
]
OptionalToken = Annotated[
    str | None, typer.Option("--token", envvar="TINYOPS_TOKEN", help="API token (tok_...)")
]
ProjectOpt = Annotated[Path, typer.Option("--project", help="project folder (holds tinyops.yaml)")]


def _say(message: str) -> None:
    out.print(escape(message), soft_wrap=True)


def _quiet_tensorflow() -> None:
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


@retrain_app.callback()
def retrain(
    ctx: typer.Context,
    server: OptionalServer = None,
    token: OptionalToken = None,
    project: ProjectOpt = Path("."),
    dry_run: Annotated[
        bool, typer.Option(help="say what a cycle would do; change nothing")
    ] = False,
    watch: Annotated[
        bool, typer.Option(help="keep running a cycle every --interval (the retraining worker)")
    ] = False,
    interval: Annotated[float, typer.Option(help="seconds between cycles with --watch")] = 300.0,
) -> None:
    """Run a retrain cycle: when drift alerts fire and enough labeled samples arrived,
    add them to the data, re-run the pipeline and canary-deploy the new release."""
    if ctx.invoked_subcommand is not None:
        return
    if server is None or token is None:
        raise UsageError("--server and --token (or TINYOPS_SERVER, TINYOPS_TOKEN) are required")
    _quiet_tensorflow()
    from tinyops.pipeline.retrain import Fleet, run_cycle
    from tinyops.project.loader import load_project

    fleet = Fleet(server, token)
    if not watch:
        result = run_cycle(project, fleet, dry_run=dry_run, say=_say)
        _finish(result.outcome, result.message)
        return
    if interval <= 0:
        raise UsageError(f"--interval: {interval} is not a positive number of seconds")
    if not load_project(project)[0].monitoring.retrain.automatic:
        raise UsageError(
            "--watch: the project does not allow unattended retraining; set "
            "monitoring.retrain.automatic: true in tinyops.yaml"
        )
    _say(f"retraining worker: a cycle every {interval:g} s (Ctrl-C stops)")
    try:
        while True:
            try:
                result = run_cycle(project, fleet, dry_run=dry_run, say=_say)
                _say(f"{result.outcome}: {result.message}")
            except TinyopsError as exc:
                # The worker outlives a server that is briefly away or a cycle that failed;
                # the next cycle starts from the saved state.
                err.print(f"[red]cycle failed:[/] {escape(str(exc))}", soft_wrap=True)
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@retrain_app.command("approve")
def retrain_approve(server: Server, token: Token, project: ProjectOpt = Path(".")) -> None:
    """Upload and canary-deploy the retrained release that waits for approval (the
    deployment is created with your token, and audited on the server under its name)."""
    from tinyops.pipeline.retrain import Fleet, approve

    result = approve(project, Fleet(server, token), say=_say)
    _finish(result.outcome, result.message)


def _finish(outcome: str, message: str) -> None:
    if outcome == "gate-failed":
        err.print(f"[red]gate failed:[/] {escape(message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(GateFailed.exit_code)
    _say(message)
