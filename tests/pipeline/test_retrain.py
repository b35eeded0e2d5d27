"""The continuous-retraining loop, end to end on examples/digits with a real server process.

A device runs digits 1.0.0 and reports a drifted sketch; the server's FeatureDrift rule
fires; labeled samples arrive through POST /api/v1/samples; `tinyops retrain` (a real
subprocess) turns them into digits 1.0.1 through the whole pipeline and, after
`tinyops retrain approve`, a canary deployment to the devices running 1.0.0. Bad samples
are refused by the data gate with the project left as it was. The pure parts (version
bump, project-file edits, sample conversion, alert filtering) are tested on their own.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tinyops.errors import DataError, ProjectError
from tinyops.pipeline.retrain import (
    DataShape,
    add_data_source,
    bump_version,
    drift_alerts,
    samples_to_arrays,
    set_bundle_version,
)
from tinyops.project.loader import load_project

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/digits/tinyops.yaml"
TINYOPS = [sys.executable, "-m", "tinyops.cli.main"]
DATASET = "digits/field"
# Bounds on waiting for the real server; never reached when all is well.
DEADLINE_S = 60.0
RULES = """
groups:
  - name: model
    rules:
      - name: FeatureDrift
        metric: feature_drifted
        match_re: {device: ".+"}
        condition: "== 1"
        severity: warning
"""


def fast_example() -> str:
    """examples/digits/tinyops.yaml, comments and all, with a short training and the
    retrain policy: the text `tinyops retrain` edits is the example's own."""
    text = EXAMPLE.read_text()
    for old, new in (
        ("epochs: 25", "epochs: 3"),
        ("variants: [float32, float16, dynamic, int8]", "variants: [int8]"),
        ("  pruning: {target_sparsity: 0.5, fine_tune_epochs: 3}\n", ""),
        ("min_accuracy: 0.9", "min_accuracy: null"),
        ("max_accuracy_drop: 0.01", "max_accuracy_drop: null"),
        ("min_agreement: 0.97", "min_agreement: null"),
        # The example's own retrain policy, with a smaller batch and an approval step.
        ("window_s: 3600", "window_s: 600"),
        (f"dataset: {DATASET}", f"dataset: {DATASET}"),
        ("min_new_samples: 100", "min_new_samples: 40"),
        ("require_approval: false", "require_approval: true"),
        ('phases: "10%,100%"', 'phases: "50%,100%"'),
    ):
        assert old in text, old
        text = text.replace(old, new)
    return text


# --- pure parts -----------------------------------------------------------------------------


def test_bump_version() -> None:
    assert bump_version("1.0.0") == "1.0.1"
    assert bump_version("1.2.9", "minor") == "1.3.0"
    assert bump_version("1.2.9", "major") == "2.0.0"
    assert bump_version("1.2.3-rc.1+build.5") == "1.2.4"
    with pytest.raises(ProjectError, match=r"bundle\.version"):
        bump_version("v1")


def test_project_file_edits_keep_comments_and_load(tmp_path: Path) -> None:
    text = fast_example()
    edited = set_bundle_version(
        add_data_source(text, '{kind: npz, path: "data/retrain/x-1-9.npz", modality: image}'),
        "1.0.1",
    )
    # Only two lines changed: the version and one new source after the existing one.
    before, after = text.splitlines(), edited.splitlines()
    assert len(after) == len(before) + 1
    assert "  version: 1.0.1" in after and "  version: 1.0.0" not in after
    new = after.index('    - {kind: npz, path: "data/retrain/x-1-9.npz", modality: image}')
    assert after[new - 1] == "      name: digits"
    assert [ln for ln in after if ln.lstrip().startswith("#")] == [
        ln for ln in before if ln.lstrip().startswith("#")
    ]
    (tmp_path / "tinyops.yaml").write_text(edited)
    project, _ = load_project(tmp_path)
    assert project.bundle.version == "1.0.1"
    assert [s.kind for s in project.data.sources] == ["sklearn", "npz"]

    # Flow-style bundle sections and files without a version are handled too.
    flow = "bundle: {version: '1.0.0', variant: int8}\n"
    assert set_bundle_version(flow, "2.0.0") == "bundle: {version: '2.0.0', variant: int8}\n"
    assert set_bundle_version("name: x\n", "0.1.0") == "name: x\nbundle:\n  version: 0.1.0\n"
    with pytest.raises(ProjectError, match="block list"):
        add_data_source("data:\n  sources: [{kind: sklearn, name: digits}]\n", "{kind: npz}")


