"""Great Expectations validation: good data passes; broken data fails with a report that names
the suite, the expectation, the column and example bad rows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from idgenrec.cli import app
from idgenrec.config import DataConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.data.prepare import prepare
from idgenrec.data.validate import validate

pytestmark = pytest.mark.data

pytest.importorskip("great_expectations")

ITEMS = "asin\ttitle\tbrand\tcategories\tdescription\n" + "".join(f"{i}\tThing {i}\t\tCat\t\n" for i in "ABCD")


def p5_config(tmp_path: Path, sequences: str, items: str = ITEMS) -> DataConfig:
    folder = tmp_path / "raw"
    folder.mkdir(exist_ok=True)
    (folder / "user_sequence.txt").write_text(sequences, encoding="utf-8")
    (folder / "items.tsv").write_text(items, encoding="utf-8")
    return DataConfig(name="toy", format="p5", path=folder, k_core=3, text_fields=["title", "brand", "categories", "description"])


# Every item 3+ times, every user 3+ items; u1 re-consumes A (Yelp-style): its test item A
# is also a training item, at a different position, which the protocol allows.
SEQUENCES = "u1 A B C A\nu2 B C D\nu3 C D A B\nu4 D A B C\n"


@pytest.fixture
def prepared(tmp_path) -> tuple[DataConfig, Path]:
    config = p5_config(tmp_path, SEQUENCES)
    prepare(config, tmp_path / "prepared")
    return config, tmp_path / "prepared"


def report_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def failure(report: dict, suite: str, expectation: str) -> dict:
    matches = [e for e in report["suites"][suite]["expectations"] if e["expectation"] == expectation and not e["success"]]
    assert matches, f"{suite}/{expectation} did not fail: {report['failures']}"
    return matches[0]


def test_good_data_passes_every_suite(prepared, tmp_path):
    config, folder = prepared
    report = validate(config, folder, tmp_path / "validation" / "report.json")
    assert report.success, report.summary_lines()
    written = report_json(tmp_path / "validation" / "report.json")
    assert written["success"] and set(written["suites"]) == {
        "raw_interactions", "raw_item_text", "prepared_items", "prepared_users",
        "prepared_interactions", "prepared_splits", "prepared_counts",
    }


def test_shuffled_history_fails_time_order_with_examples(prepared, tmp_path):
    config, folder = prepared
    dataset = SequenceDataset.load(folder)
    sequences = [list(s) for s in dataset.sequences]
    sequences[2] = sequences[2][::-1]  # u3 backwards
    replace(dataset, sequences=sequences).save(folder)
    report = validate(config, folder, tmp_path / "report.json")
    assert not report.success
    bad = failure(report_json(tmp_path / "report.json"), "prepared_interactions", "expect_column_pair_values_a_to_be_greater_than_b")
    assert bad["columns"] == ["raw_rank", "previous_raw_rank"]
    assert bad["unexpected_count"] == 3 and {row["user_id"] for row in bad["examples"]} == {"u3"}


def test_count_mismatch_and_short_user_fail(prepared, tmp_path):
    config, folder = prepared
    dataset = SequenceDataset.load(folder)
    sequences = [list(s) for s in dataset.sequences]
    sequences[1] = sequences[1][:2]  # u2 keeps 2 items: breaks the 3-core and loses raw interactions
    replace(dataset, sequences=sequences).save(folder)
    report = report_json_after(config, folder, tmp_path)
    users = failure(report, "prepared_users", "expect_column_values_to_be_between")
    assert users["columns"] == ["length"] and users["examples"][0]["user_id"] == "u2"
    counts = failure(report, "prepared_counts", "expect_column_pair_values_to_be_equal")
    assert {row["count"] for row in counts["examples"]} == {"interactions", "raw interactions between kept users and items"}


def report_json_after(config: DataConfig, folder: Path, tmp_path: Path) -> dict:
    assert not validate(config, folder, tmp_path / "report.json").success
    return report_json(tmp_path / "report.json")


def test_a_user_without_validation_target_fails_instead_of_crashing(prepared, tmp_path):
    config, folder = prepared
    dataset = SequenceDataset.load(folder)
    sequences = [list(s) for s in dataset.sequences]
    sequences[0] = sequences[0][:1]
    replace(dataset, sequences=sequences).save(folder)
    report = report_json_after(config, folder, tmp_path)
    splits = failure(report, "prepared_splits", "expect_column_values_to_be_between")
    assert {(row["user_id"], row["split"]) for row in splits["examples"]} == {("u1", "valid"), ("u1", "test")}


def test_unreadable_raw_data_still_writes_a_report(prepared, tmp_path):
    config, folder = prepared
    (Path(config.path) / "items.tsv").write_text(ITEMS + "A\tAgain\t\tCat\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match="items.tsv, line 6, field 'asin': item 'A' already described on line 2"):
        validate(config, folder, tmp_path / "report.json")
    assert "already described" in report_json(tmp_path / "report.json")["error"]


def test_duplicate_raw_events_fail_the_raw_suite(tmp_path):
    folder = tmp_path / "raw"
    folder.mkdir()
    rows = [f"{u}\t{i}\t1\t{t}" for t, (u, i) in enumerate((u, i) for u in "xyz" for i in "abc")]
    rows.append(rows[0])  # the same event twice
    header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    (folder / "toy.inter").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    config = DataConfig(name="toy", path=folder, k_core=3)
    prepare(config, tmp_path / "prepared")
    report = report_json_after(config, tmp_path / "prepared", tmp_path)
    bad = failure(report, "raw_interactions", "expect_compound_columns_to_be_unique")
    assert bad["columns"] == ["user", "item", "timestamp"] and bad["unexpected_count"] == 2
    assert report["info"]["notes"][0].startswith("3 items have no text row")


def test_cli_validate_fails_naming_suite_expectation_and_rows(prepared, tmp_path):
    config, folder = prepared
    dataset = SequenceDataset.load(folder)
    replace(dataset, stats={**dataset.stats, "items": 99}).save(folder)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": json.loads(config.model_dump_json())}), encoding="utf-8")
    report = tmp_path / "validation" / "report.json"
    result = CliRunner().invoke(app, ["data", "validate", "--params", str(params), "--prepared", str(folder), "--report", str(report)])
    assert result.exit_code == 1
    assert "FAILED prepared_counts" in result.output
    assert "error: validation failed: prepared_counts: expect_column_pair_values_to_be_equal on expected, measured" in result.output
    assert '"count": "items"' in result.output
    assert report_json(report)["success"] is False
