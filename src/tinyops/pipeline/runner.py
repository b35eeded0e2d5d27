"""Entry points the CLI calls: run a project's pipeline, export a bundle, promote a model."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinyops.errors import BundleError, TinyopsError, UsageError
from tinyops.pipeline.engine import Pipeline, StageRecord, load_run
from tinyops.pipeline.stages import STAGE_NAMES, build_stages, tracking_uri
from tinyops.project.loader import load_project

if TYPE_CHECKING:
    from rich.console import Console


def run_project(
    project_dir: Path,
    until: str | None = None,
    force: Sequence[str] = (),
    console: Console | None = None,
) -> dict[str, Any]:
    """Run the pipeline of the project in `project_dir`; return the run record (a dict).

    With a console, stages are shown as they run, with progress bars for training and
    optimization, and the tables of the run are printed at the end.
    """
    for name in [*(force or []), *([until] if until else [])]:
        if name not in STAGE_NAMES:
            raise UsageError(f"unknown stage {name!r} (expected one of {', '.join(STAGE_NAMES)})")
    project, root = load_project(project_dir)
    if console is None:
        pipeline = Pipeline(project.name, root, build_stages(project))
        return pipeline.run(until=until, force=force).to_dict()

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(
        TextColumn("{task.description:<16}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )

    def bar(desc: str, total: int) -> Callable[[int], None]:
        task = progress.add_task(desc, total=total)
        return lambda n: progress.advance(task, n)

    def listener(event: str, rec: StageRecord) -> None:
        if event == "end":
            from tinyops.cli.render import stage_summary

            mark = {"cached": "[cyan]cached[/]", "ok": "[green]done[/]"}.get(rec.status, rec.status)
            summary = stage_summary(rec.to_dict())
            console.print(
                f"  {rec.name:<16} {mark:<18} {rec.duration_s:6.2f}s  {summary}", soft_wrap=True
            )

    console.print(f"[bold]tinyops run[/] {project.name} ({root})")
    pipeline = Pipeline(project.name, root, build_stages(project, progress=bar))
    try:
        with progress:
            record = pipeline.run(until=until, force=force, listener=listener).to_dict()
    except TinyopsError:
        _print_failure(console, load_run(root / ".tinyops"))
        raise
    _print_summary(console, record)
    return record


def _print_failure(console: Console, record: dict[str, Any]) -> None:
    from rich.markup import escape

    for s in record["stages"]:
        if s["status"] == "failed":
            console.print(f"  {s['name']:<16} [red]failed[/]  {escape(s.get('error') or '')}")


def _print_summary(console: Console, record: dict[str, Any]) -> None:
    from rich.markup import escape

    from tinyops.cli.render import budget_table, checks_table, variants_table

    by_name = {s["name"]: s for s in record["stages"]}
    opt = by_name.get("optimize", {}).get("output")
    if opt:
        console.print(variants_table(opt["variants"]))
    prof = by_name.get("profile", {})
    if prof.get("gate"):
        console.print(budget_table(prof["gate"]))
    dv = by_name.get("device-validate", {})
    if dv.get("gate"):
        console.print(checks_table("device validation gates (TFLM)", dv["gate"]["checks"]))
    hits = sum(1 for s in record["stages"] if s["cache_hit"])
    if record["status"] == "succeeded":
        b = by_name.get("bundle", {}).get("output")
        where = f" · bundle {b['bundle']}" if b else ""
        console.print(
            f"[green]succeeded[/] in {_total_s(record):.1f}s · {hits}/{len(record['stages'])}"
            f" stages cached{where}",
            soft_wrap=True,
        )
    else:
        console.print(f"[red]failed[/]: {escape(str(record.get('error')))}", soft_wrap=True)


def _total_s(record: dict[str, Any]) -> float:
    return float(sum(s["duration_s"] for s in record["stages"]))


def export_bundle(project_dir: Path, bundle: Path | None, fmt: str, dest: Path) -> list[Path]:
    """Verify `bundle` (default: the last run's) with the project's key and extract parts."""
    from tinyops.bundle.bundle import verify_bundle
    from tinyops.bundle.keys import load_public_key
    from tinyops.store.atomic import atomic_write_bytes

    formats = {"arduino", "c", "compiled", "tflite", "all"}
    if fmt not in formats:
        raise UsageError(f"--format: unknown format {fmt!r} (expected one of {sorted(formats)})")
    project, root = load_project(project_dir)
    if bundle is None:
        bundle = root / last_bundle(root)
    pub = (root / project.bundle.signing_key).with_suffix(".pub")
    verified = verify_bundle(bundle, [load_public_key(pub)])
    wanted: Callable[[str], bool] = {
        "arduino": lambda n: n.startswith("arduino/"),
        "c": lambda n: n in ("model_data.h", "model_data.cc"),
        # The model compiled to C (tinyops.compile.layout): sources, CMake, Arduino library.
        "compiled": lambda n: n.startswith("compiled/"),
        "tflite": lambda n: n == "model.tflite",
        "all": lambda n: True,
    }[fmt]
    if fmt == "compiled" and not any(wanted(n) for n in verified.files):
        raise BundleError(
            f"{bundle}: has no compiled/ library: the compiler refused this model when it was"
            " bundled (the run record's bundle stage says why under compiled.skipped)"
        )
    written = []
    for name, blob in sorted(verified.files.items()):
        if wanted(name):
            target = dest / name
            atomic_write_bytes(target, blob)
            written.append(target)
    return written


def last_bundle(root: Path) -> str:
    """The bundle of the newest run that made one (a later failed run made none)."""
    import json

    runs = sorted((root / ".tinyops" / "runs").glob("2*.json"), reverse=True)
    for path in runs:
        record = json.loads(path.read_text())
        for stage in record["stages"]:
            if stage["name"] == "bundle" and stage["status"] in ("ok", "cached"):
                return str(stage["output"]["bundle"])
    raise BundleError("no run has made a bundle yet: run `tinyops run` first or pass --bundle")


def promote_model(
    project_dir: Path, version: str | None, alias: str
) -> tuple[str, str, str | None]:
    """Point `alias` at `version` (default: the `candidate` alias) in the MLflow registry."""
    from tinyops.train.tracking import RunTracker

    project, root = load_project(project_dir)
    name = project.tracking.registered_model or project.name
    tracker = RunTracker(
        tracking_uri(project, root),
        experiment=project.tracking.experiment or project.name,
        project_dir=root,
    )
    target = version or tracker.get_alias_version(name, "candidate")
    if target is None:
        raise TinyopsError(f"{name}: no version has the alias 'candidate'; pass --version")
    previous = tracker.get_alias_version(name, alias)
    tracker.set_alias(name, alias, target)
    return name, str(target), None if previous is None else str(previous)
