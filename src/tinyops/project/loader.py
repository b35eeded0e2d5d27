"""Load and validate `tinyops.yaml`, turning every problem into one readable ProjectError."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tinyops.errors import ProjectError
from tinyops.project.schema import Project

PROJECT_FILE = "tinyops.yaml"


def find_project_file(path: Path) -> Path:
    """`path` may be the project folder or the file itself."""
    file = path / PROJECT_FILE if path.is_dir() else path
    if not file.exists():
        raise ProjectError(
            f"{file}: no project file here (expected {PROJECT_FILE}; `tinyops init` writes one)"
        )
    return file


def load_project(path: Path) -> tuple[Project, Path]:
    """Return the validated project and its folder."""
    file = find_project_file(path)
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProjectError(f"{file}:{where}: not valid YAML: {problem}") from exc
    except OSError as exc:
        raise ProjectError(f"{file}: cannot read: {exc.strerror}") from exc
    if not isinstance(raw, dict):
        raise ProjectError(f"{file}: expected a mapping of sections at the top level")
    try:
        project = Project.model_validate(raw)
    except ValidationError as exc:
        raise ProjectError(format_validation_error(file, exc)) from exc
    _check_cross_section(file, project)
    return project, file.parent.resolve()


def format_validation_error(file: Path, exc: ValidationError) -> str:
    lines = [f"{file}: {exc.error_count()} problem(s) in the project file"]
    for err in exc.errors():
        path = key_path(err["loc"])
        got = err.get("input")
        msg = err["msg"]
        if err["type"] == "missing":
            lines.append(f"  {path}: required key is missing")
        elif err["type"] == "extra_forbidden":
            lines.append(f"  {path}: unknown key (check the spelling)")
        else:
            shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
            lines.append(f"  {path}: {msg} (got {shown})")
    return "\n".join(lines)


def key_path(loc: tuple[int | str, ...]) -> str:
    """('data', 'sources', 0, 'csv', 'path') → data.sources[0].path.

    Pydantic puts the tag of a discriminated union into the location; it is not a key
    the user wrote, so it is dropped when it follows a list index.
    """
    out = ""
    prev_index = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            prev_index = True
            continue
        if prev_index and _is_union_tag(part):
            prev_index = False
            continue
        out += f".{part}" if out else str(part)
        prev_index = False
    return out or "(top level)"


def _is_union_tag(part: str) -> bool:
    return part in _union_tags()


@functools.cache
def _union_tags() -> frozenset[str]:
    """The `kind` of every source and the `block` of every feature block."""
    from typing import get_args

    from tinyops.data.config import SourceConfig
    from tinyops.features.config import BlockConfig

    tags: set[str] = set()
    for union, field in ((SourceConfig, "kind"), (BlockConfig, "block")):
        members = get_args(get_args(union)[0])  # Annotated[Union[...], discriminator]
        for model in members:
            tags.update(get_args(model.model_fields[field].annotation))
    return frozenset(tags)


def _check_cross_section(file: Path, project: Project) -> None:
    from tinyops.targets.catalog import list_boards

    boards = [b.id for b in list_boards()]
    if project.target.board not in boards:
        raise ProjectError(
            f"{file}: target.board: unknown board {project.target.board!r} "
            f"(expected one of {', '.join(boards)})"
        )
    if project.bundle.variant == "pruned-int8" and project.optimize.pruning is None:
        raise ProjectError(
            f"{file}: bundle.variant: 'pruned-int8' needs an optimize.pruning section"
        )
    if "int8" not in project.optimize.variants:
        raise ProjectError(
            f"{file}: optimize.variants: must include 'int8' (the variant that runs on the MCU)"
        )


def dump_effective(project: Project) -> dict[str, Any]:
    """The project with every default filled in, JSON-safe (for `tinyops status --config`)."""
    return project.model_dump(mode="json")
