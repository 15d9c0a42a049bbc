"""Great Expectations suites for the raw data, the item text and the prepared splits.

Each suite runs on a pandas frame built for it (GX checks columns, so per-user facts such as
"the validation row is not a training row" become columns of a per-user frame first). The
run uses an ephemeral context: nothing is written to a GX project folder, and the JSON
report is this module's own, written atomically whether the data passes or not.

Leave-one-out with re-consumption (Yelp repeats items) means a user's test item may also
appear among the inputs: "the target is absent from the inputs" is checked on *positions*
(the validation and test rows are not rows of the input they are predicted from), which
is what the protocol promises.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from idgenrec.atomic import write_json
from idgenrec.config import DataSource
from idgenrec.data.dataset import SPLITS, SequenceDataset
from idgenrec.data.readers import RawDataset, read_raw

EXAMPLES = 5  # bad rows quoted per failed expectation


@dataclass(frozen=True)
class Check:
    """One expectation and why it matters (the report quotes the reason)."""

    expectation: Any  # a great_expectations.expectations.Expectation
    why: str


@dataclass(frozen=True)
class Suite:
    name: str
    frame: pd.DataFrame
    id_columns: list[str]  # identify a bad row in the report
    checks: list[Check]


@dataclass(frozen=True)
class Outcome:
    suite: str
    expectation: str
    columns: list[str]
    success: bool
    why: str
    kwargs: dict
    unexpected_count: int | None = None
    element_count: int | None = None
    observed_value: Any = None
    examples: list = field(default_factory=list)

    def summary(self) -> str:
        columns = f" on {', '.join(self.columns)}" if self.columns else ""
        if self.unexpected_count is not None:
            found = f"{self.unexpected_count} of {self.element_count} rows unexpected"
        else:
            found = f"observed {self.observed_value!r}, expected {_expected(self.kwargs)}"
        examples = f"; e.g. {json.dumps(self.examples[:3], default=str)}" if self.examples else ""
        return f"{self.suite}: {self.expectation}{columns}: {found} ({self.why}){examples}"


@dataclass(frozen=True)
class ValidationReport:
    outcomes: list[Outcome]
    info: dict
    error: str | None = None

    @property
    def success(self) -> bool:
        return self.error is None and all(o.success for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.success]

    def to_json(self) -> dict:
        suites: dict[str, dict] = {}
        for outcome in self.outcomes:
            suite = suites.setdefault(outcome.suite, {"success": True, "expectations": []})
            suite["success"] &= outcome.success
            suite["expectations"].append({k: v for k, v in outcome.__dict__.items() if k != "suite"})
        return {
            "success": self.success,
            "error": self.error,
            "failures": [o.summary() for o in self.failures],
            "suites": suites,
            "info": self.info,
        }

    def summary_lines(self) -> list[str]:
        if self.error:
            return [f"validation could not run: {self.error}"]
        lines = []
        for name, suite in self.to_json()["suites"].items():
            total = len(suite["expectations"])
            passed = sum(e["success"] for e in suite["expectations"])
            lines.append(f"{'ok    ' if suite['success'] else 'FAILED'} {name}: {passed}/{total} expectations passed")
        lines += [f"  FAILED {o.summary()}" for o in self.failures]
        lines += [f"  note: {note}" for note in self.info.get("notes", [])]
        return lines


def validate(config: DataSource, prepared: str | Path, report_path: str | Path) -> ValidationReport:
    """Run every suite and write the JSON report (also when reading the data fails).

    Combined datasets (``data.combine_with``): every dataset's suites run on its raw files and its
    part of the prepared data, named ``name/suite``; the info holds each one's under ``datasets``.
    """
    try:
        dataset = SequenceDataset.load(prepared)
        sources = config.sources
        if len(sources) == 1:
            raw = read_raw(sources[0])
            report = run_suites(build_suites(raw, dataset, sources[0]), info=_info(raw, dataset))
        else:
            suites, infos = [], []
            for source in sources:
                raw, part = read_raw(source), dataset.part(source.name)
                suites += [replace(suite, name=f"{source.name}/{suite.name}") for suite in build_suites(raw, part, source)]
                infos.append(_info(raw, part))
            notes = [f"{info['dataset']}: {note}" for info in infos for note in info["notes"]]
            report = run_suites(suites, info={"dataset": dataset.name, "datasets": infos, "notes": notes})
    except Exception as err:
        write_json(report_path, ValidationReport([], {}, error=str(err)).to_json())
        raise
    write_json(report_path, report.to_json())
    return report


def build_suites(raw: RawDataset, dataset: SequenceDataset, config: DataSource) -> list[Suite]:
    """The suites for one raw dataset and its prepared form."""
    from great_expectations import expectations as gxe

    k = config.k_core
    return [
        Suite("raw_interactions", raw.interactions, ["line", "user", "item"], [
            *[Check(gxe.ExpectColumnValuesToNotBeNull(column=c), "every interaction has a user, an item and a time")
              for c in ("user", "item", "timestamp")],
            Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user", "item", "timestamp"]),
                  "the same event twice is a copy error, not a re-consumption"),
        ]),
        Suite("raw_item_text", raw.item_text, ["line", "item"], [
            Check(gxe.ExpectColumnValuesToNotBeNull(column="item"), "a text row describes an item"),
            Check(gxe.ExpectColumnValuesToBeUnique(column="item"), "one text row per item"),
            *[Check(gxe.ExpectColumnValuesToNotBeNull(column=f), "text fields are strings (empty when missing)")
              for f in config.text_fields if f in raw.item_text.columns],
        ]),
        Suite("prepared_items", _item_frame(dataset), ["item_id"], [
            Check(gxe.ExpectColumnValuesToNotBeNull(column="item_id"), "every item keeps its original id"),
            Check(gxe.ExpectColumnValuesToBeUnique(column="item_id"), "item ids are keys"),
            Check(gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=1),
                  "the ID generator needs text for every item (fallback text when none)"),
            Check(gxe.ExpectColumnValuesToBeBetween(column="interactions", min_value=k), f"{k}-core holds for items"),
        ]),
        Suite("prepared_users", _user_frame(dataset), ["user_id"], [
            Check(gxe.ExpectColumnValuesToNotBeNull(column="user_id"), "every user keeps its original id"),
            Check(gxe.ExpectColumnValuesToBeUnique(column="user_id"), "one sequence per user"),
            Check(gxe.ExpectColumnValuesToBeBetween(column="length", min_value=k), f"{k}-core holds for users"),
        ]),
        Suite("prepared_interactions", _interaction_frame(raw, dataset), ["user_id", "position", "item_id"], [
            Check(gxe.ExpectColumnValuesToNotBeNull(column="raw_rank"), "every prepared interaction is a raw interaction"),
            Check(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="raw_rank", column_B="previous_raw_rank", ignore_row_if="either_value_is_missing"),
                "each history is in time order, ties broken by file order"),
        ]),
        Suite("prepared_splits", _split_frame(dataset), ["user_id", "split"], [
            Check(gxe.ExpectColumnValuesToBeBetween(column="input_length", min_value=1), "a prediction needs a history"),
            Check(gxe.ExpectColumnValuesToBeInSet(column="input_is_prefix", value_set=[True]),
                  "the input is the start of the user's history"),
            Check(gxe.ExpectColumnValuesToBeInSet(column="target_at_position", value_set=[True]),
                  "the target is the second-to-last (valid) or last (test) interaction"),
            Check(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="target_position", column_B="last_input_position"),
                  "the target row is not one of the input rows it is predicted from"),
            Check(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="target_position", column_B="last_train_position"),
                  "validation and test rows are not training rows"),
            Check(gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "split"]), "one target per user and split"),
            Check(gxe.ExpectTableRowCountToEqual(value=len(SPLITS) * dataset.num_users),
                  "one validation and one test example per user"),
        ]),
        Suite("prepared_counts", _count_frame(raw, dataset), ["count"], [
            Check(gxe.ExpectColumnPairValuesToBeEqual(column_A="expected", column_B="measured"),
                  "stats.json states the prepared data's real counts, and no raw interaction between kept "
                  "users and items was lost"),
        ]),
    ]


def run_suites(suites: list[Suite], info: dict | None = None) -> ValidationReport:
    """Validate each suite's frame in an ephemeral GX context (no progress bars)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        ),
    )
    source = context.data_sources.add_pandas("idgenrec")
    outcomes: list[Outcome] = []
    for suite in suites:
        batch = (
            source.add_dataframe_asset(name=suite.name)
            .add_batch_definition_whole_dataframe("all")
            .get_batch(batch_parameters={"dataframe": suite.frame})
        )
        gx_suite = gx.ExpectationSuite(name=suite.name)
        for number, check in enumerate(suite.checks):
            check.expectation.meta = {"check": number}
            gx_suite.add_expectation(check.expectation)
        result = batch.validate(
            gx_suite,
            result_format={
                "result_format": "SUMMARY",
                "unexpected_index_column_names": suite.id_columns,
                "partial_unexpected_count": EXAMPLES,
            },
        )
        for item in result.results:
            outcomes.append(_outcome(suite, item.to_json_dict()))
    return ValidationReport(outcomes, info or {})


