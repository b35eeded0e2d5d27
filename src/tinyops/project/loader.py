"""Load and validate `tinyops.yaml`, turning every problem into one readable ProjectError."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

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
    raw = read_yaml(file)
    if not isinstance(raw, dict):
        found = "an empty file" if raw is None else f"a {type(raw).__name__}"
        raise ProjectError(
            f"{file}: expected a mapping of sections at the top level "
            f"(name:, data:, model:, target: ...), got {found}"
        )
    try:
        project = Project.model_validate(raw)
    except ValidationError as exc:
        raise ProjectError(format_validation_error(file, exc)) from exc
    _check_cross_section(file, project)
    return project, file.parent.resolve()


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key written twice in one mapping is an error.

    Plain PyYAML keeps the last value of a repeated key, so a second `training:` section
    would silently replace the first; that is the kind of typo the schema exists to catch.
    """


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> Any:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _value in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor` merges are meant to be overridden by the keys beside them
        key = loader.construct_object(key_node)
        try:
            first = seen.get(key)
        except TypeError:
            continue  # unhashable key: the base constructor reports it
        if first is not None:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"duplicate key {key!r} (first written on line {first.start_mark.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return loader.construct_yaml_map(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def read_yaml(file: Path) -> Any:
    """Parse `file` as UTF-8 YAML; any problem is a ProjectError with the line and column."""
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ProjectError(
            f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
        ) from exc
    except OSError as exc:
        raise ProjectError(f"{file}: cannot read: {exc.strerror}") from exc
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProjectError(f"{file}:{where} not valid YAML: {problem}") from exc


def format_validation_error(file: Path, exc: ValidationError) -> str:
    """One line per problem: the key path as written in the file, then what was expected."""
    lines = [f"{file}: {exc.error_count()} problem(s) in the project file"]
    for err in exc.errors():
        lines.append("  " + _describe(err))
    return "\n".join(lines)


# What the tag of each tagged list entry selects, for messages ("unknown source kind ...").
_TAG_MEANING = {"kind": "source kind", "block": "feature block"}


def _describe(err: ErrorDetails) -> str:
    path = key_path(err["loc"])
    kind = err["type"]
    got = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return f"{path}: required key is missing"
    if kind == "extra_forbidden":
        return f"{path}: unknown key (check the spelling)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag_key = str(ctx.get("discriminator", "")).strip("'")
        meaning = _TAG_MEANING.get(tag_key, tag_key)
        expected = ", ".join(_union_tags().get(tag_key, ()))
        if kind == "union_tag_not_found":
            return f"{path}.{tag_key}: required key is missing (the {meaning}: one of {expected})"
        return (
            f"{path}.{tag_key}: unknown {meaning} {ctx.get('tag')!r} (expected one of {expected})"
        )
    if kind in ("unknown_model_param", "invalid_model_param"):
        return str(err["msg"])  # already names every key as model.params.<key>
    msg = str(err["msg"]).removeprefix("Value error, ")
    if isinstance(got, dict | list):
        # A whole section or list was rejected: its repr would drown the message.
        return (
            f"{path}: {msg}"
            if kind == "value_error"
            else f"{path}: {msg} (got a {_yaml_type(got)})"
        )
    return f"{path}: {msg} (got {got!r})"


def _yaml_type(value: object) -> str:
    return "mapping" if isinstance(value, dict) else "list"


def key_path(loc: tuple[int | str, ...]) -> str:
    """('data', 'sources', 0, 'csv', 'path') → data.sources[0].path.

    Pydantic puts the tag of a discriminated union into the location; it is not a key
    the user wrote, so it is dropped when it follows a list index.
    """
    tags = {tag for group in _union_tags().values() for tag in group}
    out = ""
    prev_index = False
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            prev_index = True
            continue
        if prev_index and part in tags:
            prev_index = False
            continue
        out += f".{part}" if out else str(part)
        prev_index = False
    return out or "(top level)"


@functools.cache
def _union_tags() -> dict[str, tuple[str, ...]]:
    """Tag key → its values, in declaration order: every source `kind`, every `block`."""
    from typing import get_args

    from tinyops.data.config import SourceConfig
    from tinyops.features.config import BlockConfig

    tags: dict[str, tuple[str, ...]] = {}
    for union, field in ((SourceConfig, "kind"), (BlockConfig, "block")):
        members = get_args(get_args(union)[0])  # Annotated[Union[...], discriminator]
        tags[field] = tuple(
            tag for model in members for tag in get_args(model.model_fields[field].annotation)
        )
    return tags


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
    """The project with every default filled in, JSON-safe: the configuration the stages use."""
    return project.model_dump(mode="json")
