"""MLflow tracking against a temporary sqlite store: one parent run, nested rounds, everything logged.

Also home of the tiny project (raw P5 data + params.yaml with the tiny random backbone) and
the library-only pipeline run that test_registry, test_serving and test_flows reuse.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from idgenrec.backbone.seq2seq import pick_device, training_precision
from idgenrec.config import Params, load_params
from idgenrec.layout import LAYOUT, PipelineFiles, find_project_root
from idgenrec.tracking import (
    configure_tracking,
    default_tracking_uri,
    ensure_experiment,
    flatten_params,
    metric_key,
    model_folder_run_name,
    run_name,
)

pytestmark = pytest.mark.flow

WORDS = ["apple pie", "banana split", "cherry tart", "date cake", "fig roll", "grape jam", "kiwi tea", "lemon curd"]
TINY_PARAMS = """\
data: {name: tiny, format: p5, path: data/tiny, k_core: 5, text_fields: [title, genres]}
evaluation: {ks: [5, 10]}
backbone: {profile: tiny, hidden_size: 32, encoder_layers: 1, decoder_layers: 1}
warmup: {epochs: 3, batch_size: 8, learning_rate: 0.003}
ids: {kind: learned, beam_groups: 4, batch_size: 8, max_input_tokens: 64, seed: 0}
training:
  history_length: 3
  batch_size: 16
  bf16: false
  num_beams: 4
  soft_id_max_tokens: 4
  schedule:
    - {phase: recommender, epochs: 2, learning_rate: 0.003}
    - {phase: ids, epochs: 0.5, learning_rate: 0.001}
    - {phase: recommender, epochs: 1, learning_rate: 0.001}
registry: {margin: 0.0}
sasrec: {max_epochs: 2, patience: 1}
runtime: {processes: 1}
"""


def write_tiny_project(root: Path, params_text: str = TINY_PARAMS) -> Path:
    """params.yaml + a P5-layout dataset where item i is followed by item i+1 (mod 8)."""
    data = root / "data" / "tiny"
    data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    lines = []
    for user in range(24):
        start = rng.randrange(len(WORDS))
        items = [str((start + j) % len(WORDS) + 1) for j in range(rng.randint(6, 9))]
        lines.append(" ".join([f"u{user}", *items]))
    (data / "user_sequence.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = "".join(f"{i + 1}\t{word}\tfood\n" for i, word in enumerate(WORDS))
    (data / "items.tsv").write_text("item_id\ttitle\tgenres\n" + rows, encoding="utf-8")
    (root / "params.yaml").write_text(params_text, encoding="utf-8")
    return root


def run_tiny_pipeline(root: Path) -> PipelineFiles:
    """Every stage up to evaluation, by library calls, at the dvc.yaml paths under ``root``."""
    from idgenrec.atomic import write_json
    from idgenrec.backbone import load_seq2seq
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.data.prepare import prepare
    from idgenrec.data.validate import validate
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.ids import make_id_table, warm_up_generator
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel

    params = load_params(root / "params.yaml")
    files = LAYOUT.under(root)
    data = params.data.model_copy(update={"path": root / params.data.path})
    dataset = prepare(data, files.prepared)
    assert validate(data, files.prepared, files.validation_report).success
    write_json(files.warmup_metrics, warm_up_generator(dataset, params, files.generator, progress=False))
    generator, tokenizer = load_seq2seq(files.generator)
    table, quality = make_id_table("learned", dataset, generator, tokenizer, params.ids, progress=False)
    table.save(files.id_table, tokenizer)
    write_json(files.ids_metrics, quality)
    state = alternating.train(params, SequenceDataset.load(files.prepared), files.generator, files.id_table, files.workdir)
    write_json(files.training_curve, [{"step": n, **r} for n, r in enumerate(state.records, start=1)])
    model = IDGenRecModel.load(files.model)
    write_json(files.model_metrics, evaluate_protocol(model, dataset, params.evaluation.ks))
    return files


def trained_tiny_project(root: Path, monkeypatch) -> Path:
    """The tiny project trained up to evaluation, with a fresh store, as the working directory."""
    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    write_tiny_project(root)
    new_store(root)
    monkeypatch.chdir(root)
    run_tiny_pipeline(root)
    return root


@functools.cache
def _migrated_store() -> Path:
    """An empty MLflow sqlite store with its schema created (MLflow takes ~5 s to migrate one)."""
    folder = Path(tempfile.mkdtemp(prefix="mlflow-template-"))
    atexit.register(shutil.rmtree, folder, True)
    with contextlib.chdir(folder):
        configure_tracking(folder)
        MlflowClient().search_experiments()
        mlflow.set_tracking_uri(None)
    return folder / "mlruns" / "mlflow.db"


def new_store(root: Path) -> None:
    """Give ``root`` a fresh, already-migrated store at the path configure_tracking(root) uses."""
    target = root / "mlruns" / "mlflow.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_store(), target)


@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory) -> Path:
    root = write_tiny_project(tmp_path_factory.mktemp("project"))
    run_tiny_pipeline(root)
    return root


@pytest.fixture(scope="module")
def store(tiny_project) -> Path:
    """The tiny project's own sqlite store (and no leftover tracking URI from the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("IDGENREC_TRACKING_URI", raising=False)
        patch.chdir(tiny_project)  # MLflow resolves its default artifact root against the cwd
        new_store(tiny_project)
        configure_tracking(tiny_project)
        yield tiny_project
    mlflow.set_tracking_uri(None)


