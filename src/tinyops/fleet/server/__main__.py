"""`python -m tinyops.fleet.server`: run a fleet server (what `tinyops serve` wraps).

    python -m tinyops.fleet.server --data-dir DIR [--db URL] [--host H] [--port P]
        [--init] [--poll-interval S] [--evaluate-interval S] [--flush-interval S]
        [--mqtt mqtt://host:1883] [--mqtt-prefix tinyops]

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
    )
    from tinyops.fleet.server.bootstrap import init_fleet, serve

    if args.init:
        token = init_fleet(settings)
        print(token if token is not None else "an admin token exists already", flush=True)
    serve(settings, args.host, args.port)


if __name__ == "__main__":
    main()
