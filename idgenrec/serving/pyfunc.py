"""MLflow pyfunc wrapper: histories of original item ids in, top-k items, textual IDs and scores out.

Request (one row per user)::

    {"dataframe_records": [{"history": ["50", "172", "133"], "k": 5}],
     "params": {"exclude_seen": true, "candidates": ["1682", "1681"]}}

``history`` lists original item ids (strings, as in the raw data), oldest first, at most
``MAX_HISTORY`` of them (the model reads the last ``history_length``; the rest only serve
``exclude_seen``); ``k`` is optional (default 10, at most 100); a request has at most
``MAX_ROWS`` rows. ``candidates`` (optional, for every row) restricts the
recommendations to those items, e.g. the new arrivals added with ``idgenrec add-items``;
empty or absent means the whole catalogue. Response, one row per request row::

    {"predictions": [{"item_ids": [...], "textual_ids": [...], "scores": [...]}]}

``scores`` are log-probabilities, best first: of each item over the catalogue (``training.ranking:
items``) or of its textual ID under beam search (``beams``). A bad
request (unknown item id in a history or in ``candidates``, empty or over-long history, k out of
range, too many rows or candidates) raises ``MlflowException`` with
``INVALID_PARAMETER_VALUE``, which MLflow's scoring server answers with HTTP 400 and the
message; schema violations (missing ``history``, wrong types) are rejected by MLflow
itself, also with 400.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import Array, ColSpec, DataType, ParamSchema, ParamSpec, Schema

from idgenrec.digests import damage, folder_digests

MODEL_ARTIFACT = "idgenrec_model"  # key of the bundled model folder in the pyfunc's artifacts
DIGESTS_KEY = "idgenrec_sha256"  # model_config entry: the folder's files as logged, checked at load
DEFAULT_K = 10
MAX_K = 100  # with beam search k is the beam width: bound what one request can cost
# A row is one ranking (a beam search takes up to a second on a CPU): bound the rows and what each may carry, so
# one request cannot hold the server for minutes or fill its memory. The request's bytes are
# bounded before they are decoded by `idgenrec serve` (server.py) or a reverse proxy.
MAX_ROWS = 64
MAX_HISTORY = 2_000
MAX_UNKNOWN_SHOWN = 5


@dataclass(frozen=True)
class Request:
    row: int
    history: list[int]  # item indices
    k: int


def invalid(message: str) -> MlflowException:
    """The exception MLflow's scoring server turns into HTTP 400 with ``message``."""
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _as_item_list(value, row: int) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    else:
        raise invalid(f"row {row}: `history` must be a list of item ids, got {type(value).__name__} {value!r}")
    if not items:
        raise invalid(f"row {row}: `history` is empty; give at least one item id")
    if len(items) > MAX_HISTORY:
        raise invalid(f"row {row}: `history` has {len(items)} items, at most {MAX_HISTORY} are accepted (send the most recent ones)")
    out = []
    for item in items:
        if isinstance(item, (str, np.str_)):
            out.append(str(item))
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            out.append(str(int(item)))
        else:
            raise invalid(f"row {row}: item ids must be strings, got {type(item).__name__} {item!r}")
    return out


def _as_k(value, row: int, num_items: int) -> int:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return min(DEFAULT_K, num_items)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise invalid(f"row {row}: `k` must be an integer, got {value!r}")
    limit = min(MAX_K, num_items)
    if not 1 <= int(value) <= limit:
        raise invalid(f"row {row}: `k` must be between 1 and {limit} (min of {MAX_K} and the catalogue size), got {int(value)}")
    return int(value)


def parse_requests(frame: pd.DataFrame, index: Mapping[str, int]) -> list[Request]:
    """Validate a request frame against the model's catalogue; errors name the row and the ids."""
    if not isinstance(frame, pd.DataFrame):
        raise invalid(f"expected a DataFrame with a `history` column, got {type(frame).__name__}")
    if "history" not in frame.columns:
        raise invalid(f"missing column `history` (got columns {list(frame.columns)})")
    if len(frame) > MAX_ROWS:
        raise invalid(f"{len(frame)} rows in one request, at most {MAX_ROWS} are accepted (split it)")
    requests = []
    for row, record in enumerate(frame.to_dict("records")):
        items = _as_item_list(record["history"], row)
        unknown = [item for item in items if item not in index]
        if unknown:
            example = list(index)[:3]
            raise invalid(
                f"row {row}: unknown item id(s) {unknown[:MAX_UNKNOWN_SHOWN]}"
                f"{' and more' if len(unknown) > MAX_UNKNOWN_SHOWN else ''}; the model knows "
                f"{len(index)} items, e.g. {example} (ids are strings from the raw data)"
            )
        requests.append(Request(row, [index[item] for item in items], _as_k(record.get("k"), row, len(index))))
    return requests


