"""The stage graph runner with content-hash caching.

A stage is a pure-ish function from (its configuration, the outputs of the stages it
depends on) to a JSON-safe output record. Its cache key is the sha256 of

    stage name ‖ stage code version ‖ canonical JSON of its config ‖ digests of the
    upstream stages' output records

so a re-run with nothing changed does no work, and changing one parameter re-runs only the
stages whose key it enters and, when their output changes, their dependants. A stage that
re-runs and produces the same output (say, ingest after a file was touched but not
changed: same content, same snapshot id) leaves everything downstream cached. Outputs
point at immutable, content-addressed entries in the store; a cache entry is trusted only
while every path it names still exists.

A failed stage (an exception, or a gate that said no) is recorded in the run but never
cached, so the next run tries it again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinyops.errors import GateFailed, StoreError, TinyopsError
from tinyops.store.atomic import atomic_write_json, canonical_json, sha256_bytes

StageOutput = dict[str, Any]


@dataclass(frozen=True)
class StageContext:
    """What a stage function receives: its config, upstream outputs and the run's workspace."""

    project_dir: Path
    state_dir: Path  # the project's .tinyops/ folder
    config: Mapping[str, Any]
    inputs: Mapping[str, StageOutput]  # upstream stage name → its output record
    run_id: str
    key: str  # this stage's cache key: a stable name for the entries it writes


@dataclass(frozen=True)
class Stage:
    """One node of the pipeline graph.

    `config` is called at plan time and must be cheap: it returns the JSON-safe values that
    decide the stage's result (config sections, source file stats, a key id...).
    `paths` names the keys of the output record that hold store paths (relative to the
    project dir) that must still exist for a cache hit to count.
    """

    name: str
    version: str
    depends_on: tuple[str, ...]
    config: Callable[[Path], Mapping[str, Any]]
    run: Callable[[StageContext], StageOutput]
    paths: tuple[str, ...] = ()
    title: str = ""


@dataclass
class StageRecord:
    name: str
    key: str
    status: str = "pending"  # pending | ok | cached | failed | skipped
    cache_hit: bool = False
    duration_s: float = 0.0
    output: StageOutput = field(default_factory=dict)
    error: str | None = None
    gate: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "status": self.status,
            "cache_hit": self.cache_hit,
            "duration_s": round(self.duration_s, 3),
            "output": self.output,
            "error": self.error,
            "gate": self.gate,
        }


@dataclass
class RunRecord:
    run_id: str
    project: str
    started_at: str
    finished_at: str | None = None
    status: str = "running"  # running | succeeded | failed
    stages: list[StageRecord] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "project": self.project,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "status": self.status,
            "error": self.error,
            "stages": [s.to_dict() for s in self.stages],
        }

    def stage(self, name: str) -> StageRecord:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


Listener = Callable[[str, StageRecord], None]  # (event: "start"|"end", record)


class Pipeline:
    """Runs stages in dependency order with the cache in `state_dir/cache/`."""

    def __init__(self, project: str, project_dir: Path, stages: Sequence[Stage]) -> None:
        self.project = project
        self.project_dir = project_dir
        self.state_dir = project_dir / ".tinyops"
        self.stages = list(stages)
        names = [s.name for s in self.stages]
        for s in self.stages:
            for dep in s.depends_on:
                if dep not in names[: names.index(s.name)]:
                    raise ValueError(f"stage {s.name!r} depends on {dep!r}, not defined before it")

    def _cache_path(self, stage: Stage, key: str) -> Path:
        return self.state_dir / "cache" / stage.name / f"{key}.json"

    def _cached(self, stage: Stage, key: str) -> StageOutput | None:
        import json

        path = self._cache_path(stage, key)
        if not path.exists():
            return None
        try:
            output: StageOutput = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a damaged entry is a miss; the stage rewrites it
        for k in stage.paths:
            value = output.get(k)
            if value and not (self.project_dir / value).exists():
                return None
        return output

    def run(
        self,
        until: str | None = None,
        force: Sequence[str] = (),
        listener: Listener | None = None,
    ) -> RunRecord:
        run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        record = RunRecord(run_id=run_id, project=self.project, started_at=_now())
        outputs: dict[str, StageOutput] = {}
        failed = False
        try:
            for stage in self.stages:
                if failed:
                    record.stages.append(StageRecord(stage.name, key="", status="skipped"))
                    continue
                config = stage.config(self.project_dir)
                key = sha256_bytes(
                    canonical_json(
                        {
                            "stage": stage.name,
                            "version": stage.version,
                            "config": config,
                            "upstream": {
                                d: sha256_bytes(canonical_json(outputs[d]))
                                for d in stage.depends_on
                            },
                        }
                    )
                )
                rec = StageRecord(stage.name, key=key)
                record.stages.append(rec)
                if listener:
                    listener("start", rec)
                cached = None if stage.name in force else self._cached(stage, key)
                t0 = time.perf_counter()
                if cached is not None:
                    rec.status, rec.cache_hit, rec.output = "cached", True, cached
                else:
                    ctx = StageContext(
                        project_dir=self.project_dir,
                        state_dir=self.state_dir,
                        config=config,
                        inputs={d: outputs[d] for d in stage.depends_on},
                        run_id=run_id,
                        key=key,
                    )
                    try:
                        rec.output = stage.run(ctx)
                    except GateFailed as exc:
                        rec.status, rec.error = "failed", str(exc)
                        rec.gate = _gate_payload(exc)
                        failed = True
                        record.error = f"{stage.name}: {exc}"
                    except TinyopsError as exc:
                        rec.status, rec.error = "failed", str(exc)
                        failed = True
                        record.error = f"{stage.name}: {exc}"
                        raise
                    else:
                        rec.status = "ok"
                        atomic_write_json(self._cache_path(stage, key), rec.output)
                rec.duration_s = time.perf_counter() - t0
                if rec.output.get("gate"):
                    rec.gate = rec.output["gate"]
                outputs[stage.name] = rec.output
                if listener:
                    listener("end", rec)
                if stage.name == until:
                    break
        except TinyopsError:
            record.status = "failed"
            raise
        except BaseException as exc:
            record.status = "failed"
            record.error = f"{type(exc).__name__}: {exc}"
            raise
        else:
            record.status = "failed" if failed else "succeeded"
        finally:
            record.finished_at = _now()
            self.save(record)
        return record

    def save(self, record: RunRecord) -> None:
        runs = self.state_dir / "runs"
        atomic_write_json(runs / f"{record.run_id}.json", record.to_dict())
        atomic_write_json(runs / "latest.json", record.to_dict())


def _gate_payload(exc: GateFailed) -> dict[str, Any]:
    report = exc.report
    to_dict = getattr(report, "to_dict", None)
    if callable(to_dict):
        payload = to_dict()
        if isinstance(payload, dict):
            return {"passed": False, **payload}
    if isinstance(report, dict):
        return {"passed": False, **report}
    return {"passed": False, "message": str(exc)}


def load_run(state_dir: Path, run_id: str = "latest") -> dict[str, Any]:
    """Read a run record (`latest` by default) from `state_dir/runs/`."""
    import json

    path = state_dir / "runs" / f"{run_id}.json"
    if not path.exists():
        raise StoreError(f"no pipeline run recorded at {path}: run `tinyops run` first")
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise StoreError(f"{path}: damaged run record ({exc})") from exc
    return data


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
