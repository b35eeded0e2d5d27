"""`python -m tinyops.fleet.server`: run a fleet server (what `tinyops serve` wraps).

    python -m tinyops.fleet.server --data-dir DIR [--db URL] [--host H] [--port P]
        [--init] [--poll-interval S] [--evaluate-interval S] [--flush-interval S]
        [--mqtt mqtt://host:1883] [--mqtt-prefix tinyops] [--drift-config FILE]
        [--log-max-age-days 30] [--log-max-lines 10000] [--log-prune-interval 3600]
        [--alert-rules alerts.yaml] [--alert-webhook URL] [--alert-interval 60]

--init creates the database and prints a first admin token (if none exists) before
serving.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tinyops.fleet.server.settings import FleetSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tinyops.fleet.server")
    parser.add_argument("--data-dir", type=Path, default=Path(".tinyops/fleet"))
    parser.add_argument("--db", default=None, help="database URL (default: SQLite in data dir)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--init", action="store_true", help="print a first admin token")
    parser.add_argument("--poll-interval", type=float, default=300.0, help="seconds")
    parser.add_argument("--update-poll-interval", type=float, default=60.0, help="seconds")
    parser.add_argument("--evaluate-interval", type=float, default=0.5, help="seconds")
    parser.add_argument("--flush-interval", type=float, default=1.0, help="seconds")
    parser.add_argument(
        "--mqtt", default=None, help="also serve devices over this MQTT broker (mqtt://host:port)"
    )
    parser.add_argument("--mqtt-prefix", default="tinyops", help="MQTT topic prefix")
    parser.add_argument(
        "--drift-config",
        type=Path,
        default=None,
        help="YAML/JSON drift config (methods, thresholds) for releases whose policy has none",
    )
    parser.add_argument(
        "--log-max-age-days", type=float, default=30.0, help="prune device log lines older"
    )
    parser.add_argument(
        "--log-max-lines", type=int, default=10_000, help="device log lines kept per device"
    )
    parser.add_argument(
        "--log-prune-interval", type=float, default=3600.0, help="seconds between log prunes"
    )
    parser.add_argument(
        "--alert-rules", type=Path, default=None, help="alert rules file (docs/alerts.md)"
    )
    parser.add_argument(
        "--alert-webhook", default=None, help="URL for alert notifications (Alertmanager JSON)"
    )
    parser.add_argument(
        "--alert-interval", type=float, default=60.0, help="seconds between rule evaluations"
    )
    args = parser.parse_args(argv)
    settings = FleetSettings(
        data_dir=args.data_dir,
        db_url=args.db,
        poll_interval_s=args.poll_interval,
        update_poll_interval_s=args.update_poll_interval,
        evaluate_interval_s=args.evaluate_interval,
        flush_interval_s=args.flush_interval,
        mqtt_url=args.mqtt,
        mqtt_prefix=args.mqtt_prefix,
        drift_config=args.drift_config,
        log_max_age_days=args.log_max_age_days,
        log_max_lines_per_device=args.log_max_lines,
        log_prune_interval_s=args.log_prune_interval,
        alert_rules=args.alert_rules,
        alert_webhook=args.alert_webhook,
        alert_interval_s=args.alert_interval,
    )
    from tinyops.fleet.server.bootstrap import init_fleet, serve

    if args.init:
        token = init_fleet(settings)
        print(token if token is not None else "an admin token exists already", flush=True)
    serve(settings, args.host, args.port)


if __name__ == "__main__":
    main()
