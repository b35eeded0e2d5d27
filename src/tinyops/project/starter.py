"""`tinyops init`: a commented starter project that runs as written, and a CI workflow."""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path

from tinyops.errors import ProjectError
from tinyops.project.loader import PROJECT_FILE
from tinyops.project.schema import PROJECT_NAME_PATTERN
from tinyops.store.atomic import atomic_write_text

WORKFLOW = Path(".github/workflows/tinyops.yml")
# The fleet server's default alert rules (docs/alerts.md): `tinyops serve --alert-rules`.
ALERTS = Path("alerts.yaml")

# The store's atomic writes create files 0600 (mkstemp); these files are meant to be
# committed and read by collaborators and CI, so they get the usual rw-r--r--.
_SHARED_FILE_MODE = 0o644

# What a project folder must keep out of git: the local store (which holds the private
# signing key under .tinyops/keys/) and the built bundles.
_IGNORED = (".tinyops/", "dist/")


def project_name_for(directory: Path) -> str:
    """A valid project name derived from a folder name: 'My Sensor' → 'my-sensor'."""
    name = re.sub(r"[^a-z0-9_-]+", "-", directory.name.lower()).strip("-_")
    if not name or not name[0].isalpha():
        name = f"tinyml-{name}" if name else "tinyml"
    return name[:63].rstrip("-_")


def write_starter(directory: Path, name: str | None = None, force: bool = False) -> list[Path]:
    """Write tinyops.yaml, the CI workflow, alerts.yaml and .gitignore entries into `directory`.

    Returns the files written. An existing tinyops.yaml is kept unless `force`; an existing
    workflow and alerts.yaml likewise; an existing .gitignore only gains the entries it lacks.
    """
    directory = directory.resolve()
    project_name = name if name is not None else project_name_for(directory)
    if not PROJECT_NAME_PATTERN.fullmatch(project_name):
        raise ProjectError(
            f"project name {project_name!r}: expected a lowercase identifier like 'digits' or "
            "'kws-yes-no': a letter, then up to 62 lowercase letters, digits, - or _"
        )
    target = directory / PROJECT_FILE
    if target.exists() and not force:
        raise ProjectError(f"{target}: already exists (pass --force to overwrite)")
    templates = resources.files("tinyops.project") / "templates"
    text = (templates / "tinyops.yaml").read_text(encoding="utf-8")
    _write_shared(target, text.replace("__NAME__", project_name))
    written = [target]
    workflow = directory / WORKFLOW
    if not workflow.exists() or force:
        _write_shared(workflow, (templates / "workflow.yml").read_text(encoding="utf-8"))
        written.append(workflow)
    alerts = directory / ALERTS
    if not alerts.exists() or force:
        _write_shared(alerts, (templates / "alerts.yaml").read_text(encoding="utf-8"))
        written.append(alerts)
    gitignore = directory / ".gitignore"
    existing = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    # `.tinyops`, `/.tinyops` and `.tinyops/` all ignore the store.
    present = {line.strip().strip("/") for line in existing.splitlines()}
    missing = [entry for entry in _IGNORED if entry.strip("/") not in present]
    if missing:
        sep = "\n" if existing and not existing.endswith("\n") else ""
        mode = gitignore.stat().st_mode & 0o777 if gitignore.exists() else _SHARED_FILE_MODE
        _write_shared(gitignore, existing + sep + "".join(f"{e}\n" for e in missing), mode)
        written.append(gitignore)
    return written


def _write_shared(path: Path, text: str, mode: int = _SHARED_FILE_MODE) -> None:
    atomic_write_text(path, text)
    os.chmod(path, mode)
