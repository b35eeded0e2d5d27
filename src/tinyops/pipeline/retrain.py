"""Continuous retraining: newly labeled field data → new snapshot → pipeline → canary.

`tinyops retrain` in a project (docs/retrain.md) runs one *cycle*:

    1. policy      `monitoring.retrain` of tinyops.yaml (RetrainConfig)
    2. conditions  a drift alert fires for the release in the field (name@bundle.version),
                   if the policy requires one (GET /api/v1/alerts?state=firing, rules named
                   in `drift_rules`), and at least `min_new_samples` labeled samples arrived
                   since the last retrain (GET /api/v1/samples?since_id=<last consumed id>)
    3. data        the samples are written as an NPZ file named by their id range
                   (<data_dir>/<dataset>-<first>-<last>.npz) and added to `data.sources` of
                   tinyops.yaml, whose `bundle.version` is bumped; the pipeline's data stage
                   then builds a new snapshot with its usual validation, deduplication and
                   screening: retraining data gets no shortcut
    4. pipeline    `run_project`: features → train → optimize → gates → signed bundle
    5. release     if every gate passed: upload the bundle and create a canary deployment
                   (phases, tags, max failure of the policy) to the devices running the
                   previous version; with `require_approval`, stop and wait for
                   `tinyops retrain approve`

Outcomes map onto exit codes: `done` and `waiting` (nothing to do yet, or an approval is
pending) are 0, `gate-failed` is 3, errors are 1. After a failed gate the project file is
restored and the data file removed; samples refused by the data gate (ingest, validate)
are consumed and listed in the history as rejected (more data would not make them pass),
while after a model gate they stay unconsumed, so a later cycle retries with more data.

State lives in `<project>/.tinyops/retrain.json`, written atomically: the id of the last
sample consumed, the release waiting for approval or deployment, and the history of
cycles. A cycle that built a release records it as pending *before* uploading, so an
upload that fails (server unreachable) is resumed by the next `retrain` or `approve`.

The project file is edited in place, line by line, so that its comments and layout stay
as the user wrote them; the result is loaded again and checked before anything runs.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from tinyops.errors import DataError, ProjectError, StoreError, UsageError
from tinyops.project.loader import find_project_file, load_project
from tinyops.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

    from tinyops.monitor.config import RetrainConfig
    from tinyops.project.schema import Project

STATE_FILE: Final = "retrain.json"
# Stages whose gate judges the data rather than the model.
DATA_STAGES: Final = frozenset({"ingest", "validate"})
Outcome = Literal["done", "waiting", "gate-failed"]
Say = Callable[[str], None]


# --- pure parts ---------------------------------------------------------------------------


def bump_version(version: str, part: Literal["patch", "minor", "major"] = "patch") -> str:
    """`1.2.3` → `1.2.4` (patch), `1.3.0` (minor), `2.0.0` (major); pre-release and build
    metadata are dropped (`1.2.3-rc.1` → `1.2.4`)."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", version)
    if match is None:
        raise ProjectError(f"bundle.version: {version!r} is not MAJOR.MINOR.PATCH; cannot bump")
    major, minor, patch = (int(g) for g in match.groups())
    if part == "major":
        return f"{major + 1}.0.0"
    if part == "minor":
        return f"{major}.{minor + 1}.0"
    return f"{major}.{minor}.{patch + 1}"


def release_label(name: str, version: str) -> str:
    """How the server labels a release in metrics and alerts."""
    return f"{name}@{version}"


def drift_alerts(
    alerts: Sequence[Mapping[str, Any]], rules: Sequence[str], release: str
) -> list[Mapping[str, Any]]:
    """Firing alerts of the drift `rules` about `release` (label `release`)."""
    wanted = set(rules)
    return [
        a
        for a in alerts
        if a.get("state") == "firing"
        and a.get("rule") in wanted
        and (a.get("labels") or {}).get("release") == release
    ]


@dataclass(frozen=True)
class DataShape:
    """What a sample of the project's data looks like (from its latest snapshot)."""

    modality: str
    sample_shape: tuple[int, ...]
    classes: tuple[str, ...]
    feature_names: tuple[str, ...] | None


