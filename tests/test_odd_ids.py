"""Item and user ids are any text the raw format can hold (spaces, quotes, percent signs, any
script): they survive the prepared files, the ID table, training, `recommend`, `add-items`, the
registry and the served model unchanged."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from idgenrec.cli import app
from idgenrec.data.dataset import SequenceDataset, decode_id, encode_id
from idgenrec.ids import ItemIdTable
from idgenrec.serving.server import scoring_app
from network_guard import offline, serving
from test_tracking import TINY_PARAMS, new_store, run_tiny_pipeline

pytestmark = pytest.mark.data

# Item ids a RecBole `.inter` file can hold: everything but tabs and line breaks.
ODD_ITEMS = [
    "Apple Pie", 'banana "split"', "crème brûlée", "東京 ラーメン", "50% off", "fig\u00a0roll", "grape  jam", "kiwi's tea",
]
TEXTS = ["apple pie", "banana split", "cherry tart", "date cake", "fig roll", "grape jam", "kiwi tea", "lemon curd"]
ODD_USERS = ["Zoë Ørsted", 'O"Neil', "user %20", "ユーザー 1", "a b c"]
ODD_PARAMS = TINY_PARAMS.replace("format: p5", "format: recbole")

# Any stripped, non-empty text without tab or line breaks: what a tab-separated id field can hold.
ids = st.text(st.characters(blacklist_characters="\t\n\r", blacklist_categories=("Cs",)), min_size=1, max_size=20).map(
    str.strip
).filter(bool)


@given(st.lists(ids, min_size=1, max_size=6, unique=True))
@settings(max_examples=60, deadline=None)
def test_any_id_is_one_space_free_token_that_decodes_back(items):
    tokens = " ".join(encode_id(item) for item in items).split()
    assert [decode_id(token) for token in tokens] == items


@given(st.lists(ids, min_size=2, max_size=6, unique=True), st.lists(ids, min_size=1, max_size=3, unique=True))
@settings(max_examples=30, deadline=None)
def test_prepared_dataset_and_id_table_keep_any_id(tmp_path_factory, items, users):
    folder = tmp_path_factory.mktemp("prepared")
    sequences = [[u % len(items), (u + 1) % len(items)] for u in range(len(users))]
    dataset = SequenceDataset("odd", items, items, [f"text {i}" for i in range(len(items))], users, sequences, {"k": 1})
    dataset.save(folder)
    loaded = SequenceDataset.load(folder)
    assert (loaded.item_ids, loaded.item_titles, loaded.user_ids, loaded.sequences) == (items, items, users, sequences)
    table = ItemIdTable(items, [f"word {i}" for i in range(len(items))])
    table.save(folder / "ids.tsv")
    assert ItemIdTable.load(folder / "ids.tsv").item_ids == items


def test_plain_ids_are_written_as_before(tmp_path):
    """Ids without whitespace or `%` (every public dataset's) keep the file bytes they always had."""
    SequenceDataset("plain", ["1", "20"], ["a", ""], ["t: a", "item 20"], ["u1"], [[0, 1, 0]]).save(tmp_path)
    assert (tmp_path / "items.tsv").read_text() == "item_id\ttitle\ttext\n1\ta\tt: a\n20\t\titem 20\n"
    assert (tmp_path / "sequences.tsv").read_text() == "user_id\titems\nu1\t1 20 1\n"


def write_odd_project(root: Path) -> Path:
    """The tiny project (item i followed by item i+1) in RecBole atomic files, with odd ids."""
    import random

    data = root / "data" / "tiny"
    data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for number in range(24):
        user = ODD_USERS[number] if number < len(ODD_USERS) else f"user {number}"
        start = rng.randrange(len(ODD_ITEMS))
        for step in range(rng.randint(6, 9)):
            lines.append(f"{user}\t{ODD_ITEMS[(start + step) % len(ODD_ITEMS)]}\t{step}")
    (data / "tiny.inter").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = "".join(f"{item}\t{text}\tfood\n" for item, text in zip(ODD_ITEMS, TEXTS))
    (data / "tiny.item").write_text("item_id:token\ttitle:token_seq\tgenres:token_seq\n" + rows, encoding="utf-8")
    (root / "params.yaml").write_text(ODD_PARAMS, encoding="utf-8")
    return root


@pytest.mark.slow
def test_odd_ids_end_to_end_with_the_network_refused(tmp_path, monkeypatch):
    """Prepare, train, recommend, add items, register and serve (pyfunc and REST) with odd ids, while
    every non-loopback connection and name look-up is refused: nothing reaches for a hub or telemetry."""
    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    root = write_odd_project(tmp_path / "project")
    new_store(root)
    monkeypatch.chdir(root)
    with offline() as attempts:
        _pipeline_recommend_register_serve(root)
    assert attempts == []
    mlflow.set_tracking_uri(None)


def _pipeline_recommend_register_serve(root: Path) -> None:
    run_tiny_pipeline(root)

    dataset = SequenceDataset.load(root / "artifacts/prepared")
    assert set(dataset.item_ids) == set(ODD_ITEMS) and set(ODD_USERS) <= set(dataset.user_ids)
    assert ItemIdTable.load(root / "artifacts/ids/item_ids.tsv").item_ids == dataset.item_ids

    runner = CliRunner()
    result = runner.invoke(app, ["recommend", "--user", "Zoë Ørsted", "--k", "3"])
    assert result.exit_code == 0, result.output
    assert any(item in result.output for item in ODD_ITEMS)

    new = root / "new items.tsv"
    new.write_text('item_id\ttitle\ttext\nmango "lassi" №1\tmango lassi\tmango lassi drink\n', encoding="utf-8")
    result = runner.invoke(app, ["add-items", "--items", str(new), "--output", "artifacts/model plus"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["recommend", "--user", 'O"Neil', "--k", "1", "--model", "artifacts/model plus", "--among", str(new)])
    assert result.exit_code == 0 and 'mango "lassi" №1' in result.output, result.output

    result = runner.invoke(app, ["registry", "log-run"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["registry", "add-items", "--items", str(new), "--record", "grown.json"])
    assert result.exit_code == 0, result.output
    grown = json.loads((root / "grown.json").read_text())

    model = mlflow.pyfunc.load_model(f"models:/idgenrec-tiny/{grown['model_version']}")
    history = ["Apple Pie", 'banana "split"', "東京 ラーメン"]
    out = model.predict(pd.DataFrame({"history": [history], "k": [3]}), params={"exclude_seen": True})
    assert len(out["item_ids"][0]) == 3 and not set(history) & set(out["item_ids"][0])
    assert set(out["item_ids"][0]) <= {*ODD_ITEMS, 'mango "lassi" №1'}
    shelf = model.predict(pd.DataFrame({"history": [["50% off"]], "k": [1]}), params={"candidates": ['mango "lassi" №1']})
    assert shelf["item_ids"][0] == ['mango "lassi" №1']

    with serving(scoring_app(f"models:/idgenrec-tiny/{grown['model_version']}")) as url:
        request = {"dataframe_records": [{"history": history, "k": 2}], "params": {"candidates": ["crème brûlée", "50% off"]}}
        reply = urllib.request.urlopen(urllib.request.Request(
            f"{url}/invocations", data=json.dumps(request).encode(), headers={"Content-Type": "application/json"}), timeout=60)
        assert sorted(json.loads(reply.read())["predictions"][0]["item_ids"]) == ["50% off", "crème brûlée"]
