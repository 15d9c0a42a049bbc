"""Catalogue refresh flow: new items into the served model between retrainings, without training.

The champion plus the items of a TSV (``item_id``, ``text``, optional ``title``): the champion is
loaded from the registry, the new items get textual IDs (``idgenrec.recommender.new_items``),
the grown model is scored on the prepared dataset like any version, registered with tag
``grown_from``, and promoted if it kept the champion's validation score within
``registry.margin`` (adding items cannot raise it: nothing is trained). The same work as
``idgenrec registry add-items``, as Prefect tasks; the next retraining learns the items properly.
Items the champion already knows are skipped; a file with nothing new ends the run with no version,
and so does one whose new items were already added to this champion (the decision on that version
stands: a rejected one is not re-registered every hour, a rollback to the parent is not undone).

Run once:  python -m flows.add_items --items new_items.tsv
Schedule:  python -m flows.serve --add-items new_items.tsv   (hourly by default; see flows/README.md)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow, get_run_logger

from flows.retrain import PROJECT_ROOT, io_step, library_logs_to_run, promote, register, registry_step, step
from idgenrec.config import Params, load_params
from idgenrec.tracking import LoggedRun


@io_step
def read_items(path: Path):
    from idgenrec.recommender.new_items import read_new_items

    return read_new_items(path)


@registry_step
def load_champion(params: Params, root: Path):
    from idgenrec.registry import champion_model, registered_model_name
    from idgenrec.tracking import configure_tracking

    configure_tracking(root)
    return champion_model(registered_model_name(params.data.name))


@registry_step
def check_growth(params: Params, version: str, champion, items, root: Path) -> tuple[str | None, str | None]:
    """(digest of the new items, why not to grow): nothing new, or these items already tried on this champion."""
    from idgenrec.registry import growth_check, registered_model_name
    from idgenrec.tracking import configure_tracking

    configure_tracking(root)
    return growth_check(registered_model_name(params.data.name), version, champion, items)


@step
def grow(model, items, params: Params, output: Path) -> dict:
    """The new items' IDs, vocabulary and trie; saves the grown model."""
    from idgenrec.recommender.new_items import add_items

    grown, stats = add_items(model, items, params.ids.kind, params.ids)
    grown.save(output)
    return stats


@registry_step
def log_grown(params: Params, output: Path, prepared: Path, root: Path, grown_from: str, new_items: str) -> LoggedRun:
    from prefect.runtime import flow_run

    from idgenrec.tracking import configure_tracking, log_model_folder

    configure_tracking(root)
    tags = {"idgenrec.trigger": "prefect add-items", "prefect.flow_run_id": str(flow_run.get_id() or "")}
    return log_model_folder(params, output, prepared, root=root, tags=tags, grown_from=grown_from, new_items_digest=new_items)


@flow(name="idgenrec-add-items", log_prints=True)
def add_new_items(
    items: str,
    params_path: str = "params.yaml",
    root: str | None = None,
    output: str = "artifacts/model-plus",
    prepared: str = "artifacts/prepared",
    promote_model: bool = True,
) -> dict:
    """The champion plus the new items of ``items``; returns the registry record ({} when not grown).

    Args:
        items: TSV of new items (item_id, text, optional title), relative to ``root``.
        params_path: params.yaml, relative to ``root`` (ids.* and registry.margin are used).
        root: project root (default: the folder above flows/).
        output: folder for the grown model, relative to ``root``.
        prepared: prepared dataset the grown model is scored on.
        promote_model: apply the rule for grown models (else the version stays challenger).
    """
    from idgenrec.registry import registered_model_name, registry_record

    root_dir = Path(root).resolve() if root else PROJECT_ROOT
    params = load_params(root_dir / params_path)
    with library_logs_to_run(), contextlib.chdir(root_dir):
        new_items = read_items(root_dir / items)
        version, champion = load_champion(params, root_dir)
        digest, reason_not_to = check_growth(params, version, champion, new_items, root_dir)
        if reason_not_to:
            get_run_logger().info(f"{items}: {reason_not_to}")
            return {}
        stats = grow(champion, new_items, params, root_dir / output)
        get_run_logger().info(f"{stats['items_added']} new items added to champion v{version}")
        logged = log_grown(params, root_dir / output, root_dir / prepared, root_dir, version, digest)
        registered = register(logged, params, root_dir)
        decision = promote(params, registered, root_dir) if promote_model else None
        return registry_record(logged, registered_model_name(params.data.name), registered, decision)


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Add new items to the champion once (no schedule); see flows/serve.py.")
    parser.add_argument("--items", required=True, help="TSV of new items: item_id, text, optional title")
    parser.add_argument("--params-path", default="params.yaml")
    parser.add_argument("--output", default="artifacts/model-plus")
    parser.add_argument("--no-promote", dest="promote_model", action="store_false")
    print(json.dumps(add_new_items(**vars(parser.parse_args())), indent=2, default=str))
