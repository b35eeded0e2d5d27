"""The tinyops pipeline: ingest → validate → features → train → optimize → profile →
device-validate → compile → bundle → register.

Each stage here is glue: it reads its slice of the project file and its upstream outputs,
calls the domain package that owns the work, and returns a small JSON record. Paths in
records are relative to the project folder so a project can be moved or cloned.

MLflow: the train stage opens the run; later stages resume the same run by id, so one
MLflow run holds the params, per-epoch metrics, dataset input, variants, profile and
bundle of one trained model, even when some stages came from the cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tinyops.errors import GateFailed, TinyopsError
from tinyops.pipeline.engine import Stage, StageContext, StageOutput
from tinyops.project.schema import Project
from tinyops.store.atomic import atomic_dir, atomic_write_json, sha256_bytes, sha256_file

STAGE_NAMES = (
    "ingest",
    "validate",
    "features",
    "train",
    "optimize",
    "profile",
    "device-validate",
    "compile",
    "bundle",
    "register",
)

ProgressFactory = Callable[[str, int], Callable[[int], None]]
"""(description, total) → advance(n): lets the CLI show progress bars without this module
knowing about Rich."""


def _no_progress(_desc: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def store_root(project_dir: Path) -> Path:
    return project_dir / ".tinyops" / "store"


def tracking_uri(project: Project, project_dir: Path) -> str:
    from tinyops.train.tracking import default_tracking_uri

    return project.tracking.uri or default_tracking_uri(project_dir)


def _rel(project_dir: Path, path: Path) -> str:
    return os.path.relpath(path, project_dir)


def _source_stats(project: Project, project_dir: Path) -> list[Any]:
    """Cheap fingerprint of the source files (path, size, mtime) for the ingest cache key.

    Like make, a touched file re-runs ingest; the snapshot it makes is content-addressed,
    so unchanged content gives the same snapshot id and everything downstream stays cached.
    """
    stats: list[Any] = []
    for src in project.data.sources:
        path_value = getattr(src, "path", None)
        if path_value is None:
            continue
        path = (project_dir / path_value).resolve()
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file()):
                st = f.stat()
                stats.append([str(f.relative_to(path)), st.st_size, st.st_mtime_ns])
        elif path.exists():
            st = path.stat()
            stats.append([str(path), st.st_size, st.st_mtime_ns])
        else:
            stats.append([str(path), None, None])
    return stats


def build_stages(project: Project, progress: ProgressFactory = _no_progress) -> list[Stage]:
    """The pipeline of `project`. Stage configs are the sections each stage depends on."""
    p = project

    def section(*names: str) -> Callable[[Path], Mapping[str, Any]]:
        def cfg(_project_dir: Path) -> Mapping[str, Any]:
            dumped = p.model_dump(mode="json")
            out: dict[str, Any] = {}
            for name in names:
                node: Any = dumped
                for part in name.split("."):
                    node = node[part]
                out[name] = node
            return out

        return cfg

    def _tracker(ctx: StageContext) -> Any:
        """The project's MLflow tracker (resumes runs by id in the later stages)."""
        from tinyops.train.tracking import RunTracker

        return RunTracker(
            tracking_uri(p, ctx.project_dir),
            experiment=p.tracking.experiment or p.name,
            project_dir=ctx.project_dir,
        )

    def _feature_set(ctx: StageContext) -> Any:
        from tinyops.features.store import load_feature_set

        return load_feature_set(store_root(ctx.project_dir), ctx.inputs["features"]["feature_set"])

    def ingest_cfg(project_dir: Path) -> Mapping[str, Any]:
        return {
            "sources": [s.model_dump(mode="json") for s in p.data.sources],
            "deduplicate": p.data.deduplicate,
            "split": p.data.split.model_dump(mode="json"),
            "stats": _source_stats(p, project_dir),
        }

    def ingest(ctx: StageContext) -> StageOutput:
        from tinyops.data.dedup import remove_duplicates
        from tinyops.data.snapshot import create_snapshot
        from tinyops.data.sources import load_sources

        ds = load_sources(p.data.sources, ctx.project_dir)
        dedup: dict[str, Any] | None = None
        if p.data.deduplicate:
            ds, dedup_report = remove_duplicates(ds)
            dedup = dedup_report.to_dict()
        snap = create_snapshot(ds, p.data.split, store_root(ctx.project_dir), {"dedup": dedup})
        return {
            "snapshot_id": snap.id,
            "path": _rel(ctx.project_dir, snap.path),
            "samples": len(snap.split),
            "classes": list(ds.classes),
            "dedup": dedup,
        }

    def validate(ctx: StageContext) -> StageOutput:
        from tinyops.data.snapshot import load_snapshot
        from tinyops.data.validate import validate as run_checks

        snap = load_snapshot(store_root(ctx.project_dir), ctx.inputs["ingest"]["snapshot_id"])
        report = run_checks(snap.dataset, p.data.validation)
        payload = report.to_dict()
        if not report.passed:
            failed = [c for c in report.checks if c.status == "fail"]
            detail = "; ".join(f"{c.name}: {c.detail}" for c in failed)
            raise GateFailed(f"data validation failed: {detail}", report)
        return {"snapshot_id": snap.id, "gate": {"passed": True, **payload}}

    def features(ctx: StageContext) -> StageOutput:
        from tinyops.data.snapshot import load_snapshot
        from tinyops.features.pipeline import FeaturePipeline
        from tinyops.features.store import materialize

        snap = load_snapshot(store_root(ctx.project_dir), ctx.inputs["validate"]["snapshot_id"])
        pipeline = FeaturePipeline(p.features.blocks, sample_rate=snap.dataset.sample_rate)
        splits = {name: snap.subset(name) for name in ("train", "validation", "test")}
        fs = materialize(store_root(ctx.project_dir), snap.id, pipeline, splits)
        return {
            "feature_set": fs.key,
            "path": _rel(ctx.project_dir, fs.path),
            "snapshot_id": snap.id,
            "pipeline_hash": fs.pipeline_hash,
            "input_shape": list(fs.input_shape),
        }

    def train(ctx: StageContext) -> StageOutput:
        from tinyops.train.tracking import git_commit
        from tinyops.train.trainer import TrainingData, train_model

        fs = _feature_set(ctx)
        data = TrainingData(
            fs.x("train"),
            fs.y("train"),
            fs.x("validation"),
            fs.y("validation"),
            fs.x("test"),
            fs.y("test"),
        )
        tracker = _tracker(ctx)
        with tracker.start(run_name=f"{p.name}-{ctx.run_id}") as run:
            run.log_params(_flat_params(p))
            run.set_tags(
                {
                    "tinyops.snapshot_id": fs.snapshot_id,
                    "tinyops.feature_pipeline_hash": fs.pipeline_hash,
                    "tinyops.feature_set": fs.key,
                    "tinyops.pipeline_run": ctx.run_id,
                    **(
                        {"mlflow.source.git.commit": c}
                        if (c := git_commit(ctx.project_dir))
                        else {}
                    ),
                }
            )
            run.log_dataset(fs.snapshot_id, fs.manifest, data.x_train, data.y_train)
            advance = progress("train", p.training.epochs)
            result = train_model(
                p.model, p.training, data, callbacks=[run.epoch_callback(), _EpochTick(advance)]
            )
            run.log_metrics(result.metrics)
            out_dir = store_root(ctx.project_dir) / "models" / ctx.key[:24]
            with atomic_dir(out_dir) as tmp:
                result.model.save(tmp / "model.keras")
                atomic_write_json(tmp / "metrics.json", result.metrics)
            run.log_keras_model(result.model)
            return {
                "mlflow_run_id": run.run_id,
                "model": _rel(ctx.project_dir, out_dir / "model.keras"),
                "metrics": result.metrics,
                "epochs_run": result.epochs_run,
                "task": result.task,
            }

    def optimize(ctx: StageContext) -> StageOutput:
        import keras

        from tinyops.optimize.convert import convert
        from tinyops.optimize.evaluate import compressed_size, evaluate_tflite, tflite_sparsity
        from tinyops.optimize.pruning import prune_model
        from tinyops.train.trainer import TrainingData

        train_out = ctx.inputs["train"]
        fs = _feature_set(ctx)
        model = keras.saving.load_model(ctx.project_dir / train_out["model"], compile=True)
        rep = fs.x("train")[: p.optimize.representative_samples]
        x_test, y_test = fs.x("test"), fs.y("test")
        task = train_out["task"]
        classify = task == "classification"
        float_acc = train_out["metrics"].get("test_accuracy")

        built: dict[str, bytes] = {}  # variant name → .tflite bytes
        advance = progress("optimize", len(p.optimize.variants) + (1 if p.optimize.pruning else 0))
        for variant in p.optimize.variants:
            built[variant] = convert(model, variant, rep)
            advance(1)
        if p.optimize.pruning is not None:
            data = TrainingData(
                fs.x("train"),
                fs.y("train"),
                fs.x("validation"),
                fs.y("validation"),
                x_test,
                y_test,
            )
            pruned = prune_model(model, data, p.optimize.pruning, p.training, task=task)
            built["pruned-int8"] = convert(pruned, "int8", rep)
            advance(1)

        out_dir = store_root(ctx.project_dir) / "models" / ctx.key[:24]
        rows: list[dict[str, Any]] = []
        with atomic_dir(out_dir) as tmp:
            for name, blob in built.items():
                (tmp / f"{name}.tflite").write_bytes(blob)
                ev = evaluate_tflite(blob, x_test, y_test, task=task)
                acc = ev.accuracy if classify else None
                rows.append(
                    {
                        "variant": name,
                        "size_bytes": len(blob),
                        "sparsity": round(float(tflite_sparsity(blob)), 4),
                        "compressed_bytes": compressed_size(blob),
                        "accuracy": None if acc is None else round(float(acc), 4),
                        "delta_vs_float": (
                            None
                            if acc is None or float_acc is None
                            else round(float(acc) - float(float_acc), 4)
                        ),
                        "sha256": sha256_bytes(blob),
                    }
                )
            atomic_write_json(tmp / "variants.json", rows)
        tracker = _tracker(ctx)
        with tracker.start(run_id=train_out["mlflow_run_id"]) as run:
            for row in rows:
                run.log_artifact(out_dir / f"{row['variant']}.tflite", "tflite")
                metrics = {"size_bytes": row["size_bytes"], "sparsity": row["sparsity"]}
                if row["accuracy"] is not None:
                    metrics["accuracy"] = row["accuracy"]
                run.log_metrics({f"tflite.{row['variant']}.{k}": v for k, v in metrics.items()})
            run.log_artifact(out_dir / "variants.json", "tflite")
        deploy: str = p.bundle.variant
        return {
            "path": _rel(ctx.project_dir, out_dir),
            "variants": rows,
            "deploy": {
                "variant": deploy,
                "tflite": _rel(ctx.project_dir, out_dir / f"{deploy}.tflite"),
                "sha256": next(r["sha256"] for r in rows if r["variant"] == deploy),
            },
            "float_accuracy": float_acc,
        }

    def profile_cfg(_project_dir: Path) -> Mapping[str, Any]:
        return {"target": p.target.model_dump(mode="json")}

    def profile(ctx: StageContext) -> StageOutput:
        from tinyops.targets.budget import check_budgets, require_within
        from tinyops.targets.catalog import load_board
        from tinyops.targets.profile import profile_tflite

        blob = (ctx.project_dir / ctx.inputs["optimize"]["deploy"]["tflite"]).read_bytes()
        board = load_board(p.target.board)
        source = str(ctx.project_dir / ctx.inputs["optimize"]["deploy"]["tflite"])
        prof = profile_tflite(blob, board, source=source)
        report = check_budgets(prof, p.target.budgets, board)
        tracker = _tracker(ctx)
        with tracker.start(run_id=ctx.inputs["train"]["mlflow_run_id"]) as run:
            run.log_metrics(
                {
                    f"profile.{board.id}.{k}": float(v)
                    for k, v in prof.to_dict().items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
            )
        require_within(report)  # BudgetExceeded names each metric over and by how much
        return {
            "board": board.id,
            "profile": prof.to_dict(),
            "gate": {"passed": True, **report.to_dict()},
        }

    def device_cfg(_project_dir: Path) -> Mapping[str, Any]:
        return {"gates": p.gates.model_dump(mode="json")}

    def device_validate(ctx: StageContext) -> StageOutput:
        import keras
        import numpy as np

        from tinyops.targets.device_validate import validate_on_device

        opt = ctx.inputs["optimize"]
        blob = (ctx.project_dir / opt["deploy"]["tflite"]).read_bytes()
        fs = _feature_set(ctx)
        x_test, y_test = fs.x("test"), fs.y("test")
        model = keras.saving.load_model(ctx.project_dir / ctx.inputs["train"]["model"])
        reference = np.asarray(model.predict(x_test, batch_size=256, verbose=0))
        source = str(ctx.project_dir / opt["deploy"]["tflite"])
        result = validate_on_device(blob, x_test, y_test, reference, source=source)
        classify = ctx.inputs["train"]["task"] == "classification"
        float_acc = opt["float_accuracy"]
        checks: list[dict[str, Any]] = []

        def check(name: str, value: float | None, limit: float | None, ok: bool) -> None:
            checks.append({"check": name, "value": value, "limit": limit, "passed": ok})

        g = p.gates
        if classify and result.accuracy is not None:
            acc = float(result.accuracy)
            if g.min_accuracy is not None:
                check("min_accuracy", acc, g.min_accuracy, acc >= g.min_accuracy)
            if g.max_accuracy_drop is not None and float_acc is not None:
                drop = float(float_acc) - acc
                check(
                    "max_accuracy_drop",
                    round(drop, 4),
                    g.max_accuracy_drop,
                    drop <= g.max_accuracy_drop + 1e-9,
                )
            if g.min_agreement is not None and result.agreement is not None:
                agr = float(result.agreement)
                check("min_agreement", agr, g.min_agreement, agr >= g.min_agreement)
        tracker = _tracker(ctx)
        summary = {
            "samples": int(result.n),
            "accuracy": result.accuracy,
            "agreement": result.agreement,
            "max_abs_output_diff": result.max_abs_output_diff,
        }
        with tracker.start(run_id=ctx.inputs["train"]["mlflow_run_id"]) as run:
            run.log_metrics({f"tflm.{k}": float(v) for k, v in summary.items() if v is not None})
        gate = {"passed": all(c["passed"] for c in checks), "checks": checks}
        if not gate["passed"]:
            bad = [c for c in checks if not c["passed"]]
            detail = ", ".join(f"{c['check']}: {c['value']} vs limit {c['limit']}" for c in bad)
            raise GateFailed(f"device validation on TFLM failed: {detail}", gate)
        return {**summary, "gate": gate}

    def compile_cfg(_project_dir: Path) -> Mapping[str, Any]:
        from tinyops.compile.layout import code_digest

        # The library's files carry the project's name and version; the compiler's own
        # code (kernels, lowering, planning, emitted C) enters through its digest.
        return {"name": p.name, "version": p.bundle.version, "compiler": code_digest()}

    def compile_model(ctx: StageContext) -> StageOutput:
        """The deploy model compiled to C (compiled/: sources, CMake, Arduino library) with
        the fitted feature pipeline as C beside it. A model the compiler refuses still
        bundles for TFLM: no files, and the record says why (`skipped`)."""
        from tinyops.compile.layout import bundle_members

        opt = ctx.inputs["optimize"]
        source = ctx.project_dir / opt["deploy"]["tflite"]
        files, record = bundle_members(
            source.read_bytes(),
            str(source),
            p.name,
            p.bundle.version,
            features=_feature_set(ctx).fitted_pipeline(),
        )
        out_dir = store_root(ctx.project_dir) / "compiled" / ctx.key[:24]
        with atomic_dir(out_dir) as tmp:
            for name, data in files.items():
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        return {
            "path": str(out_dir.relative_to(ctx.project_dir)),
            "files": sorted(files),
            **record,
        }

    def bundle_cfg(project_dir: Path) -> Mapping[str, Any]:
        from tinyops.bundle.keys import key_id

        # The key is part of what a bundle is, so it exists before the key is computed.
        kid = key_id(ensure_signing_key(project_dir / p.bundle.signing_key).public_key())
        return {
            "name": p.name,
            "bundle": p.bundle.model_dump(mode="json"),
            "board": p.target.board,
            "key_id": kid,
            "registered_model": p.tracking.registered_model or p.name,
            # What shapes the monitoring members; drift thresholds and alert rules are the
            # server's business and must not rebuild (and re-sign) a bundle.
            "monitoring": _monitoring_key(p),
        }

    def bundle(ctx: StageContext) -> StageOutput:
        import shutil
        from datetime import UTC, datetime, timedelta

        from tinyops.bundle.arduino import arduino_library
        from tinyops.bundle.bundle import write_bundle
        from tinyops.bundle.carray import model_data_sources
        from tinyops.bundle.golden import GoldenVectors
        from tinyops.bundle.keys import load_private_key
        from tinyops.bundle.manifest import TensorSpec
        from tinyops.optimize.quant import quantize
        from tinyops.targets.tflm import TflmModel

        signing_key = load_private_key(ctx.project_dir / p.bundle.signing_key)
        opt, prof = ctx.inputs["optimize"], ctx.inputs["profile"]["profile"]
        blob = (ctx.project_dir / opt["deploy"]["tflite"]).read_bytes()
        fs = _feature_set(ctx)
        source = str(ctx.project_dir / opt["deploy"]["tflite"])
        tflm = TflmModel(blob, source=source, isolate=False)  # profiled already
        inq, outq = tflm.input_details[0], tflm.output_details[0]
        in_spec, out_spec = _spec(TensorSpec, inq), _spec(TensorSpec, outq)
        k = min(p.bundle.golden_vectors, len(fs.y("test")))
        x_gold = fs.x("test")[:k]
        # Golden vectors are whole tensors, batch dimension (1) included.
        q_in = quantize(x_gold, inq.scale, inq.zero_point).reshape(k, *inq.shape)
        q_out = quantize(tflm.run(x_gold), outq.scale, outq.zero_point).reshape(k, *outq.shape)
        golden = GoldenVectors(
            inputs=q_in,
            outputs=q_out,
            input_quant=(inq.scale, inq.zero_point),
            output_quant=(outq.scale, outq.zero_point),
            tolerance=1,
        )
        ops = sorted(prof["ops"])
        monitoring, monitoring_record = _monitoring_members(
            p, ctx, fs, tflm, ctx.inputs["train"]["task"]
        )
        files: dict[str, bytes] = {"model.tflite": blob}
        files.update({n: t.encode() for n, t in model_data_sources(blob).items()})
        files.update(golden.to_files())
        files.update(monitoring)
        files.update(
            arduino_library(
                name=p.name,
                version=p.bundle.version,
                tflite_bytes=blob,
                golden=golden,
                input_spec=in_spec,
                output_spec=out_spec,
                arena_bytes=int(prof["arena_bytes"]),
                ops=ops,
            )
        )
        # The compile stage's library (compiled/), when the compiler took the model.
        comp = ctx.inputs["compile"]
        compiled_dir = ctx.project_dir / comp["path"]
        files.update({name: (compiled_dir / name).read_bytes() for name in comp["files"]})
        compiled_record = {k: v for k, v in comp.items() if k not in ("path", "files")}
        registered = p.tracking.registered_model or p.name
        run_id = ctx.inputs["train"]["mlflow_run_id"]
        tracker = _tracker(ctx)
        model_version = tracker.register_model(registered, run_id)
        now = datetime.now(UTC).replace(microsecond=0)
        out_dir = store_root(ctx.project_dir) / "bundles" / ctx.key[:24]
        with atomic_dir(out_dir) as tmp:
            path = write_bundle(
                tmp,
                name=p.name,
                version=p.bundle.version,
                target=p.target.board,
                files=files,
                private_key=signing_key,
                created_at=now,
                expires_at=now + timedelta(days=p.bundle.expires_days),
                model={
                    "input": in_spec,
                    "output": out_spec,
                    "ops": ops,
                    "variant": opt["deploy"]["variant"],
                    "task": ctx.inputs["train"]["task"],
                },
                measured={
                    k: prof[k]
                    for k in (
                        "arena_bytes",
                        "ram_bytes",
                        "flash_bytes",
                        "model_bytes",
                        "latency_ms",
                        "energy_mj",
                    )
                },
                dataset_snapshot_id=fs.snapshot_id,
                feature_pipeline_hash=fs.pipeline_hash,
                feature_params=fs.params,
                mlflow={"run_id": run_id, "model_name": registered, "model_version": model_version},
            )
            stored = out_dir / path.name
        dist = ctx.project_dir / p.bundle.output_dir
        dist.mkdir(parents=True, exist_ok=True)
        tmp_copy = dist / f".{stored.name}.tmp"
        shutil.copyfile(stored, tmp_copy)
        os.replace(tmp_copy, dist / stored.name)
        with tracker.start(run_id=run_id) as run:
            run.log_artifact(stored, "bundle")
        return {
            "bundle": _rel(ctx.project_dir, dist / stored.name),
            "stored": _rel(ctx.project_dir, stored),
            "sha256": sha256_file(stored),
            "version": p.bundle.version,
            "model_name": registered,
            "model_version": model_version,
            "mlflow_run_id": run_id,
            "monitoring": monitoring_record,
            "compiled": compiled_record,
        }

    def register(ctx: StageContext) -> StageOutput:

        b = ctx.inputs["bundle"]
        tracker = _tracker(ctx)
        tracker.set_alias(b["model_name"], "candidate", b["model_version"])
        tracker.set_model_version_tags(
            b["model_name"],
            b["model_version"],
            {
                "tinyops.bundle_sha256": b["sha256"],
                "tinyops.bundle_version": b["version"],
                "tinyops.snapshot_id": ctx.inputs["features"]["snapshot_id"],
                "tinyops.feature_pipeline_hash": ctx.inputs["features"]["pipeline_hash"],
            },
        )
        return {
            "model_name": b["model_name"],
            "model_version": b["model_version"],
            "alias": "candidate",
        }

    return [
        Stage("ingest", "1", (), ingest_cfg, ingest, paths=("path",), title="Ingest sources"),
        Stage("validate", "1", ("ingest",), section("data.validation"), validate),
        Stage("features", "1", ("validate",), section("features"), features, paths=("path",)),
        Stage(
            "train",
            "1",
            ("features",),
            section("model", "training", "tracking"),
            train,
            paths=("model",),
        ),
        Stage(
            "optimize",
            "1",
            ("features", "train"),
            section("optimize", "bundle.variant"),
            optimize,
            paths=("path",),
        ),
        Stage("profile", "1", ("optimize", "train"), profile_cfg, profile),
        Stage(
            "device-validate",
            "1",
            ("features", "train", "optimize"),
            device_cfg,
            device_validate,
        ),
        Stage(
            "compile",
            "1",
            ("features", "optimize"),
            compile_cfg,
            compile_model,
            paths=("path",),
            title="Compile to C",
        ),
        Stage(
            "bundle",
            # 2: the bundle carries monitoring/profile.json and monitoring/policy.json;
            # 3: the compiled library comes from the compile stage.
            "3",
            ("features", "train", "optimize", "profile", "device-validate", "compile"),
            bundle_cfg,
            bundle,
            paths=("bundle", "stored"),
        ),
        Stage("register", "1", ("features", "bundle"), section("tracking"), register),
    ]


def ensure_signing_key(path: Path) -> Any:
    """Load the project's Ed25519 signing key, creating it on first use (like ssh-keygen).

    The private key is written with mode 0600 next to its public half, which is what a
    fleet server is given as a trusted key.
    """
    from tinyops.bundle.keys import generate_keypair, load_private_key

    if not path.exists():
        generate_keypair(path.parent, name=path.stem)
    return load_private_key(path)


def _monitoring_members(
    project: Project, ctx: StageContext, fs: Any, tflm: Any, task: str
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The bundle's monitoring members (reference profile and policy) and a summary record.

    The profile is computed on the TRAINING split's summary rows. The model outputs in it
    come from the int8 deploy model run on TFLM, not from the float Keras model: devices
    report the confidences and predictions of the int8 model, so a device that sees exactly
    the training distribution must not show prediction or confidence drift merely because
    quantization moved a probability across a bin edge.
    """
    import numpy as np

    from tinyops.data.snapshot import load_snapshot
    from tinyops.errors import DataError, ProjectError
    from tinyops.monitor.policy import MonitoringPolicy, monitoring_files
    from tinyops.monitor.reference import build_reference_profile
    from tinyops.monitor.summaries import summarizer

    mon = project.monitoring
    snapshot = load_snapshot(store_root(ctx.project_dir), fs.snapshot_id)
    try:
        summary = summarizer(
            mon.summaries,
            fs.input_shape,
            modality=snapshot.dataset.modality,
            column_names=snapshot.dataset.feature_names,
        )
    except DataError as exc:
        raise ProjectError(f"monitoring.summaries: {exc}") from exc
    x_train = fs.x("train")
    outputs: dict[str, Any] = {}
    if task == "classification":
        out = tflm.run(x_train)
        out = out.reshape(out.shape[0], -1)
        if np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0:
            outputs["probabilities"] = out
        else:  # not probabilities (no softmax or sigmoid): the class distribution only
            outputs["predictions"] = np.argmax(out, axis=1)
            outputs["num_classes"] = out.shape[1]
    # Reference rows for the server's KS test ship only when devices may send samples
    # to compare them with; seed 0 keeps the bundle reproducible.
    keep = mon.sampling.reference_samples if mon.sampling.max_samples_per_window > 0 else 0
    profile = build_reference_profile(
        summary.summarize(x_train),
        summary.feature_names,
        bins=mon.bins,
        reference_samples=keep,
        seed=0,
        **outputs,
    )
    accuracy = ctx.inputs["device-validate"].get("accuracy")
    policy = MonitoringPolicy(
        window_s=mon.window_s,
        summaries=summary.kind,
        max_samples_per_window=mon.sampling.max_samples_per_window,
        # The int8 model's accuracy on the test split through TFLM: what devices run.
        reference_accuracy=None if accuracy is None else round(float(accuracy), 6),
    )
    record = {
        "summaries": summary.kind,
        "features": list(profile.feature_names),
        "reference_rows": profile.rows,
        "window_s": mon.window_s,
        "max_samples_per_window": mon.sampling.max_samples_per_window,
        "reference_samples": 0 if profile.samples is None else len(profile.samples),
    }
    return monitoring_files(profile, policy), record


def _monitoring_key(project: Project) -> dict[str, Any]:
    """What of `monitoring:` shapes the bundle's members (its part of the cache key).

    `sampling.reference_samples` only counts when devices may send samples (no reference
    rows ship otherwise), so projects without sampling keep their cached bundles.
    """
    key: dict[str, Any] = project.monitoring.model_dump(
        mode="json", include={"window_s", "bins", "summaries", "sampling"}
    )
    if project.monitoring.sampling.max_samples_per_window == 0:
        key["sampling"].pop("reference_samples", None)
    return key


def _spec(cls: Any, d: Any) -> Any:
    """A TFLM tensor's details as the manifest's TensorSpec."""
    return cls(shape=tuple(d.shape), dtype=d.dtype, scale=d.scale, zero_point=d.zero_point)


class _EpochTick:
    """A Keras callback that advances a progress bar once per epoch (lazy Keras import)."""

    def __new__(cls, advance: Callable[[int], None]) -> Any:
        import keras

        class Tick(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
                advance(1)

        return Tick()


def _flat_params(project: Project) -> dict[str, Any]:
    """Project sections that shape the model, flattened to MLflow's key=value params."""
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = node

    dumped = project.model_dump(mode="json")
    for name in ("model", "training", "optimize", "features", "target"):
        walk(name, dumped[name])
    return out


__all__ = [
    "STAGE_NAMES",
    "GateFailed",
    "TinyopsError",
    "build_stages",
    "sha256_bytes",
    "sha256_file",
    "store_root",
    "tracking_uri",
]