def test_samples_become_the_projects_arrays() -> None:
    shape = DataShape("image", (2, 2, 1), ("zero", "one"), None)
    x, y = samples_to_arrays(
        [
            {"id": 1, "features": [0, 1, 2, 3], "label": 1},
            {"id": 2, "features": [4, 5, 6, 7], "label": "zero"},
        ],
        shape,
    )
    assert x.dtype == np.uint8 and x.shape == (2, 2, 2, 1)
    assert x[1, :, :, 0].tolist() == [[4, 5], [6, 7]] and y.tolist() == [1, 0]
    for bad, match in (
        ({"id": 7, "features": [1, 2, 3], "label": 0}, "sample 7: 3 features"),
        ({"id": 8, "features": [1, 2, 3, 4], "label": "two"}, "sample 8: label 'two'"),
        ({"id": 9, "features": [1, 2, 3, 4], "label": 5}, "sample 9: label 5"),
        ({"id": 10, "features": [0.5, 2, 3, 4], "label": 0}, "whole numbers"),
    ):
        with pytest.raises(DataError, match=match):
            samples_to_arrays([bad], shape)
    table = DataShape("table", (2,), ("a", "b"), ("f1", "f2"))
    x, _ = samples_to_arrays([{"id": 3, "values": {"f2": 2.5, "f1": 1.5}, "label": 0}], table)
    assert x.tolist() == [[1.5, 2.5]] and x.dtype == np.float32
    with pytest.raises(DataError, match=r"sample 4: values lack the features \['f2'\]"):
        samples_to_arrays([{"id": 4, "values": {"f1": 1.0}, "label": 0}], table)


def test_drift_alerts_are_firing_drift_rules_of_the_release() -> None:
    alerts = [
        {"rule": "FeatureDrift", "state": "firing", "labels": {"release": "digits@1.0.0"}},
        {"rule": "FeatureDrift", "state": "pending", "labels": {"release": "digits@1.0.0"}},
        {"rule": "FeatureDrift", "state": "firing", "labels": {"release": "digits@0.9.0"}},
        {"rule": "DeviceHot", "state": "firing", "labels": {"release": "digits@1.0.0"}},
    ]
    assert drift_alerts(alerts, ["FeatureDrift"], "digits@1.0.0") == [alerts[0]]


# --- end to end ---------------------------------------------------------------------------


