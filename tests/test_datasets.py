"""Several datasets trained as one (``data.combine_with``): preparation, validation, evaluation per dataset."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import yaml

from idgenrec.baselines.popularity import PopularityRecommender
from idgenrec.config import ConfigError, DataConfig, Params, load_params
from idgenrec.data.dataset import SequenceDataset, combine
from idgenrec.data.prepare import prepare
from idgenrec.data.validate import validate
from idgenrec.evaluation import evaluate, evaluate_protocol

from test_causal import CAUSAL_PROJECT


def write_p5(folder: Path, words: list[str], users: int, seed: int) -> Path:
    """A P5-layout dataset whose item i is followed by item i+1; item ids are 1..n, like every other one's."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    lines = []
    for user in range(users):
        start = rng.randrange(len(words))
        lines.append(" ".join([f"u{user}", *(str((start + j) % len(words) + 1) for j in range(rng.randint(6, 9)))]))
    (folder / "user_sequence.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = "".join(f"{i + 1}\t{word}\tfood\n" for i, word in enumerate(words))
    (folder / "items.tsv").write_text("item_id\ttitle\tgenres\n" + rows, encoding="utf-8")
    return folder


SWEETS = ["apple pie", "banana split", "cherry tart", "date cake", "fig roll", "grape jam", "kiwi tea", "lemon curd"]
TOOLS = ["hammer", "wrench", "saw", "drill", "chisel", "pliers"]


def source(name: str, folder: Path) -> dict:
    return {"name": name, "format": "p5", "path": str(folder), "k_core": 5, "text_fields": ["title", "genres"]}


@pytest.fixture
def two_datasets(tmp_path) -> DataConfig:
    sweets = write_p5(tmp_path / "sweets", SWEETS, users=20, seed=0)
    tools = write_p5(tmp_path / "tools", TOOLS, users=12, seed=1)
    return DataConfig(**source("sweets", sweets), combine_with=[source("tools", tools)])


def test_combined_config_names_every_dataset_and_refuses_a_name_twice(two_datasets):
    assert [s.name for s in two_datasets.sources] == ["sweets", "tools"]
    assert two_datasets.label == "sweets+tools"
    assert DataConfig().label == "ml-100k" and [s.name for s in DataConfig().sources] == ["ml-100k"]
    with pytest.raises(ValueError, match="'sweets' is used twice"):
        DataConfig(**source("sweets", Path("a")), combine_with=[source("sweets", Path("b"))])
    with pytest.raises(ValueError, match="no ':'"):
        DataConfig(**source("a:b", Path("a")), combine_with=[source("tools", Path("b"))])


def test_a_typo_in_a_combined_dataset_is_named(tmp_path):
    raw = {"data": {**source("sweets", tmp_path), "combine_with": [{**source("tools", tmp_path), "k_cor": 3}]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match="data.combine_with.0.k_cor"):
        load_params(tmp_path / "params.yaml")


def test_combined_datasets_keep_their_own_ids_and_come_apart_again(two_datasets, tmp_path):
    combined = prepare(two_datasets, tmp_path / "prepared")
    alone = [prepare(s, tmp_path / f"alone-{s.name}") for s in two_datasets.sources]
    assert combined.name == "sweets+tools"
    assert combined.num_items == len(SWEETS) + len(TOOLS)  # raw ids 1..n repeat across datasets: keyed apart
    assert combined.item_ids[: len(SWEETS)] == [f"sweets:{i}" for i in alone[0].item_ids]
    assert combined.item_ids[len(SWEETS) :] == [f"tools:{i}" for i in alone[1].item_ids]
    assert "sweets:1" in combined.item_ids and "tools:1" in combined.item_ids
    assert combined.num_users == sum(d.num_users for d in alone)
    assert [d["name"] for d in combined.stats["datasets"]] == ["sweets", "tools"]
    loaded = SequenceDataset.load(tmp_path / "prepared")
    parts = loaded.parts()
    assert [p.name for p in parts] == ["sweets", "tools"]
    for part, single in zip(parts, alone):
        assert all(item in part.items for user in part.users for item in loaded.sequences[user])  # no history crosses
        back = loaded.part(part.name)
        assert (back.item_ids, back.item_texts, back.user_ids, back.sequences) == (
            single.item_ids, single.item_texts, single.user_ids, single.sequences)
        assert back.stats == single.stats
    sampled = loaded.sample_users(10, seed=0)  # 10 of each dataset's users, the same ones as on its own
    assert [len(p.users) for p in sampled.parts()] == [10, 10]
    for part in sampled.parts():
        alone_sample = loaded.part(part.name).sample_users(10, seed=0)
        assert [sampled.user_ids[u].split(":", 1)[1] for u in part.users] == alone_sample.user_ids
    fifteen = loaded.sample_users(15, seed=0)  # only 12 tools users: all of them
    assert [fifteen.user_ids[u] for u in fifteen.parts()[1].users] == [loaded.user_ids[u] for u in loaded.parts()[1].users]
    assert SequenceDataset.load(tmp_path / "alone-sweets").parts() == []


def test_combined_validation_runs_each_datasets_suites_and_names_the_broken_one(two_datasets, tmp_path):
    prepare(two_datasets, tmp_path / "prepared")
    report = validate(two_datasets, tmp_path / "prepared", tmp_path / "report.json")
    assert report.success, report.summary_lines()
    suites = report.to_json()["suites"]
    assert "sweets/prepared_splits" in suites and "tools/prepared_splits" in suites
    assert [info["dataset"] for info in report.info["datasets"]] == ["sweets", "tools"]
    # the tools dataset's raw file gains an interaction the prepared data does not hold
    tools = Path(two_datasets.combine_with[0].path) / "user_sequence.txt"
    tools.write_text(tools.read_text().replace("u0 ", "u0 1 ", 1))
    broken = validate(two_datasets, tmp_path / "prepared", tmp_path / "report.json")
    assert not broken.success
    assert broken.failures and all(f.suite.startswith("tools/") for f in broken.failures)


class Everything:
    """Recommends the lowest item indices, whichever dataset they belong to, unless told the candidates."""

    def __init__(self, num_items: int):
        self.num_items = num_items

    def recommend(self, histories, k, exclude_seen=False, candidates=None):
        allowed = sorted(candidates) if candidates is not None else None
        ranked = []
        for history in histories:
            pool = allowed if allowed is not None else range(self.num_items)
            ranked.append([i for i in pool if not (exclude_seen and i in history)][:k])
        return ranked


def test_each_user_ranks_its_own_datasets_catalogue_and_metrics_come_per_dataset(two_datasets, tmp_path):
    dataset = prepare(two_datasets, tmp_path / "prepared")
    parts = {p.name: p for p in dataset.parts()}
    metrics = evaluate(Everything(dataset.num_items), dataset, "test", ks=(5,), exclude_seen=True)
    tools = dataset.part("tools")
    alone = evaluate(Everything(tools.num_items), tools, "test", ks=(5,), exclude_seen=True)
    for name in ("recall@5", "ndcg@5", "coverage@5"):
        assert metrics[f"tools/{name}"] == pytest.approx(alone[name])  # ranked among tools only, as on its own
    users = {name: len(p.users) for name, p in parts.items()}
    overall = sum(metrics[f"{name}/ndcg@5"] * n for name, n in users.items()) / sum(users.values())
    assert metrics["ndcg@5"] == pytest.approx(overall)  # every user counted once
    protocol = evaluate_protocol(Everything(dataset.num_items), dataset, ks=(5,))
    assert "test/seen_included/sweets/ndcg@5" in protocol and "valid/seen_excluded/tools/recall@5" in protocol


def test_baselines_rank_only_the_candidates():
    counts = np.array([5, 9, 1, 7, 3])
    popularity = PopularityRecommender(counts)
    assert popularity.recommend([[0]], k=3) == [[1, 3, 0]]
    assert popularity.recommend([[0]], k=3, candidates={0, 2, 4}) == [[0, 4, 2]]
    assert popularity.recommend([[0]], k=3, exclude_seen=True, candidates={0, 2, 4}) == [[4, 2]]


def test_sasrec_ranks_only_the_candidates(two_datasets, tmp_path):
    from idgenrec.baselines.sasrec import SASRecRecommender
    from idgenrec.config import SASRecConfig

    dataset = prepare(two_datasets, tmp_path / "prepared")
    model = SASRecRecommender.fit(dataset, SASRecConfig(max_epochs=1, hidden_size=16, inner_size=32), progress=False)
    tools = dataset.parts()[1]
    histories = [dataset.sequences[u][:-1] for u in tools.users[:4]]
    ranked = model.recommend(histories, k=10, candidates=tools.items)
    assert all(len(row) == len(TOOLS) and set(row) == set(tools.items) for row in ranked)  # every tool, nothing else
    unseen = model.recommend(histories, k=10, exclude_seen=True, candidates=tools.items)
    assert all(set(row) == set(tools.items) - set(h) for row, h in zip(unseen, histories))


@pytest.mark.slow
def test_one_model_trains_on_both_datasets_and_reports_each(two_datasets, tmp_path):
    from idgenrec.backbone import load_seq2seq
    from idgenrec.ids import make_id_table, warm_up_generator
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel

    params = Params.model_validate({**yaml.safe_load(CAUSAL_PROJECT), "data": two_datasets.model_dump(mode="json")})
    dataset = prepare(params.data, tmp_path / "prepared")
    warm_up_generator(dataset, params, tmp_path / "generator", progress=False)
    generator, tokenizer = load_seq2seq(tmp_path / "generator")
    table, quality = make_id_table("learned", dataset, generator, tokenizer, params.ids, progress=False)
    assert quality["unique_ratio"] == 1.0  # unique across both datasets
    table.save(tmp_path / "item_ids.tsv", tokenizer)
    state = alternating.train(params, dataset, tmp_path / "generator", tmp_path / "item_ids.tsv", tmp_path / "work")
    assert all(f"valid_{name}/ndcg@10" in state.records[0] for name in ("sweets", "tools"))  # per dataset while training
    model = IDGenRecModel.load(tmp_path / "work" / "best")
    metrics = evaluate_protocol(model, dataset, params.evaluation.ks)
    for name in ("sweets", "tools"):
        assert 0.0 <= metrics[f"test/seen_excluded/{name}/ndcg@10"] <= 1.0
    tools_part = dataset.parts()[1]
    histories = [dataset.sequences[u][:-1] for u in tools_part.users]
    ranked = model.recommend(histories, k=5, candidates=tools_part.items)
    assert all(set(row) <= set(tools_part.items) for row in ranked)
    sweets_ids = {table.textual_ids[i] for i in dataset.parts()[0].items}
    assert not sweets_ids & {table.textual_ids[i] for i in tools_part.items}


def test_prepare_and_validate_commands_speak_per_dataset(two_datasets, tmp_path):
    from typer.testing import CliRunner

    from idgenrec.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": two_datasets.model_dump(mode="json")}))
    prepared = tmp_path / "prepared"
    result = CliRunner().invoke(app, ["data", "prepare", "--params", str(params), "--output", str(prepared)])
    assert result.exit_code == 0, result.output
    assert "sweets+tools" in result.output
    assert "  sweets: 20 users" in result.output and "  tools: 12 users" in result.output
    result = CliRunner().invoke(app, ["data", "validate", "--params", str(params), "--prepared", str(prepared),
                                      "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert "tools/prepared_counts" in result.output