def test_store_is_absolute_under_the_project_root_from_any_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text("{}\n")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "sub" / "deeper")
    root = find_project_root()
    assert root == tmp_path.resolve()
    assert configure_tracking(root) == f"sqlite:///{tmp_path.resolve()}/mlruns/mlflow.db"
    assert mlflow.get_registry_uri() == default_tracking_uri(root)
    other = tmp_path / "other"
    assert configure_tracking(other) == default_tracking_uri(other)  # a second project in the same process
    monkeypatch.setenv("IDGENREC_TRACKING_URI", "http://tracking.example:5000")
    assert configure_tracking(root) == "http://tracking.example:5000"  # a shared server wins
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_experiment_per_dataset_with_artifacts_under_mlruns(store):
    experiment_id = ensure_experiment("tiny", store)
    assert ensure_experiment("tiny", store) == experiment_id
    experiment = mlflow.get_experiment(experiment_id)
    assert experiment.name == "idgenrec-tiny"
    assert experiment.artifact_location == (store.resolve() / "mlruns" / "idgenrec-tiny").as_uri()


def test_params_flatten_to_every_knob_with_valid_keys():
    params = Params.model_validate(yaml.safe_load(TINY_PARAMS))
    flat = flatten_params(params)
    assert flat["backbone.profile"] == "tiny"
    assert flat["training.schedule.length"] == "3"
    assert flat["training.schedule.1.phase"] == "ids"
    assert flat["evaluation.ks"] == "[5, 10]"
    assert flat["registry.margin"] == "0.0"
    assert all(len(v) < 6000 for v in flat.values())
    assert metric_key("valid/ndcg@10") == "valid/ndcg_at_10"


