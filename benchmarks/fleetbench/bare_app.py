"""The bare FastAPI endpoint: the ceiling one uvicorn worker reaches on this machine.

`POST /api/v1/device/checkin` answers the same JSON as an idle device's check-in, without
reading the body, authenticating or touching any state: what FastAPI and uvicorn cost by
themselves. It runs under the uvicorn configuration of `tinyops serve`
(`tinyops.fleet.server.bootstrap.serve`: one worker, httptools and uvloop, no access log),
so the fleet server's check-in rate divided by this one is the share of the ceiling the
fleet server reaches.

    python -m fleetbench.bare_app PORT
"""

from __future__ import annotations

import sys
from typing import Any

from fastapi import FastAPI

app = FastAPI(title="bare endpoint")


@app.post("/api/v1/device/checkin")
async def checkin() -> dict[str, Any]:
    return {"action": "none", "poll_interval_s": 300.0}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    import uvicorn

    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        lifespan="on",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
