"""Experiment tracking in the project's own MLflow store, offline and quiet.

Every project keeps its MLflow data beside its other local state: the tracking and model
registry database is `<project>/.tinyops/mlflow.db` (SQLite) and artifacts go under
`<project>/.tinyops/mlartifacts`, set as the experiment's artifact location when tinyops
creates it, so nothing lands in the working directory's `./mlruns`. `mlflow ui
--backend-store-uri sqlite:///<project>/.tinyops/mlflow.db` shows the runs.

A `RunTracker` is the project's store: it starts (or resumes, by id) runs of one
experiment and manages the model registry (versions; aliases such as `candidate` and
`champion`; version tags). The `TrackedRun` it returns records parameters, per-epoch
metrics (a Keras callback, `step` = epoch index from 0), the dataset snapshot the model
was trained on (an MLflow dataset input whose digest is the snapshot id), lineage tags
(snapshot id, feature-pipeline hash, git commit), the Keras model (MLflow's Keras 3
flavor: a `.keras` file, offline) and arbitrary artifacts.

MLflow's own INFO logging (database migrations, "registered model" banners) and progress
bars are silenced; warnings and errors still show.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from tinyops.errors import StoreError

if TYPE_CHECKING:
    import keras
    from mlflow import MlflowClient

# Lineage tag keys. The git commit uses MLflow's own key so its UI links the source.
TAG_SNAPSHOT_ID = "tinyops.snapshot_id"
TAG_FEATURE_PIPELINE = "tinyops.feature_pipeline_hash"
TAG_GIT_COMMIT = "mlflow.source.git.commit"

# MLflow stores a dataset digest in a 36-character column.
DATASET_DIGEST_CHARS = 36
# MLflow rejects parameter values longer than 6000 characters.
PARAM_VALUE_MAX_CHARS = 6000

RunStatus = Literal["FINISHED", "FAILED", "KILLED"]


def default_tracking_uri(project_dir: Path) -> str:
    """`sqlite:///<abs project>/.tinyops/mlflow.db` (the folder is created)."""
    store = Path(project_dir).resolve() / ".tinyops"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def default_artifact_root(project_dir: Path) -> Path:
    """`<abs project>/.tinyops/mlartifacts`: where runs of new experiments keep artifacts."""
    return Path(project_dir).resolve() / ".tinyops" / "mlartifacts"


def git_commit(path: Path) -> str | None:
    """The commit `HEAD` points to in the git work tree containing `path`, else None."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path,
            capture_output=True,
            text=True,
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = proc.stdout.strip()
    return commit if proc.returncode == 0 and commit else None


def lineage_tags(project_dir: Path, snapshot_id: str, feature_pipeline_hash: str) -> dict[str, str]:
    """Tags tying a run to its data snapshot, feature pipeline and (if any) git commit."""
    tags = {TAG_SNAPSHOT_ID: snapshot_id, TAG_FEATURE_PIPELINE: feature_pipeline_hash}
    commit = git_commit(project_dir)
    if commit is not None:
        tags[TAG_GIT_COMMIT] = commit
    return tags


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested mappings to dotted keys with string values, as MLflow params need.

    Lists and tuples are written as compact JSON (`[8,16]`), None as `None`.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, list | tuple):
            flat[name] = json.dumps(list(value), separators=(",", ":"))
        else:
            flat[name] = str(value)
    return flat