def samples_to_arrays(
    items: Sequence[Mapping[str, Any]], shape: DataShape
) -> tuple[NDArray[Any], NDArray[np.int64]]:
    """(x, y) of labeled samples in the project's layout; a DataError names the sample id.

    A sample is `features` (flat, reshaped to the sample shape) or `values` (by the
    snapshot's feature names); its label is a class index or a class name.
    """
    import numpy as np

    size = int(np.prod(shape.sample_shape))
    rows: list[NDArray[np.float64]] = []
    labels: list[int] = []
    index = {name: i for i, name in enumerate(shape.classes)}
    for item in items:
        where = f"sample {item.get('id')}"
        if item.get("features") is not None:
            row = np.asarray(item["features"], dtype=np.float64)
        elif item.get("values") is not None:
            if shape.feature_names is None:
                raise DataError(f"{where}: named values, but the project's data has no names")
            missing = sorted(set(shape.feature_names) - set(item["values"]))
            if missing:
                raise DataError(f"{where}: values lack the features {missing}")
            row = np.asarray([item["values"][n] for n in shape.feature_names], dtype=np.float64)
        else:
            raise DataError(f"{where}: neither features nor values")
        if row.size != size:
            raise DataError(
                f"{where}: {row.size} features, but a sample of the project's data has "
                f"{size} (shape {list(shape.sample_shape)})"
            )
        label = item["label"]
        if isinstance(label, str):
            if label not in index:
                raise DataError(f"{where}: label {label!r} is not a class of {list(shape.classes)}")
            label = index[label]
        if not 0 <= int(label) < len(shape.classes):
            raise DataError(
                f"{where}: label {label} is not a class index 0..{len(shape.classes) - 1}"
            )
        rows.append(row.reshape(shape.sample_shape))
        labels.append(int(label))
    x = np.stack(rows) if rows else np.zeros((0, *shape.sample_shape))
    if shape.modality in ("image", "text"):
        # Integer data (pixels, token ids): a fractional value is not one of them.
        if not np.array_equal(x, np.round(x)):
            raise DataError(f"{shape.modality} samples must hold whole numbers")
        x = x.astype(np.uint8 if shape.modality == "image" else np.int32)
    else:
        x = x.astype(np.float32)
    return x, np.asarray(labels, dtype=np.int64)


def _top_level_block(lines: list[str], key: str) -> tuple[int, int] | None:
    """(first, end) line indices of the top-level `key:` block (end exclusive)."""
    start = next((i for i, ln in enumerate(lines) if re.match(rf"^{key}:(\s|$)", ln)), None)
    if start is None:
        return None
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
        end += 1
    return start, end


def set_bundle_version(text: str, version: str) -> str:
    """The project file text with `bundle.version` set to `version` (comments kept)."""
    lines = text.splitlines(keepends=True)
    block = _top_level_block(lines, "bundle")
    value = re.compile(r"(\bversion:\s*)(['\"]?)[0-9A-Za-z.+-]+\2")
    if block is None:
        tail = "" if text.endswith("\n") or not text else "\n"
        return f"{text}{tail}bundle:\n  version: {version}\n"
    start, end = block
    for i in range(start, end):
        if value.search(lines[i]) and (i == start or re.match(r"^\s+version:", lines[i])):
            lines[i] = value.sub(
                lambda m: f"{m.group(1)}{m.group(2)}{version}{m.group(2)}", lines[i], count=1
            )
            return "".join(lines)
    if re.match(r"^bundle:\s*\{", lines[start]):
        lines[start] = lines[start].replace("{", f"{{version: {version}, ", 1)
    else:
        lines.insert(start + 1, f"  version: {version}\n")
    return "".join(lines)


def add_data_source(text: str, source: str) -> str:
    """The project file text with `source` (a one-line YAML flow mapping) appended to the
    block list `data.sources` (comments kept); a ProjectError when there is no such list."""
    lines = text.splitlines(keepends=True)
    block = _top_level_block(lines, "data")
    if block is None:
        raise ProjectError("tinyops.yaml has no data: section to add the new samples to")
    start, end = block
    key = next(
        (i for i in range(start + 1, end) if re.match(r"^\s+sources:\s*(#.*)?$", lines[i])), None
    )
    if key is None:
        raise ProjectError(
            "data.sources must be a block list (one `- kind: ...` per line) for "
            "`tinyops retrain` to add the new samples to it"
        )
    indent = len(lines[key]) - len(lines[key].lstrip())
    item_indent: int | None = None
    last = key
    for i in range(key + 1, end):
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            continue
        this = len(lines[i]) - len(lines[i].lstrip())
        if this < indent or (this == indent and not stripped.startswith("- ")):
            break
        if item_indent is None and stripped.startswith("- "):
            item_indent = this
        last = i
    if item_indent is None:
        item_indent = indent + 2
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines.insert(last + 1, " " * item_indent + f"- {source}\n")
    return "".join(lines)


# --- state --------------------------------------------------------------------------------


@dataclass
class PendingRelease:
    """A release built by a retrain cycle, not yet deployed."""

    version: str
    previous_version: str
    bundle: str
    first_sample_id: int
    last_sample_id: int
    samples: int
    data_file: str
    built_at: str
    needs_approval: bool