def _outcome(suite: Suite, result: dict) -> Outcome:
    config = result["expectation_config"]
    kwargs = {k: v for k, v in config["kwargs"].items() if k != "batch_id"}
    check = suite.checks[config["meta"]["check"]]
    details = result.get("result") or {}
    columns = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs] + kwargs.get("column_list", [])
    return Outcome(
        suite=suite.name,
        expectation=config["type"],
        columns=columns,
        success=bool(result["success"]),
        why=check.why,
        kwargs=kwargs,
        unexpected_count=details.get("unexpected_count"),
        element_count=details.get("element_count"),
        observed_value=details.get("observed_value"),
        examples=details.get("partial_unexpected_index_list") or details.get("partial_unexpected_list") or [],
    )


def _expected(kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)


# -- frames ----------------------------------------------------------------------------


def _item_frame(dataset: SequenceDataset) -> pd.DataFrame:
    counts = [0] * dataset.num_items
    for sequence in dataset.sequences:
        for item in sequence:
            counts[item] += 1
    return pd.DataFrame({"item_id": dataset.item_ids, "text": dataset.item_texts, "interactions": counts})


def _user_frame(dataset: SequenceDataset) -> pd.DataFrame:
    return pd.DataFrame({"user_id": dataset.user_ids, "length": [len(s) for s in dataset.sequences]})