@dataclass
class Live:
    url: str
    token: str  # the first admin token: sets the fleet up
    http: httpx.Client
    root: Path
    worker_token: str = ""  # what `tinyops retrain` runs with: a `retrainer` token

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def tinyops(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TINYOPS, *args, "--project", str(self.root)],
            capture_output=True,
            text=True,
            env={
                **os.environ,
                "COLUMNS": "250",
                "TINYOPS_SERVER": self.url,
                "TINYOPS_TOKEN": self.worker_token,
            },
            timeout=600,
            check=False,
        )

    def post_samples(self, images: np.ndarray, labels: np.ndarray) -> None:
        items = [
            {"features": img.reshape(-1).tolist(), "label": int(lab), "device": "field-1"}
            for img, lab in zip(images, labels, strict=True)
        ]
        r = self.http.post(
            "/api/v1/samples", json={"dataset": DATASET, "items": items}, headers=self.auth
        )
        assert r.status_code == 201, r.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """digits 1.0.0 built, uploaded and running on a device whose sketch has drifted."""
    from tinyops.pipeline.runner import run_project

    root = tmp_path_factory.mktemp("digits-retrain")
    (root / "tinyops.yaml").write_text(fast_example())
    record = run_project(root)
    assert record["status"] == "succeeded", record.get("error")
    bundle = root / next(s for s in record["stages"] if s["name"] == "bundle")["output"]["bundle"]

    rules = root / "alerts.yaml"
    rules.write_text(RULES)
    port = _free_port()
    log = root.parent / "server.log"
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tinyops.fleet.server", "--data-dir", str(root.parent / "fleet"),
             "--port", str(port), "--init", "--alert-rules", str(rules),
             "--alert-interval", "0.2", "--evaluate-interval", "0.2"],
            stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        assert proc.stdout is not None
        token = proc.stdout.readline().decode().strip()
        assert token.startswith("tok_"), log.read_text()
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        live = Live(f"http://127.0.0.1:{port}", token, http, root)
        _release_and_drift(live, bundle, log)
        # The worker runs with least privilege: read, upload-release, manage-deployments.
        r = http.post(
            "/api/v1/tokens",
            json={"name": "retrain-worker", "role": "retrainer"},
            headers=live.auth,
        )
        assert r.status_code == 201, r.text
        live.worker_token = r.json()["token"]
        yield live
    finally:
        http.close()
        proc.terminate()
        proc.wait(timeout=30)


