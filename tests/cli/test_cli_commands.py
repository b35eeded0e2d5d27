"""The `tinyops` command line: what each command prints and the exit code it ends with.

Commands that finish normally or end with `typer.Exit` are driven in-process through
Typer's CliRunner. Errors that escape a command (a `TinyopsError`) are turned into a
message and an exit code by `main()`, so those cases run `python -m tinyops.cli.main` in a
subprocess, the way a user or a CI job runs it. Nothing here trains a model: the whole
pipeline is exercised by tests/pipeline/test_pipeline_digits.py.

Exit codes: 0 success, 1 error, 2 bad project file or usage, 3 a gate said no.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tinyops.bundle.keys import key_id, load_public_key
from tinyops.cli.main import app
from tinyops.project import PROJECT_FILE

KWS = "kws_ref_model.tflite"
KWS_ARENA_BYTES = 24272  # measured by the TFLM runtime for the MLPerf Tiny KWS DS-CNN
KWS_RAM_BYTES = 28368  # arena + the runtime state the profiler adds (4096 B)

runner = CliRunner()


def tinyops(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI through `main()` in a fresh interpreter."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "tinyops.cli.main", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )


def init_project(folder: Path) -> Path:
    result = runner.invoke(app, ["init", str(folder)])
    assert result.exit_code == 0, result.output
    return folder


def edit_project(folder: Path, section: str, value: object) -> None:
    """Replace one top-level section of the project file."""
    file = folder / PROJECT_FILE
    raw = yaml.safe_load(file.read_text())
    raw[section] = value
    file.write_text(yaml.safe_dump(raw, sort_keys=False))


# --- start-up ---------------------------------------------------------------------


def test_help_runs_and_lists_the_commands() -> None:
    proc = tinyops("--help")

    assert proc.returncode == 0, proc.stderr
    for command in ("init", "run", "status", "data", "profile", "boards", "keys", "bundle"):
        assert command in proc.stdout


def test_importing_the_cli_imports_no_heavy_library() -> None:
    heavy = ("tensorflow", "keras", "mlflow", "tflite_micro", "ai_edge_litert", "cv2", "pandas")
    code = f"import sys, tinyops.cli.main; print([m for m in {heavy!r} if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# --- init and data validate -------------------------------------------------------


def test_init_then_data_validate_passes(tmp_path: Path) -> None:
    folder = tmp_path / "digits-demo"

    init = runner.invoke(app, ["init", str(folder)])
    assert init.exit_code == 0, init.output
    assert f"wrote {folder.resolve() / PROJECT_FILE}" in init.stdout

    result = runner.invoke(app, ["data", "validate", str(folder)])

    assert result.exit_code == 0, result.output
    assert "Data validation: passed" in result.stdout
    for check in ("sample_count", "sample_shape", "class_balance", "value_range"):
        assert check in result.stdout
    assert result.stderr == ""


def test_data_validate_json_lists_every_check(tmp_path: Path) -> None:
    folder = init_project(tmp_path / "p")

    result = runner.invoke(app, ["data", "validate", str(folder), "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["validation"]["checks"]}
    assert report["validation"]["passed"] is True
    assert checks["sample_count"]["value"] == 1797  # scikit-learn's digits
    assert report["dedup"]["removed"] == 0


def test_failed_data_validation_exits_3_and_names_the_check(tmp_path: Path) -> None:
    folder = init_project(tmp_path / "p")
    edit_project(
        folder,
        "data",
        {
            "sources": [{"kind": "sklearn", "name": "digits"}],
            "validation": {"min_samples": 100000},
        },
    )

    result = runner.invoke(app, ["data", "validate", str(folder)])
    as_json = runner.invoke(app, ["data", "validate", str(folder), "--json"])

    assert result.exit_code == 3
    assert "Data validation: FAILED" in result.stdout
    assert result.stderr.strip() == (
        "data validation failed: sample_count: 1797 samples; expected at least 100000"
    )
    assert as_json.exit_code == 3
    failed = [
        c["name"]
        for c in json.loads(as_json.stdout)["validation"]["checks"]
        if c["status"] == "fail"
    ]
    assert failed == ["sample_count"]


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    folder = init_project(tmp_path / "p")

    proc = tinyops("init", folder)

    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {folder.resolve() / PROJECT_FILE}: already exists (pass --force to overwrite)\n"
    )


# --- boards -----------------------------------------------------------------------


def test_boards_lists_the_catalog() -> None:
    result = runner.invoke(app, ["boards"])
    as_json = runner.invoke(app, ["boards", "--json"])

    assert result.exit_code == 0, result.output
    assert "nano33ble" in result.stdout
    assert as_json.exit_code == 0, as_json.output
    boards = {b["id"]: b for b in json.loads(as_json.stdout)}
    assert {"nano33ble", "pico", "esp32-s3"} <= set(boards)
    assert boards["nano33ble"]["sram_bytes"] == 262144  # 256 KB
    assert boards["nano33ble"]["flash_bytes"] == 1048576  # 1 MB


# --- profile ----------------------------------------------------------------------


def test_profile_reports_the_measured_arena(mlperf_dir: Path) -> None:
    result = runner.invoke(
        app, ["profile", str(mlperf_dir / KWS), "--target", "nano33ble", "--json"]
    )

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["board"] == "nano33ble"
    assert report["profile"]["arena_bytes"] == KWS_ARENA_BYTES
    assert report["profile"]["ram_bytes"] == KWS_RAM_BYTES
    # Without a project only the board's own capacity applies, and the model fits it.
    assert report["budgets"]["passed"] is True
    assert [r["metric"] for r in report["budgets"]["rows"]] == ["ram", "flash"]


def test_profile_over_a_project_budget_exits_3_and_names_the_metric(
    tmp_path: Path, mlperf_dir: Path
) -> None:
    folder = init_project(tmp_path / "p")
    edit_project(folder, "target", {"board": "nano33ble", "budgets": {"ram_bytes": 1000}})
    model = str(mlperf_dir / KWS)

    result = runner.invoke(app, ["profile", model, "--project", str(folder)])
    as_json = runner.invoke(app, ["profile", model, "--project", str(folder), "--json"])

    assert result.exit_code == 3
    assert "OVER" in result.stdout
    assert result.stderr.startswith(
        "gate failed: model over budget on nano33ble: "
        "ram 28,368 bytes > 1,000 bytes (ram_bytes budget): over by 27,368 bytes"
    )
    assert as_json.exit_code == 3
    report = json.loads(as_json.stdout)  # the message went to stderr: stdout stays JSON
    assert [r["metric"] for r in report["budgets"]["rows"] if not r["within"]] == ["ram"]


def test_profile_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"

    proc = tinyops("profile", missing)

    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: {missing}: cannot read model file (No such file or directory)\n"
    )


def test_profile_of_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(bytes(range(256)) * 4)  # 1 KiB whose bytes 4..7 are not b"TFL3"

    proc = tinyops("profile", corrupt)

    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith(f"error: {corrupt}: not a TFLite model: FlatBuffer identifier")
    assert proc.stdout == ""


def test_profile_on_an_unknown_board_lists_the_catalog(tmp_path: Path) -> None:
    proc = tinyops("profile", tmp_path / "any.tflite", "--target", "uno")

    assert proc.returncode == 2
    assert proc.stderr == (
        "error: unknown board 'uno': expected one of "
        "esp32-s3, nano33ble, nucleo-l4r5zi, pico, rpi4, stm32f746-disco\n"
    )


# --- keys -------------------------------------------------------------------------


def test_keys_create_writes_a_private_and_a_public_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"

    result = runner.invoke(app, ["keys", "create", "--dir", str(keys)])

    assert result.exit_code == 0, result.output
    private, public = keys / "signing.key", keys / "signing.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(public.stat().st_mode) == 0o644
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    kid = key_id(load_public_key(public))
    assert f"key id      {kid}" in result.stdout

    shown = runner.invoke(app, ["keys", "show", str(public)])

    assert shown.exit_code == 0, shown.output
    assert shown.stdout == f"{kid}\n"


def test_keys_create_refuses_to_replace_a_key_without_overwrite(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "create", "--dir", str(keys)]).exit_code == 0
    before = (keys / "signing.key").read_bytes()

    proc = tinyops("keys", "create", "--dir", keys)

    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: {keys / 'signing.key'} already exists: refusing to replace a signing key, "
        "which would orphan every bundle it signed (pass --overwrite to rotate it "
        "deliberately)\n"
    )
    assert (keys / "signing.key").read_bytes() == before

    rotated = runner.invoke(app, ["keys", "create", "--dir", str(keys), "--overwrite"])

    assert rotated.exit_code == 0, rotated.output
    assert (keys / "signing.key").read_bytes() != before


def test_keys_show_of_a_private_key_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    assert runner.invoke(app, ["keys", "create", "--dir", str(keys)]).exit_code == 0

    proc = tinyops("keys", "show", keys / "signing.key")

    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {keys / 'signing.key'} is not a readable PEM public key")
    assert "Traceback" not in proc.stderr


# --- run and status ---------------------------------------------------------------


def test_run_on_a_malformed_project_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    folder = init_project(tmp_path / "p")
    edit_project(folder, "training", {"epoch": 3})

    proc = tinyops("run", folder)

    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {folder / PROJECT_FILE}: 1 problem(s) in the project file\n"
        "  training.epoch: unknown key (check the spelling)\n"
    )
    assert not (folder / ".tinyops" / "store").exists()
    assert not (folder / ".tinyops" / "runs").exists()


def test_an_error_message_is_printed_whole_on_one_line(tmp_path: Path) -> None:
    # "[lo, hi]" must not be read as Rich markup and dropped, and a long message must not
    # be wrapped at 80 columns: CI logs are grepped for these lines.
    folder = init_project(tmp_path / ("a-rather-long-folder-name-" * 3))
    edit_project(
        folder,
        "data",
        {
            "sources": [{"kind": "sklearn", "name": "digits"}],
            "validation": {"value_range": [16, 0]},
        },
    )

    proc = tinyops("data", "validate", folder)

    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: {folder / PROJECT_FILE}: 1 problem(s) in the project file",
        "  data.validation: value_range must be [lo, hi] with lo <= hi, got [16.0, 0.0]",
    ]


def test_status_without_a_run_names_the_missing_record(tmp_path: Path) -> None:
    folder = init_project(tmp_path / "p")

    proc = tinyops("status", folder)

    assert proc.returncode == 1
    assert proc.stderr == (
        f"error: no pipeline run recorded at {folder / '.tinyops' / 'runs' / 'latest.json'}: "
        "run `tinyops run` first\n"
    )


def test_a_folder_without_a_project_file_is_a_project_error(tmp_path: Path) -> None:
    proc = tinyops("run", tmp_path)

    assert proc.returncode == 2
    assert proc.stderr == (
        f"error: {tmp_path / PROJECT_FILE}: no project file here "
        "(expected tinyops.yaml; `tinyops init` writes one)\n"
    )


@pytest.mark.parametrize("args", [["frobnicate"], ["run", "--colour"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    proc = tinyops(*args)

    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
