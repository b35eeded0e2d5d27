"""Fleet commands: the server, releases, deployments, the device agent and the simulator.

Management commands talk to a running server over HTTP with an API token, taken from
`--server` / `--token` or the environment (`TINYOPS_SERVER`, `TINYOPS_TOKEN`).
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from tinyops.cli.console import out, print_json
from tinyops.errors import UsageError

Server = Annotated[str, typer.Option(envvar="TINYOPS_SERVER", help="fleet server URL")]
Token = Annotated[str, typer.Option(envvar="TINYOPS_TOKEN", help="API token (tok_...)")]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]
DataDir = Annotated[
    Path, typer.Option(help="server state folder (fleet.db, artifacts, server.key)")
]
DbUrl = Annotated[
    str | None, typer.Option("--db", help="database URL; default SQLite in --data-dir")
]

MqttUrl = Annotated[
    str | None,
    typer.Option(
        "--mqtt",
        envvar="TINYOPS_MQTT",
        help="MQTT broker for the device protocol: mqtt://[user[:password]@]host[:port] "
        "(mqtts:// for TLS)",
    ),
]
MqttPrefix = Annotated[str, typer.Option(help="MQTT topic prefix of the device protocol")]

fleet_app = typer.Typer(help="The fleet server's database, tokens, keys and simulator.")
release_app = typer.Typer(help="Releases on a fleet server.", no_args_is_help=True)
deploy_app = typer.Typer(help="Staged deployments.", no_args_is_help=True)


def _settings(data_dir: Path, db: str | None, **extra: Any) -> Any:
    from tinyops.fleet.server.settings import FleetSettings

    return FleetSettings(data_dir=data_dir, db_url=db, **extra)


def _check_mqtt(url: str | None, prefix: str) -> None:
    """UsageError naming the option when the broker URL or the topic prefix is unusable."""
    from tinyops.fleet.mqtt.topics import check_prefix, parse_broker_url

    try:
        if url is not None:
            parse_broker_url(url)
        check_prefix(prefix)
    except ValueError as exc:
        raise UsageError(f"--mqtt: {exc}") from exc


def _tags(values: list[str] | None, group: str | None = None) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag: {item!r} is not KEY=VALUE")
        tags[key] = value
    if group is not None:
        tags["group"] = group
    return tags


def _share(text: str | None, option: str) -> float | None:
    if text is None:
        return None
    from tinyops.fleet.rollout import parse_share

    try:
        return parse_share(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def serve_command(
    data_dir: DataDir = Path(".tinyops/fleet"),
    db: DbUrl = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8080,
    poll_interval: Annotated[
        float, typer.Option(help="seconds between check-ins told to idle devices")
    ] = 300.0,
    mqtt: MqttUrl = None,
    mqtt_prefix: MqttPrefix = "tinyops",
    log_max_age_days: Annotated[
        float, typer.Option(help="prune device log lines older than this (their time)")
    ] = 30.0,
    log_max_lines: Annotated[
        int, typer.Option(help="device log lines kept per device (the newest)")
    ] = 10_000,
    alert_rules: Annotated[
        Path | None, typer.Option(help="alert rules file (alerts.yaml, docs/alerts.md)")
    ] = None,
    alert_webhook: Annotated[
        str | None, typer.Option(help="URL receiving alert notifications (Alertmanager JSON)")
    ] = None,
    alert_interval: Annotated[
        float, typer.Option(help="seconds between evaluations of the alert rules")
    ] = 60.0,
    drift_config: Annotated[
        Path | None,
        typer.Option(
            help="drift methods and thresholds: a tinyops.yaml (its monitoring.drift) or a "
            "DriftConfig file (docs/drift.md)"
        ),
    ] = None,
) -> None:
    """Run the fleet server (SQLite in --data-dir by default; PostgreSQL with --db); with
    --mqtt, devices may also speak the protocol over that MQTT broker."""
    from tinyops.fleet.server import init_fleet, serve

    _check_mqtt(mqtt, mqtt_prefix)
    if log_max_age_days <= 0 or log_max_lines <= 0:
        raise UsageError("--log-max-age-days and --log-max-lines must be positive")
    if alert_rules is not None:
        from tinyops.monitor.alerts.rules import load_rules

        load_rules(alert_rules)  # a bad rules file stops here, naming file:line and key
    if alert_webhook is not None and not alert_webhook.startswith(("http://", "https://")):
        raise UsageError(f"--alert-webhook: {alert_webhook!r} is not an http(s):// URL")
    if alert_interval <= 0:
        raise UsageError("--alert-interval must be positive")
    if drift_config is not None:
        from tinyops.fleet.server.drift_service import load_drift_config

        load_drift_config(drift_config)  # a bad file stops here, naming the key
    settings = _settings(
        data_dir,
        db,
        poll_interval_s=poll_interval,
        mqtt_url=mqtt,
        mqtt_prefix=mqtt_prefix,
        log_max_age_days=log_max_age_days,
        log_max_lines_per_device=log_max_lines,
        alert_rules=alert_rules,
        alert_webhook=alert_webhook,
        alert_interval_s=alert_interval,
        drift_config=drift_config,
    )
    admin = init_fleet(settings)
    if admin is not None:
        out.print(f"first admin API token (shown once, keep it): [bold]{admin}[/]", soft_wrap=True)
    out.print(f"fleet server on http://{host}:{port} · state in {data_dir}", soft_wrap=True)
    if mqtt is not None:
        from rich.markup import escape

        from tinyops.fleet.mqtt.topics import parse_broker_url

        where = f"{parse_broker_url(mqtt).address} under {mqtt_prefix}/dev/"
        out.print(f"device protocol also over MQTT on {escape(where)}", soft_wrap=True)
    serve(settings, host=host, port=port)


@fleet_app.command("init")
def fleet_init(data_dir: DataDir = Path(".tinyops/fleet"), db: DbUrl = None) -> None:
    """Create the fleet database and print a first admin API token."""
    from tinyops.fleet.server import init_fleet

    admin = init_fleet(_settings(data_dir, db))
    if admin is None:
        out.print("the fleet already has an admin token; nothing created")
    else:
        out.print(admin, soft_wrap=True)


@fleet_app.command("enroll-token")
def fleet_enroll_token(
    server: Server,
    token: Token,
    name: Annotated[str, typer.Option(help="label of the token, e.g. the site")] = "default",
    max_uses: Annotated[int | None, typer.Option(help="enrollments allowed")] = None,
    expires_in: Annotated[float | None, typer.Option(help="lifetime in seconds")] = None,
) -> None:
    """Create a fleet enrollment token for devices (printed once)."""
    from tinyops.fleet.client import create_enrollment_token

    created = create_enrollment_token(
        server, token, name, expires_in_s=expires_in, max_uses=max_uses
    )
    out.print(created["token"], soft_wrap=True)


@fleet_app.command("trust-key")
def fleet_trust_key(
    public_key: Annotated[Path, typer.Argument(help="release-signing public key (.pub)")],
    server: Server,
    token: Token,
    name: Annotated[str, typer.Option(help="label of the key")] = "release",
) -> None:
    """Trust a release-signing key: uploads signed with it are accepted."""
    from tinyops.fleet.client import add_trusted_key

    added = add_trusted_key(server, token, name, public_key)
    out.print(f"trusted key {added['key_id']} ({added['name']})")


@fleet_app.command("simulate")
def fleet_simulate(
    server: Server,
    enroll_token: Annotated[str, typer.Option(help="fleet enrollment token (etk_...)")],
    trusted_key: Annotated[
        list[Path], typer.Option(help="release-signing public key the devices trust")
    ],
    devices: Annotated[int, typer.Option(help="number of simulated devices")] = 100,
    hardware: Annotated[str, typer.Option(help="board id of every device")] = "nano33ble",
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag, repeatable")] = None,
    group: Annotated[str | None, typer.Option(help="shorthand for --tag group=NAME")] = None,
    faults: Annotated[
        str, typer.Option(help="e.g. power-loss=2%,corrupt-download=1%,network-drop=1%")
    ] = "",
    bad_version: Annotated[
        list[str] | None, typer.Option(help="crash/self-test faults hit only this version")
    ] = None,
    until_version: Annotated[
        str | None, typer.Option(help="stop when every device runs this version")
    ] = None,
    deployment: Annotated[
        int | None, typer.Option(help="stop when this deployment is over (needs --token)")
    ] = None,
    token: Annotated[str | None, typer.Option(envvar="TINYOPS_TOKEN", help="API token")] = None,
    duration: Annotated[float, typer.Option(help="stop after this many seconds at most")] = 600,
    poll_interval: Annotated[float, typer.Option(help="device check-in interval, s")] = 2.0,
    seed: Annotated[int, typer.Option(help="seed of the fault draws")] = 0,
    inferences: Annotated[
        int,
        typer.Option(
            help="inferences per device per check-in, drawn from the release's reference "
            "profile and sent home as drift sketches (0: none)"
        ),
    ] = 0,
    sketch_window: Annotated[
        float | None,
        typer.Option(help="sketch window, s (default: the release's monitoring policy)"),
    ] = None,
    drift: Annotated[
        str,
        typer.Option(
            help="sensor drift, e.g. '10%:row_band_03=2;sim-000001:row_band_00=-1.5' "
            "(shifts in reference standard deviations; needs --inferences)"
        ),
    ] = "",
    mqtt: MqttUrl = None,
    mqtt_prefix: MqttPrefix = "tinyops",
    as_json: JsonFlag = False,
) -> None:
    """Run thousands of device agents in one process against a server, with faults."""
    import logging

    # Thousands of agents: their log lines stay in each device's log (fetch_logs), not
    # on this console, which shows the live view.
    logging.getLogger("tinyops.fleet.agent").setLevel(logging.CRITICAL)
    from tinyops.bundle.keys import load_public_key
    from tinyops.fleet.simulator import (
        FleetSimulator,
        Summary,
        all_installed,
        deployment_settled,
        parse_drift,
        parse_faults,
    )

    if drift and inferences <= 0:
        raise UsageError("--drift shifts the devices' inferences: give --inferences N (N > 0)")
    fault_rates = parse_faults(faults, bad_version or ())
    if drift:
        fault_rates = replace(fault_rates, drift=parse_drift(drift))
    sim = FleetSimulator(
        server,
        enroll_token,
        devices,
        hardware=hardware,
        trusted_keys=[load_public_key(k) for k in trusted_key],
        tags=_tags(tag, group),
        faults=fault_rates,
        seed=seed,
        poll_interval_s=poll_interval,
        inferences_per_poll=inferences,
        sketch_window_s=sketch_window,
        transport="http" if mqtt is None else "mqtt",
        mqtt_url=mqtt,
        mqtt_prefix=mqtt_prefix,
    )
    if deployment is not None:
        if token is None:
            raise UsageError("--deployment needs --token (or TINYOPS_TOKEN) to read its status")
        until = deployment_settled(server, token, deployment)
    elif until_version is not None:
        until = all_installed(until_version)
    else:

        async def never(_sim: FleetSimulator) -> bool:
            return False

        until = never
    if as_json:
        summary = asyncio.run(sim.run(until, timeout_s=duration))
        print_json(summary.to_dict())
        return
    from rich.live import Live

    from tinyops.cli.render import simulation_table

    with Live(console=out, refresh_per_second=4, transient=False) as live:

        def tick(s: Summary) -> None:
            live.update(simulation_table(s.to_dict()))

        summary = asyncio.run(sim.run(until, timeout_s=duration, on_tick=tick))
        live.update(simulation_table(summary.to_dict(), final=True))


@release_app.command("upload")
def release_upload(
    bundle: Annotated[Path, typer.Argument(help="a .tinybundle file")],
    server: Server,
    token: Token,
    as_json: JsonFlag = False,
) -> None:
    """Upload a signed bundle; the server verifies hashes, signature and expiry."""
    from tinyops.fleet.client import upload_release

    release = upload_release(server, token, bundle)
    if as_json:
        print_json(release)
        return
    out.print(
        f"release {release['id']}: {release['name']} {release['version']} for "
        f"{release['target']} · {release['size']:,} B · sha256 {release['sha256'][:12]}",
        soft_wrap=True,
    )


@deploy_app.command("create")
def deploy_create(
    name: Annotated[str, typer.Argument(help="release (model) name")],
    version: Annotated[str, typer.Argument(help="release version")],
    server: Server,
    token: Token,
    group: Annotated[str | None, typer.Option(help="devices tagged group=NAME")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE selector tag")] = None,
    target: Annotated[str | None, typer.Option(help="board id, if several")] = None,
    installed_version: Annotated[
        str | None, typer.Option(help="only devices running this version")
    ] = None,
    phases: Annotated[str, typer.Option(help="cumulative phases, e.g. 1%,10%,50%,100%")] = "100%",
    max_failure: Annotated[
        str | None, typer.Option(help="abort when a phase's failures pass this, e.g. 5%")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a staged deployment of a release to a group of devices."""
    from tinyops.fleet.client import create_deployment

    created = create_deployment(
        server,
        token,
        name,
        version,
        target=target,
        tags=_tags(tag, group),
        installed_version=installed_version,
        phases=phases,
        max_failure_rate=_share(max_failure, "--max-failure"),
    )
    if as_json:
        print_json(created)
        return
    out.print(f"deployment {created['id']} {created['status']}", soft_wrap=True)