def _interaction_frame(raw: RawDataset, dataset: SequenceDataset) -> pd.DataFrame:
    """One row per prepared interaction with the rank of the raw row it comes from.

    A raw row's rank is its place in (user, timestamp, file order); the k-th occurrence
    of an item in a prepared history is matched with the k-th occurrence in the raw rows
    (repeats are legal). Ranks must increase along each history.
    """
    raw_sorted = raw.interactions.sort_values(["user", "timestamp", "order"]).reset_index(drop=True)
    raw_keys = pd.DataFrame({
        "user_id": raw_sorted["user"],
        "item_id": raw_sorted["item"],
        "occurrence": raw_sorted.groupby(["user", "item"], sort=False).cumcount(),
        "raw_rank": raw_sorted.index.astype("float64"),
    })
    long = pd.DataFrame(
        [(user, position, dataset.item_ids[item])
         for user, sequence in zip(dataset.user_ids, dataset.sequences)
         for position, item in enumerate(sequence)],
        columns=["user_id", "position", "item_id"],
    )
    long["occurrence"] = long.groupby(["user_id", "item_id"], sort=False).cumcount()
    long = long.merge(raw_keys, on=["user_id", "item_id", "occurrence"], how="left", validate="one_to_one")
    long["previous_raw_rank"] = long.groupby("user_id", sort=False)["raw_rank"].shift(1)
    return long.drop(columns="occurrence")