def quiet_mlflow() -> None:
    """Silence MLflow's INFO chatter and progress bars for a command-line tool."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)


class RunTracker:
    """The project's MLflow store: starts or resumes runs, and manages the model registry.

    `start()` returns a `TrackedRun`, a context manager that ends the run FINISHED, or
    FAILED when its block raises (KILLED on Ctrl-C). Registry methods (`register_model`,
    `set_alias`, `get_alias_version`, `set_model_version_tags`) need no run. Starting a run
    points MLflow's process-wide (fluent) tracking URI at this store, because dataset
    inputs and logged models attach to MLflow's active run only.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str,
        project_dir: Path,
    ) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.experiment = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri(self.project_dir)
        self._client: MlflowClient | None = None

    @property
    def client(self) -> MlflowClient:
        """An MlflowClient bound to this store (tracking and model registry)."""
        if self._client is None:
            import mlflow
            from mlflow import MlflowClient

            # After the import: importing mlflow configures its loggers at INFO.
            quiet_mlflow()
            # The SQL registry store resolves `models:/<id>` sources through the global
            # tracking URI, not the client's: without this it reads ./mlflow.db.
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def experiment_id(self) -> str:
        """Id of the experiment, created if missing.

        With a local store (SQLite or file URI) a new experiment keeps its artifacts under
        `<project>/.tinyops/mlartifacts`; a remote server chooses its own location.
        """
        client = self.client
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.tracking_uri.startswith(("sqlite:", "file:")):
            root = default_artifact_root(self.project_dir)
            root.mkdir(parents=True, exist_ok=True)
            location = root.as_uri()
        return str(client.create_experiment(self.experiment, artifact_location=location))

    def start(self, run_id: str | None = None, run_name: str | None = None) -> TrackedRun:
        """Start a new run (named `run_name`), or resume run `run_id` of this experiment."""
        import mlflow
        from mlflow.exceptions import MlflowException

        client = self.client
        experiment_id = self.experiment_id()
        if run_id is not None:
            try:
                existing = client.get_run(run_id)
            except MlflowException as exc:
                raise StoreError(
                    f"cannot resume MLflow run '{run_id}': not found in {self.tracking_uri}"
                ) from exc
            if existing.info.experiment_id != experiment_id:
                raise StoreError(
                    f"MLflow run '{run_id}' belongs to experiment id "
                    f"{existing.info.experiment_id}, not to '{self.experiment}' "
                    f"(id {experiment_id})"
                )
        active = mlflow.active_run()
        if active is not None:
            raise StoreError(
                f"another MLflow run ({active.info.run_id}) is still active in this process; "
                "end it before starting a new one"
            )
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        if run_id is not None:
            run = mlflow.start_run(run_id=run_id, log_system_metrics=False)
        else:
            run = mlflow.start_run(
                experiment_id=experiment_id, run_name=run_name, log_system_metrics=False
            )
        return TrackedRun(self, str(run.info.run_id))

    # -- model registry --------------------------------------------------------------------

    def logged_model_uri(self, run_id: str, name: str = "model") -> str:
        """URI (`models:/<model id>`) of the last model named `name` logged by run `run_id`."""
        from mlflow.exceptions import MlflowException

        client = self.client
        try:
            experiment_id = client.get_run(run_id).info.experiment_id
        except MlflowException as exc:
            raise StoreError(f"MLflow run '{run_id}' not found in {self.tracking_uri}") from exc
        found = client.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
            order_by=[{"field_name": "creation_time", "ascending": False}],
            max_results=1,
        )
        if not found:
            raise StoreError(
                f"MLflow run '{run_id}' has no logged model named '{name}'; "
                "log one with TrackedRun.log_keras_model first"
            )
        return f"models:/{found[0].model_id}"

    def register_model(
        self,
        name: str,
        source: str,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> str:
        """Register a new version of model `name`; return the version number (as text).

        `source` is a model URI (`models:/<model id>`, as `log_keras_model` returns), or a
        run id, meaning the last model that run logged.
        """
        from mlflow.exceptions import MlflowException

        client = self.client
        if ":/" in source:
            model_uri = source
            run_id = None
        else:
            model_uri = self.logged_model_uri(source)
            run_id = source
        model_id = model_uri.removeprefix("models:/")
        if model_id == model_uri or "/" in model_id or "@" in model_id:
            model_id = ""
        if run_id is None and model_id:
            run_id = client.get_logged_model(model_id).source_run_id
        try:
            client.get_registered_model(name)
        except MlflowException:
            client.create_registered_model(name)
        try:
            version = client.create_model_version(
                name,
                source=model_uri,
                run_id=run_id,
                tags=dict(tags) if tags else None,
                description=description,
                model_id=model_id or None,
            )
        except MlflowException as exc:
            raise StoreError(
                f"cannot register {model_uri} as a version of '{name}' in "
                f"{self.tracking_uri}: {exc.message}"
            ) from exc
        return str(version.version)

    def set_alias(self, name: str, alias: str, version: str | int) -> None:
        """Point `alias` (e.g. `candidate`, `champion`) of model `name` at `version`."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.set_registered_model_alias(name, alias, str(version))
        except MlflowException as exc:
            raise StoreError(
                f"cannot set alias '{alias}' of registered model '{name}' to version "
                f"{version}: {exc.message}"
            ) from exc

    def get_alias_version(self, name: str, alias: str) -> str | None:
        """The version `alias` points to in model `name`, or None if unset or unknown."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_model_version_tags(
        self, name: str, version: str | int, tags: Mapping[str, str]
    ) -> None:
        """Set tags on version `version` of registered model `name`."""
        from mlflow.exceptions import MlflowException

        try:
            for key, value in tags.items():
                self.client.set_model_version_tag(name, str(version), str(key), str(value))
        except MlflowException as exc:
            raise StoreError(
                f"cannot tag version {version} of registered model '{name}': {exc.message}"
            ) from exc