def _deploy_action(action: str, deployment_id: int, server: str, token: str) -> None:
    from tinyops.fleet.client import deployment_action

    result = deployment_action(server, token, deployment_id, action)  # type: ignore[arg-type]
    out.print(f"deployment {deployment_id}: {result['status']}", soft_wrap=True)


@deploy_app.command("list")
def deploy_list(
    server: Server,
    token: Token,
    status: Annotated[
        str | None,
        typer.Option(help="only deployments in this status (running, paused, succeeded, ...)"),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Deployments, newest first: release, status, open phase and device counts."""
    from tinyops.cli.render import deployments_table
    from tinyops.fleet.client import list_deployments

    deployments = list_deployments(server, token, status)
    if as_json:
        print_json(deployments)
        return
    out.print(deployments_table(deployments))


@deploy_app.command("status")
def deploy_status(
    deployment_id: Annotated[int, typer.Argument(help="deployment id")],
    server: Server,
    token: Token,
    as_json: JsonFlag = False,
) -> None:
    """A deployment's status, phases and device counts."""
    from tinyops.cli.render import deployment_table
    from tinyops.fleet.client import deployment_status

    status = deployment_status(server, token, deployment_id)
    if as_json:
        print_json(status)
        return
    out.print(deployment_table(status))


@deploy_app.command("pause")
def deploy_pause(deployment_id: int, server: Server, token: Token) -> None:
    """Pause a running deployment (no new phase opens)."""
    _deploy_action("pause", deployment_id, server, token)


@deploy_app.command("resume")
def deploy_resume(deployment_id: int, server: Server, token: Token) -> None:
    """Resume a paused deployment."""
    _deploy_action("resume", deployment_id, server, token)


@deploy_app.command("cancel")
def deploy_cancel(deployment_id: int, server: Server, token: Token) -> None:
    """Cancel a deployment: devices not yet updating will not be offered it."""
    _deploy_action("cancel", deployment_id, server, token)


@deploy_app.command("rollback")
def deploy_rollback(deployment_id: int, server: Server, token: Token) -> None:
    """Abort a deployment and roll every device it reached back to its previous release."""
    _deploy_action("rollback", deployment_id, server, token)


def agent_command(
    server: Annotated[str, typer.Option(help="fleet server URL")],
    enroll_token: Annotated[str, typer.Option(help="fleet enrollment token (etk_...)")],
    data_dir: Annotated[Path, typer.Option(help="agent state: slots, identity")],
    trusted_key: Annotated[
        list[Path], typer.Option(help="release-signing public key (.pub), repeatable")
    ],
    hardware: Annotated[str, typer.Option(help="board id of this device")] = "rpi4",
    device_id: Annotated[str | None, typer.Option(help="device id to enroll with")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE tag, repeatable")] = None,
    runtime: Annotated[str, typer.Option(help="self-test runtime: litert | tflm")] = "litert",
    mqtt: MqttUrl = None,
    mqtt_prefix: MqttPrefix = "tinyops",
) -> None:
    """Run the device agent (Linux-class devices): enroll, poll, update A/B, self-test.
    With --mqtt it talks to the server over that broker (artifacts still over HTTP)."""
    from tinyops.fleet.agent import run_agent

    if runtime not in ("litert", "tflm"):
        raise UsageError(f"--runtime: {runtime!r} is not litert or tflm")
    _check_mqtt(mqtt, mqtt_prefix)
    run_agent(
        server,
        enroll_token,
        data_dir,
        hardware,
        device_id,
        _tags(tag),
        trusted_keys=list(trusted_key),
        runtime=runtime,  # type: ignore[arg-type]
        transport="http" if mqtt is None else "mqtt",
        mqtt_url=mqtt,
        mqtt_prefix=mqtt_prefix,
    )
