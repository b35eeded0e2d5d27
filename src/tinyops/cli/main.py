"""`tinyops` — the command line.

Start-up cost is a contract (`tinyops --help` in well under a second): this module
imports only Typer, Rich and tinyops' light modules; each command imports the heavy
packages it needs inside its body.

Exit codes: 0 success, 1 error, 2 bad project file or usage, 3 a gate said no.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tinyops.cli.alerts import alerts_app
from tinyops.cli.console import err, out, print_json
from tinyops.cli.device import device_app
from tinyops.cli.fleet import agent_command, deploy_app, fleet_app, release_app, serve_command
from tinyops.cli.grafana import grafana_app
from tinyops.cli.retrain import retrain_app
from tinyops.errors import GateFailed, TinyopsError

app = typer.Typer(
    name="tinyops",
    help="MLOps for microcontrollers: data → int8 model → budget-checked, signed bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Data sources, validation and snapshots.", no_args_is_help=True)
features_app = typer.Typer(help="The feature store.", no_args_is_help=True)
keys_app = typer.Typer(help="Ed25519 signing keys for bundles.", no_args_is_help=True)
bundle_app = typer.Typer(help="Inspect and verify bundles.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
app.add_typer(keys_app, name="keys")
app.add_typer(bundle_app, name="bundle")
app.add_typer(fleet_app, name="fleet")
app.add_typer(release_app, name="release")
app.add_typer(deploy_app, name="deploy")
app.add_typer(device_app, name="device")
app.add_typer(grafana_app, name="grafana")
app.add_typer(retrain_app, name="retrain")
app.add_typer(alerts_app, name="alerts")


# User-supplied text (paths, error messages) goes through rich.markup.escape: Rich would
# otherwise read "[lo, hi]" in a message as a style tag and silently drop it. Lines that
# carry a path or an error use soft_wrap, so they stay one line (and one grep) in CI logs
# rather than being cut at 80 columns.

ProjectDir = Annotated[
    Path, typer.Argument(help="project folder (holds tinyops.yaml)", show_default=True)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="machine-readable output on stdout")]


def _quiet_tensorflow() -> None:
    # TensorFlow prints C++ banners and oneDNN notices on import; none help a CLI user.
    # Level 3: TF 2.21 logs a harmless "use_unbounded_threadpool" error line on every fit.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="folder to create the project in")] = Path("."),
    name: Annotated[str | None, typer.Option(help="project name (default: folder name)")] = None,
    force: Annotated[bool, typer.Option(help="overwrite an existing tinyops.yaml")] = False,
) -> None:
    """Write a commented starter project and a GitHub Actions workflow that runs its gates."""
    from tinyops.project.starter import write_starter

    written = write_starter(directory, name=name, force=force)
    for path in written:
        out.print(f"wrote {escape(str(path))}", soft_wrap=True)
    out.print(f"next: [bold]tinyops run {escape(str(directory))}[/]", soft_wrap=True)


@app.command()
def run(
    project_dir: ProjectDir = Path("."),
    until: Annotated[str | None, typer.Option(help="stop after this stage")] = None,
    force: Annotated[
        list[str] | None, typer.Option(help="re-run this stage even if cached (repeatable)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the pipeline: ingest → validate → features → train → optimize → profile →
    device-validate → compile → bundle → register. Cached stages are skipped."""
    _quiet_tensorflow()
    from tinyops.pipeline.runner import run_project

    record = run_project(
        project_dir, until=until, force=force or [], console=None if as_json else out
    )
    if as_json:
        print_json(record)
    if record["status"] != "succeeded":
        raise typer.Exit(GateFailed.exit_code)


@app.command()
def status(project_dir: ProjectDir = Path("."), as_json: JsonFlag = False) -> None:
    """Show the last run: its stages, cache hits and gate results."""
    from tinyops.cli.render import stages_table
    from tinyops.pipeline.engine import load_run
    from tinyops.project.loader import find_project_file

    project_path = find_project_file(project_dir).parent
    record = load_run(project_path / ".tinyops")
    if as_json:
        print_json(record)
        return
    out.print(stages_table(record))
    hits = sum(1 for s in record["stages"] if s["cache_hit"])
    out.print(f"{hits} of {len(record['stages'])} stages from cache")
    gates = [s for s in record["stages"] if s.get("gate")]
    for s in gates:
        passed = s["gate"].get("passed")
        mark = "[green]passed[/]" if passed else "[red]FAILED[/]"
        out.print(f"gate {s['name']}: {mark}")


