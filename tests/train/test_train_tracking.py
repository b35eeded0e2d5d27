"""Run tracking against a real MLflow SQLite store in tmp_path (no mocks)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tinyops.errors import StoreError
from tinyops.train.config import ModelConfig, TrainingConfig
from tinyops.train.tracking import (
    TAG_FEATURE_PIPELINE,
    TAG_GIT_COMMIT,
    TAG_SNAPSHOT_ID,
    RunTracker,
    default_tracking_uri,
    flatten_params,
    git_commit,
    lineage_tags,
)
from tinyops.train.trainer import TrainingData, train_model

SNAPSHOT = "5f" * 32  # a 64-hex-digit snapshot id
PIPELINE = "a1" * 32


def tiny_digits() -> TrainingData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32).reshape(-1, 64)
    y = bunch.target.astype(np.int64)
    return TrainingData(x[:300], y[:300], x[300:400], y[300:400], x[400:500], y[400:500])


def init_git_repo(path: Path) -> str:
    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
            cwd=path,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout.strip()

    git("init", "-q")
    (path / "tinyops.yaml").write_text("name: demo\n")
    git("add", "tinyops.yaml")
    git("commit", "-q", "-m", "init")
    return git("rev-parse", "HEAD")


def test_default_tracking_uri_is_the_project_sqlite_db(tmp_path: Path) -> None:
    uri = default_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/.tinyops/mlflow.db"
    assert (tmp_path / ".tinyops").is_dir()


def test_flatten_params() -> None:
    flat = flatten_params({"model": {"template": "mlp", "params": {"units": [8, 4]}}, "seed": 1})
    assert flat == {"model.template": "mlp", "model.params.units": "[8,4]", "seed": "1"}


def test_git_commit_inside_and_outside_a_repo(tmp_path: Path) -> None:
    outside = tmp_path / "plain"
    outside.mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    head = init_git_repo(repo)
    assert git_commit(repo) == head
    assert len(head) == 40
    tags = lineage_tags(repo, SNAPSHOT, PIPELINE)
    assert tags == {TAG_SNAPSHOT_ID: SNAPSHOT, TAG_FEATURE_PIPELINE: PIPELINE, TAG_GIT_COMMIT: head}
    if git_commit(tmp_path.parent) is None:  # only meaningful when tmp is not in a repo
        assert git_commit(outside) is None
        assert TAG_GIT_COMMIT not in lineage_tags(outside, SNAPSHOT, PIPELINE)


@pytest.mark.slow
def test_full_run_is_recorded_in_the_project_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from mlflow import MlflowClient

    project = tmp_path / "project"
    project.mkdir()
    head = init_git_repo(project)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # nothing may land in the working directory
    data = tiny_digits()
    model_cfg = ModelConfig(template="mlp", params={"hidden_units": [8]})
    train_cfg = TrainingConfig(epochs=3, batch_size=64)
    tracker = RunTracker(experiment="digits", project_dir=project)

    with tracker.start(run_name="first") as run:
        run.log_params(
            flatten_params({"model": model_cfg.model_dump(), "train": train_cfg.model_dump()})
        )
        run.log_dataset(SNAPSHOT, {"rows": 300, "files": ["a.csv"]}, data.x_train, data.y_train)
        run.set_tags(lineage_tags(project, SNAPSHOT, PIPELINE))
        result = train_model(model_cfg, train_cfg, data, callbacks=[run.epoch_callback()])
        run.log_metrics(result.metrics)
        model_uri = run.log_keras_model(result.model)
        report = tmp_path / "report.json"
        report.write_text('{"ok": true}')
        run.log_artifact(report, "reports")
        run_id = run.run_id

    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    record = client.get_run(run_id)
    assert record.info.status == "FINISHED"
    assert record.info.run_name == "first"
    assert record.data.params["model.params.hidden_units"] == "[8]"
    assert record.data.params["train.epochs"] == "3"
    assert record.data.metrics["test_accuracy"] == pytest.approx(result.metrics["test_accuracy"])
    # Per-epoch metrics, one per epoch at step = epoch index.
    history = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]
    np.testing.assert_allclose([m.value for m in history], result.history["val_loss"])
    # Dataset input: digest = snapshot id cut to MLflow's 36 characters.
    inputs = record.inputs.dataset_inputs
    assert len(inputs) == 1
    assert inputs[0].dataset.digest == SNAPSHOT[:36]
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert '"features_shape": [300, 64]' in inputs[0].dataset.profile
    # Lineage tags.
    assert record.data.tags[TAG_SNAPSHOT_ID] == SNAPSHOT
    assert record.data.tags[TAG_FEATURE_PIPELINE] == PIPELINE
    assert record.data.tags[TAG_GIT_COMMIT] == head
    # Artifacts live under the project, not in ./mlruns.
    artifact_paths = {a.path for a in client.list_artifacts(run_id)}
    assert {"datasets", "reports"} <= artifact_paths
    assert record.info.artifact_uri.startswith((project / ".tinyops" / "mlartifacts").as_uri())
    assert not (elsewhere / "mlruns").exists()

    # Registry: register the run's model by run id, as candidate.
    assert tracker.logged_model_uri(run_id) == model_uri
    version = tracker.register_model("digits-mlp", run_id)
    assert version == "1"
    tracker.set_alias("digits-mlp", "candidate", version)
    tracker.set_model_version_tags("digits-mlp", version, {"tinyops.bundle_sha256": "ff" * 32})
    assert client.get_model_version("digits-mlp", "1").tags == {"tinyops.bundle_sha256": "ff" * 32}
    assert client.get_model_version("digits-mlp", "1").run_id == run_id
    # The registered model loads back and predicts like the trained one.
    mlflow.set_tracking_uri(tracker.tracking_uri)
    loaded = mlflow.keras.load_model("models:/digits-mlp@candidate")
    np.testing.assert_allclose(
        loaded.predict(data.x_test, verbose=0),
        result.model.predict(data.x_test, verbose=0),
        rtol=1e-6,
    )
    # Promotion: candidate becomes champion; a second version takes over candidate.
    assert tracker.get_alias_version("digits-mlp", "candidate") == "1"
    assert tracker.get_alias_version("digits-mlp", "champion") is None
    tracker.set_alias("digits-mlp", "champion", version)
    assert tracker.register_model("digits-mlp", model_uri) == "2"
    tracker.set_alias("digits-mlp", "candidate", "2")
    assert tracker.get_alias_version("digits-mlp", "champion") == "1"
    assert tracker.get_alias_version("digits-mlp", "candidate") == "2"
    assert tracker.get_alias_version("no-such-model", "champion") is None
    with pytest.raises(StoreError, match="cannot set alias 'champion'"):
        tracker.set_alias("digits-mlp", "champion", "9")


@pytest.mark.slow
def test_resume_by_run_id_and_failed_status(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    tracker = RunTracker(experiment="exp", project_dir=tmp_path)
    with tracker.start() as run:
        run.log_metrics({"loss": 1.0}, step=0)
        run_id = run.run_id
    with tracker.start(run_id=run_id) as resumed:
        resumed.log_metrics({"loss": 0.5}, step=1)
    client = MlflowClient(tracking_uri=tracker.tracking_uri)
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == [1.0, 0.5]
    assert client.get_run(run_id).info.status == "FINISHED"

    with pytest.raises(RuntimeError), tracker.start() as failing:
        failed_id = failing.run_id
        raise RuntimeError("training crashed")
    assert client.get_run(failed_id).info.status == "FAILED"

    with pytest.raises(StoreError, match="cannot resume MLflow run 'nope'"):
        tracker.start(run_id="nope")
    with pytest.raises(StoreError, match="belongs to experiment"):
        RunTracker(experiment="other", project_dir=tmp_path).start(run_id=run_id)
    with pytest.raises(StoreError, match="has no logged model named 'model'"):
        tracker.register_model("m", run_id)
    # A finished run refuses further logging.
    with pytest.raises(StoreError, match="has ended"):
        run.log_params({"a": 1})