@dataclass
class RetrainState:
    last_sample_id: int = 0
    pending: PendingRelease | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, root: Path) -> RetrainState:
        path = root / ".tinyops" / STATE_FILE
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text())
            pending = raw.get("pending")
            return cls(
                last_sample_id=int(raw["last_sample_id"]),
                pending=None if pending is None else PendingRelease(**pending),
                history=list(raw.get("history", [])),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path}: damaged retrain state ({exc})") from exc

    def save(self, root: Path) -> None:
        atomic_write_json(root / ".tinyops" / STATE_FILE, asdict(self))


# --- the cycle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    message: str
    version: str | None = None
    deployment_id: int | None = None


@dataclass(frozen=True)
class Fleet:
    """Where releases go: the fleet server and an API token able to upload and deploy."""

    server: str
    token: str


def _data_shape(root: Path) -> DataShape:
    """The layout of the data of the newest run that made a snapshot."""
    from tinyops.data.snapshot import load_snapshot
    from tinyops.pipeline.stages import store_root

    for path in sorted((root / ".tinyops" / "runs").glob("2*.json"), reverse=True):
        record = json.loads(path.read_text())
        ingest = next((s for s in record["stages"] if s["name"] == "ingest"), None)
        if ingest is not None and (ingest.get("output") or {}).get("snapshot_id"):
            ds = load_snapshot(store_root(root), ingest["output"]["snapshot_id"]).dataset
            return DataShape(
                modality=ds.modality,
                sample_shape=tuple(int(n) for n in ds.x.shape[1:]),
                classes=tuple(ds.classes),
                feature_names=None if ds.feature_names is None else tuple(ds.feature_names),
            )
    raise StoreError("no snapshot of the project's data yet: run `tinyops run` first")


def _write_npz(path: Path, x: NDArray[Any], y: NDArray[Any]) -> None:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, x=x, y=y)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def _source_entry(relative: str, shape: DataShape) -> str:
    classes = json.dumps(list(shape.classes))
    return (
        f"{{kind: npz, path: {json.dumps(relative)}, modality: {shape.modality}, "
        f"classes: {classes}}}"
    )


def run_cycle(
    project_dir: Path,
    fleet: Fleet,
    *,
    dry_run: bool = False,
    say: Say = lambda _m: None,
    run_pipeline: Callable[[Path], dict[str, Any]] | None = None,
) -> Result:
    """One retrain cycle (module docstring). `run_pipeline` runs the project's pipeline
    and returns its run record (default: `run_project` without a console)."""
    from tinyops.fleet.client import list_alerts, list_samples

    project, root = load_project(project_dir)
    policy = project.monitoring.retrain
    state = RetrainState.load(root)
    if state.pending is not None:
        pending = state.pending
        if pending.needs_approval:
            return Result(
                "waiting",
                f"{project.name} {pending.version} passed its gates and waits for approval: "
                "`tinyops retrain approve`",
                pending.version,
            )
        say(f"resuming the deployment of {project.name} {pending.version}")
        return _release(root, project, fleet, state, dry_run=dry_run, say=say)

    current = project.bundle.version
    label = release_label(project.name, current)
    if policy.require_drift_alert:
        firing = drift_alerts(
            list_alerts(fleet.server, fleet.token, "firing"), policy.drift_rules, label
        )
        if not firing:
            return Result("waiting", f"no drift alert fires for {label}: nothing to retrain")
        rules = sorted({str(a["rule"]) for a in firing})
        say(f"{len(firing)} drift alert(s) firing for {label}: {', '.join(rules)}")
    dataset = policy.dataset or project.name
    items = list_samples(fleet.server, fleet.token, dataset, state.last_sample_id)
    if len(items) < policy.min_new_samples:
        return Result(
            "waiting",
            f"{len(items)} new labeled sample(s) in {dataset} since id {state.last_sample_id}; "
            f"the policy wants {policy.min_new_samples}",
        )
    first, last = int(items[0]["id"]), int(items[-1]["id"])
    new_version = bump_version(current, policy.bump)
    relative = f"{policy.data_dir.rstrip('/')}/{dataset.replace('/', '-')}-{first}-{last}.npz"
    say(
        f"{len(items)} new sample(s) (ids {first}..{last}) → {relative}; "
        f"{project.name} {current} → {new_version}"
    )
    if dry_run:
        return Result(
            "waiting",
            f"dry run: would retrain {project.name} {new_version} on {len(items)} new samples "
            f"and deploy it in phases {policy.phases}",
            new_version,
        )

    shape = _data_shape(root)
    x, y = samples_to_arrays(items, shape)
    data_path = root / relative
    project_file = find_project_file(root)
    original = project_file.read_text(encoding="utf-8")
    edited = set_bundle_version(
        add_data_source(original, _source_entry(relative, shape)), new_version
    )
    _write_npz(data_path, x, y)
    atomic_write_text(project_file, edited)
    try:
        check, _ = load_project(root)
        if check.bundle.version != new_version or not any(
            str(getattr(s, "path", "")) == relative for s in check.data.sources
        ):
            raise ProjectError(
                f"{project_file}: could not add the new data source and version by editing "
                "the file; add them by hand"
            )
        record = (run_pipeline or _run_quietly)(root)
    except BaseException:
        _restore(project_file, original, data_path)
        raise
    if record["status"] != "succeeded":
        _restore(project_file, original, data_path)
        failed = next((s for s in record["stages"] if s["status"] == "failed"), None)
        why = f"{failed['name']}: {failed.get('error')}" if failed else str(record.get("error"))
        # The data gate refused the samples themselves: more data would not make them pass,
        # so they are consumed (and listed in the history); a model gate leaves them for
        # the next cycle, which has more data to learn from.
        rejected = failed is not None and failed["name"] in DATA_STAGES
        if rejected:
            state.last_sample_id = last
        state.history.append(
            {
                "at": _now(),
                "outcome": "rejected" if rejected else "gate-failed",
                "version": new_version,
                "samples": [first, last],
                "reason": why,
            }
        )
        state.save(root)
        what = f"samples {first}..{last} rejected by the data gate" if rejected else "not released"
        return Result(
            "gate-failed", f"{project.name} {new_version} did not pass ({what}): {why}", new_version
        )

    bundle = next(s for s in record["stages"] if s["name"] == "bundle")["output"]["bundle"]
    state.last_sample_id = last
    state.pending = PendingRelease(
        version=new_version,
        previous_version=current,
        bundle=str(bundle),
        first_sample_id=first,
        last_sample_id=last,
        samples=len(items),
        data_file=relative,
        built_at=_now(),
        needs_approval=policy.require_approval,
    )
    state.save(root)
    if policy.require_approval:
        return Result(
            "waiting",
            f"{project.name} {new_version} passed every gate; waiting for approval: "
            "`tinyops retrain approve`",
            new_version,
        )
    return _release(root, project, fleet, state, say=say)


