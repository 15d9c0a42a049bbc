"""Registry: challenger/champion aliases, the promotion rule with its margin, forced promotion,
rollback, the recorded reasons, and the `idgenrec registry` commands, on a temporary store."""

from __future__ import annotations

import json

import mlflow
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from idgenrec import registry
from idgenrec.tracking import configure_tracking
from test_tracking import new_store

pytestmark = pytest.mark.flow

NAME = "idgenrec-tiny"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    (root / "params.yaml").write_text("data: {name: tiny}\nregistry: {margin: 0.01}\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("IDGENREC_TRACKING_URI", raising=False)
        patch.chdir(root)
        new_store(root)
        configure_tracking(root)
        MlflowClient().create_registered_model(NAME)
        yield root
    mlflow.set_tracking_uri(None)


def add_version(
    score: float | None, digest: str = "d1", metric: str = "valid/ndcg@10", popularity: float | None = None,
    name: str = NAME,
) -> str:
    """A registered version as `register_version` leaves it (the source need not exist for these tests)."""
    tags = {registry.METRIC_TAG: metric, registry.DIGEST_TAG: digest}
    if score is not None:
        tags[registry.SCORE_TAG] = repr(score)
    if popularity is not None:
        tags[registry.POPULARITY_TAG] = repr(popularity)
    version = MlflowClient().create_model_version(name, source="file:///nowhere/model", tags=tags).version
    MlflowClient().set_registered_model_alias(name, registry.CHALLENGER, version)
    return str(version)


def champion() -> str | None:
    try:
        return str(MlflowClient().get_model_version_by_alias(NAME, registry.CHAMPION).version)
    except mlflow.exceptions.MlflowException:
        return None


def tags(version: str) -> dict:
    return MlflowClient().get_model_version(NAME, version).tags


def test_promotion_rule_margin_force_and_rollback(store):
    first = add_version(0.10)
    decision = registry.promote(NAME, margin=0.01)
    assert decision.promoted and decision.reason == "no champion yet" and champion() == first

    # not better by more than the margin: rejected, and the reason is on the version
    close = add_version(0.105)
    decision = registry.promote(NAME, margin=0.01)
    assert not decision.promoted and champion() == first
    assert tags(close)[registry.DECISION_TAG] == "rejected"
    assert "does not beat champion v1's 0.1000 by more than margin 0.01" in tags(close)[registry.REASON_TAG]
    assert "rejected" in MlflowClient().get_model_version(NAME, close).description

    # clearly better: promoted; the dethroned version is remembered for rollback
    better = add_version(0.2)
    decision = registry.promote(NAME, margin=0.01)
    assert decision.promoted and champion() == better and decision.previous_champion == first
    assert tags(better)[registry.PREVIOUS_TAG] == first

    # a worse version only by force
    worse = add_version(0.05)
    assert not registry.promote(NAME, margin=0.0, version=worse).promoted
    forced = registry.promote(NAME, margin=0.0, version=worse, force=True)
    assert forced.promoted and forced.reason.startswith("forced by") and champion() == worse

    # rollback walks back the chain of champions
    assert registry.rollback(NAME).champion == better and champion() == better
    assert tags(worse)[registry.DECISION_TAG] == "rolled_back"
    assert registry.rollback(NAME).champion == first
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(NAME)

    # promoting the champion again changes nothing
    assert not registry.promote(NAME, margin=0.0, version=first).promoted


def test_a_version_that_does_not_beat_popularity_is_never_champion(store):
    name = "idgenrec-floor"
    MlflowClient().create_registered_model(name)
    below = add_version(0.03, popularity=0.034, name=name)
    decision = registry.promote(name, margin=0.0)
    assert not decision.promoted and decision.champion is None  # not even the first version
    assert "popularity baseline's 0.0340" in decision.reason
    assert MlflowClient().get_model_version(name, below).tags[registry.DECISION_TAG] == "rejected"
    level = add_version(0.034, popularity=0.034, name=name)
    assert not registry.promote(name, margin=0.0).promoted  # a tie does not beat it either
    above = add_version(0.05, popularity=0.034, name=name)
    decision = registry.promote(name, margin=0.0)
    assert decision.promoted and decision.reason == "no champion yet" and decision.champion == above
    assert registry.promote(name, margin=0.0, version=level, force=True).promoted  # --force still overrides


def test_incomparable_versions_need_force(store):
    registry.promote(NAME, margin=0.0, version=add_version(0.3), force=True)
    unscored = add_version(None)
    assert "no selection_score" in registry.promote(NAME, margin=0.0, version=unscored).reason
    other_metric = add_version(0.9, metric="valid/recall@10")
    assert "not comparable" in registry.promote(NAME, margin=0.0, version=other_metric).reason
    new_data = add_version(0.5, digest="d2")
    decision = registry.promote(NAME, margin=0.0, version=new_data)
    assert decision.promoted and "different dataset version" in decision.reason


def test_errors_name_the_missing_piece(store):
    with pytest.raises(registry.RegistryError, match="no version 999"):
        registry.promote(NAME, margin=0.0, version=999)
    with pytest.raises(registry.RegistryError, match="no registered model 'idgenrec-nope'"):
        registry.list_versions("idgenrec-nope")


def test_cli_list_promote_rollback(store):
    from idgenrec.cli.registry import app

    runner = CliRunner()
    version = add_version(10.0, popularity=0.25)
    result = runner.invoke(app, ["promote"])  # the challenger, margin 0.01 from params.yaml
    assert result.exit_code == 0, result.output
    assert f"v{version} promoted to champion" in result.output
    rejected = runner.invoke(app, ["promote", "--version", "1"])
    assert rejected.exit_code == 2 and "NOT promoted" in rejected.output
    listing = runner.invoke(app, ["list"])
    assert listing.exit_code == 0 and "champion" in listing.output
    assert f"{version:>7}  challenger,champion" in listing.output and "10.0000   0.2500" in listing.output
    result = runner.invoke(app, ["rollback"])
    assert result.exit_code == 0 and f"champion v{version} -> v" in result.output
    missing = runner.invoke(app, ["promote", "--version", "999"])
    assert missing.exit_code == 1 and "no version 999" in missing.output


@pytest.mark.slow
def test_record_pipeline_run_logs_registers_and_promotes(tmp_path, monkeypatch):
    """The DVC `register` stage's command end to end on the tiny project: record written, v1 champion."""
    from idgenrec.cli.registry import app
    from test_tracking import trained_tiny_project

    root = trained_tiny_project(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["log-run", "--output", "metrics/registry.json"])
    mlflow.set_tracking_uri(None)
    assert result.exit_code == 0, result.output
    record = json.loads((root / "metrics/registry.json").read_text())
    assert record["model_name"] == NAME and record["model_version"] == "1"
    assert record["promotion"]["promoted"] and record["promotion"]["reason"] == "no champion yet"
    assert record["tracking_uri"] == f"sqlite:///{root.resolve()}/mlruns/mlflow.db"
    assert record["selection_metric"] == "valid/seen_included/ndcg@10" and record["selection_score"] is not None
    # the floor the rule checked is on the version: popularity's score on the same metric and users
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.baselines.popularity import PopularityRecommender

    dataset = SequenceDataset.load(root / "artifacts/prepared")
    expected = evaluate_protocol(PopularityRecommender.fit(dataset), dataset, (5, 10))[record["selection_metric"]]
    mlflow.set_tracking_uri(record["tracking_uri"])
    floor = float(MlflowClient().get_model_version(NAME, "1").tags[registry.POPULARITY_TAG])
    mlflow.set_tracking_uri(None)
    assert floor == pytest.approx(expected) and record["selection_score"] > floor


@pytest.mark.slow
def test_a_model_grown_by_add_items_is_scored_registered_and_served_with_its_new_items(tmp_path, monkeypatch):
    """add-items -> registry log-model -> promote --force -> the champion's pyfunc recommends the new item."""
    import pandas as pd

    from idgenrec.cli import app as cli
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.new_items import read_new_items
    from test_tracking import trained_tiny_project

    root = trained_tiny_project(tmp_path, monkeypatch)
    runner = CliRunner()
    assert runner.invoke(cli, ["registry", "log-run"]).exit_code == 0  # v1, champion
    (root / "new.tsv").write_text("item_id\ttitle\ttext\n100\tbanana bread\ttitle: banana bread\n", encoding="utf-8")
    grown = root / "artifacts" / "grown"
    result = runner.invoke(cli, ["add-items", "--items", "new.tsv", "--output", str(grown)])
    assert result.exit_code == 0, result.output

    result = runner.invoke(cli, ["registry", "log-model", "--model", str(grown), "--output", "grown.json"])
    assert result.exit_code == 0, result.output
    record = json.loads((root / "grown.json").read_text())
    assert record["model_version"] == "2" and "v2 registered as challenger" in result.output
    dataset = SequenceDataset.load(root / "artifacts/prepared")
    expected = evaluate_protocol(IDGenRecModel.load(grown).for_catalogue(dataset.item_ids), dataset, (5, 10))
    assert record["selection_score"] == pytest.approx(expected[record["selection_metric"]])
    mlflow.set_tracking_uri(record["tracking_uri"])
    run = MlflowClient().get_run(record["run_id"])
    assert run.data.tags["idgenrec.items_without_interactions"] == "1"
    assert run.data.metrics["test/seen_included/ndcg_at_10"] == pytest.approx(expected["test/seen_included/ndcg@10"])
    decision = record["promotion"]
    assert decision["reason"] and decision["champion"] == ("2" if decision["promoted"] else "1")

    assert runner.invoke(cli, ["registry", "promote", "--version", "2", "--force"]).exit_code == 0
    mlflow.set_tracking_uri(record["tracking_uri"])
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    answer = served.predict(pd.DataFrame({"history": [["1", "2"]], "k": [1]}), params={"candidates": ["100"]})
    assert answer.iloc[0]["item_ids"] == ["100"]
    assert answer.iloc[0]["textual_ids"] == [IDGenRecModel.load(grown).id_table.textual_ids[-1]]

    missing = runner.invoke(cli, ["registry", "log-model", "--model", str(root / "nowhere")])
    assert missing.exit_code == 1 and "nowhere" in missing.output

    # The same in one step from the registry: the champion (v2) plus another item, judged by the rule for
    # grown models (keep the champion's score within the margin; a wide margin here, the tiny model's
    # validation order can move when an item joins).
    params = (root / "params.yaml").read_text(encoding="utf-8").replace("registry: {margin: 0.0}", "registry: {margin: 1.0}")
    (root / "params.yaml").write_text(params, encoding="utf-8")
    (root / "more.tsv").write_text("item_id\ttitle\ttext\n101\tcherry cola\ttitle: cherry cola\n", encoding="utf-8")
    result = runner.invoke(cli, ["registry", "add-items", "--items", "more.tsv", "--output", "artifacts/plus", "--record", "plus.json"])
    assert result.exit_code == 0, result.output
    assert "1 new items (0 already known, skipped) added to champion v2" in result.output
    record = json.loads((root / "plus.json").read_text())
    assert record["model_version"] == "3" and record["grown_from"] == "2"
    assert record["promotion"]["promoted"] and record["promotion"]["reason"].startswith("grown from champion v2 by add-items")
    mlflow.set_tracking_uri(record["tracking_uri"])
    assert tags("3")[registry.GROWN_FROM_TAG] == "2"
    served = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    answer = served.predict(pd.DataFrame({"history": [["1", "100"]], "k": [2]}), params={"candidates": ["100", "101"]})
    assert sorted(answer.iloc[0]["item_ids"]) == ["100", "101"]  # both new items, and a history with a new item
    again = runner.invoke(cli, ["registry", "add-items", "--items", "more.tsv", "--output", "artifacts/again"])
    assert again.exit_code == 1 and "already known to champion v3" in again.output and not (root / "artifacts/again").exists()
    # Back on v2, which lacks the item: the same file was already tried on it (v3), so it is not registered again.
    assert runner.invoke(cli, ["registry", "rollback"]).exit_code == 0
    again = runner.invoke(cli, ["registry", "add-items", "--items", "more.tsv", "--output", "artifacts/again"])
    assert again.exit_code == 1 and "already added to champion v2 as v3 (rolled_back: rolled back by" in again.output
    assert not (root / "artifacts/again").exists()
    mlflow.set_tracking_uri(record["tracking_uri"])
    assert len(MlflowClient().search_model_versions(f"name = '{NAME}'")) == 3
    assert tags("3")[registry.NEW_ITEMS_TAG] == registry.new_items_digest([], read_new_items(root / "more.tsv"))
    mlflow.set_tracking_uri(None)


def test_new_items_digest_names_the_items_a_model_lacks_whatever_their_order():
    from idgenrec.recommender.new_items import NewItems

    items = NewItems(["7", "8", "9"], ["", "", ""], ["seven", "eight", "nine"])
    digest = registry.new_items_digest(["9"], items)
    assert digest == registry.new_items_digest(["9"], NewItems(["8", "7"], ["", ""], ["eight", "seven"]))
    assert digest != registry.new_items_digest(["9"], NewItems(["8", "7"], ["", ""], ["eight", "seven (1999)"]))
    assert digest != registry.new_items_digest([], items)
    assert registry.new_items_digest(["7", "8", "9"], items) is None


def test_a_model_grown_from_the_champion_must_keep_its_score_within_the_margin(store):
    parent = add_version(0.50, popularity=0.1)
    registry.promote(NAME, 0.0, parent, force=True)
    kept, lost, stranger = add_version(0.495, popularity=0.1), add_version(0.48, popularity=0.1), add_version(0.495, popularity=0.1)
    client = MlflowClient()
    for version, source in ((kept, parent), (lost, parent), (stranger, "999")):
        client.set_model_version_tag(NAME, version, registry.GROWN_FROM_TAG, source)
    decision = registry.promote(NAME, 0.01, lost)
    assert not decision.promoted and "fell below its 0.5000 by more than margin 0.01 (needs >= 0.4900)" in decision.reason
    stranger_decision = registry.promote(NAME, 0.01, stranger)  # grown from another version: the usual rule
    assert not stranger_decision.promoted and "does not beat champion" in stranger_decision.reason
    decision = registry.promote(NAME, 0.01, kept)
    assert decision.promoted and champion() == kept
    assert decision.reason == f"grown from champion v{parent} by add-items: valid/ndcg@10 0.4950 keeps its 0.5000 within margin 0.01"