def parse_candidates(value, index: Mapping[str, int]) -> list[int] | None:
    """The ``candidates`` param as item indices; None (whole catalogue) when empty or absent."""
    if value is None or len(value) == 0:
        return None
    items = [str(item) for item in (value if isinstance(value, (list, tuple, np.ndarray)) else [value])]
    if len(items) > len(index):
        raise invalid(f"`candidates` lists {len(items)} item ids, more than the model's {len(index)} items")
    unknown = [item for item in items if item not in index]
    if unknown:
        raise invalid(
            f"`candidates`: unknown item id(s) {unknown[:MAX_UNKNOWN_SHOWN]}{' and more' if len(unknown) > MAX_UNKNOWN_SHOWN else ''}; "
            f"the model knows {len(index)} items (add new ones with `idgenrec add-items`)"
        )
    return sorted({index[item] for item in items})


class RecommenderPyfunc(mlflow.pyfunc.PythonModel):
    """Loads the bundled IDGenRecModel folder; answers requests in the format above."""

    def load_context(self, context) -> None:
        from idgenrec.recommender.model import IDGenRecModel
        from idgenrec.backbone import pick_device

        folder = Path(context.artifacts[MODEL_ARTIFACT])
        recorded = (getattr(context, "model_config", None) or {}).get(DIGESTS_KEY)
        if recorded:  # models logged before digests were recorded have none
            check_folder(folder, recorded)
        self.model = IDGenRecModel.load(folder, device=pick_device())
        self.index = {item: i for i, item in enumerate(self.model.id_table.item_ids)}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        requests = parse_requests(model_input, self.index)
        exclude_seen = bool((params or {}).get("exclude_seen", False))
        candidates = parse_candidates((params or {}).get("candidates"), self.index)
        item_ids, textual_ids = self.model.id_table.item_ids, self.model.id_table.textual_ids
        rows: dict[int, dict] = {}
        for k in sorted({r.k for r in requests}):  # one beam width per k, as in evaluation
            group = [r for r in requests if r.k == k]
            items, scores = self.model.recommend_with_scores([r.history for r in group], k, exclude_seen, candidates=candidates)
            for request, row_items, row_scores in zip(group, items, scores):
                rows[request.row] = {
                    "item_ids": [item_ids[i] for i in row_items],
                    "textual_ids": [textual_ids[i] for i in row_items],
                    "scores": [float(s) for s in row_scores],
                }
        return pd.DataFrame([rows[r.row] for r in requests], columns=["item_ids", "textual_ids", "scores"])


def check_folder(folder: Path, recorded: Mapping[str, str]) -> None:
    """Refuse a bundled model folder whose files differ from those logged (truncated weights, an
    edited ID table): serving damaged state would answer wrong without a sign."""
    damaged = damage(folder, recorded)
    if damaged:
        raise MlflowException(
            f"{folder}: damaged model files, not as logged: {damaged}; register the model again from an intact folder"
        )


def model_signature() -> ModelSignature:
    return ModelSignature(
        inputs=Schema([ColSpec(Array(DataType.string), "history"), ColSpec(DataType.long, "k", required=False)]),
        outputs=Schema([
            ColSpec(Array(DataType.string), "item_ids"),
            ColSpec(Array(DataType.string), "textual_ids"),
            ColSpec(Array(DataType.double), "scores"),
        ]),
        params=ParamSchema([
            ParamSpec("exclude_seen", DataType.boolean, False),
            ParamSpec("candidates", DataType.string, [], shape=(-1,)),
        ]),
    )


def input_example(histories: Sequence[Sequence[str]], num_items: int) -> pd.DataFrame:
    """A real request: the given histories (original item ids), k=10 (or the catalogue size)."""
    return pd.DataFrame({"history": [list(h) for h in histories], "k": [min(DEFAULT_K, num_items)] * len(histories)})


def _requirements() -> list[str]:
    """The package's own pinned dependencies (pyproject.toml), so no inference run is needed."""
    try:
        requires = importlib.metadata.requires("idgenrec") or []
    except importlib.metadata.PackageNotFoundError:
        return [f"mlflow=={mlflow.__version__}"]
    return [r for r in requires if "extra ==" not in r]


def log_recommender_model(model_folder: str | Path, example_histories: Sequence[Sequence[str]], num_items: int):
    """Log the model folder as a pyfunc in the active run; returns MLflow's ``ModelInfo``.

    MLflow loads the model once here to check the input example against the signature.
    Serving needs the ``idgenrec`` package installed (``--env-manager local``).
    """
    model_folder = Path(model_folder)
    if not (model_folder / "settings.json").exists():
        raise FileNotFoundError(f"{model_folder}: not an IDGenRec model folder (run `idgenrec train` first)")
    with warnings.catch_warnings():  # MLflow hints that `k` (declared long) cannot hold NaN: by design
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(Path(__file__).with_name("model_code.py")),
            artifacts={MODEL_ARTIFACT: str(model_folder)},
            signature=model_signature(),
            input_example=input_example(example_histories, num_items),
            pip_requirements=_requirements(),
            model_config={DIGESTS_KEY: folder_digests(model_folder)},
        )
