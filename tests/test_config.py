from pathlib import Path

import pytest
import yaml

from idgenrec.config import ConfigError, Params, PhaseConfig, load_params

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("path", [ROOT / "params.yaml", *sorted((ROOT / "profiles").glob("*.yaml"))], ids=lambda p: p.name)
def test_shipped_parameter_files_are_valid(path):
    params = load_params(path)
    assert params.training.schedule, "a profile without a schedule trains nothing"
    assert any(phase.phase == "recommender" for phase in params.training.schedule)


@pytest.mark.parametrize("path", [ROOT / "params.yaml", *sorted((ROOT / "profiles").glob("*.yaml"))], ids=lambda p: p.name)
def test_shipped_parameter_files_set_every_knob_their_profile_reads(path):
    """DVC reruns a stage when a value in the file changes, not when a default in config.py does."""
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    profile = raw["backbone"]["profile"]
    unset = []
    for section, model in Params.model_fields.items():
        for name, field in model.annotation.model_fields.items():
            read_by = (field.json_schema_extra or {}).get("profiles")
            if (read_by is None or profile in read_by) and name not in raw.get(section, {}):
                unset.append(f"{section}.{name}")
        if section == "training":
            unset += [f"training.schedule[{i}].{name}" for i, phase in enumerate(raw[section]["schedule"])
                      for name in PhaseConfig.model_fields if name not in phase]
    assert not unset, f"{path.name} leaves these to config.py's defaults: {unset}"


def test_unknown_key_is_an_error_naming_it(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("training:\n  histroy_length: 5\n")
    with pytest.raises(ConfigError, match=r"training\.histroy_length"):
        load_params(path)


def test_invalid_value_names_the_field(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("evaluation:\n  selection_metric: ndcg@20\n")
    with pytest.raises(ConfigError, match="selection_metric"):
        load_params(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