def _release_and_drift(live: Live, bundle: Path, log: Path) -> None:
    from tinyops.bundle.bundle import verify_bundle
    from tinyops.bundle.keys import load_public_key
    from tinyops.monitor.policy import monitoring_from_files
    from tinyops.monitor.sketch import SketchAccumulator, window_bounds

    project, root = load_project(live.root)
    pub = (root / project.bundle.signing_key).with_suffix(".pub")
    r = live.http.post(
        "/api/v1/trusted-keys",
        json={"name": "ci", "public_key_pem": pub.read_text()},
        headers=live.auth,
    )
    assert r.status_code == 201, r.text
    r = live.http.post(
        "/api/v1/releases",
        content=bundle.read_bytes(),
        headers={**live.auth, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    etk = live.http.post("/api/v1/enrollment-tokens", json={"name": "lab"}, headers=live.auth)
    r = live.http.post(
        "/api/v1/device/enroll",
        json={
            "enrollment_token": etk.json()["token"],
            "device_id": "field-1",
            "hardware": "nano33ble",
            "installed": {"name": "digits", "version": "1.0.0"},
        },
    )
    assert r.status_code == 201, r.text
    device = {"Authorization": f"Bearer {r.json()['device_token']}"}

    # The device's sensor drifted: every summary value lies far above the reference.
    verified = verify_bundle(bundle, [load_public_key(pub)])
    monitoring = monitoring_from_files(verified.files)
    assert monitoring is not None, "the bundle ships no monitoring profile"
    profile, policy = monitoring
    sketch = SketchAccumulator(profile, policy, release=("digits", "1.0.0"))
    # Enough inferences for a verdict (DriftConfig.min_count, 1000).
    rows = np.full((1200, len(profile.features)), 1e6)
    probabilities = np.eye(10)[np.zeros(1200, dtype=int)]
    sketch.observe_many(rows, probabilities)
    start, end = window_bounds(
        datetime.now(UTC) - timedelta(seconds=policy.window_s), policy.window_s
    )
    body = sketch.flush(start, end)
    r = live.http.post("/api/v1/device/sketches", json=body, headers=device)
    assert r.status_code == 202, r.text


def wait_for_firing(live: Live) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        alerts = live.http.get("/api/v1/alerts", params={"state": "firing"}, headers=live.auth)
        firing = drift_alerts(alerts.json()["alerts"], ["FeatureDrift"], "digits@1.0.0")
        if firing:
            return
        assert time.monotonic() < deadline, alerts.json()
        time.sleep(0.1)


def digits(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits seen by a camera that moved: images rolled `shift` pixels to the right."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.roll(bunch.images.astype(np.int64), shift, axis=2)[:60]
    return images, bunch.target[:60]


def state(live: Live) -> dict[str, Any]:
    return dict(json.loads((live.root / ".tinyops" / "retrain.json").read_text()))


def test_retrain_loop_end_to_end(live: Live) -> None:
    project_file = live.root / "tinyops.yaml"
    original = project_file.read_text()

    # No labeled samples yet: nothing to do (exit 0), nothing changed.
    wait_for_firing(live)
    r = live.tinyops("retrain")
    assert r.returncode == 0, r.stderr
    # One alert per drifted feature of the device (every feature of its sketch moved).
    fired = re.search(r"(\d+) drift alert\(s\) firing for digits@1\.0\.0: FeatureDrift", r.stdout)
    assert fired is not None and int(fired.group(1)) >= 1, r.stdout
    assert f"0 new labeled sample(s) in {DATASET}" in r.stdout

    # Samples outside the data's value range: the data gate refuses them; exit 3, the
    # project file and data folder as they were, the samples consumed as rejected.
    images, labels = digits(1)
    live.post_samples(images + 20, labels)
    r = live.tinyops("retrain")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "rejected by the data gate" in r.stderr and "value_range" in r.stderr
    assert project_file.read_text() == original
    assert not list((live.root / "data" / "retrain").glob("*.npz"))
    assert state(live)["last_sample_id"] == 60
    assert state(live)["history"][-1]["outcome"] == "rejected"

    # Good samples: a dry run says what would happen and changes nothing.
    live.post_samples(images, labels)
    r = live.tinyops("retrain", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "would retrain digits 1.0.1 on 60 new samples" in r.stdout
    assert project_file.read_text() == original

    # The cycle: new data file and source, version 1.0.1 through every gate, then it waits.
    r = live.tinyops("retrain")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "waiting for approval" in r.stdout
    data_file = live.root / "data" / "retrain" / "digits-field-61-120.npz"
    with np.load(data_file) as npz:
        assert npz["x"].shape == (60, 8, 8, 1) and npz["y"].tolist() == labels.tolist()
    project, _ = load_project(live.root)
    assert project.bundle.version == "1.0.1"
    assert str(project.data.sources[-1].path) == "data/retrain/digits-field-61-120.npz"  # type: ignore[union-attr]
    pending = state(live)["pending"]
    assert pending["version"] == "1.0.1" and pending["samples"] == 60
    assert (live.root / pending["bundle"]).is_file()
    # The new snapshot holds the new samples (validated and deduplicated like any data).
    from tinyops.pipeline.engine import load_run

    run = load_run(live.root / ".tinyops")
    ingest = next(s for s in run["stages"] if s["name"] == "ingest")
    assert not ingest["cache_hit"] and ingest["output"]["samples"] > 1797 - 60
    releases = live.http.get("/api/v1/releases", headers=live.auth).json()["releases"]
    assert [x["version"] for x in releases] == ["1.0.0"]  # nothing uploaded before approval

    # A cycle while the approval is pending changes nothing.
    r = live.tinyops("retrain")
    assert r.returncode == 0 and "waits for approval" in r.stdout, r.stderr

    r = live.tinyops("retrain", "approve")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "canary deployment" in r.stdout
    history = state(live)["history"][-1]
    assert state(live)["pending"] is None and history["outcome"] == "deployed"
    deployment = live.http.get(
        f"/api/v1/deployments/{history['deployment']}", headers=live.auth
    ).json()
    assert deployment["release"]["version"] == "1.0.1"
    assert [p["percent"] for p in deployment["phases"]] == [50.0, 100.0]
    assert deployment["selector"]["installed_version"] == "1.0.0"
    assert deployment["device_count"] == 1
    audit = live.http.get("/api/v1/audit", headers=live.auth).json()["records"]
    # Uploaded and deployed under the worker's own token, not the admin's.
    assert {(a["action"], a["actor"]) for a in audit} >= {
        ("release.upload", "token:retrain-worker"),
        ("deployment.create", "token:retrain-worker"),
    }

    r = live.tinyops("retrain", "approve")
    assert r.returncode == 2 and "no retrained release waits" in r.stderr
