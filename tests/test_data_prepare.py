"""Preparation: k-core, stable time order, first-appearance numbering, item text, atomic save."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from idgenrec.cli import app
from idgenrec.config import DataConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.data.fetch import DATASETS, file_sha256
from idgenrec.data.prepare import build_dataset, chronological, k_core, prepare
from idgenrec.data.readers import read_raw
from idgenrec.data.textfile import DataFormatError

pytestmark = pytest.mark.data

ROOT = Path(__file__).resolve().parents[1]
INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def write_recbole(folder: Path, inter: list[str], items: list[str] | None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "toy.inter").write_text("\n".join([INTER_HEADER, *inter]) + "\n", encoding="utf-8")
    if items is not None:
        (folder / "toy.item").write_text("\n".join([ITEM_HEADER, *items]) + "\n", encoding="utf-8")
    return folder


def frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user": [r[0] for r in rows],
            "item": [r[1] for r in rows],
            "timestamp": [float(r[2]) for r in rows],
            "line": range(2, len(rows) + 2),
            "order": range(len(rows)),
        }
    )


def test_k_core_is_iterative():
    # k=2. Item c has one interaction: dropping it leaves user z with one, so z goes,
    # which leaves item b with one, so b goes too: three passes remove something.
    rows = [("x", "a", 1), ("y", "a", 1), ("x", "d", 1), ("y", "d", 1), ("z", "b", 1), ("z", "c", 1), ("x", "b", 2)]
    result = k_core(frame(rows), 2)
    assert sorted(set(result.interactions["item"])) == ["a", "d"]
    assert sorted(set(result.interactions["user"])) == ["x", "y"]
    assert result.iterations == 3


def test_time_ties_keep_file_order():
    rows = [("u", "late", 9), ("u", "tie1", 5), ("v", "b", 1), ("u", "tie2", 5), ("u", "early", 1), ("u", "tie3", 5)]
    ordered = chronological(frame(rows))
    assert ordered[ordered["user"] == "u"]["item"].tolist() == ["early", "tie1", "tie2", "tie3", "late"]
    assert ordered["user"].tolist()[:5] == ["u"] * 5  # users in first-appearance order


def small_dataset(tmp_path: Path, items: list[str] | None) -> DataConfig:
    # 3 users x 3 items, every pair once: a 3-core. Timestamps make each user's order distinct.
    inter = []
    for user, order in (("u1", "abc"), ("u2", "cab"), ("u3", "bca")):
        inter += [f"{user}\t{item}\t1\t{t}" for t, item in enumerate(order)]
    folder = write_recbole(tmp_path / "toy", inter, items)
    return DataConfig(name="toy", path=folder, k_core=3)


def test_build_dataset_numbers_in_first_appearance_and_counts_text(tmp_path):
    config = small_dataset(tmp_path, ["a\tAlpha\t1999\tDrama", "b\t\t2001\t", "x\tUnused\t1990\tWar"])
    dataset = build_dataset(read_raw(config), config)
    assert dataset.user_ids == ["u1", "u2", "u3"]
    assert dataset.item_ids == ["a", "b", "c"]
    assert [[dataset.item_ids[i] for i in s] for s in dataset.sequences] == [list("abc"), list("cab"), list("bca")]
    assert dataset.item_texts == ["title: Alpha; year: 1999; genres: Drama", "year: 2001", "item c"]
    assert dataset.item_titles == ["Alpha", "", ""]
    stats = dataset.stats
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 3, 9)
    assert stats["missing_fields"] == {"title": 1, "year": 0, "genres": 1}
    assert (stats["items_without_text"], stats["items_without_text_examples"]) == (1, ["c"])
    assert stats["k_core_iterations"] == 0


def test_items_without_any_text_file_get_the_fallback(tmp_path):
    config = small_dataset(tmp_path, None).model_copy(update={"fallback_text": "movie {item_id}"})
    dataset = build_dataset(read_raw(config), config)
    assert dataset.item_texts == ["movie a", "movie b", "movie c"]
    assert dataset.stats["items_without_text"] == 3


def test_prepare_saves_a_loadable_dataset(tmp_path):
    config = small_dataset(tmp_path, ["a\tAlpha\t1999\tDrama"])
    prepare(config, tmp_path / "out")
    loaded = SequenceDataset.load(tmp_path / "out")
    assert loaded.num_interactions == 9
    assert loaded.split_examples("test")[1] == [2, 1, 0]  # c, b, a as item indices
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["name"] == "toy"


def test_k_core_that_empties_the_data_is_an_error(tmp_path):
    config = small_dataset(tmp_path, None).model_copy(update={"k_core": 4})
    with pytest.raises(DataFormatError) as caught:
        prepare(config, tmp_path / "out")
    assert caught.value.path.name == "toy.inter" and caught.value.field == "data.k_core"
    assert "4-core filtering leaves no interactions" in str(caught.value)
    assert not (tmp_path / "out").exists()


# -- through the command line: one-line errors, nothing half-written ---------------------


def params_file(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"data": data}), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("case", "inter", "k", "expected"),
    [
        ("non-numeric timestamp", ["u1\ta\t1\t1", "u1\tb\t1\tnoon"], 1, "toy.inter, line 3, field 'timestamp:float'"),
        ("too few fields", ["u1\ta\t1\t1", "u1\tb\t1"], 1, "toy.inter, line 3, field 'timestamp:float'"),
        ("k-core empties the data", ["u1\ta\t1\t1", "u1\tb\t1\t2"], 5, "toy.inter, field 'data.k_core'"),
    ],
)
def test_cli_prepare_fails_in_one_line_and_leaves_old_output_alone(tmp_path, case, inter, k, expected):
    folder = write_recbole(tmp_path / "toy", inter, None)
    output = tmp_path / "artifacts" / "prepared"
    output.mkdir(parents=True)
    (output / "stats.json").write_text('{"name": "old"}')
    params = params_file(tmp_path, {"name": "toy", "path": str(folder), "k_core": k})
    result = CliRunner().invoke(app, ["data", "prepare", "--params", str(params), "--output", str(output)])
    assert result.exit_code == 1, case
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert [p.name for p in output.parent.iterdir()] == ["prepared"]  # no temporary folder left
    assert [p.name for p in output.iterdir()] == ["stats.json"]
    assert (output / "stats.json").read_text() == '{"name": "old"}'


def test_cli_prepare_writes_the_dataset(tmp_path):
    config = small_dataset(tmp_path, ["a\tAlpha\t1999\tDrama"])
    params = params_file(tmp_path, {"name": "toy", "path": str(config.path), "k_core": 3})
    result = CliRunner().invoke(app, ["data", "prepare", "--params", str(params), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "3 users, 3 items, 9 interactions" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["items.tsv", "sequences.tsv", "stats.json"]


# -- the real dataset, only when it has been fetched -------------------------------------

ML_100K = ROOT / "data" / "ml-100k"


@pytest.mark.skipif(
    not all((ML_100K / f).exists() and file_sha256(ML_100K / f) == h for f, h in DATASETS["ml-100k"].files.items()),
    reason="ml-100k not fetched (idgenrec data fetch ml-100k)",
)
def test_real_ml_100k_counts_and_order():
    config = DataConfig(path=ML_100K)
    dataset = build_dataset(read_raw(config), config)
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (943, 1349, 99287)
    history = [dataset.item_ids[i] for i in dataset.sequences[dataset.user_ids.index("1")]]
    assert len(history) == 271 and history[-3:] == ["5", "74", "102"]  # ..., validation 74, test 102
