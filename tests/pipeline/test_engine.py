"""The stage engine: cache keys, cache hits, partial re-runs, failures — with toy stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tinyops.errors import DataError, GateFailed
from tinyops.pipeline.engine import Pipeline, Stage, StageContext, load_run


class Toy:
    """Two stages: `a` writes a file from its config; `b` doubles a's number."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.a_value = 1
        self.b_factor = 2
        self.fail_b: Exception | None = None

    def stages(self) -> list[Stage]:
        def a(ctx: StageContext) -> dict[str, Any]:
            self.calls.append("a")
            out = ctx.state_dir / "store" / f"a-{ctx.key[:8]}.txt"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(str(ctx.config["value"]))
            return {"value": ctx.config["value"], "path": str(out.relative_to(ctx.project_dir))}

        def b(ctx: StageContext) -> dict[str, Any]:
            self.calls.append("b")
            if self.fail_b:
                raise self.fail_b
            return {"value": ctx.inputs["a"]["value"] * ctx.config["factor"]}

        return [
            Stage("a", "1", (), lambda _: {"value": self.a_value}, a, paths=("path",)),
            Stage("b", "1", ("a",), lambda _: {"factor": self.b_factor}, b),
        ]


def test_second_run_is_all_cache_hits(tmp_path: Path) -> None:
    toy = Toy()
    first = Pipeline("toy", tmp_path, toy.stages()).run()
    second = Pipeline("toy", tmp_path, toy.stages()).run()
    assert toy.calls == ["a", "b"]
    assert [s.status for s in first.stages] == ["ok", "ok"]
    assert [s.cache_hit for s in second.stages] == [True, True]
    assert second.stage("b").output == {"value": 2}
    assert [s.key for s in first.stages] == [s.key for s in second.stages]


def test_changing_downstream_param_reruns_only_that_stage(tmp_path: Path) -> None:
    toy = Toy()
    Pipeline("toy", tmp_path, toy.stages()).run()
    toy.b_factor = 5
    rec = Pipeline("toy", tmp_path, toy.stages()).run()
    assert toy.calls == ["a", "b", "b"]
    assert [s.cache_hit for s in rec.stages] == [True, False]
    assert rec.stage("b").output["value"] == 5


def test_changing_upstream_param_reruns_dependants(tmp_path: Path) -> None:
    toy = Toy()
    Pipeline("toy", tmp_path, toy.stages()).run()
    toy.a_value = 3
    rec = Pipeline("toy", tmp_path, toy.stages()).run()
    assert toy.calls == ["a", "b", "a", "b"]
    assert rec.stage("b").output["value"] == 6


def test_rerun_with_same_output_keeps_dependants_cached(tmp_path: Path) -> None:
    toy = Toy()
    first = Pipeline("toy", tmp_path, toy.stages()).run()
    rec = Pipeline("toy", tmp_path, toy.stages()).run(force=["a"])
    # a ran again but wrote the same record, so b's key is unchanged
    assert toy.calls == ["a", "b", "a"]
    assert rec.stage("b").cache_hit
    assert rec.stage("b").key == first.stage("b").key


def test_cache_entry_with_missing_artifact_is_a_miss(tmp_path: Path) -> None:
    toy = Toy()
    first = Pipeline("toy", tmp_path, toy.stages()).run()
    (tmp_path / first.stage("a").output["path"]).unlink()
    rec = Pipeline("toy", tmp_path, toy.stages()).run()
    assert toy.calls == ["a", "b", "a"]
    assert [s.cache_hit for s in rec.stages] == [False, True]


def test_gate_failure_is_recorded_skips_rest_and_is_not_cached(tmp_path: Path) -> None:
    toy = Toy()
    toy.fail_b = GateFailed("accuracy 0.5 below 0.9", {"checks": [{"check": "acc"}]})
    rec = Pipeline("toy", tmp_path, toy.stages()).run()
    assert rec.status == "failed"
    assert rec.stage("b").status == "failed"
    assert rec.stage("b").gate == {"passed": False, "checks": [{"check": "acc"}]}
    assert "accuracy 0.5" in (rec.error or "")
    saved = load_run(tmp_path / ".tinyops")
    assert saved["status"] == "failed" and saved["run_id"] == rec.run_id
    toy.fail_b = None
    again = Pipeline("toy", tmp_path, toy.stages()).run()
    assert [s.cache_hit for s in again.stages] == [True, False]
    assert again.status == "succeeded"


def test_error_propagates_and_run_is_saved_as_failed(tmp_path: Path) -> None:
    toy = Toy()
    toy.fail_b = DataError("data/x.csv: column 'label' not found")
    with pytest.raises(DataError):
        Pipeline("toy", tmp_path, toy.stages()).run()
    saved = json.loads((tmp_path / ".tinyops" / "runs" / "latest.json").read_text())
    assert saved["status"] == "failed"
    assert saved["stages"][1]["error"] == "data/x.csv: column 'label' not found"
    assert not (tmp_path / ".tinyops" / "cache" / "b").exists()


def test_force_reruns_a_cached_stage(tmp_path: Path) -> None:
    toy = Toy()
    Pipeline("toy", tmp_path, toy.stages()).run()
    rec = Pipeline("toy", tmp_path, toy.stages()).run(force=["a"])
    assert toy.calls == ["a", "b", "a"]
    assert [s.cache_hit for s in rec.stages] == [False, True]


def test_until_stops_after_stage(tmp_path: Path) -> None:
    toy = Toy()
    rec = Pipeline("toy", tmp_path, toy.stages()).run(until="a")
    assert [s.name for s in rec.stages] == ["a"]
    assert toy.calls == ["a"]


def test_dependency_on_later_stage_is_rejected(tmp_path: Path) -> None:
    s = Toy().stages()
    with pytest.raises(ValueError, match="depends on 'a'"):
        Pipeline("toy", tmp_path, [s[1], s[0]])


def test_load_run_without_runs_names_the_path(tmp_path: Path) -> None:
    from tinyops.errors import StoreError

    with pytest.raises(StoreError, match=r"runs/latest\.json"):
        load_run(tmp_path / ".tinyops")