def _count_frame(raw: RawDataset, dataset: SequenceDataset) -> pd.DataFrame:
    """stats.json's counts (and the prepared count of interactions) next to what is measured."""
    stats = dataset.stats
    kept = raw.interactions["user"].isin(set(dataset.user_ids)) & raw.interactions["item"].isin(set(dataset.item_ids))
    rows = [
        ("users", stats.get("users"), dataset.num_users),
        ("items", stats.get("items"), dataset.num_items),
        ("interactions", stats.get("interactions"), dataset.num_interactions),
        ("raw interactions between kept users and items", dataset.num_interactions, int(kept.sum())),
    ]
    return pd.DataFrame(rows, columns=["count", "expected", "measured"]).astype({"expected": "float64"})


def _split_frame(dataset: SequenceDataset) -> pd.DataFrame:
    """One row per user and split: where the input ends and where the target sits."""
    rows = []
    # A user with fewer than 2 items has no validation target at all: give it an empty row
    # (which fails "a prediction needs a history") rather than crash on sequence[-2].
    usable = [i for i, s in enumerate(dataset.sequences) if len(s) >= 2]
    view = replace(dataset, user_ids=[dataset.user_ids[i] for i in usable], sequences=[dataset.sequences[i] for i in usable])
    for user in sorted(set(range(dataset.num_users)) - set(usable)):
        for split in SPLITS:
            rows.append({"user_id": dataset.user_ids[user], "split": split, "input_length": 0, "input_is_prefix": True,
                         "last_input_position": -1, "last_train_position": -1, "target_position": -1,
                         "target_at_position": False})
    for split in SPLITS:
        inputs, targets = view.split_examples(split)
        target_offset = 2 if split == "valid" else 1  # the protocol: valid = [-2], test = [-1]
        for index, (sequence, history, target) in enumerate(zip(view.sequences, inputs, targets)):
            position = len(sequence) - target_offset
            train = view.train_sequence(index)
            rows.append({
                "user_id": view.user_ids[index],
                "split": split,
                "input_length": len(history),
                "input_is_prefix": list(history) == sequence[: len(history)],
                "last_input_position": len(history) - 1,
                # positions of the training rows, when they are the start of the history
                "last_train_position": len(train) - 1 if train == sequence[: len(train)] else len(sequence),
                "target_position": position,
                "target_at_position": 0 <= position < len(sequence) and sequence[position] == target,
            })
    return pd.DataFrame(rows)


def _info(raw: RawDataset, dataset: SequenceDataset) -> dict:
    """Facts the report states without failing on them (missing text is handled, not fatal)."""
    stats = dataset.stats
    notes = []
    if stats.get("items_without_text"):
        notes.append(
            f"{stats['items_without_text']} items have no text row and use the fallback text "
            f"{stats.get('fallback_text')!r} (e.g. {stats.get('items_without_text_examples', [])[:5]})"
        )
    if stats.get("items_with_empty_text"):
        notes.append(f"{stats['items_with_empty_text']} items have a text row with every configured field empty")
    missing = {f: n for f, n in stats.get("missing_fields", {}).items() if n}
    if missing:
        notes.append(f"empty text fields (skipped in the item text): {missing}")
    return {
        "dataset": dataset.name,
        "raw": {"interactions_file": str(raw.interactions_file), "item_file": str(raw.item_file) if raw.item_file else None,
                "rows": len(raw.interactions), "item_text_rows": len(raw.item_text)},
        "prepared": {"users": dataset.num_users, "items": dataset.num_items, "interactions": dataset.num_interactions},
        "stats": stats,
        "notes": notes,
    }
