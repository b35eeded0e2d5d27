"""`tinyops init`: a commented starter project that runs as written, and a CI workflow."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from tinyops.errors import ProjectError
from tinyops.project.loader import PROJECT_FILE
from tinyops.store.atomic import atomic_write_text

WORKFLOW = Path(".github/workflows/tinyops.yml")


def write_starter(directory: Path, name: str | None = None, force: bool = False) -> list[Path]:
    directory = directory.resolve()
    project_name = name or re.sub(r"[^a-z0-9_-]", "-", directory.name.lower()).strip("-")
    if not project_name or not project_name[0].isalpha():
        project_name = "tinyml-" + project_name if project_name else "tinyml"
    target = directory / PROJECT_FILE
    if target.exists() and not force:
        raise ProjectError(f"{target}: already exists (pass --force to overwrite)")
    templates = resources.files("tinyops.project") / "templates"
    text = (templates / "tinyops.yaml").read_text().replace("__NAME__", project_name)
    atomic_write_text(target, text)
    written = [target]
    workflow = directory / WORKFLOW
    if not workflow.exists() or force:
        atomic_write_text(workflow, (templates / "workflow.yml").read_text())
        written.append(workflow)
    gitignore = directory / ".gitignore"
    if not gitignore.exists():
        atomic_write_text(gitignore, ".tinyops/\ndist/\n")
        written.append(gitignore)
    return written