def approve(project_dir: Path, fleet: Fleet, *, say: Say = lambda _m: None) -> Result:
    """Upload and deploy the release a cycle left waiting for approval."""
    project, root = load_project(project_dir)
    state = RetrainState.load(root)
    if state.pending is None:
        raise UsageError("no retrained release waits for approval (run `tinyops retrain` first)")
    return _release(root, project, fleet, state, say=say)


def _release(
    root: Path,
    project: Project,
    fleet: Fleet,
    state: RetrainState,
    *,
    dry_run: bool = False,
    say: Say,
) -> Result:
    from tinyops.fleet.client import create_deployment, upload_release

    pending = state.pending
    assert pending is not None
    policy: RetrainConfig = project.monitoring.retrain
    if dry_run:
        return Result(
            "waiting", f"dry run: would upload and deploy {pending.version}", pending.version
        )
    bundle = Path(pending.bundle)
    release = upload_release(
        fleet.server, fleet.token, bundle if bundle.is_absolute() else root / bundle
    )
    say(f"uploaded release {release['name']} {release['version']} ({release['target']})")
    deployment = create_deployment(
        fleet.server,
        fleet.token,
        release["name"],
        release["version"],
        target=release["target"],
        tags=policy.tags,
        installed_version=pending.previous_version,
        phases=policy.phases,
        max_failure_rate=policy.max_failure,
    )
    state.history.append(
        {
            "at": _now(),
            "outcome": "deployed",
            "version": pending.version,
            "samples": [pending.first_sample_id, pending.last_sample_id],
            "deployment": deployment["id"],
        }
    )
    state.pending = None
    state.save(root)
    return Result(
        "done",
        f"{project.name} {pending.version}: canary deployment {deployment['id']} "
        f"({policy.phases}) {deployment['status']}",
        pending.version,
        int(deployment["id"]),
    )


def _restore(project_file: Path, original: str, data_path: Path) -> None:
    atomic_write_text(project_file, original)
    data_path.unlink(missing_ok=True)


def _run_quietly(root: Path) -> dict[str, Any]:
    from tinyops.pipeline.runner import run_project

    return run_project(root)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


__all__ = [
    "DataShape",
    "Fleet",
    "PendingRelease",
    "Result",
    "RetrainState",
    "add_data_source",
    "approve",
    "bump_version",
    "drift_alerts",
    "release_label",
    "run_cycle",
    "samples_to_arrays",
    "set_bundle_version",
]
