"""docs/project-file.md stays in step with the schema: every key of every section, source
kind, feature block and model template is documented, and its examples load."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from tinyops.data.config import SourceConfig
from tinyops.features.config import BlockConfig
from tinyops.project import PROJECT_FILE, Project, load_project
from tinyops.project.schema import DataSection
from tinyops.train.models import TEMPLATE_PARAMS

DOC = Path(__file__).resolve().parents[2] / "docs" / "project-file.md"


def union_members(union: Any) -> tuple[type[BaseModel], ...]:
    return get_args(get_args(union)[0])  # Annotated[Union[...], discriminator]


def section_models() -> list[type[BaseModel]]:
    """Every model a project file is parsed into, found by walking the schema."""
    seen: list[type[BaseModel]] = []

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation in seen:
                return
            seen.append(annotation)
            for field in annotation.model_fields.values():
                walk(field.annotation)
        for arg in get_args(annotation):
            walk(arg)

    walk(Project)
    return seen + list(TEMPLATE_PARAMS.values())


def documented_names() -> set[str]:
    return set(re.findall(r"`([a-z_0-9]+)`", DOC.read_text(encoding="utf-8")))


@pytest.mark.parametrize("model", section_models(), ids=lambda m: m.__name__)
def test_every_key_is_documented(model: type[BaseModel]) -> None:
    missing = sorted(set(model.model_fields) - documented_names())

    assert missing == [], f"{model.__name__} keys missing from {DOC.name}: {missing}"


def test_every_source_kind_block_and_template_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    kinds = [m.model_fields["kind"].default for m in union_members(SourceConfig)]
    blocks = [m.model_fields["block"].default for m in union_members(BlockConfig)]

    assert [k for k in kinds if f"`kind: {k}`" not in text] == []
    assert [b for b in blocks if f"| `{b}` |" not in text] == []
    assert [t for t in TEMPLATE_PARAMS if f"**`{t}`**" not in text] == []


def test_the_walk_reaches_nested_sections() -> None:
    names = {m.__name__ for m in section_models()}

    assert {"PruningConfig", "Budgets", "SplitConfig", "MfccConfig", "WavFolderSource"} <= names


def test_every_yaml_example_loads(tmp_path: Path) -> None:
    """Whole projects load as written; a fragment is placed in the minimal project."""
    snippets = [
        yaml.safe_load(b)
        for b in re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    ]
    projects = [s for s in snippets if isinstance(s, dict) and "name" in s]
    assert len(projects) == 2  # the minimal project and the complete example
    minimal = projects[0]
    data_keys = set(DataSection.model_fields)

    for snippet in snippets:
        raw = copy.deepcopy(minimal)
        if isinstance(snippet, list):  # source entries
            raw["data"]["sources"] = snippet
        elif "name" in snippet:
            raw = snippet
        elif set(snippet) <= data_keys:
            raw["data"].update(snippet)
        else:
            assert set(snippet) <= set(Project.model_fields), snippet
            raw.update(snippet)
        (tmp_path / PROJECT_FILE).write_text(yaml.safe_dump(raw), encoding="utf-8")
        project, _ = load_project(tmp_path)
        assert project.target.board == "nano33ble"