class TrackedRun:
    """One active MLflow run: parameters, metrics, dataset, tags, model and artifacts."""

    def __init__(self, tracker: RunTracker, run_id: str) -> None:
        self.tracker = tracker
        self.run_id = run_id
        self._ended = False

    def end(self, status: RunStatus = "FINISHED") -> None:
        """End the run with `status` (only the first call has an effect)."""
        if self._ended:
            return
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status=status)
        else:
            self.tracker.client.set_terminated(self.run_id, status=status)
        self._ended = True

    def __enter__(self) -> TrackedRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.end("FINISHED")
        elif issubclass(exc_type, KeyboardInterrupt):
            self.end("KILLED")
        else:
            self.end("FAILED")

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log a flat mapping of parameters (see `flatten_params` for nested configs)."""
        from mlflow.entities import Param

        items = []
        for key, value in params.items():
            text = str(value)
            if len(text) > PARAM_VALUE_MAX_CHARS:
                raise StoreError(
                    f"MLflow param '{key}' is {len(text)} characters long; at most "
                    f"{PARAM_VALUE_MAX_CHARS} fit, log it as an artifact instead"
                )
            items.append(Param(str(key), text))
        self._client().log_batch(self.run_id, params=items, synchronous=True)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log metric values, at `step` (an epoch index) when given, else step 0."""
        from mlflow.entities import Metric

        timestamp_ms = int(time.time() * 1000)
        items = [
            Metric(str(key), float(value), timestamp_ms, step or 0)
            for key, value in metrics.items()
        ]
        self._client().log_batch(self.run_id, metrics=items, synchronous=True)

    def epoch_callback(self) -> keras.callbacks.Callback:
        """A Keras callback logging every epoch's metrics (loss, val_loss...) at step=epoch."""
        import keras

        run = self

        class EpochMetrics(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                if logs:
                    run.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)

        return EpochMetrics()

    def log_dataset(
        self,
        snapshot_id: str,
        manifest: Mapping[str, Any],
        x: NDArray[Any],
        y: NDArray[Any] | None,
        context: str = "training",
        name: str | None = None,
    ) -> None:
        """Record the data snapshot a model used as an MLflow dataset input of the run.

        The dataset's digest is the snapshot id (cut to MLflow's 36 characters), so runs
        trained on the same snapshot share one dataset entry; its profile holds the array
        shapes, and the manifest is stored as `datasets/<snapshot_id>/manifest.json`.
        """
        import mlflow

        self._activate()
        dataset = mlflow.data.from_numpy(
            np.asarray(x),
            targets=None if y is None else np.asarray(y),
            name=name or f"snapshot-{snapshot_id[:12]}",
            digest=snapshot_id[:DATASET_DIGEST_CHARS],
        )
        mlflow.log_input(dataset, context=context, tags={TAG_SNAPSHOT_ID: snapshot_id})
        self._client().log_dict(
            self.run_id, dict(manifest), f"datasets/{snapshot_id}/manifest.json"
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags (see `lineage_tags`)."""
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items()]
        self._client().log_batch(self.run_id, tags=items, synchronous=True)

    def log_keras_model(self, model: keras.Model, name: str = "model") -> str:
        """Log `model` with MLflow's Keras 3 flavor (a `.keras` file); return its model URI.

        The signature (float32 tensors, batch axis -1) comes from the model's input and
        output shapes, and the pip requirements are pinned explicitly to the running
        Keras/TensorFlow versions, which avoids MLflow's requirement inference (it reloads
        the model in a subprocess). Load it back with `mlflow.keras.load_model(uri)`.
        """
        import keras as keras_module
        import mlflow
        import tensorflow as tf
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import Schema, TensorSpec

        def spec(shape: Any) -> Schema:
            dims = (-1, *(int(d) for d in tuple(shape)[1:]))
            return Schema([TensorSpec(np.dtype(np.float32), dims)])

        signature = ModelSignature(inputs=spec(model.input.shape), outputs=spec(model.output.shape))
        self._activate()
        info = mlflow.keras.log_model(
            model,
            name=name,
            signature=signature,
            pip_requirements=[
                f"keras=={keras_module.__version__}",
                f"tensorflow-cpu=={tf.__version__}",
            ],
        )
        return str(info.model_uri)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        """Copy a file or folder into the run's artifacts (under `artifact_path`)."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"cannot log artifact {path}: no such file or folder")
        if path.is_dir():
            self._client().log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self._client().log_artifact(self.run_id, str(path), artifact_path)

    def _client(self) -> MlflowClient:
        if self._ended:
            raise StoreError(f"MLflow run '{self.run_id}' has ended; start or resume it first")
        return self.tracker.client

    def _activate(self) -> None:
        """Check that this run is still MLflow's active (fluent) run.

        `mlflow.log_input` and `mlflow.keras.log_model` attach to the active run only.
        """
        import mlflow

        self._client()
        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise StoreError(
                f"MLflow run '{self.run_id}' is not the active run of this process "
                f"(active: {None if active is None else active.info.run_id})"
            )
