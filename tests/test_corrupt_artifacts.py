"""Damaged artifacts: each is refused with an error naming the file, never used silently.

Truncated weights, an ID table with a duplicate or missing item, damaged prepared files, a damaged
MLflow store, a served model whose files differ from those logged. (An empty DVC cache entry is
DVC's to report: benchmarks/reliability.py shows `dvc status` flags it and `dvc repro` rebuilds it.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from idgenrec import stages
from idgenrec.cli import app
from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.data.textfile import DataFormatError
from idgenrec.ids import ItemIdTable
from idgenrec.layout import LAYOUT
from test_serving import ITEM_IDS, WORDS, save_tiny_model
from test_tracking import TINY_PARAMS, new_store

pytestmark = pytest.mark.flow


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("intact") / "model"
    save_tiny_model(folder)
    return folder


def damaged_copy(model: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    return copy


def test_truncated_weights_are_refused_naming_the_checkpoint(tiny_model, tmp_path):
    from idgenrec.backbone import BackboneUnavailableError
    from idgenrec.recommender.model import IDGenRecModel

    model = damaged_copy(tiny_model, tmp_path)
    truncate(model / "recommender" / "model.safetensors")
    with pytest.raises(ValueError, match=r"damaged model files, not as saved: recommender/model.safetensors \(SHA-256 differs\)"):
        IDGenRecModel.load(model)
    (model / "digests.json").unlink()  # a folder saved without digests: the checkpoint reader names it
    with pytest.raises(BackboneUnavailableError, match=f"{model / 'recommender'}: corrupt checkpoint"):
        IDGenRecModel.load(model)
    (model / "recommender" / "model.safetensors").write_bytes(b"")
    result = CliRunner().invoke(app, ["add-items", "--items", str(tmp_path / "x.tsv"), "--output", str(tmp_path / "o"), "--model", str(model)])
    assert result.exit_code == 1 and "x.tsv" in result.output  # the first problem, one line, no traceback


def test_a_flipped_byte_in_a_saved_model_is_refused_not_served(tiny_model, tmp_path):
    """A bit flip inside the weights still loads as a checkpoint: the digests the save recorded catch it."""
    from idgenrec.recommender.model import IDGenRecModel

    model = damaged_copy(tiny_model, tmp_path)
    IDGenRecModel.load(model)  # intact: loads
    weights = model / "recommender" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01  # inside the last tensor's values
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"recommender/model.safetensors \(SHA-256 differs\)"):
        IDGenRecModel.load(model)
    (model / "item_ids.tsv").unlink()
    with pytest.raises(ValueError, match=r"item_ids.tsv \(missing\)"):
        IDGenRecModel.load(model)


def test_id_table_with_duplicate_or_missing_item_is_refused(tiny_model, tmp_path):
    table = tiny_model / "item_ids.tsv"
    lines = table.read_text(encoding="utf-8").splitlines(keepends=True)
    duplicate = tmp_path / "duplicate.tsv"
    duplicate.write_text("".join(lines + [lines[1]]), encoding="utf-8")
    with pytest.raises(ValueError, match=rf"duplicate.tsv line {len(lines) + 1}: duplicate item_id '1'"):
        ItemIdTable.load(duplicate)

    # Training input: the ID table must list exactly the prepared items.
    root = tmp_path / "project"
    dataset = SequenceDataset("tiny", ITEM_IDS, WORDS, WORDS, ["u0"], [[0, 1, 2, 3, 4]])
    files = LAYOUT.under(root)
    dataset.save(files.prepared)
    files.id_table.parent.mkdir(parents=True)
    files.id_table.write_text("".join(lines[:-1]), encoding="utf-8")  # the last item missing
    params = Params.model_validate(yaml.safe_load(TINY_PARAMS))
    with pytest.raises(ValueError, match=rf"{files.id_table}: ID table \(7 items\) does not match"):
        stages.start_training(params, files)


def test_damaged_prepared_files_are_named(tmp_path):
    dataset = SequenceDataset("tiny", ITEM_IDS, WORDS, WORDS, ["u0", "u1"], [[0, 1, 2], [3, 4, 5]], {"k": 1})
    for name, damage, message in [
        ("sequences.tsv", lambda p: truncate(p, 0.8), r"sequences.tsv, line 3, field 'items'"),
        ("sequences.tsv", lambda p: p.write_bytes(b"\xff\xfe garbage"), r"sequences.tsv, line 1.*not valid utf-8"),
        ("items.tsv", lambda p: p.write_text("item_id\ttitle\ttext\n1\ta\n"), r"items.tsv, line 2, field 'text'"),
        ("items.tsv", lambda p: p.write_text(p.read_text() + "1\tdup\tdup\n"), r"items.tsv, line 10, field 'item_id'.*duplicate"),
        ("stats.json", lambda p: truncate(p), r"stats.json: not valid JSON"),
    ]:
        folder = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        dataset.save(folder)
        damage(folder / name)
        with pytest.raises(DataFormatError, match=message):
            SequenceDataset.load(folder)


def test_damaged_mlflow_store_is_named(tmp_path, monkeypatch):
    from idgenrec.tracking import configure_tracking
    from idgenrec.tracking.store import DamagedStoreError

    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    new_store(tmp_path)
    store = tmp_path / "mlruns" / "mlflow.db"
    configure_tracking(tmp_path)  # intact: accepted
    truncate(store, 0.3)
    with pytest.raises(DamagedStoreError, match=f"{store}: damaged MLflow store"):
        configure_tracking(tmp_path)
    store.write_bytes(b"not a database at all" * 100)
    (tmp_path / "params.yaml").write_text("data: {name: tiny}\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["registry", "list"])
    assert result.exit_code == 1 and "damaged MLflow store" in result.output and "Traceback" not in result.output
    mlflow.set_tracking_uri(None)


def test_served_model_with_damaged_files_is_refused(tiny_model, tmp_path, monkeypatch):
    from idgenrec.serving import log_recommender_model
    from idgenrec.tracking import configure_tracking, ensure_experiment

    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    new_store(tmp_path)
    configure_tracking(tmp_path)
    with mlflow.start_run(experiment_id=ensure_experiment("tiny", tmp_path)):
        info = log_recommender_model(tiny_model, [["1", "2"]], len(ITEM_IDS))
    assert mlflow.pyfunc.load_model(info.model_uri) is not None  # intact: loads
    [logged_table] = list((tmp_path / "mlruns").rglob("artifacts/model/item_ids.tsv"))  # the bundled folder
    lines = logged_table.read_text(encoding="utf-8").splitlines(keepends=True)
    logged_table.write_text("".join(lines[:-1]), encoding="utf-8")  # one item silently gone
    with pytest.raises(MlflowException, match=r"damaged model files, not as logged: item_ids.tsv \(SHA-256 differs\)"):
        mlflow.pyfunc.load_model(info.model_uri)
    mlflow.set_tracking_uri(None)