@pytest.mark.slow
def test_pipeline_run_logs_parent_nested_rounds_metrics_artifacts_dataset_and_model(tiny_project, store):
    from idgenrec.tracking import log_pipeline_run

    params = load_params(tiny_project / "params.yaml")
    logged = log_pipeline_run(params, LAYOUT, root=tiny_project, tags={"idgenrec.trigger": "test"})
    client = MlflowClient()
    run = client.get_run(logged.run_id)

    # named for what it trained; params, tags, final metrics (keys sanitised), dataset input
    assert run.info.run_name == "tiny-learned-seed0"
    assert run.data.params["training.schedule.1.phase"] == "ids"
    assert run.data.tags["idgenrec.trigger"] == "test"
    assert run.data.tags["idgenrec.precision"] == training_precision(pick_device(), params.training.bf16)
    assert logged.selection_metric == "valid/seen_included/ndcg@10"  # evaluation.exclude_seen is false
    model_metrics = json.loads((tiny_project / "metrics/model.json").read_text())
    assert run.data.metrics["valid/seen_included/ndcg_at_10"] == pytest.approx(model_metrics[logged.selection_metric])
    assert run.data.metrics["test/seen_excluded/ndcg_at_10"] == pytest.approx(model_metrics["test/seen_excluded/ndcg@10"])
    assert logged.selection_score == pytest.approx(model_metrics[logged.selection_metric])
    assert "ids/unique_ratio" in run.data.metrics and "warmup/final_loss" in run.data.metrics
    [dataset_input] = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == "tiny-prepared"
    assert dataset_input.dataset.digest == logged.dataset_digest

    # one nested run per phase, per-epoch metrics by step
    children = client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{logged.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["round-00-recommender", "round-01-ids", "round-02-recommender"]
    first = next(c for c in children if c.info.run_name == "round-00-recommender")
    assert [m.step for m in client.get_metric_history(first.info.run_id, "train_loss")] == [1, 2]
    ids_round = next(c for c in children if c.info.run_name == "round-01-ids")
    assert "ids_changed" in ids_round.data.metrics

    # per-round metrics on the parent (step = phase index), IDs changed between rounds included
    assert [m.step for m in client.get_metric_history(logged.run_id, "round/train_loss")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(logged.run_id, "round/ids_changed")] == [1]
    assert len(client.get_metric_history(logged.run_id, "curve/valid_ndcg_at_10")) == 3  # one per recommender epoch

    artifacts = {a.path for folder in ("", "config", "validation", "ids/rounds", "plots", "metrics") for a in client.list_artifacts(logged.run_id, folder)}
    assert {"config/params.yaml", "validation/report.json", "plots/training_curve.png", "metrics/model.json"} <= artifacts
    assert {"ids/rounds/ids-00.tsv", "ids/rounds/ids-02.tsv"} <= artifacts
    assert run.info.artifact_uri.startswith((tiny_project.resolve() / "mlruns" / "idgenrec-tiny").as_uri())

    # the model is logged with its signature and loads as a pyfunc
    model = mlflow.pyfunc.load_model(logged.model_uri)
    assert [c.name for c in model.metadata.get_input_schema().inputs] == ["history", "k"]
    out = model.predict(pd.DataFrame({"history": [["1", "2"]], "k": [3]}))
    assert len(out["item_ids"][0]) == 3


def test_runs_are_named_for_what_they_trained():
    params = Params.model_validate(yaml.safe_load(TINY_PARAMS))
    assert run_name(params) == "tiny-learned-seed0"
    seeded = params.model_copy(update={
        "ids": params.ids.model_copy(update={"kind": "title", "seed": 1}),
        "training": params.training.model_copy(update={"seed": 2}),
    })
    assert run_name(seeded) == "tiny-title-seed2-idseed1"
    if "architecture" in type(params.backbone).model_fields:  # the decoder-only recommender names itself
        causal = params.model_copy(update={"backbone": params.backbone.model_copy(update={"architecture": "causal"})})
        assert run_name(causal) == "tiny-learned-causal-seed0"
    assert model_folder_run_name(params, Path("artifacts/model-plus"), grown_from="3") == "tiny-v3-plus-new-items"
    assert model_folder_run_name(params, Path("elsewhere/candidate"), grown_from=None) == "tiny-candidate"


def test_code_version_names_the_commit_and_a_modified_library(tmp_path):
    from idgenrec.provenance import code_version

    assert code_version(tmp_path) is None  # not a git checkout
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "idgenrec").mkdir()
    (tmp_path / "idgenrec" / "a.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("r\n")
    subprocess.run([*git, "add", "."], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / "README.md").write_text("changed outside the library\n")
    assert code_version(tmp_path) == {"commit": head, "library_modified": False}
    (tmp_path / "idgenrec" / "a.py").write_text("x = 2\n")
    assert code_version(tmp_path) == {"commit": head, "library_modified": True}
