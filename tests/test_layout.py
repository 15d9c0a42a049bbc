"""dvc.yaml and the library agree: the artifact layout, the stage list and the code each stage depends on."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest
import yaml

from idgenrec.layout import LAYOUT, PipelineFiles, find_project_root
from idgenrec.stages import MODEL_STAGES, PIPELINE

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
# What each stage writes, as fields of the layout.
OUTPUTS = {
    "prepare": ["prepared"],
    "validate": ["validation_report"],
    "popularity": ["popularity_metrics"],
    "sasrec": ["sasrec_model", "sasrec_metrics"],
    "warmup": ["generator", "warmup_metrics"],
    "ids": ["ids", "ids_metrics"],
    "train": ["workdir", "training_curve"],
    "evaluate": ["model_metrics"],
    "register": ["registry_record"],
}


def declared_outputs(stage: dict) -> set[str]:
    return {next(iter(o)) if isinstance(o, dict) else o for key in ("outs", "metrics", "plots") for o in stage.get(key, [])}


def test_the_stage_table_is_dvc_yamls_in_its_order():
    assert [stage.name for stage in PIPELINE] == list(STAGES)
    assert MODEL_STAGES == ("prepare", "validate", "warmup", "ids", "train", "evaluate", "register")


@pytest.mark.parametrize("stage", list(OUTPUTS))
def test_each_stage_writes_where_the_layout_says(stage):
    assert {str(getattr(LAYOUT, field)) for field in OUTPUTS[stage]} == declared_outputs(STAGES[stage])


def test_stage_commands_name_only_layout_paths():
    """Every path a dvc.yaml command passes is the layout's, so the CLI's defaults would write the same files."""
    layout_paths = {str(getattr(LAYOUT, field.name)) for field in dataclasses.fields(PipelineFiles)} | {str(LAYOUT.model)}
    for name, stage in STAGES.items():
        words = shlex.split(stage["cmd"])
        paths = [value for option, value in zip(words, words[1:]) if option.startswith("--") and "/" in value]
        assert paths and set(paths) <= layout_paths, name


def test_every_code_dependency_exists():
    """A renamed module must be renamed in dvc.yaml too, or DVC stops rerunning the stage when it changes."""
    for name, stage in STAGES.items():
        for dep in stage["deps"]:
            if dep.startswith("idgenrec/"):
                assert (ROOT / dep).exists(), f"stage {name}: {dep}"


def test_layout_moves_under_a_root_and_takes_overrides(tmp_path):
    files = LAYOUT.under(tmp_path)
    assert files.id_table == tmp_path.resolve() / "artifacts/ids/item_ids.tsv"
    assert files.model == tmp_path.resolve() / "artifacts/model/best"
    changed = LAYOUT.with_paths(prepared="elsewhere", ids=None)
    assert changed.prepared == Path("elsewhere") and changed.ids == LAYOUT.ids


def test_project_root_is_found_from_a_subfolder(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_project_root(tmp_path / "a" / "b") == tmp_path.resolve()
