"""Catalogue refresh flow: new items into the served model between retrainings, without training.

The champion plus the items of a TSV (``item_id``, ``text``, optional ``title``), by
:func:`idgenrec.registry.grow_champion`, the implementation behind ``idgenrec registry add-items``,
with the same options: the champion is loaded from the registry, the new items get textual IDs,
the grown model is scored on the prepared dataset like any version, registered with tag
``grown_from``, and promoted if it kept the champion's validation score within
``registry.margin`` (adding items cannot raise it: nothing is trained). The next retraining
learns the items properly. Items the champion already knows are skipped; a file with nothing new
ends the run with no version, and so does one whose new items were already added to this
champion (the decision on that version stands: a rejected one is not re-registered every hour,
a rollback to the parent is not undone).

Run once:  python -m flows.add_items --items new_items.tsv
Schedule:  python -m flows.serve --add-items new_items.tsv   (hourly by default; see flows/README.md)
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows.retrain import PROJECT_ROOT, library_logs_to_run, stage_task, transient
from idgenrec.config import Params, load_params
from idgenrec.layout import LAYOUT
from idgenrec.locking import project_lock
from idgenrec.registry import Growth


@task(name="read-items", task_run_name="read-items", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=10,
      retry_condition_fn=transient)
def read_items(path: Path):
    from idgenrec.recommender.new_items import read_new_items

    return read_new_items(path)


# No retries: a retry after the grown model was registered would find its items already added and stop there.
@stage_task("add-items")
def grow_champion(
    params: Params, items, output: Path, prepared: Path, root: Path, kind: str | None, own_tokens: bool, promote_model: bool
) -> Growth:
    from idgenrec.registry import grow_champion as grow
    from idgenrec.tracking import configure_tracking

    configure_tracking(root)
    tags = {"idgenrec.trigger": "prefect add-items", "prefect.flow_run_id": str(flow_run.get_id() or "")}
    return grow(
        params, items, output, prepared, root=root, kind=kind, own_tokens=own_tokens, promote_model=promote_model, tags=tags
    )


@flow(name="idgenrec-add-items", log_prints=True)
def add_new_items(
    items: str,
    params_path: str = "params.yaml",
    root: str | None = None,
    output: str = str(LAYOUT.grown_model),
    prepared: str = str(LAYOUT.prepared),
    kind: str | None = None,
    own_tokens: bool = True,
    promote_model: bool = True,
) -> dict:
    """The champion plus the new items of ``items``; returns the registry record ({} when not grown).

    Args:
        items: TSV of new items (item_id, text, optional title), relative to ``root``.
        params_path: params.yaml, relative to ``root`` (ids.* and registry.margin are used).
        root: project root (default: the folder above flows/).
        output: folder for the grown model, relative to ``root``.
        prepared: prepared dataset the grown model is scored on.
        kind: ID kind the champion was trained with (default: ids.kind of params.yaml).
        own_tokens: learned IDs only from tokens of the item's own text (else any vocabulary token).
        promote_model: apply the rule for grown models (else the version stays challenger).
    """
    root_dir = Path(root).resolve() if root else PROJECT_ROOT
    params = load_params(root_dir / params_path)
    with project_lock(root_dir, "an add-items flow"), library_logs_to_run(), contextlib.chdir(root_dir):
        new_items = read_items(root_dir / items)
        growth = grow_champion(
            params, new_items, root_dir / output, root_dir / prepared, root_dir, kind, own_tokens, promote_model
        )
        if growth.skipped:
            get_run_logger().info(f"{items}: {growth.skipped}")
            return {}
        get_run_logger().info(f"{growth.stats['items_added']} new items added to champion v{growth.champion}")
        return growth.record


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Add new items to the champion once (no schedule); see flows/serve.py.")
    parser.add_argument("--items", required=True, help="TSV of new items: item_id, text, optional title")
    parser.add_argument("--params-path", default="params.yaml")
    parser.add_argument("--output", default=str(LAYOUT.grown_model))
    parser.add_argument("--prepared", default=str(LAYOUT.prepared))
    parser.add_argument("--kind", help="ID kind the champion was trained with (default: ids.kind of params.yaml)")
    parser.add_argument("--any-tokens", dest="own_tokens", action="store_false",
                        help="learned IDs from any vocabulary token, not only the item's own text's")
    parser.add_argument("--no-promote", dest="promote_model", action="store_false")
    print(json.dumps(add_new_items(**vars(parser.parse_args())), indent=2, default=str))
