"""`write_starter` (`tinyops init`): the files it writes, what it refuses, and that what it
writes is a project that loads and a workflow that runs the pipeline."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tinyops.errors import ProjectError
from tinyops.monitor.alerts.rules import load_rules
from tinyops.project import PROJECT_FILE, load_project
from tinyops.project.starter import ALERTS, WORKFLOW, project_name_for, write_starter


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_writes_project_workflow_and_gitignore(tmp_path: Path) -> None:
    folder = tmp_path / "sensor"

    written = write_starter(folder)

    root = folder.resolve()
    assert written == [root / PROJECT_FILE, root / WORKFLOW, root / ALERTS, root / ".gitignore"]
    assert (root / ".gitignore").read_text() == ".tinyops/\ndist/\n"
    # Files meant for git and collaborators are rw-r--r--, not the 0600 of a temp file.
    assert [mode(p) for p in written] == [0o644, 0o644, 0o644, 0o644]
    # The default alert rules are valid (docs/alerts.md lists them).
    assert [r.name for r in load_rules(root / ALERTS).rules()] == [
        "DeviceHot",
        "BatteryLow",
        "FreeMemoryLow",
        "CrashLoop",
        "LatencyOverBudget",
        "DeviceOffline",
        "FeatureDrift",
        "DatasetDrift",
        "AccuracyDrop",
    ]


def test_written_project_loads_with_the_folder_name(tmp_path: Path) -> None:
    folder = tmp_path / "Vibration Sensor"
    write_starter(folder)

    project, root = load_project(folder)

    assert root == folder.resolve()
    assert project.name == "vibration-sensor"
    assert project.target.board == "nano33ble"
    assert "__NAME__" not in (folder / PROJECT_FILE).read_text()


def test_explicit_name_wins_over_the_folder(tmp_path: Path) -> None:
    write_starter(tmp_path / "anything", name="kws-yes-no")

    project, _ = load_project(tmp_path / "anything")

    assert project.name == "kws-yes-no"


def test_an_invalid_explicit_name_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ProjectError) as info:
        write_starter(tmp_path, name="Bad Name")

    assert str(info.value).startswith("project name 'Bad Name': expected a lowercase identifier")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("digits", "digits"),
        ("My Sensor", "my-sensor"),
        ("kws_v2.1", "kws_v2-1"),
        ("2024-audio", "tinyml-2024-audio"),
        ("--", "tinyml"),
        ("Ünïcode", "n-code"),
        ("a" * 80, "a" * 63),
    ],
)
def test_project_name_from_folder(folder: str, name: str) -> None:
    assert project_name_for(Path("/x") / folder) == name


def test_a_long_folder_name_still_gives_a_project_that_loads(tmp_path: Path) -> None:
    folder = tmp_path / ("very-long-project-folder-name-" * 3)
    write_starter(folder)

    project, _ = load_project(folder)

    assert len(project.name) == 63


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    write_starter(tmp_path)
    project_file = tmp_path / PROJECT_FILE
    project_file.write_text("name: edited\n")

    with pytest.raises(ProjectError) as info:
        write_starter(tmp_path)

    assert str(info.value) == (
        f"{project_file.resolve()}: already exists (pass --force to overwrite)"
    )
    assert project_file.read_text() == "name: edited\n"


def test_force_rewrites_the_project_and_the_workflow(tmp_path: Path) -> None:
    write_starter(tmp_path)
    (tmp_path / PROJECT_FILE).write_text("name: edited\n")
    (tmp_path / WORKFLOW).write_text("edited: true\n")

    written = write_starter(tmp_path, force=True)

    root = tmp_path.resolve()
    assert written == [root / PROJECT_FILE, root / WORKFLOW, root / ALERTS]
    assert load_project(tmp_path)[0].target.board == "nano33ble"
    assert "tinyops run" in (tmp_path / WORKFLOW).read_text()


def test_an_existing_workflow_is_kept_without_force(tmp_path: Path) -> None:
    (tmp_path / WORKFLOW).parent.mkdir(parents=True)
    (tmp_path / WORKFLOW).write_text("mine: true\n")

    written = write_starter(tmp_path)

    assert tmp_path.resolve() / WORKFLOW not in written
    assert (tmp_path / WORKFLOW).read_text() == "mine: true\n"


def test_an_existing_gitignore_gains_only_the_missing_entries(tmp_path: Path) -> None:
    gitignore = tmp_path / ".gitignore"
    gitignore.write_text("*.pyc\n/.tinyops")  # no trailing newline; store already ignored
    gitignore.chmod(0o600)

    write_starter(tmp_path)

    assert gitignore.read_text() == "*.pyc\n/.tinyops\ndist/\n"
    assert mode(gitignore) == 0o600  # the user's own file keeps its mode


def test_a_complete_gitignore_is_left_alone(tmp_path: Path) -> None:
    gitignore = tmp_path / ".gitignore"
    gitignore.write_text("dist\n.tinyops/\n")

    written = write_starter(tmp_path)

    assert gitignore.resolve() not in written
    assert gitignore.read_text() == "dist\n.tinyops/\n"


def test_workflow_is_valid_yaml_with_a_job_that_runs_the_pipeline(tmp_path: Path) -> None:
    write_starter(tmp_path)

    workflow: dict[Any, Any] = yaml.safe_load((tmp_path / WORKFLOW).read_text())

    # YAML 1.1 reads the bare key `on` as the boolean true; GitHub reads it as "on".
    assert set(workflow[True]) == {"push", "pull_request"}
    (job,) = workflow["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    runs = [step["run"] for step in job["steps"] if "run" in step]
    assert any(r.startswith("tinyops run .") for r in runs)
    # The signing key comes from a secret and is written only when the secret is set.
    key_step = next(s for s in job["steps"] if s.get("name") == "Signing key")
    assert key_step["env"] == {"TINYOPS_SIGNING_KEY": "${{ secrets.TINYOPS_SIGNING_KEY }}"}
    assert key_step["run"].startswith('if [ -n "$TINYOPS_SIGNING_KEY" ]; then')
