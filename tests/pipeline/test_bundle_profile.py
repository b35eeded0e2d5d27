"""The bundle stage ships the reference profile and the monitoring policy (examples/digits).

One short digits project is built once per module (2 epochs, the int8 variant only: the
profile does not care how good the model is); the tests read its bundle, recompute the
profile by hand from the snapshot, and change the monitoring section to see what re-runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tinyops.errors import ProjectError
from tinyops.pipeline.runner import run_project

EXAMPLE = Path(__file__).resolve().parents[2] / "examples/digits/tinyops.yaml"


def digits_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    cfg["training"]["epochs"] = 2
    cfg["optimize"] = {"variants": ["int8"], "representative_samples": 100}
    cfg["gates"] = {"min_accuracy": None, "max_accuracy_drop": None, "min_agreement": None}
    cfg["monitoring"] = {"window_s": 600, "sampling": {"max_samples_per_window": 4}}
    for path, value in overrides.items():
        node = cfg
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def write_config(project: Path, cfg: dict[str, Any]) -> None:
    (project / "tinyops.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def stages(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["stages"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits-monitoring")
    write_config(root, digits_config())
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict[str, Any]:
    record = run_project(project)
    assert record["status"] == "succeeded", record.get("error")
    return record


@pytest.fixture
def edit(project: Path) -> Iterator[Any]:
    original = (project / "tinyops.yaml").read_text()

    def apply(**overrides: Any) -> None:
        write_config(project, digits_config(**overrides))

    yield apply
    (project / "tinyops.yaml").write_text(original)


def bundle_files(project: Path, record: dict[str, Any]) -> dict[str, bytes]:
    from tinyops.bundle.bundle import verify_bundle
    from tinyops.bundle.keys import load_public_key

    path = project / stages(record)["bundle"]["output"]["bundle"]
    pub = load_public_key(project / ".tinyops/keys/signing.pub")
    return verify_bundle(path, [pub]).files


def test_bundle_carries_the_profile_and_the_policy(
    project: Path, first_run: dict[str, Any]
) -> None:
    from tinyops.bundle.bundle import verify_bundle
    from tinyops.bundle.keys import load_public_key

    path = project / stages(first_run)["bundle"]["output"]["bundle"]
    verified = verify_bundle(path, [load_public_key(project / ".tinyops/keys/signing.pub")])
    # Both members are listed (hashed) in the signed manifest like any other file.
    listed = set(verified.manifest.files)
    assert {"monitoring/profile.json", "monitoring/policy.json"} <= listed
    policy = json.loads(verified.files["monitoring/policy.json"])
    assert policy == {
        "format": "tinyops.monitoring-policy",
        "version": 1,
        "window_s": 600,
        "summaries": "channels",
        "sampling": {"max_samples_per_window": 4},
        # The baseline of performance drift: the int8 model's test accuracy on TFLM.
        "reference_accuracy": round(stages(first_run)["device-validate"]["output"]["accuracy"], 6),
    }
    out = stages(first_run)["bundle"]["output"]["monitoring"]
    assert out["summaries"] == "channels"
    assert out["features"] == [f"row_band_{i:02d}" for i in range(8)]


def test_profile_is_the_training_split_summaries_with_int8_outputs(
    project: Path, first_run: dict[str, Any]
) -> None:
    from tinyops.data.snapshot import load_snapshot
    from tinyops.monitor.reference import build_reference_profile
    from tinyops.targets.tflm import TflmModel

    files = bundle_files(project, first_run)
    profile = json.loads(files["monitoring/profile.json"])
    # Recompute by hand: the snapshot's training images, scaled as the project's one block
    # does (× 0.0625), one feature per pixel row = the mean of its 8 pixels.
    snap = load_snapshot(
        project / ".tinyops/store", stages(first_run)["ingest"]["output"]["snapshot_id"]
    )
    x_train, _ = snap.subset("train")
    x = np.asarray(x_train, dtype=np.float32) * np.float32(0.0625)
    rows = x.reshape(len(x), 8, 8).astype(np.float64).mean(axis=2)
    # The model outputs are the int8 deploy model's, run on TFLM.
    tflm = TflmModel(files["model.tflite"])
    probs = tflm.run(x.reshape(len(x), 8, 8, 1))
    # Devices may send samples (max_samples_per_window 4): the profile carries the
    # default 1,000 reference rows for the server's KS test, drawn with seed 0.
    expected = build_reference_profile(
        rows,
        [f"row_band_{i:02d}" for i in range(8)],
        probabilities=probs,
        bins=10,
        reference_samples=1000,
        seed=0,
    )
    assert profile["rows"] == len(x) == expected.rows
    assert len(profile["samples"]) == min(1000, len(x))
    assert profile == json.loads(json.dumps(expected.to_dict()))
    assert stages(first_run)["bundle"]["output"]["monitoring"]["reference_samples"] == min(
        1000, len(x)
    )
    assert sum(profile["prediction_counts"]) == len(x)
    assert len(profile["prediction_counts"]) == 10
    # int8 softmax outputs are multiples of 1/256: so is every confidence in the profile.
    conf = probs.max(axis=1)
    assert np.allclose(conf * 256, np.round(conf * 256))


def test_the_monitoring_shape_reruns_the_bundle_but_drift_thresholds_do_not(
    project: Path, first_run: dict[str, Any], edit: Any
) -> None:
    edit(**{"monitoring.drift": {"thresholds": {"psi": 0.2}}, "monitoring.alerts": "alerts.yaml"})
    record = run_project(project)
    assert all(s["cache_hit"] for s in record["stages"])

    edit(**{"monitoring.bins": 5})
    record = run_project(project)
    hits = {n: s["cache_hit"] for n, s in stages(record).items()}
    assert hits == {
        "ingest": True, "validate": True, "features": True, "train": True,
        "optimize": True, "profile": True, "device-validate": True, "compile": True,
        "bundle": False, "register": False,
    }  # fmt: skip
    profile = json.loads(bundle_files(project, record)["monitoring/profile.json"])
    assert all(len(f["counts"]) <= 5 for f in profile["features"])

    edit(**{"monitoring.summaries": "columns"})
    record = run_project(project)
    profile = json.loads(bundle_files(project, record)["monitoring/profile.json"])
    assert [f["name"] for f in profile["features"]] == [f"column_{i:02d}" for i in range(64)]


def test_malformed_monitoring_sections_name_the_key(tmp_path: Path) -> None:
    for overrides, message in (
        ({"monitoring.bins": 1}, "monitoring.bins"),
        ({"monitoring.summaries": "pixels"}, "monitoring.summaries"),
        ({"monitoring.sampling": {"max_samples_per_window": -1}}, "max_samples_per_window"),
        ({"monitoring.window": 60}, r"monitoring\.window: unknown key"),
        ({"monitoring.drift": {"drift_share": 2}}, "monitoring.drift.drift_share"),
    ):
        write_config(tmp_path, digits_config(**overrides))
        with pytest.raises(ProjectError, match=message):
            run_project(tmp_path)
    assert not (tmp_path / ".tinyops/store").exists()  # refused before any work
