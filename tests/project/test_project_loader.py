"""`load_project`: the starter and the digits example load with defaults filled in, and
every kind of mistake in `tinyops.yaml` is reported with the file, the key path as the
user wrote it, and what was expected."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml

from tinyops.errors import ProjectError
from tinyops.project import PROJECT_FILE, find_project_file, load_project
from tinyops.project.loader import dump_effective, key_path
from tinyops.targets.catalog import board_ids

REPO = Path(__file__).resolve().parents[2]
DIGITS = REPO / "examples" / "digits"

SOURCE_KINDS = "csv, parquet, npz, wav_folder, image_folder, video_folder, text_folder, sklearn"
BLOCK_NAMES = (
    "scale, standardize, minmax, window, fft_band_power, log_mel, mfcc, image_resize, "
    "grayscale, image_normalize, reshape, cast_float"
)


def starter_text(name: str = "demo") -> str:
    template = resources.files("tinyops.project") / "templates" / "tinyops.yaml"
    return template.read_text(encoding="utf-8").replace("__NAME__", name)


def starter_dict() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(starter_text())
    return loaded


def write_text(folder: Path, text: str) -> Path:
    file = folder / PROJECT_FILE
    file.write_text(text, encoding="utf-8")
    return file


def write_mutated(folder: Path, mutate: Callable[[dict[str, Any]], object]) -> Path:
    """The starter project with `mutate` applied to its parsed mapping."""
    raw = copy.deepcopy(starter_dict())
    mutate(raw)
    return write_text(folder, yaml.safe_dump(raw, sort_keys=False))


def project_error(file: Path) -> str:
    with pytest.raises(ProjectError) as info:
        load_project(file.parent)
    message = str(info.value)
    assert message.startswith(f"{file}:"), message  # every error names the file first
    return message


# --- files that load ---------------------------------------------------------------


def test_starter_template_loads_with_every_default_filled_in(tmp_path: Path) -> None:
    write_text(tmp_path, starter_text("my-sensor"))

    project, root = load_project(tmp_path)

    assert root == tmp_path.resolve()
    assert project.name == "my-sensor"
    # Written in the template:
    assert project.data.sources[0].kind == "sklearn"
    assert project.data.validation.min_samples == 1000
    assert project.data.validation.value_range == (0.0, 16.0)
    assert project.training.epochs == 25
    assert project.target.board == "nano33ble"
    assert project.target.budgets.ram_fraction == 0.25
    # Not written, so defaults: the template's own params and every omitted key.
    assert project.model.params == {
        "filters": [8, 16],
        "kernel_size": 3,
        "pool_size": 2,
        "dense_units": 32,
        "dropout": 0.1,
    }
    assert project.data.validation.max_missing_fraction == 0.0
    assert project.data.validation.fail_on == "error"
    assert project.features.blocks[0].block == "scale"
    assert project.features.blocks[0].add == 0.0
    assert project.training.early_stopping_patience is None
    assert project.training.deterministic is True
    assert project.optimize.pruning is not None
    assert project.optimize.pruning.schedule == "polynomial"
    assert project.target.budgets.ram_bytes is None
    assert project.tracking.uri is None
    assert project.bundle.signing_key == ".tinyops/keys/signing.key"
    assert project.bundle.output_dir == "dist"
    assert project.bundle.expires_days == 365


def test_digits_example_loads_from_its_folder_or_its_file() -> None:
    project, root = load_project(DIGITS)
    same, same_root = load_project(DIGITS / PROJECT_FILE)

    assert root == same_root == DIGITS.resolve()
    assert same == project
    assert project.name == "digits"
    assert project.model.template == "cnn2d"
    assert project.optimize.variants == ["float32", "float16", "dynamic", "int8"]
    assert project.bundle.version == "1.0.0"
    assert project.gates.min_accuracy == 0.9


def test_effective_config_is_json_safe_and_spells_out_the_defaults() -> None:
    project, _ = load_project(DIGITS)

    effective = json.loads(json.dumps(dump_effective(project)))

    assert effective["training"]["deterministic"] is True
    assert effective["data"]["split"] == {
        "train": 0.7,
        "validation": 0.15,
        "test": 0.15,
        "seed": 42,
        "stratify": True,
    }
    assert effective["tracking"] == {"uri": None, "experiment": None, "registered_model": None}


def test_a_merge_key_may_be_overridden_beside_it(tmp_path: Path) -> None:
    # `<<: *anchor` then the same key is YAML's way to reuse and override; it is not a
    # duplicate key.
    text = starter_text().replace(
        "    - block: scale         # pixels 0..16 → 0..1\n      mul: 0.0625\n",
        "    - &scale {block: scale, mul: 0.0625}\n    - {<<: *scale, mul: 2.0}\n",
    )
    write_text(tmp_path, text)

    project, _ = load_project(tmp_path)

    assert [b.model_dump() for b in project.features.blocks] == [
        {"block": "scale", "mul": 0.0625, "add": 0.0},
        {"block": "scale", "mul": 2.0, "add": 0.0},
    ]


def test_find_project_file_accepts_the_folder_or_the_file(tmp_path: Path) -> None:
    file = write_text(tmp_path, starter_text())

    assert find_project_file(tmp_path) == file
    assert find_project_file(file) == file
    with pytest.raises(ProjectError) as info:
        find_project_file(tmp_path / "elsewhere")
    assert str(info.value) == (
        f"{tmp_path / 'elsewhere'}: no project file here "
        "(expected tinyops.yaml; `tinyops init` writes one)"
    )


# --- YAML-level problems -----------------------------------------------------------


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    # Line 3 starts with a tab, which YAML forbids in indentation: line 3, column 1.
    file = write_text(tmp_path, "name: demo\ntraining:\n\tepochs: 3\n")

    assert project_error(file) == (
        f"{file}: line 3, column 1: not valid YAML: "
        "found character '\\t' that cannot start any token"
    )


def test_unclosed_flow_list_points_at_where_the_parser_gave_up(tmp_path: Path) -> None:
    # The list opened on line 2 is still open when `target:` (line 3, column 7 is the
    # colon) arrives.
    file = write_text(tmp_path, "name: demo\nmodel: [1, 2\ntarget: x\n")

    assert project_error(file) == (
        f"{file}: line 3, column 7: not valid YAML: expected ',' or ']', but got ':'"
    )


def test_a_key_written_twice_is_an_error_not_a_silent_override(tmp_path: Path) -> None:
    text = starter_text() + "training: {epochs: 1}\n"
    line_of_first = 1 + starter_text().splitlines().index(
        "training: {epochs: 25, batch_size: 32, learning_rate: 0.003, seed: 42}"
    )
    second = len(starter_text().splitlines()) + 1
    file = write_text(tmp_path, text)

    assert project_error(file) == (
        f"{file}: line {second}, column 1: not valid YAML: "
        f"duplicate key 'training' (first written on line {line_of_first})"
    )


def test_a_nested_duplicate_key_is_reported_too(tmp_path: Path) -> None:
    file = write_text(tmp_path, "name: demo\ntraining:\n  epochs: 3\n  epochs: 4\n")

    assert project_error(file) == (
        f"{file}: line 4, column 3: not valid YAML: "
        "duplicate key 'epochs' (first written on line 3)"
    )


def test_a_file_that_is_not_utf8_is_reported_with_the_byte(tmp_path: Path) -> None:
    file = tmp_path / PROJECT_FILE
    file.write_bytes(b"name: caf\xe9\n")  # Latin-1 é: byte 9 is not valid UTF-8

    assert project_error(file) == f"{file}: not UTF-8 text (byte 0xe9 at offset 9)"


@pytest.mark.parametrize(
    ("text", "found"),
    [("", "an empty file"), ("- name: demo\n", "a list"), ("just words\n", "a str")],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, found: str) -> None:
    file = write_text(tmp_path, text)

    assert project_error(file) == (
        f"{file}: expected a mapping of sections at the top level "
        f"(name:, data:, model:, target: ...), got {found}"
    )


# --- schema problems: one line per problem, key path first -------------------------


def _without(*path: str | int) -> Callable[[dict[str, Any]], object]:
    def mutate(raw: dict[str, Any]) -> None:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return mutate


def _set(value: Any, *path: str | int) -> Callable[[dict[str, Any]], object]:
    def mutate(raw: dict[str, Any]) -> None:
        node: Any = raw
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return mutate


SCHEMA_ERRORS = [
    pytest.param(_without("model"), "model: required key is missing", id="missing-model"),
    pytest.param(
        _without("target", "board"), "target.board: required key is missing", id="missing-board"
    ),
    pytest.param(
        _without("data", "sources"),
        "data.sources: required key is missing",
        id="missing-sources",
    ),
    pytest.param(
        _set([], "data", "sources"),
        "data.sources: List should have at least 1 item after validation, not 0 (got a list)",
        id="empty-sources",
    ),
    pytest.param(
        _set(1, "colour"), "colour: unknown key (check the spelling)", id="unknown-top-level"
    ),
    pytest.param(
        _set(10, "training", "epoch"),
        "training.epoch: unknown key (check the spelling)",
        id="unknown-training.epoch",
    ),
    pytest.param(
        _set(1, "target", "budgets", "ram_kb"),
        "target.budgets.ram_kb: unknown key (check the spelling)",
        id="unknown-three-deep",
    ),
    pytest.param(
        _set(2.0, "features", "blocks", 0, "mull"),
        "features.blocks[0].mull: unknown key (check the spelling)",
        id="unknown-block-key",
    ),
    pytest.param(
        _set(16000, "features", "sample_rate"),
        "features.sample_rate: unknown key (check the spelling)",
        id="features-sample-rate-is-not-a-project-key",
    ),
    pytest.param(
        _set("ten", "training", "epochs"),
        "training.epochs: Input should be a valid integer, unable to parse string as an "
        "integer (got 'ten')",
        id="wrong-type",
    ),
    pytest.param(
        _set(1.5, "gates", "min_accuracy"),
        "gates.min_accuracy: Input should be less than or equal to 1 (got 1.5)",
        id="out-of-range",
    ),
    pytest.param(
        _set([1], "training"),
        "training: Input should be a valid dictionary or instance of TrainingConfig (got a list)",
        id="section-is-a-list",
    ),
    pytest.param(
        _set({"kind": "sklearn", "name": "digits"}, "data", "sources"),
        "data.sources: Input should be a valid list (got a mapping)",
        id="sources-is-a-mapping",
    ),
    pytest.param(
        _set([{"kind": "hdf5", "path": "x.h5"}], "data", "sources"),
        f"data.sources[0].kind: unknown source kind 'hdf5' (expected one of {SOURCE_KINDS})",
        id="unknown-source-kind",
    ),
    pytest.param(
        _set([{"path": "x.csv"}], "data", "sources"),
        f"data.sources[0].kind: required key is missing (the source kind: one of {SOURCE_KINDS})",
        id="source-without-kind",
    ),
    pytest.param(
        _set([{"kind": "wav_folder", "path": "clips"}], "data", "sources"),
        "data.sources[0].sample_rate: required key is missing",
        id="missing-key-inside-a-source",
    ),
    pytest.param(
        _set("mnist", "data", "sources", 0, "name"),
        "data.sources[0].name: Input should be 'digits', 'iris', 'wine' or 'breast_cancer' "
        "(got 'mnist')",
        id="sklearn-name",
    ),
    pytest.param(
        _set([{"block": "scale"}, {"block": "wavelet"}], "features", "blocks"),
        f"features.blocks[1].block: unknown feature block 'wavelet' (expected one of "
        f"{BLOCK_NAMES})",
        id="unknown-feature-block",
    ),
    pytest.param(
        _set([{"mul": 2.0}], "features", "blocks"),
        f"features.blocks[0].block: required key is missing (the feature block: one of "
        f"{BLOCK_NAMES})",
        id="block-without-name",
    ),
    pytest.param(
        _set([{"block": "mfcc", "num_coefficients": 50}], "features", "blocks"),
        "features.blocks[0]: num_coefficients (50) must be <= num_mel_bins (40)",
        id="block-cross-field-check",
    ),
    pytest.param(
        _set("My Project", "name"),
        "name: expected a lowercase identifier like 'digits' or 'kws-yes-no': a letter, then "
        "up to 62 lowercase letters, digits, - or _ (got 'My Project')",
        id="bad-name",
    ),
    pytest.param(
        _set("digits\n", "name"),
        "name: expected a lowercase identifier like 'digits' or 'kws-yes-no': a letter, then "
        "up to 62 lowercase letters, digits, - or _ (got 'digits\\n')",
        id="name-with-trailing-newline",
    ),
    pytest.param(
        _set("resnet", "model", "template"),
        "model.template: Input should be 'mlp', 'cnn2d', 'ds_cnn1d', 'ds_cnn2d' or "
        "'autoencoder' (got 'resnet')",
        id="unknown-template",
    ),
    pytest.param(
        _set(3, "model", "params", "filterz"),
        "model.params.filterz: unknown parameter for template 'cnn2d'; expected keys: "
        "dense_units, dropout, filters, kernel_size, pool_size",
        id="unknown-model-param",
    ),
    pytest.param(
        _set("mlp", "model", "template"),
        "model.params.dense_units, model.params.filters: unknown parameter for template "
        "'mlp'; expected keys: dropout, hidden_units",
        id="params-of-another-template",
    ),
    pytest.param(
        _set(1.5, "model", "params", "dropout"),
        "model.params.dropout: Input should be less than 1 (template 'cnn2d')",
        id="bad-model-param-value",
    ),
    pytest.param(
        _set(0.9, "data", "split", "train"),
        "data.split: train + validation + test must be 1, got 0.9 + 0.15 + 0.15 = 1.2",
        id="split-sum",
    ),
    pytest.param(
        _set([16, 0], "data", "validation", "value_range"),
        "data.validation: value_range must be [lo, hi] with lo <= hi, got [16.0, 0.0]",
        id="value-range-order",
    ),
    pytest.param(
        _set(["int8", "int8"], "optimize", "variants"),
        "optimize.variants: lists int8 more than once",
        id="repeated-variant",
    ),
    pytest.param(
        _set("int4", "bundle", "variant"),
        "bundle.variant: Input should be 'int8' or 'pruned-int8' (got 'int4')",
        id="unknown-bundle-variant",
    ),
]


@pytest.mark.parametrize(("mutate", "line"), SCHEMA_ERRORS)
def test_schema_error_names_the_key_path(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], object], line: str
) -> None:
    file = write_mutated(tmp_path, mutate)

    assert project_error(file) == f"{file}: 1 problem(s) in the project file\n  {line}"


def test_every_problem_is_listed_not_just_the_first(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        raw["data"]["sources"] = [{"kind": "csv", "pathh": "x.csv"}]
        raw["training"]["epoch"] = 3

    file = write_mutated(tmp_path, mutate)

    assert project_error(file).splitlines()[1:] == [
        "  data.sources[0].path: required key is missing",
        "  data.sources[0].pathh: unknown key (check the spelling)",
        "  training.epoch: unknown key (check the spelling)",
    ]


# --- checks across sections (after the schema passes) ------------------------------


def test_unknown_board_lists_the_catalog(tmp_path: Path) -> None:
    file = write_mutated(tmp_path, _set("uno", "target", "board"))

    message = project_error(file)

    assert message == (
        f"{file}: target.board: unknown board 'uno' (expected one of {', '.join(board_ids())})"
    )
    assert "nano33ble" in board_ids()
    assert "pico" in board_ids()


def test_pruned_bundle_needs_a_pruning_section(tmp_path: Path) -> None:
    def mutate(raw: dict[str, Any]) -> None:
        del raw["optimize"]["pruning"]
        raw["bundle"]["variant"] = "pruned-int8"

    file = write_mutated(tmp_path, mutate)

    assert project_error(file) == (
        f"{file}: bundle.variant: 'pruned-int8' needs an optimize.pruning section"
    )


def test_pruned_bundle_with_pruning_loads(tmp_path: Path) -> None:
    write_mutated(tmp_path, _set("pruned-int8", "bundle", "variant"))

    project, _ = load_project(tmp_path)

    assert project.bundle.variant == "pruned-int8"


def test_variants_must_include_int8(tmp_path: Path) -> None:
    file = write_mutated(tmp_path, _set(["float32", "float16"], "optimize", "variants"))

    assert project_error(file) == (
        f"{file}: optimize.variants: must include 'int8' (the variant that runs on the MCU)"
    )


# --- key paths --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "path"),
    [
        ((), "(top level)"),
        (("name",), "name"),
        (("data", "sources", 0, "csv", "path"), "data.sources[0].path"),
        (
            ("features", "blocks", 2, "mfcc", "num_coefficients"),
            "features.blocks[2].num_coefficients",
        ),
        (("optimize", "variants", 1), "optimize.variants[1]"),
        # A tag name that is not right after a list index is a key the user wrote.
        (("target", "budgets", "scale"), "target.budgets.scale"),
    ],
)
def test_key_path(loc: tuple[int | str, ...], path: str) -> None:
    assert key_path(loc) == path
