"""What things are called in MLflow: run names, param and metric keys."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from idgenrec.config import Params

DEFAULT_ARCHITECTURE = "seq2seq"


def run_name(params: Params) -> str:
    """A pipeline run's name: what it trained, so runs line up in the MLflow UI.

    ``<dataset>-<ID kind>-seed<N>``, e.g. ``ml-100k-learned-seed0``; a recommender other than the
    paper's encoder-decoder adds its architecture (``ml-100k-learned-causal-seed0``), and an ID
    seed other than the training seed adds that (``...-seed0-idseed1``).
    """
    architecture = getattr(params.backbone, "architecture", DEFAULT_ARCHITECTURE)
    parts = [params.data.label, params.ids.kind]
    if architecture != DEFAULT_ARCHITECTURE:
        parts.append(architecture)
    parts.append(f"seed{params.training.seed}")
    if params.ids.seed != params.training.seed:
        parts.append(f"idseed{params.ids.seed}")
    return "-".join(parts)


def model_folder_run_name(params: Params, model_folder: Path, grown_from: str | None) -> str:
    """A scored model folder's run name: ``<dataset>-v<N>-plus-new-items`` for a grown champion."""
    if grown_from is not None:
        return f"{params.data.label}-v{grown_from}-plus-new-items"
    return f"{params.data.label}-{Path(model_folder).name}"


def metric_key(name: str) -> str:
    """MLflow keys allow only ``[/\\w.\\- :]``: ``valid/ndcg@10`` -> ``valid/ndcg_at_10``."""
    return name.replace("@", "_at_")


def flatten_params(params: Params) -> dict[str, str]:
    """Every knob as ``section.key`` (lists of sections as ``section.key.0.field``)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
            flat[f"{prefix}.length"] = str(len(value))
            for i, item in enumerate(value):
                walk(f"{prefix}.{i}", item)
        else:
            flat[prefix] = json.dumps(value) if isinstance(value, list) else str(value)

    walk("", params.model_dump(mode="json"))
    return flat


def numeric_metrics(record: Mapping, skip: Sequence[str] = ()) -> dict[str, float]:
    """The record's numbers as MLflow metrics (booleans as 0/1; strings and ``skip`` dropped)."""
    return {
        metric_key(key): float(value)
        for key, value in record.items()
        if key not in skip and isinstance(value, (int, float))
    }
