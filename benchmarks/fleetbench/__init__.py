"""Fleet benchmarks (issue 3): check-ins, telemetry ingestion, server memory, simulator.

Every figure comes from real processes on this machine: the fleet server is started the
way a user starts it (`python -m tinyops.fleet.server`, which is what `tinyops serve` runs:
uvicorn, one worker, httptools and uvloop), load comes from `wrk` on 127.0.0.1 with a
bounded duration and connection count, and peers (a bare FastAPI endpoint) are measured
in the same run so that ratios compare like with like.

    harness     server processes, wrk, bulk enrollment, PostgreSQL scratch databases
    bare_app    the bare FastAPI endpoint (the ceiling of one uvicorn worker)
    checkin     check-ins per second and p99 latency: bare, SQLite, PostgreSQL
    telemetry   telemetry points stored per second, in batches of 1,000 points
    memory      server RSS with 100,000 enrolled devices
    simulation  the fleet simulator driving devices through a 4-phase rollout
"""