@data_app.command("validate")
def data_validate(project_dir: ProjectDir = Path("."), as_json: JsonFlag = False) -> None:
    """Load the sources and run the validation checks (no snapshot is written)."""
    from tinyops.data.dedup import remove_duplicates
    from tinyops.data.sources import load_sources
    from tinyops.data.validate import validate
    from tinyops.project.loader import load_project

    project, root = load_project(project_dir)
    ds = load_sources(project.data.sources, root)
    dedup = None
    if project.data.deduplicate:
        ds, rep = remove_duplicates(ds)
        dedup = rep.to_dict()
    report = validate(ds, project.data.validation)
    if as_json:
        print_json({"validation": report.to_dict(), "dedup": dedup})
    else:
        out.print(report.render())
        if dedup:
            out.print(f"duplicates: {escape(str(dedup))}")
    if not report.passed:
        # Named on stderr in both modes (stdout stays parseable with --json).
        failed = "; ".join(f"{c.name}: {c.detail}" for c in report.failed)
        err.print(
            f"[red]data validation failed:[/] {escape(failed)}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(GateFailed.exit_code)


@data_app.command("snapshots")
def data_snapshots(project_dir: ProjectDir = Path("."), as_json: JsonFlag = False) -> None:
    """List the dataset snapshots in the project's store."""
    from rich.table import Table

    from tinyops.data.snapshot import list_snapshots
    from tinyops.project.loader import find_project_file

    root = find_project_file(project_dir).parent
    snaps = list_snapshots(root / ".tinyops" / "store")
    if as_json:
        print_json(snaps)
        return
    t = Table(title="dataset snapshots")
    for col in ("id", "created", "modality", "samples", "classes"):
        t.add_column(col)
    for m in snaps:
        t.add_row(
            m["id"][:16],
            str(m.get("created_at", "")),
            str(m.get("modality", "")),
            str(sum((m.get("label_counts") or {}).values()) or m.get("samples", "")),
            str(len(m.get("classes", []))),
        )
    out.print(t)


@features_app.command("list")
def features_list(project_dir: ProjectDir = Path("."), as_json: JsonFlag = False) -> None:
    """List materialized feature sets: one per (snapshot id, pipeline hash)."""
    from rich.table import Table

    from tinyops.features.store import list_feature_sets
    from tinyops.project.loader import find_project_file

    root = find_project_file(project_dir).parent
    sets = list_feature_sets(root / ".tinyops" / "store")
    if as_json:
        print_json(sets)
        return
    t = Table(title="feature store")
    for col in ("key", "snapshot", "pipeline", "created"):
        t.add_column(col)
    for m in sets:
        t.add_row(
            str(m.get("key", "")),
            str(m.get("snapshot_id", ""))[:12],
            str(m.get("pipeline_hash", ""))[:12],
            str(m.get("created_at", "")),
        )
    out.print(t)


@features_app.command("show")
def features_show(
    key: Annotated[str, typer.Argument(help="feature-set key or a unique prefix")],
    project_dir: Annotated[Path, typer.Option("--project", help="project folder")] = Path("."),
) -> None:
    """Show one feature set's manifest: blocks, fitted parameters, shapes."""
    from tinyops.features.store import load_feature_set
    from tinyops.project.loader import find_project_file

    root = find_project_file(project_dir).parent
    fs = load_feature_set(root / ".tinyops" / "store", key)
    print_json(fs.manifest)


@app.command()
def profile(
    model: Annotated[Path, typer.Argument(help="an int8 .tflite model")],
    target: Annotated[str, typer.Option(help="board id from `tinyops boards`")] = "nano33ble",
    project_dir: Annotated[
        Path | None, typer.Option("--project", help="check the project's budgets too")
    ] = None,
    compiled: Annotated[
        bool,
        typer.Option(
            "--compiled",
            help="also compile MODEL to C: its RAM, flash and Cortex-M4 instruction count",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run MODEL in the TFLM runtime: arena bytes, flash, latency, energy, operators."""
    from tinyops.cli.render import budget_table
    from tinyops.errors import ModelError
    from tinyops.targets.budget import Budgets, check_budgets, require_within
    from tinyops.targets.catalog import load_board
    from tinyops.targets.profile import profile_tflite

    board = load_board(target)
    try:
        blob = model.read_bytes()
    except OSError as exc:
        raise ModelError(f"{model}: cannot read model file ({exc.strerror})") from exc
    prof = profile_tflite(blob, board, source=str(model))
    budgets = Budgets()
    if project_dir is not None:
        from tinyops.project.loader import load_project

        budgets = load_project(project_dir)[0].target.budgets
    report = check_budgets(prof, budgets, board)
    comp: dict[str, Any] | None = None
    if compiled:
        from tinyops.compile.report import compiled_profile

        comp = compiled_profile(blob, board, str(model))
    if as_json:
        extra = {"compiled": comp} if comp is not None else {}
        print_json(
            {"board": board.id, "profile": prof.to_dict(), "budgets": report.to_dict(), **extra}
        )
    else:
        d = prof.to_dict()
        out.print(f"[bold]{escape(str(model))}[/] on [bold]{board.name}[/] ({board.id})")
        out.print(f"  TFLM arena (measured) {d['arena_bytes']:>12,} B")
        out.print(f"  RAM total             {d['ram_bytes']:>12,} B of {board.sram_bytes:,}")
        out.print(f"  model                 {d['model_bytes']:>12,} B")
        out.print(f"  flash (model+runtime) {d['flash_bytes']:>12,} B of {board.flash_bytes:,}")
        out.print(f"  MACs                  {d['macs']:>12,}")
        out.print(f"  latency (estimate)    {d['latency_ms']:>12.3f} ms")
        out.print(f"  energy (estimate)     {d['energy_mj']:>12.4f} mJ")
        ops = ", ".join(f"{k}×{v}" for k, v in sorted(d["ops"].items()))
        out.print(f"  operators             {ops}")
        if comp is not None:
            _print_compiled(d, comp)
        out.print(budget_table(report.to_dict()))
    try:
        require_within(report)
    except GateFailed as exc:
        # Named on stderr in both modes, so --json output stays parseable.
        err.print(f"[red]gate failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None


def _print_compiled(tflm: dict[str, Any], comp: dict[str, Any]) -> None:
    """TFLM's figures and the compiled C's, side by side (tinyops profile --compiled)."""
    n = comp["instructions"]
    out.print("                            TFLM        compiled C")
    out.print(f"  arena               {tflm['arena_bytes']:>10,} B  {comp['arena_bytes']:>10,} B")
    out.print(
        f"  RAM (arena + I/O)   {tflm['arena_bytes']:>10,} B  {comp['ram_bytes']:>10,} B"
        f"  ({100 * comp['ram_bytes'] / tflm['arena_bytes']:.0f}% of TFLM's arena)"
    )
    out.print(
        f"  flash               {tflm['flash_bytes']:>10,} B  {comp['flash_bytes']:>10,} B"
        f"  ({comp['flash_source']})"
    )
    if n is None:
        note = comp["instructions_note"]
        out.print(f"  latency             {tflm['latency_ms']:>10.3f} ms  n/a ({note})")
        return
    out.print(
        f"  latency             {tflm['latency_ms']:>10.3f} ms {comp['latency_ms']:>10.3f} ms"
        f"  ({n:,} Cortex-M4 instructions)"
    )
    out.print(f"  energy              {tflm['energy_mj']:>10.4f} mJ {comp['energy_mj']:>10.4f} mJ")


@app.command("compile")
def compile_command(
    model: Annotated[Path, typer.Argument(help="an int8 .tflite model")],
    dest: Annotated[Path, typer.Option("--out", "-o", help="folder to write the C library into")],
    target: Annotated[str, typer.Option(help="board id from `tinyops boards`")] = "nano33ble",
    name: Annotated[
        str | None, typer.Option(help="C name of the model (default: from the file name)")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Compile MODEL to standalone C99 (no interpreter, one static arena), bit-exact with TFLM."""
    from tinyops.compile.command import compile_for_board

    report = compile_for_board(model, target, dest, name)
    if as_json:
        print_json(report)
        return
    ram, tflm = report["ram_bytes"], report["tflm_arena_bytes"]
    vs = f" ({100 * ram / tflm:.0f}% of TFLM's arena, {tflm:,} B)" if tflm else ""
    out.print(f"[bold]{escape(str(model))}[/] → {escape(str(dest))}", soft_wrap=True)
    out.print(f"  operators             {report['operators']:>12,}")
    out.print(f"  peak RAM              {ram:>12,} B{vs}")
    out.print(f"    arena               {report['arena_bytes']:>12,} B")
    out.print(f"    input + output      {report['input_bytes'] + report['output_bytes']:>12,} B")
    out.print(
        f"  flash (estimate)      {report['flash_bytes']:>12,} B "
        f"(.tflite {report['model_bytes']:,} B)"
    )
    out.print(f"  board                 {report['board']} ({report['board_sram_bytes']:,} B RAM)")
    for path in report["files"]:
        out.print(f"wrote {escape(path)}", soft_wrap=True)


@app.command()
def boards(as_json: JsonFlag = False) -> None:
    """List the board catalog."""
    from rich.table import Table

    from tinyops.targets.catalog import list_boards

    items = list_boards()
    if as_json:
        print_json([b.model_dump(mode="json") for b in items])
        return
    t = Table(title="boards")
    for col in ("id", "name", "core", "clock", "SRAM", "flash", "runtime"):
        t.add_column(col)
    for b in items:
        t.add_row(
            b.id,
            b.name,
            b.core,
            f"{b.clock_hz / 1e6:g} MHz",
            f"{b.sram_bytes // 1024:,} KB",
            f"{b.flash_bytes // 1024:,} KB",
            b.runtime,
        )
    out.print(t)


@app.command()
def export(
    project_dir: ProjectDir = Path("."),
    bundle: Annotated[
        Path | None, typer.Option(help="bundle file (default: the last run's bundle)")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="arduino | c | compiled | tflite | all")
    ] = "all",
    dest: Annotated[Path, typer.Option("--out", help="folder to write into")] = Path("export"),
) -> None:
    """Verify a bundle and export its model as an Arduino library, C array, compiled C
    library (compiled/: the model and its features as C, no interpreter) or .tflite."""
    from tinyops.pipeline.runner import export_bundle

    written = export_bundle(project_dir, bundle, fmt, dest)
    for path in written:
        out.print(f"wrote {escape(str(path))}", soft_wrap=True)


@app.command()
def promote(
    project_dir: ProjectDir = Path("."),
    version: Annotated[
        str | None, typer.Option(help="model version (default: the `candidate` alias)")
    ] = None,
    alias: Annotated[str, typer.Option(help="alias to move")] = "champion",
) -> None:
    """Move the registry alias `champion` (or --alias) to the candidate or a given version."""
    _quiet_tensorflow()
    from tinyops.pipeline.runner import promote_model

    name, moved_to, previous = promote_model(project_dir, version, alias)
    was = f" (was v{previous})" if previous else ""
    out.print(f"{name}: @{alias} → v{moved_to}{was}")


@keys_app.command("create")
def keys_create(
    directory: Annotated[Path, typer.Option("--dir", help="where to write the key pair")] = Path(
        ".tinyops/keys"
    ),
    name: Annotated[str, typer.Option(help="file stem of the key pair")] = "signing",
    overwrite: Annotated[bool, typer.Option(help="replace an existing key pair")] = False,
) -> None:
    """Create an Ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub."""
    from tinyops.bundle.keys import generate_keypair, key_id
    from tinyops.errors import BundleError

    if not overwrite:
        # Checked here too so the message names the CLI flag rather than the API argument.
        for path in (directory / f"{name}.key", directory / f"{name}.pub"):
            if path.exists():
                raise BundleError(
                    f"{path} already exists: refusing to replace a signing key, which would "
                    "orphan every bundle it signed (pass --overwrite to rotate it deliberately)"
                )
    pair = generate_keypair(directory, name=name, overwrite=overwrite)
    out.print(f"private key {escape(str(pair.private_path))} (keep secret)", soft_wrap=True)
    out.print(
        f"public key  {escape(str(pair.public_path))} (give this to the fleet server)",
        soft_wrap=True,
    )
    out.print(f"key id      {key_id(pair.public_key)}")


@keys_app.command("show")
def keys_show(
    public_key: Annotated[Path, typer.Argument(help="a .pub file")] = Path(
        ".tinyops/keys/signing.pub"
    ),
) -> None:
    """Print a public key's id."""
    from tinyops.bundle.keys import key_id, load_public_key

    out.print(key_id(load_public_key(public_key)))


@bundle_app.command("verify")
def bundle_verify(
    path: Annotated[Path, typer.Argument(help="a .tinybundle file")],
    key: Annotated[list[Path], typer.Option(help="trusted public key (.pub), repeatable")],
    as_json: JsonFlag = False,
) -> None:
    """Check a bundle's signature, file hashes and expiry against trusted keys."""
    from tinyops.bundle.bundle import verify_bundle
    from tinyops.bundle.keys import load_public_key

    verified = verify_bundle(path, [load_public_key(k) for k in key])
    manifest = verified.manifest.model_dump(mode="json")
    if as_json:
        print_json(manifest)
        return
    out.print(
        f"[green]valid[/] {manifest['name']} {manifest['version']} for {manifest['target']}"
        f" · {len(manifest['files'])} files · key {manifest['key_id']}"
    )
    out.print(f"measured: {escape(str(manifest['measured']))}")


app.command("serve")(serve_command)
app.command("agent")(agent_command)


def main() -> None:
    try:
        app()
    except GateFailed as exc:
        # soft_wrap: an error is one grep-able line in a CI log, not wrapped at 80 columns.
        err.print(f"[red]gate failed:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except TinyopsError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
