"""The monitoring half of `make demo`: a fleet runs digits 1.0.0, two devices' cameras
drift, the server raises drift alerts for exactly those devices and features, newly
labeled field data arrives, and `tinyops retrain` turns it into digits 1.0.1 and a canary
deployment.

Run after `tinyops run .` in this folder (it needs dist/digits-1.0.0-nano33ble.tinybundle
and the project's signing key). Everything is real and local: a `tinyops serve` process
(SQLite), 20 simulated devices (`tinyops fleet simulate`: real agents over HTTP, whose
inferences are drawn from the bundle's reference profile), the retraining pipeline. The
retraining works on a copy of this project under build/monitor-demo/, so the example
stays as committed; the copy tracks its runs in this folder's MLflow store, so the
retrained model is the next version of the same registered model. The field data is
scikit-learn's bundled digits, shifted one pixel to the right (a camera that moved) —
nothing is downloaded.

    python monitor_demo.py [--devices 20] [--project DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TINYOPS = [sys.executable, "-m", "tinyops.cli.main"]
# Two devices whose camera drifted: rows 2 and 5 of the image got brighter by 3 reference
# standard deviations. Every other device sees what the model was trained on.
DRIFTED = ("sim-000003", "sim-000011")
DRIFT = "+".join(DRIFTED) + ":row_band_02=3,row_band_05=3"
WINDOW_S = 4  # short sketch windows, so that the demo does not wait an hour
DEADLINE_S = 180


def step(title: str) -> None:
    print(f"\n── {title}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(self, *args: str, show: bool = True) -> str:
        r = subprocess.run(
            [*TINYOPS, *args], capture_output=True, text=True, env=self.env, check=False
        )
        if r.returncode != 0:
            raise SystemExit(f"tinyops {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
        if show:
            print(r.stdout.rstrip())
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json", show=False))


class Api:
    """What the demo polls while it waits, asked over HTTP from this process (a `tinyops`
    subprocess per poll would cost a Python start-up each time, on the cores the server and
    the simulated devices share)."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.url, self.token, self.http = url, token, httpx.Client(timeout=30)

    def devices(self) -> list[dict[str, Any]]:
        from tinyops.fleet.client import list_devices

        return list_devices(self.url, self.token, client=self.http)

    def create_token(self, name: str, role: str) -> str:
        r = self.http.post(
            f"{self.url}/api/v1/tokens",
            json={"name": name, "role": role},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        r.raise_for_status()
        return str(r.json()["token"])

    def drift_alerts(self, expected: int) -> list[dict[str, Any]] | None:
        from tinyops.fleet.client import list_alerts

        alerts = list_alerts(self.url, self.token, "firing", client=self.http)
        drift = [a for a in alerts if a["rule"] == "FeatureDrift"]
        return drift if len(drift) >= expected else None


@contextmanager
def background(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    with open(log, "w") as sink:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_for(what: str, check: Any, log: Path | None = None) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tail = log.read_text()[-2000:] if log is not None else ""
            raise SystemExit(f"gave up waiting for {what} after {DEADLINE_S} s\n{tail}")
        time.sleep(0.5)


def field_samples() -> list[dict[str, Any]]:
    """300 newly labeled images from the field: digits seen one pixel further right."""
    import numpy as np
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.roll(bunch.images.astype(np.int64), 1, axis=2)[-300:]
    labels = bunch.target[-300:]
    return [
        {"features": img.reshape(-1).tolist(), "label": int(label), "device": DRIFTED[i % 2]}
        for i, (img, label) in enumerate(zip(images, labels, strict=True))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument(
        "--project", type=Path, default=HERE, help="the digits project `tinyops run` built"
    )
    parser.add_argument(
        "--work", type=Path, default=HERE.parents[1] / "build" / "monitor-demo",
        help="server state, logs and the retrained copy (emptied first)",
    )  # fmt: skip
    args = parser.parse_args()
    source, work = args.project.resolve(), args.work.resolve()

    bundle = source / "dist" / "digits-1.0.0-nano33ble.tinybundle"
    public_key = source / ".tinyops" / "keys" / "signing.pub"
    if not bundle.exists() or not public_key.exists():
        raise SystemExit(f"run `tinyops run .` in {source} first (no {bundle.name})")
    # The field data takes a scikit-learn import to build: done while the fleet starts.
    pool = ThreadPoolExecutor(max_workers=1)
    field = pool.submit(field_samples)
    pool.shutdown(wait=False)  # the submitted work still runs; no thread is left behind
    shutil.rmtree(work, ignore_errors=True)
    project = work / "digits"
    (project / ".tinyops").mkdir(parents=True)
    shutil.copy2(source / "alerts.yaml", project / "alerts.yaml")
    # The copy's runs go to the example's MLflow store: 1.0.1 is the next version of the
    # registered model `digits`, beside the run that made 1.0.0.
    mlflow_db = source / ".tinyops" / "mlflow.db"
    (project / "tinyops.yaml").write_text(
        (source / "tinyops.yaml").read_text() + f"\ntracking:\n  uri: sqlite:///{mlflow_db}\n"
    )
    # The snapshots, feature cache and run records the retraining builds on, and the signing
    # key the fleet trusts.
    for name in ("keys", "store", "cache", "runs"):
        shutil.copytree(source / ".tinyops" / name, project / ".tinyops" / name)
    # The release devices run was built from this project: the copy continues at 1.0.0.
    (project / "dist").mkdir()
    shutil.copy2(bundle, project / "dist" / bundle.name)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "COLUMNS": "120", "TINYOPS_SERVER": url}
    step(f"fleet server on {url} (SQLite in {_shown(work)}/fleet)")
    serve = [
        *TINYOPS, "serve", "--data-dir", str(work / "fleet"), "--port", str(port),
        "--poll-interval", "1", "--alert-rules", str(project / "alerts.yaml"),
        "--alert-interval", "1", "--drift-config", str(project / "tinyops.yaml"),
    ]  # fmt: skip
    with background(serve, env, work / "serve.log") as server:
        assert server.stdout is not None
        first = server.stdout.readline()
        if "first admin API token" not in first:
            raise SystemExit(f"the server did not start:\n{(work / 'serve.log').read_text()}")
        env["TINYOPS_TOKEN"] = first.split()[-1]
        cli = Cli(env)
        api = Api(url, env["TINYOPS_TOKEN"])
        wait_for("the server", lambda: _healthy(url), work / "serve.log")
        cli.run("fleet", "trust-key", str(public_key))
        cli.run("release", "upload", str(bundle))
        enroll = cli.run("fleet", "enroll-token", "--name", "field", show=False).strip()

        step(f"{args.devices} simulated devices; the cameras of {' and '.join(DRIFTED)} drift")
        simulate = [
            *TINYOPS, "fleet", "simulate", "--enroll-token", enroll,
            "--trusted-key", str(public_key), "--devices", str(args.devices),
            "--group", "field", "--poll-interval", "1", "--inferences", "300",
            "--sketch-window", str(WINDOW_S), "--drift", DRIFT, "--duration", "600",
            "--json",
        ]  # fmt: skip
        with background(simulate, env, work / "simulate.log"):
            wait_for(
                "the devices to enroll",
                lambda: len(api.devices()) >= args.devices,
                work / "simulate.log",
            )
            cli.run("deploy", "create", "digits", "1.0.0", "--group", "field")
            wait_for(
                "digits 1.0.0 on every device",
                lambda: all(
                    (d.get("installed") or {}).get("version") == "1.0.0" for d in api.devices()
                ),
            )

            step("drift alerts (server rules: alerts.yaml, FeatureDrift per device)")
            firing = wait_for("drift alerts", lambda: api.drift_alerts(len(DRIFTED) * 2))
            cli.run("alerts", "list", "--state", "firing")
            pairs = sorted((a["labels"]["device"], a["labels"]["feature"]) for a in firing)
            expected = sorted((d, f) for d in DRIFTED for f in ("row_band_02", "row_band_05"))
            verdict = "exactly the drifted ones" if pairs == expected else f"expected {expected}"
            print(f"FeatureDrift fires for {pairs}: {verdict}")

            step("300 newly labeled field images arrive (POST /api/v1/samples)")
            from tinyops.fleet.client import submit_samples

            accepted = submit_samples(url, env["TINYOPS_TOKEN"], "digits/field", field.result())
            print(f"accepted {accepted['accepted']} samples into digits/field")

            step("tinyops retrain: new snapshot → pipeline → gates → release → canary")
            # The worker's own token: upload and deploy, nothing more (role `retrainer`).
            worker = Cli({**env, "TINYOPS_TOKEN": api.create_token("retrain-worker", "retrainer")})
            worker.run("retrain", "--project", str(project))
            deployments = cli.json("deploy", "list")
            canary = max(deployments, key=lambda d: d["id"])
            cli.run("deploy", "status", str(canary["id"]))
    print(f"\n(server state, logs and the retrained project in {work}, until the next run)")


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside, else as is."""
    try:
        return str(path.relative_to(HERE.parents[1]))
    except ValueError:
        return str(path)


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    main()
