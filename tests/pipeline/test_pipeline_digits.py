"""The whole pipeline on scikit-learn's digits, end to end, with every real part:
TensorFlow/Keras, the TFLite converter, the TFLM runtime, MLflow on SQLite, Ed25519.

One project is built once per module (a short training), then each test inspects what it
produced or changes one thing and re-runs, restoring the project file afterwards.
"""

from __future__ import annotations

import copy
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tinyops.errors import DataError, ProjectError
from tinyops.pipeline.runner import export_bundle, promote_model, run_project

STARTER = Path(__file__).resolve().parents[2] / "src/tinyops/project/templates/tinyops.yaml"


def digits_config(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = yaml.safe_load(STARTER.read_text().replace("__NAME__", "digits"))
    cfg["training"]["epochs"] = 8
    cfg["optimize"]["pruning"]["fine_tune_epochs"] = 1
    cfg["gates"]["min_accuracy"] = 0.85
    cfg["gates"]["max_accuracy_drop"] = 0.03
    for path, value in overrides.items():
        node = cfg
        *parents, leaf = path.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    return cfg


def write_config(project: Path, cfg: dict[str, Any]) -> None:
    (project / "tinyops.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))


def stages(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in record["stages"]}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    write_config(root, digits_config())
    return root


@pytest.fixture(scope="module")
def first_run(project: Path) -> dict[str, Any]:
    return run_project(project)


@pytest.fixture
def edit(project: Path) -> Iterator[Any]:
    """Change the project file for one test; the original is restored afterwards."""
    original = (project / "tinyops.yaml").read_text()

    def apply(**overrides: Any) -> None:
        write_config(project, digits_config(**overrides))

    yield apply
    (project / "tinyops.yaml").write_text(original)


def test_first_run_succeeds_through_every_stage(first_run: dict[str, Any]) -> None:
    assert first_run["status"] == "succeeded", first_run.get("error")
    by = stages(first_run)
    assert list(by) == [
        "ingest", "validate", "features", "train", "optimize", "profile",
        "device-validate", "compile", "bundle", "register",
    ]  # fmt: skip
    assert all(s["status"] == "ok" and not s["cache_hit"] for s in by.values())
    assert by["ingest"]["output"]["samples"] == 1797 - by["ingest"]["output"]["dedup"]["removed"]


def test_bundle_is_signed_and_carries_the_tflm_arena(
    project: Path, first_run: dict[str, Any]
) -> None:
    from tinyops.bundle.bundle import verify_bundle
    from tinyops.bundle.keys import load_public_key
    from tinyops.targets.tflm import TflmModel

    by = stages(first_run)
    bundle = project / by["bundle"]["output"]["bundle"]
    assert bundle.name == "digits-1.0.0-nano33ble.tinybundle"
    pub = load_public_key(project / ".tinyops/keys/signing.pub")
    verified = verify_bundle(bundle, [pub])
    m = verified.manifest
    tflm = TflmModel(verified.files["model.tflite"])
    assert m.measured.arena_bytes == tflm.arena.total > 0
    assert m.measured.arena_bytes == by["profile"]["output"]["profile"]["arena_bytes"]
    assert m.dataset_snapshot_id == by["ingest"]["output"]["snapshot_id"]
    assert m.feature_pipeline_hash == by["features"]["output"]["pipeline_hash"]
    assert m.mlflow is not None and m.mlflow.run_id == by["train"]["output"]["mlflow_run_id"]
    assert m.mlflow.model_version == by["register"]["output"]["model_version"]
    assert m.target == "nano33ble" and m.version == "1.0.0"
    assert m.model.input.dtype == "int8" and m.model.output.dtype == "int8"
    assert m.feature_params is not None
    names = set(verified.files)
    for required in ("model.tflite", "model_data.h", "model_data.cc", "golden/inputs.bin"):
        assert required in names
    assert any(n.endswith("library.properties") for n in names)
    assert any(n.endswith(".ino") for n in names)
    # A file inside the C array is the .tflite, byte for byte
    assert f"g_model_len = {len(verified.files['model.tflite'])};" in (
        verified.files["model_data.cc"].decode()
    )


def test_int8_on_tflm_is_within_a_point_of_float(first_run: dict[str, Any]) -> None:
    by = stages(first_run)
    float_acc = by["train"]["output"]["metrics"]["test_accuracy"]
    dv = by["device-validate"]["output"]
    assert dv["samples"] == len(range(dv["samples"])) > 200
    assert dv["accuracy"] >= 0.85
    assert abs(float_acc - dv["accuracy"]) <= 0.03
    rows = {r["variant"]: r for r in by["optimize"]["output"]["variants"]}
    assert set(rows) == {"float32", "float16", "dynamic", "int8", "pruned-int8"}
    assert rows["int8"]["size_bytes"] < rows["float32"]["size_bytes"]
    assert rows["pruned-int8"]["sparsity"] >= 0.45
    assert rows["pruned-int8"]["compressed_bytes"] < rows["int8"]["compressed_bytes"]


def test_mlflow_run_holds_params_metrics_dataset_artifacts_and_alias(
    project: Path, first_run: dict[str, Any]
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.tinyops/mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    by = stages(first_run)
    run = client.get_run(by["train"]["output"]["mlflow_run_id"])
    assert run.data.params["model.template"] == "cnn2d"
    assert run.data.params["training.epochs"] == "8"
    assert run.data.tags["tinyops.snapshot_id"] == by["ingest"]["output"]["snapshot_id"]
    assert (
        run.data.tags["tinyops.feature_pipeline_hash"] == by["features"]["output"]["pipeline_hash"]
    )
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in history] == list(range(by["train"]["output"]["epochs_run"]))
    assert "tflm.agreement" in run.data.metrics
    assert "tflite.int8.accuracy" in run.data.metrics
    inputs = run.inputs.dataset_inputs
    assert inputs and inputs[0].dataset.digest == by["ingest"]["output"]["snapshot_id"][:36]
    tflite = {a.path for a in client.list_artifacts(run.info.run_id, "tflite")}
    assert "tflite/int8.tflite" in tflite and "tflite/pruned-int8.tflite" in tflite
    bundles = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert "bundle/digits-1.0.0-nano33ble.tinybundle" in bundles
    version = client.get_model_version_by_alias("digits", "candidate")
    assert str(version.version) == by["register"]["output"]["model_version"]
    assert version.tags["tinyops.bundle_sha256"] == by["bundle"]["output"]["sha256"]


def test_warm_rerun_does_no_work(project: Path, first_run: dict[str, Any]) -> None:
    again = run_project(project)
    assert again["status"] == "succeeded"
    assert all(s["cache_hit"] for s in again["stages"])
    assert stages(again)["bundle"]["output"] == stages(first_run)["bundle"]["output"]


def test_changing_a_budget_reruns_only_what_depends_on_it(
    project: Path, first_run: dict[str, Any], edit: Any
) -> None:
    edit(**{"target.budgets": {"ram_fraction": 0.25, "flash_fraction": 0.5, "latency_ms": 40}})
    record = run_project(project)
    hits = {n: s["cache_hit"] for n, s in stages(record).items()}
    assert hits == {
        "ingest": True, "validate": True, "features": True, "train": True,
        "optimize": True, "profile": False, "device-validate": True, "compile": True,
        "bundle": False, "register": False,
    }  # fmt: skip


def test_over_budget_fails_the_gate_and_writes_no_bundle(project: Path, edit: Any) -> None:
    dist_before = sorted((project / "dist").iterdir())
    edit(**{"target.budgets": {"ram_bytes": 2048}})
    record = run_project(project)
    by = stages(record)
    assert record["status"] == "failed"
    assert by["profile"]["status"] == "failed"
    assert "ram 7,648 bytes > 2,048 bytes" in by["profile"]["error"]
    assert by["profile"]["gate"]["passed"] is False
    assert by["bundle"]["status"] == "skipped"
    assert sorted((project / "dist").iterdir()) == dist_before


def test_accuracy_gate_on_tflm(project: Path, edit: Any) -> None:
    edit(**{"gates.min_accuracy": 0.9999})
    record = run_project(project)
    dv = stages(record)["device-validate"]
    assert record["status"] == "failed"
    assert dv["status"] == "failed" and "min_accuracy" in dv["error"]
    failed = [c for c in dv["gate"]["checks"] if not c["passed"]]
    assert [c["check"] for c in failed] == ["min_accuracy"]


def test_clean_runs_are_reproducible(
    project: Path, first_run: dict[str, Any], tmp_path: Path
) -> None:
    """Same data and config from a clean state → same snapshot, features and .tflite bytes."""
    write_config(tmp_path, digits_config())
    second = run_project(tmp_path, until="optimize")
    a, b = stages(first_run), stages(second)
    assert a["ingest"]["output"]["snapshot_id"] == b["ingest"]["output"]["snapshot_id"]
    assert a["features"]["output"]["pipeline_hash"] == b["features"]["output"]["pipeline_hash"]
    assert (
        a["optimize"]["output"]["deploy"]["sha256"] == b["optimize"]["output"]["deploy"]["sha256"]
    )
    tflite_a = (project / a["optimize"]["output"]["deploy"]["tflite"]).read_bytes()
    tflite_b = (tmp_path / b["optimize"]["output"]["deploy"]["tflite"]).read_bytes()
    assert tflite_a == tflite_b


def test_promote_moves_champion(project: Path, first_run: dict[str, Any]) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{project / '.tinyops/mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    candidate = str(client.get_model_version_by_alias("digits", "candidate").version)
    name, version, previous = promote_model(project, None, "champion")
    assert (name, version, previous) == ("digits", candidate, None)
    assert str(client.get_model_version_by_alias("digits", "champion").version) == candidate
    again = promote_model(project, None, "champion")
    assert again[2] == version


def test_export_writes_verified_parts(
    project: Path, first_run: dict[str, Any], tmp_path: Path
) -> None:
    written = export_bundle(project, None, "c", tmp_path / "c")
    assert sorted(p.name for p in written) == ["model_data.cc", "model_data.h"]
    arduino = export_bundle(project, None, "arduino", tmp_path / "ino")
    assert any(p.name == "library.properties" for p in arduino)
    with pytest.raises(Exception, match="format"):
        export_bundle(project, None, "zip", tmp_path / "x")


def test_tampered_bundle_is_refused_by_export(
    project: Path, first_run: dict[str, Any], tmp_path: Path
) -> None:
    from tinyops.errors import BundleError

    src = project / stages(first_run)["bundle"]["output"]["bundle"]
    bad = tmp_path / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model.tflite":
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(copy.copy(info), data)
    with pytest.raises(BundleError, match=r"model\.tflite"):
        export_bundle(project, bad, "tflite", tmp_path / "out")


def test_corrupt_csv_source_is_a_data_error_and_writes_no_snapshot(tmp_path: Path) -> None:
    cfg = digits_config()
    cfg["data"]["sources"] = [{"kind": "csv", "path": "data/missing.csv", "label_column": "y"}]
    cfg["data"]["validation"] = {}
    write_config(tmp_path, cfg)
    with pytest.raises(DataError, match=r"missing\.csv"):
        run_project(tmp_path)
    assert not (tmp_path / ".tinyops/store/snapshots").exists() or not any(
        (tmp_path / ".tinyops/store/snapshots").iterdir()
    )


def test_failed_validation_stops_before_features(tmp_path: Path) -> None:
    write_config(tmp_path, digits_config(**{"data.validation.min_samples": 100_000}))
    record = run_project(tmp_path)
    by = stages(record)
    assert record["status"] == "failed"
    assert by["validate"]["status"] == "failed"
    assert "100000" in by["validate"]["error"].replace(",", "")
    assert by["features"]["status"] == "skipped"
    assert not (tmp_path / ".tinyops/store/features").exists()


def test_malformed_project_file_is_refused_before_any_work(tmp_path: Path) -> None:
    cfg = digits_config()
    cfg["training"]["epochz"] = 3
    write_config(tmp_path, cfg)
    with pytest.raises(ProjectError, match=r"training\.epochz: unknown key"):
        run_project(tmp_path)
    assert not (tmp_path / ".tinyops").exists()
